//! The traits every driver implements: a stateless factory per driver kind; for one open
//! pool, its layer operations ([`Layers`]) and its backing's lifecycle ([`Backing`]), which
//! [`Driver`] joins; and the optional bench capabilities ([`BenchSetup`], [`BenchHooks`]).

use crate::error::{DriverError, Result};
use crate::plan::{self, BackingPlan, BackingRequest, LoopbackFile, OptionSpec};
use crate::types::{
    Capabilities, DriverOptions, HostFacts, LayerChain, MountFlags, MountMode, MountSpec,
    PoolContext, Requirements, Space, Suitability, Usage,
};
use crate::{sys, Bytes, Identity, ObjectId};
use std::path::Path;

/// Creates and opens pools of one driver kind. Stateless; one static instance per driver.
pub trait DriverFactory: Send + Sync {
    /// Stable name used in configs and on the command line ("overlay", "vfs", ...).
    fn name(&self) -> &'static str;

    /// One line for `blkdrv info`.
    fn description(&self) -> &'static str;

    /// What `pool init` makes for this driver and from what, with examples: the driver's
    /// paragraph of `blkdrv pool init --help`. Empty: its flags' help says it all.
    fn init_help(&self) -> &'static str {
        ""
    }

    fn requirements(&self) -> Requirements;

    /// Every option the driver takes, with its `pool init` flag and help: the one place they
    /// are written (the command line and `blkdrv info` read them from here).
    fn options(&self) -> &'static [OptionSpec];

    /// Checks the options a user gave and fills in defaults; unknown keys are errors.
    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions>;

    /// What a `pool init` request with the validated `options` means: which loopback files,
    /// devices or existing storage. By default one loopback file `data`, the devices as given,
    /// or existing storage where an option's role says so.
    fn plan(&self, options: &DriverOptions, request: &BackingRequest) -> Result<BackingPlan> {
        plan::standard(
            self.name(),
            self.options(),
            options,
            request,
            self.min_device_size(options),
            &|size| vec![LoopbackFile { stem: "data", size }],
        )
    }

    /// The smallest device (or loopback file) the driver can format with `options`.
    fn min_device_size(&self, options: &DriverOptions) -> Bytes {
        let _ = options;
        Bytes(0)
    }

    /// Formats the pool's devices for this driver (mkfs, pool creation). Returns the identity to
    /// record. Called once, at `pool init`.
    fn format(&self, ctx: &PoolContext) -> Result<Identity>;

    /// Activates an already formatted pool (mounts it, assembles it) after checking its identity.
    /// Must be idempotent: opening an active pool reuses it.
    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>>;

    /// Whether this host can run the driver; `Err` says what is missing.
    fn check_host(&self) -> Result<()> {
        sys::host::check(self.name(), &self.requirements())
    }

    /// Whether `pool init --driver auto` should pick this driver on `host`, and why; `None`:
    /// never picked automatically. Only asked of drivers whose [`DriverFactory::check_host`]
    /// passed. The pool picks the highest rank (see [`Suitability`]).
    fn suits(&self, host: &HostFacts) -> Option<Suitability> {
        let _ = host;
        None
    }

    /// What `blkdrv bench` may ask of this driver kind beyond the layer operations; `None`:
    /// one run with default options.
    fn bench(&self) -> Option<&dyn BenchSetup> {
        None
    }
}

/// The layer operations of one open pool.
///
/// Every mutating call must be idempotent with respect to a crash: the pool may call `create`
/// again after a crash left a half-made object (the driver replaces it), `commit` on an already
/// committed object, and `remove` on an object that is already gone (returns `Ok`).
pub trait Layers: Send + Sync {
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Creates an active (writable) layer object, empty or on top of `layer.ancestors`.
    fn create(&self, layer: &LayerChain) -> Result<()>;

    /// Freezes an active layer. Afterwards its content never changes.
    fn commit(&self, layer: &LayerChain) -> Result<()>;

    /// Mounts the layer at `target` with `flags`. Active layers may be mounted read-write once;
    /// committed layers only read-only (views), any number of times.
    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()>;

