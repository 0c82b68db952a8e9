//! zfs: every layer is a ZFS filesystem dataset below the pool's parent dataset, named after its
//! object id. An empty layer is `zfs create`; committing sets `readonly=on` and takes the
//! snapshot `<layer>@committed`; an active layer on a committed parent is `zfs clone` of the
//! parent's snapshot, so it shares every record until it writes. Datasets have
//! `mountpoint=legacy`: nothing automounts, blkdrv mounts them itself (mount(2) with type zfs,
//! what `mount -t zfs` does).
//!
//! Where the datasets live:
//! - loopback and `--device` pools: a zpool blkdrv creates (`ashift=12`, no cache file,
//!   `mountpoint=none` on the root dataset, compression off unless `-o compression=`); its root
//!   dataset is the parent. Loopback files are given to ZFS as file vdevs, not through the loop
//!   device the pool attaches: a file needs no udev (a whole disk does: `zpool create` labels it
//!   and waits for udev to show the new partition), its path does not change between boots as a
//!   loop device's number does, ZFS reads its labels by path on import, and growing it needs no
//!   loop capacity refresh, only `zpool online -e`.
//! - `-o zpool=NAME` without devices: a dataset `NAME/blkdrv-<pool>` in that existing pool.
//! - `-o dataset=NAME`: that existing dataset, only while it is empty unless `-o adopt=on`.
//!
//! The pool's identity is the zpool GUID plus the parent dataset (name and GUID). Sizes come from
//! ZFS's own accounting (`used`, `referenced`), never from walking files. Everything runs through
//! [`crate::sys::zfs`] (see there why the tools and not a library).
//!
//! This file holds the factory, the driver value and how layers are named; the rest is by
//! concern: `settings` (options), `identity` (what is recorded, checked on open), `format`
//! (`pool init`), `layers` (the layer operations), `backing` (space, grow, deactivate, destroy)
//! and `status` (the `pool status` lines).

mod backing;
mod format;
mod identity;
mod layers;
mod settings;
mod status;

use crate::error::Result;
use crate::plan::OptionSpec;
use crate::sys::zfs::{self as z, Dataset, Failure, Snapshot};
use crate::{
    BenchHooks, Bytes, Driver, DriverFactory, DriverOptions, Identity, LayerChain, ObjectId,
    PoolContext, Requirements,
};
use identity::Recorded;
use settings::{Settings, OPTIONS};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "zfs";

/// The snapshot that freezes a committed layer; children are clones of it.
const COMMITTED: &str = "committed";
/// The snapshot of an active dataset a copy (`clone_active`) is cloned from: `<source>@clone-<new
/// id>`, one per copy, named after the copy so a crashed or removed copy's leftover is found.
const CLONE_PREFIX: &str = "clone-";
/// Scratch clone for [`BenchHooks::raw_snapshot`]; not a decimal id, so never listed as a layer.
const SCRATCH: &str = "bench-raw";
/// Room a parent dataset name must leave for "/<largest id>@committed".
const MAX_PARENT: usize = z::MAX_NAME - "/16777215@committed".len();
/// Slop space alone takes up to 128 MiB of a small zpool (spa_get_slop_space); under this a
/// pool would have less room for layers than it reserves.
const MIN_SIZE: Bytes = Bytes::mib(256);
/// How long a remove waits for a `zfs` process a killed blkdrv left working on the layer.
const TOOL_WAIT: Duration = Duration::from_secs(30);

/// A pool device as ZFS gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Vdev {
    /// A loopback file of the pool, by its absolute path.
    File(PathBuf),
    Device(PathBuf),
}

impl Vdev {
    fn path(&self) -> &Path {
        match self {
            Vdev::File(p) | Vdev::Device(p) => p,
        }
    }
}

/// The pool's devices as vdevs: loop devices the pool attached to its own backing files become
/// those files (see the module doc; the pool says which they are); anything else, a user's loop
/// device included, stays the block device it is.
fn vdevs(ctx: &PoolContext) -> Result<Vec<Vdev>> {
    Ok(ctx
        .devices
        .iter()
        .map(|d| match ctx.backing_files.get(d) {
            Some(file) => Vdev::File(file.clone()),
            None => Vdev::Device(d.clone()),
        })
        .collect())
}

pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    // Layers on the state directory's own filesystem: its copy-on-write, no second one.
    fn suits(&self, host: &crate::HostFacts) -> Option<crate::Suitability> {
        (host.state_fs.as_deref() == Some("zfs")).then(|| crate::Suitability {
            rank: 100,
            why: "the state directory is on zfs: its own copy-on-write".into(),
        })
    }

    fn description(&self) -> &'static str {
        "ZFS datasets, snapshots and clones (record copy-on-write, native space accounting)"
    }

    fn init_help(&self) -> &'static str {
        "zfs makes a zpool on the loopback file or --device (named blkdrv-<pool>-<random>, or \
--zpool NAME), uses an existing zpool (--zpool NAME alone: blkdrv makes the dataset \
NAME/blkdrv-<pool> in it) or an existing empty dataset (--dataset NAME). Examples:\n  \
blkdrv pool init --driver zfs --size 20G --compression lz4\n  \
blkdrv pool init --driver zfs --zpool tank"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            filesystems: vec!["zfs"],
            // The tools come with the kernel module (zfsutils-linux with zfs-dkms) and are of
            // no use without it, so they count as kernel support: a host without ZFS is sent
            // to the VM rather than told to install tools. check_host still asks for them.
            tools: Vec::new(),
            paths: vec!["/dev/zfs"],
        }
    }

    fn check_host(&self) -> Result<()> {
        let mut req = self.requirements();
        req.tools = vec![z::ZFS, z::ZPOOL];
        crate::sys::host::check(NAME, &req)
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        Settings::parse(options).map(|s| s.to_options())
    }

    fn min_device_size(&self, _options: &DriverOptions) -> Bytes {
        MIN_SIZE
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        format::format(ctx)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        Ok(Box::new(identity::open(ctx, identity)?))
    }
}

/// An opened zfs pool: its checked identity and what the layers are made with.
pub struct Zfs {
    rec: Recorded,
    vdevs: Vec<Vdev>,
    compression: String,
    recordsize: Bytes,
}

// Layer names: the object id below the parent dataset, its `@committed` snapshot, and the
// bench's scratch clone beside them.
impl Zfs {
    fn dataset(&self, id: ObjectId) -> Dataset {
        self.rec
            .dataset
            .child(&id.to_string())
            .expect("decimal ids fit below a parent of at most MAX_PARENT characters")
    }

    fn committed(&self, id: ObjectId) -> Snapshot {
        self.dataset(id)
            .snapshot(COMMITTED)
            .expect("MAX_PARENT leaves room for the snapshot name")
    }

    fn clone_origin(&self, source: ObjectId, new: ObjectId) -> Snapshot {
        self.dataset(source)
            .snapshot(&format!("{CLONE_PREFIX}{new}"))
            .expect("MAX_PARENT leaves room for the snapshot name")
    }

    fn scratch(&self) -> Dataset {
        self.rec
            .dataset
            .child(SCRATCH)
            .expect("MAX_PARENT leaves room for the scratch name")
    }
}

/// Whether `name` (a child of the parent) could be taken for one of blkdrv's own datasets.
fn collides(parent: &Dataset, name: &str) -> bool {
    name.strip_prefix(parent.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|leaf| leaf == SCRATCH || leaf.bytes().all(|b| b.is_ascii_digit()))
}

impl Driver for Zfs {
    fn bench(&self) -> Option<&dyn BenchHooks> {
        Some(self)
    }
}

impl BenchHooks for Zfs {
    // What `zfs clone parent@committed x` costs by itself (the tool's start included, as in
    // blkdrv's create): the ratio shows blkdrv's own checks and bookkeeping.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Duration> {
        let scratch = self.scratch();
        // A leftover from an interrupted run.
        match z::destroy(&scratch, true) {
            Err(e) if z::failure(&e) != Failure::Missing => return Err(e),
            _ => {}
        }
        let origin = self.committed(parent.id);
        let props = [("mountpoint", "legacy".to_string())];
        let t = Instant::now();
        z::clone(&origin, &scratch, &props)?;
        let took = t.elapsed();
        z::destroy(&scratch, false)?;
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_are_canonical_ids() {
        let parent = Dataset::new("tank/blkdrv-t").unwrap();
        assert!(collides(&parent, "tank/blkdrv-t/17"));
        assert!(collides(&parent, "tank/blkdrv-t/007"));
        assert!(collides(&parent, "tank/blkdrv-t/bench-raw"));
        assert!(!collides(&parent, "tank/blkdrv-t/app"));
        assert!(!collides(&parent, "tank/blkdrv-tx/17"));
        assert!(!collides(&parent, "tank/blkdrv-t"));
        // The longest parent still leaves room for every id and its snapshot.
        let p = Dataset::new(&format!("tank/{}", "a".repeat(MAX_PARENT - 5))).unwrap();
        let max = ObjectId::new(ObjectId::MAX).unwrap();
        let ds = p.child(&max.to_string()).unwrap();
        assert!(ds.snapshot(COMMITTED).is_ok());
        assert!(p.child(SCRATCH).is_ok());
    }
}
