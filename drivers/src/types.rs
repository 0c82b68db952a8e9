//! The vocabulary drivers and the pool share: options, layer chains, mount modes,
//! capabilities, usage and space.

use crate::{Bytes, ObjectId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Driver-specific options (`--fs xfs`, later `--block-size` ...), kept as strings so the pool can
/// store them without knowing what they mean. Each driver validates its own.
pub type DriverOptions = BTreeMap<String, String>;

/// Everything a driver gets to know about the pool it serves.
#[derive(Debug, Clone)]
pub struct PoolContext {
    /// The pool's name (used to make kernel object names unique, e.g. dm device names).
    pub pool: String,
    /// A directory the driver may use for mount points of its own backing.
    pub state_dir: PathBuf,
    /// Block devices backing the pool (loop devices for loopback pools).
    pub devices: Vec<PathBuf>,
    /// Which of `devices` are loop devices of the pool's own sparse files, and those files
    /// (absolute paths): storage the pool made and may grow, as opposed to a user's device.
    pub backing_files: BTreeMap<PathBuf, PathBuf>,
    /// Validated driver options.
    pub options: DriverOptions,
    /// The driver generation the pool recorded after its last completed operation (see
    /// [`crate::Backing::generation`]); `None` for a pool being formatted.
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

/// A mount another process performs itself (containerd while unpacking, the runc shim for a
/// container's root): what [`crate::Layers::export`] hands out instead of mounting. Every path in
/// it is absolute and valid in the host's mount namespace; `options` are mount(8)-style words
/// (`ro`, `nodev`, `subvolid=5`, `lowerdir=...`), never `nosuid` (containers run setuid programs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Filesystem type for mount(2): `xfs`, `ext4`, `zfs`, `btrfs`, `overlay`, `bind`.
    pub fstype: String,
    /// Device, dataset or directory.
    pub source: String,
    pub options: Vec<String>,
}

impl MountSpec {
    /// A spec whose `options` are the `own` words of the filesystem followed by what `mode` and
    /// `flags` ask for: `ro` (the mounter remounts a read-only bind), `nodev`. Never `nosuid`:
    /// exported mounts are container roots, and containers run setuid programs.
    pub fn new(
        fstype: &str,
        source: impl Into<String>,
        own: impl IntoIterator<Item = String>,
        mode: MountMode,
        flags: MountFlags,
    ) -> MountSpec {
        let mut options: Vec<String> = own.into_iter().collect();
        if mode == MountMode::ReadOnly {
            options.push("ro".into());
        }
        if flags.nodev {
            options.push("nodev".into());
        }
        MountSpec {
            fstype: fstype.into(),
            source: source.into(),
            options,
        }
    }

    /// A recursive bind mount of `dir`, as containerd's own native and overlayfs snapshotters
    /// hand out: `rw` is spelled out, as they do, so the options always say the mode.
    pub fn bind(dir: &std::path::Path, mode: MountMode, flags: MountFlags) -> MountSpec {
        let own = ["rbind".to_string()]
            .into_iter()
            .chain((mode == MountMode::ReadWrite).then(|| "rw".to_string()));
        MountSpec::new("bind", dir.display().to_string(), own, mode, flags)
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

    /// A volume's object as the layer operations see it: writable, with no ancestors (see
    /// [`crate::Layers::create_volume`]).
    pub fn volume(id: ObjectId) -> LayerChain {
        LayerChain {
            id,
            active: true,
            ancestors: Vec::new(),
        }
    }
}

/// What a driver factory gets to know about the host when `pool init --driver auto` asks it
/// whether it suits (see [`crate::DriverFactory::suits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The state directory the pool would live under.
    pub state_dir: PathBuf,
    /// The type of the filesystem holding it, as /proc/self/mountinfo names it (`btrfs`,
    /// `zfs`, `ext4`, ...); `None` when it could not be read.
    pub state_fs: Option<String>,
}

/// How well a driver suits a host, and why, for `--driver auto`: the highest rank wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suitability {
    /// 100: the state directory's own filesystem; 50: a block-level driver the kernel has;
    /// 10: a file-level driver that works everywhere its filesystem does; 1: a fallback.
    pub rank: u8,
    /// One line for `pool init` and `blkdrv info` ("the state directory is on btrfs").
    pub why: String,
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
    /// subvolumes waiting for the cleaner thread); [`crate::Backing::reclaim`] waits for it. `None`:
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_options_say_mode_and_nodev_never_nosuid() {
        let flags = MountFlags {
            nodev: true,
            nosuid: true,
        };
        let b = MountSpec::bind(std::path::Path::new("/d"), MountMode::ReadWrite, flags);
        assert_eq!(b.fstype, "bind");
        assert_eq!(b.source, "/d");
        assert_eq!(b.options, ["rbind", "rw", "nodev"]);
        let b = MountSpec::bind(std::path::Path::new("/d"), MountMode::ReadOnly, flags);
        assert_eq!(b.options, ["rbind", "ro", "nodev"]);
        let x = MountSpec::new(
            "xfs",
            "/dev/mapper/x",
            ["nouuid".to_string()],
            MountMode::ReadOnly,
            MountFlags::default(),
        );
        assert_eq!(x.options, ["nouuid", "ro"]);
    }
}