    /// Describes how another process mounts the layer (see [`MountSpec`]), making whatever the
    /// mount needs exist first (an active dm device, overlay's short lower links). Idempotent;
    /// the layer's `remove` takes it all away again. Active layers may be exported read-write,
    /// committed layers read-only only. `flags.nosuid` is ignored: exported mounts are for
    /// containers. Called once per Prepare/View/Mounts request of the containerd snapshotter.
    fn export(
        &self,
        layer: &LayerChain,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<Vec<MountSpec>> {
        let _ = (mode, flags);
        Err(DriverError::Unsupported {
            driver: self.name(),
            what: format!("mounts by another process (layer {})", layer.id),
        })
    }

    /// Unmounts a mount made by [`Layers::mount`].
    fn unmount(&self, target: &Path) -> Result<()>;

    /// Deletes the layer object. Missing objects are not an error.
    fn remove(&self, id: ObjectId) -> Result<()>;

    /// Objects present on disk, for drift checks against the pool store.
    fn list(&self) -> Result<Vec<ObjectId>>;

    /// Space and inodes exclusive to the layer.
    fn usage(&self, layer: &LayerChain) -> Result<Usage>;

    /// Usage of many layers at once (`layer ls`). Drivers whose usage query has a fixed cost
    /// per call (dm: a metadata snapshot and a thin_ls run) answer all of them in one pass.
    fn usage_many(&self, layers: &[LayerChain]) -> Vec<Result<Usage>> {
        layers.iter().map(|l| self.usage(l)).collect()
    }

    /// Creates the empty, writable object of a volume (named data outside every layer chain,
    /// `blkdrv volume create`): mounted, measured and removed like an active layer of
    /// [`LayerChain::volume`], never committed. Natively where the driver has an object for
    /// it: a thin device formatted with the pool's filesystem, a dataset, a subvolume, a
    /// directory. `limit` is the most data it may hold, enforced where the driver can (the thin
    /// device's size, refquota, a qgroup); drivers without limits refuse one. Like `create`,
    /// replaces a half-made object a crash left behind.
    fn create_volume(&self, id: ObjectId, limit: Option<Bytes>) -> Result<()> {
        self.create(&LayerChain::volume(id))?;
        match limit {
            Some(l) => self.set_limit(id, l),
            None => Ok(()),
        }
    }

    /// Makes `new` a writable object holding what the active object `source` holds now, on the
    /// same ancestors (`volume create --from`, and `container commit`, which commits the copy):
    /// copy-on-write in constant time where the driver can (a thin snapshot, a zfs clone, a
    /// btrfs snapshot), a full copy otherwise. `source` may be mounted read-write meanwhile and
    /// stays writable; afterwards either can be removed first, whatever the order. Replaces a
    /// half-made `new` a crash left behind.
    fn clone_active(&self, source: &LayerChain, new: ObjectId) -> Result<()> {
        Err(DriverError::Unsupported {
            driver: self.name(),
            what: format!("copies of a writable object (layer {} to {new})", source.id),
        })
    }

    /// Limits how much data a layer can hold. Drivers without per-layer limits refuse.
    fn set_limit(&self, id: ObjectId, limit: Bytes) -> Result<()> {
        let _ = limit;
        Err(DriverError::Unsupported {
            driver: self.name(),
            what: format!("per-layer size limits (layer {id})"),
        })
    }
}

/// The lifecycle of one open pool's backing: its space, growth and teardown.
pub trait Backing: Send + Sync {
    /// Space of the pool as a whole.
    fn space(&self) -> Result<Space>;

    /// Deactivates the pool's backing (unmounts it). Layers must be unmounted first.
    fn deactivate(&self) -> Result<()>;

    /// Takes up space the pool's devices gained (a grown loopback file): resize the filesystem
    /// or pool to the device size. Drivers that report no `unallocated` space need not act.
    fn grow(&self) -> Result<()> {
        Ok(())
    }

    /// Waits, at most `timeout`, for space in [`Space::pending`] to become available (btrfs: kick
    /// and wait for the cleaner thread). Returning `Ok` does not promise that all of it came back:
    /// the caller reads [`Backing::space`] again.
    fn reclaim(&self, timeout: std::time::Duration) -> Result<()> {
        let _ = timeout;
        Ok(())
    }

    /// The driver's own growth policy for storage blkdrv did not size itself (an LVM thin pool
    /// with an autoextend profile), checked at each writer's command. Some(what it did).
    fn autoextend(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Tears the pool down for good (`pool destroy`): by default what `deactivate` does; drivers
    /// that made storage objects of their own (an LVM VG and LV) remove them.
    fn destroy(&self) -> Result<()> {
        self.deactivate()
    }

    /// A counter the driver's kernel object keeps across restarts (the thin-pool transaction
    /// id), advanced once per create or remove. The pool records it after each completed
    /// operation and hands it back in [`PoolContext::generation`], so a driver can tell a crash
    /// (one step ahead) from a pool changed behind blkdrv's back. `None`: no such counter.
    fn generation(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// One open pool: its layers and its backing. What the pool holds.
pub trait Driver: Layers + Backing {
    /// Bench-only hooks, asked for by `blkdrv bench` as containerd asks a snapshotter whether
    /// it is a `Cleaner`; `None`: the driver has none (the bench skips what needs them).
    fn bench(&self) -> Option<&dyn BenchHooks> {
        None
    }
}

/// Bench-only hooks of an open pool.
pub trait BenchHooks: Send + Sync {
    /// Times the bare kernel operation behind [`Layers::create`] of a layer on `parent` (a
    /// btrfs snapshot ioctl, a dm `create_snap` + activate, a plain directory copy) and undoes
    /// it, so benchmarks can show blkdrv's own overhead as a ratio. Drivers with no single
    /// kernel operation to compare with (overlay's create is a mkdir) have no hooks. A scratch
    /// object named by id uses [`ObjectId::SCRATCH`], which no layer ever gets.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<std::time::Duration>;
}

/// Bench-only facts of a driver kind.
pub trait BenchSetup: Sync {
    /// The configurations `blkdrv bench` compares for this driver, as (label, options), when
    /// the backing changes the story (overlay: ext4 copy-up vs xfs reflink).
    fn variants(&self) -> Vec<(String, DriverOptions)>;
}
