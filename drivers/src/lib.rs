//! blkdrv storage drivers.
//!
//! A driver turns a pool's block devices into copy-on-write layers. The vocabulary follows
//! containerd's snapshotters: a *committed* layer is read-only and shareable, an *active* layer is
//! writable and built on a committed parent (or empty), and a *view* is a read-only mount of a
//! committed layer.
//!
//! Drivers keep no metadata of their own: the pool owns ids, parents and state, and passes every
//! driver call the facts it needs (the object id, the parent chain). A driver names its on-disk
//! objects after the [`ObjectId`] so the pool can always find an object it recorded an intent for.
//!
//! Adding a driver means one new module and one line in [`registry`].

pub mod btrfs;
pub mod devicemapper;
pub mod error;
pub mod fsbacked;
pub mod id;
pub mod options;
pub mod overlay;
pub mod registry;
pub mod sys;
pub mod units;
pub mod vfs;
pub mod zfs;

pub use error::{DriverError, Result};
pub use id::{InvalidObjectId, ObjectId};
pub use units::{Bytes, ParseSizeError, Sectors};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Driver-specific options (`--fs xfs`, later `--block-size` ...), kept as strings so the pool can
/// store them without knowing what they mean. Each driver validates its own.
pub type DriverOptions = BTreeMap<String, String>;

/// What identifies a formatted pool on its devices (filesystem UUID, thin-pool UUID, zpool GUID).
/// Recorded at format time and checked on every open, so a swapped device is refused.
pub type Identity = BTreeMap<String, String>;

/// Everything a driver gets to know about the pool it serves.
#[derive(Debug, Clone)]
pub struct PoolContext {
    /// The pool's name (used to make kernel object names unique, e.g. dm device names).
    pub pool: String,
    /// A directory the driver may use for mount points of its own backing.
    pub state_dir: PathBuf,
    /// Block devices backing the pool (loop devices for loopback pools).
    pub devices: Vec<PathBuf>,
    /// Validated driver options.
    pub options: DriverOptions,
    /// The driver generation the pool recorded after its last completed operation (see
    /// [`Driver::generation`]); `None` for a pool being formatted.
    pub generation: Option<u64>,
}

/// How a layer is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    ReadWrite,
    ReadOnly,
}

impl std::fmt::Display for MountMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MountMode::ReadWrite => "rw",
            MountMode::ReadOnly => "ro",
        })
    }
}

/// Per-mount restrictions the pool's security policy asks for (README, "Security"). They are
/// flags of the mount, not of the layer: the same layer can be mounted with and without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags {
    /// Device nodes in the layer cannot be opened through the mount (MS_NODEV).
    pub nodev: bool,
    /// Setuid/setgid bits and file capabilities do not apply to programs run from it
    /// (MS_NOSUID).
    pub nosuid: bool,
}

impl MountFlags {
    /// Both restrictions: mounts no program should run from (imports, diffs, inspection).
    pub const INERT: MountFlags = MountFlags {
        nodev: true,
        nosuid: true,
    };

    /// The mount(2) flags of a mount in `mode` with these restrictions.
    pub fn ms(self, mode: MountMode) -> nix::mount::MsFlags {
        use nix::mount::MsFlags;
        let mut f = MsFlags::empty();
        f.set(MsFlags::MS_RDONLY, mode == MountMode::ReadOnly);
        f.set(MsFlags::MS_NODEV, self.nodev);
        f.set(MsFlags::MS_NOSUID, self.nosuid);
        f
    }
}

/// A layer as a driver sees it: its object and the committed layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerChain {
    pub id: ObjectId,
    /// Whether the layer is still writable (active) or frozen (committed).
    pub active: bool,
    /// Committed ancestors, nearest parent first.
    pub ancestors: Vec<ObjectId>,
}

impl LayerChain {
    pub fn parent(&self) -> Option<ObjectId> {
        self.ancestors.first().copied()
    }
}

/// The unit in which a driver copies data when a shared file is first written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "unit", rename_all = "lowercase")]
pub enum Granularity {
    /// Whole files are copied up. `reflink` says the copy shares extents (xfs/btrfs) and so
    /// costs metadata only.
    File { reflink: bool },
    /// Extents are shared and copied on write (btrfs, ZFS records).
    Extent,
    /// Fixed-size blocks are copied on write (dm-thin).
    Block { size: Bytes },
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Granularity::File { reflink: false } => f.write_str("file (full copy-up)"),
            Granularity::File { reflink: true } => f.write_str("file (reflink copy-up)"),
            Granularity::Extent => f.write_str("extent"),
            Granularity::Block { size } => write!(f, "block ({size})"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub granularity: Granularity,
    /// Layers are native snapshots (constant-time create) rather than copies or directory stacks.
    pub native_snapshots: bool,
}

/// Space used by one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes exclusive to the layer (what removing it would free).
    pub bytes: Bytes,
    /// Inodes exclusive to the layer, where the driver can count them without a walk.
    pub inodes: Option<u64>,
    /// Bytes the layer references, shared ones included, where the driver knows it.
    pub referenced: Option<Bytes>,
}

/// Space of the whole pool, plus driver-specific lines for `pool status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Space {
    pub total: Bytes,
    pub used: Bytes,
    pub available: Bytes,
    pub inodes_total: u64,
    pub inodes_free: u64,
    /// Space the pool could still take up before its device has to grow: on the devices but not
    /// given to the filesystem's allocator yet (btrfs chunks, thin-pool data), or simply what
    /// is available where the filesystem has no such reserve (xfs/ext4, a zpool on files). The
    /// pool grows loopback files when it runs low; `None`: the driver cannot grow.
    pub unallocated: Option<Bytes>,
    /// Space freed by removed layers that the filesystem has not made reusable yet (btrfs
    /// subvolumes waiting for the cleaner thread); [`Driver::reclaim`] waits for it. `None`:
    /// the driver frees space at once.
    #[serde(default)]
    pub pending: Option<Bytes>,
    /// Metadata space where the driver has a separate, exhaustible metadata area (thin-pool
    /// metadata); the pool's min-free policy applies to it as to data.
    pub metadata: Option<MetaSpace>,
    /// Extra facts worth showing, in display order (e.g. "Backing Filesystem" = "xfs").
    pub details: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetaSpace {
    pub total: Bytes,
    pub available: Bytes,
}

/// What a driver needs from the host, so the pool can say why it is unavailable.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requirements {
    /// Kernel filesystems that must appear in /proc/filesystems.
    pub filesystems: Vec<&'static str>,
    /// Programs that must be on PATH.
    pub tools: Vec<&'static str>,
    /// Kernel features checked by a path that must exist (e.g. /dev/mapper/control).
    pub paths: Vec<&'static str>,
}

/// Creates and opens pools of one driver kind. Stateless; one static instance per driver.
pub trait DriverFactory: Send + Sync {
    /// Stable name used in configs and on the command line ("overlay", "vfs", ...).
    fn name(&self) -> &'static str;

    /// One line for `blkdrv info`.
    fn description(&self) -> &'static str;

    fn requirements(&self) -> Requirements;

    /// Checks the options a user gave and fills in defaults; unknown keys are errors.
    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions>;

    /// The sparse files a loopback pool of `size` needs, in the order the driver wants them as
    /// devices: (file stem, size). One data file unless the driver wants more (dm: data and
    /// metadata).
    fn loopback_files(&self, options: &DriverOptions, size: Bytes) -> Vec<(&'static str, Bytes)> {
        let _ = options;
        vec![("data", size)]
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

    /// The configurations `blkdrv bench` compares for this driver, as (label, options). One run
    /// with defaults unless the backing changes the story (overlay: ext4 copy-up vs xfs reflink).
    fn bench_variants(&self) -> Vec<(String, DriverOptions)> {
        vec![(self.name().to_string(), DriverOptions::new())]
    }
}

/// The layer operations of one open pool.
///
/// Every mutating call must be idempotent with respect to a crash: the pool may call `create`
/// again after a crash left a half-made object (the driver replaces it), `commit` on an already
/// committed object, and `remove` on an object that is already gone (returns `Ok`).
pub trait Driver: Send + Sync {
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

    /// Unmounts a mount made by [`Driver::mount`].
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
    /// the caller reads [`Driver::space`] again.
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

    /// Times the bare kernel operation behind [`Driver::create`] of a layer on `parent` (a
    /// btrfs snapshot ioctl, a dm `create_snap` + activate, a plain directory copy) and undoes
    /// it, so benchmarks can show blkdrv's own overhead as a ratio. `None`: there is no single
    /// kernel operation to compare with (overlay's create is a mkdir).
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Option<std::time::Duration>> {
        let _ = parent;
        Ok(None)
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
