//! A pool backed by one filesystem on one device, mounted under the pool's state dir: ext4 or
//! xfs for the file-level drivers (vfs, overlay), btrfs for the btrfs driver. Keeping drivers on
//! the same kind of backing is what makes benchmarks compare like with like.

use crate::error::{DriverError, Result};
use crate::plan::OptionSpec;
use crate::sys::{blockdev, exec, mount, signature};
use crate::{Bytes, DriverOptions, Identity, PoolContext, Space};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Xfs,
    Ext4,
    Btrfs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Xfs => "xfs",
            FsType::Ext4 => "ext4",
            FsType::Btrfs => "btrfs",
        }
    }

    /// xfs (mkfs default reflink=1) and btrfs clone file extents on copy-up; ext4 copies data.
    pub fn reflink(self) -> bool {
        self != FsType::Ext4
    }

    pub fn parse(driver: &'static str, s: &str) -> Result<FsType> {
        match s {
            "xfs" => Ok(FsType::Xfs),
            "ext4" => Ok(FsType::Ext4),
            _ => Err(DriverError::BadOption {
                driver,
                key: "fs".into(),
                value: s.into(),
                reason: "expected xfs or ext4".into(),
            }),
        }
    }
}

/// What every file-level driver needs, plus its own kernel filesystems.
pub fn requirements(extra_filesystems: &[&'static str]) -> crate::Requirements {
    let mut filesystems = extra_filesystems.to_vec();
    filesystems.extend(["xfs", "ext4"]);
    crate::Requirements {
        filesystems,
        tools: vec!["mkfs.xfs", "mkfs.ext4"],
        paths: vec!["/dev/loop-control"],
    }
}

/// mkfs minimums: xfsprogs refuses filesystems under 300 MiB; ext4 needs far less.
pub fn min_device_size(options: &DriverOptions) -> Bytes {
    match Settings::parse("fs", options).map(|s| s.fs) {
        Ok(FsType::Ext4) => Bytes::mib(32),
        _ => Bytes::mib(300),
    }
}

/// Removes a layer directory and any half-built `<id>.tmp` beside it, then gives the freed
/// blocks back to a loopback file (see [`trim_loop_backed`]).
pub fn remove_object(dir: &Path) -> Result<()> {
    crate::sys::tree::remove_tree(&dir.with_extension("tmp"))?;
    crate::sys::tree::remove_tree(dir)?;
    if let Some(parent) = dir.parent() {
        // Best effort: the layer is gone either way; a failed trim only keeps host space.
        if let Err(e) = trim_loop_backed(parent) {
            tracing::warn!("after removing {}: {e}", dir.display());
        }
    }
    Ok(())
}

/// `struct fstrim_range` of <linux/fs.h>.
#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

// FITRIM = _IOWR('X', 121, struct fstrim_range)
nix::ioctl_readwrite!(fitrim, b'X', 121, FstrimRange);

/// Discards the free space of the filesystem holding `path` when it sits on a loop device:
/// xfs and ext4 keep freed blocks allocated in the sparse backing file otherwise, and the loop
/// driver turns a discard into a hole punch. Filesystems on real disks are left to the admin's
/// own trim policy (a trim of a large disk takes long, and `discard` may be mounted already).
/// Returns the bytes the filesystem trimmed, `None` when it was not on a loop device.
pub fn trim_loop_backed(path: &Path) -> Result<Option<Bytes>> {
    use std::os::fd::AsRawFd;
    if !blockdev::on_loop_device(path)? {
        return Ok(None);
    }
    let dir = std::fs::File::open(path).map_err(|e| DriverError::io("open", path, e))?;
    // xfs frees an unlinked file's blocks in the background (inode inactivation), which a
    // statfs waits for, and skips extents whose freeing its log has not committed, which a
    // syncfs commits. Without both a trim right after the remove found nothing to discard.
    nix::sys::statvfs::fstatvfs(&dir)
        .map_err(|e| DriverError::sys("statvfs", path.display(), e))?;
    nix::unistd::syncfs(&dir).map_err(|e| DriverError::sys("sync", path.display(), e))?;
    let mut range = FstrimRange {
        start: 0,
        len: u64::MAX,
        minlen: 0,
    };
    // xfs completes the discards (the loop driver's hole punches) shortly after FITRIM returns.
    // SAFETY: the fd is open for the call and `range` is a valid fstrim_range.
    match unsafe { fitrim(dir.as_raw_fd(), &mut range) } {
        // A loop device over a file system that cannot punch holes refuses discards.
        Err(nix::errno::Errno::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(DriverError::sys(
            "trim (FITRIM) the filesystem of",
            path.display(),
            e,
        )),
        // The kernel writes back how many bytes it trimmed.
        Ok(_) => Ok(Some(Bytes(range.len))),
    }
}

/// Option keys this backing understands.
pub const KEY_FS: &str = "fs";

/// The identity a file-level pool records: its filesystem, found again by UUID on open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    fs_uuid: String,
    fs: FsType,
}

/// The options of the file-level drivers.
pub const OPTIONS: &[OptionSpec] = &[OptionSpec::flag(
    KEY_FS,
    "fs",
    "FS",
    "Filesystem of the backing (vfs, overlay) or of the thin devices (devicemapper): xfs \
     (default) or ext4.",
)
.host_default()];

/// The options of a file-level driver, parsed: the one reader of its option map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub fs: FsType,
}

impl Settings {
    /// Checks the keys (unknown ones are refused) and `fs` (default xfs).
    pub fn parse(driver: &'static str, options: &DriverOptions) -> Result<Settings> {
        crate::options::check_known(driver, options, &crate::plan::stored_keys(OPTIONS))?;
        let fs = options.get(KEY_FS).map(String::as_str).unwrap_or("xfs");
        Ok(Settings {
            fs: FsType::parse(driver, fs)?,
        })
    }

    pub fn to_options(self) -> DriverOptions {
        [(KEY_FS.to_string(), self.fs.name().to_string())].into()
    }
}

/// Validates `fs` (default xfs) and rejects keys the driver does not know.
pub fn validate_options(driver: &'static str, options: &DriverOptions) -> Result<DriverOptions> {
    Settings::parse(driver, options).map(Settings::to_options)
}

fn fs_type(ctx: &PoolContext) -> Result<FsType> {
    Settings::parse("fs", &ctx.options).map(|s| s.fs)
}

fn single_device(ctx: &PoolContext) -> Result<&Path> {
    match ctx.devices.as_slice() {
        [d] => Ok(d),
        other => Err(DriverError::Device {
            device: ctx.state_dir.clone(),
            reason: format!(
                "file-level drivers use exactly one device, got {}",
                other.len()
            ),
        }),
    }
}

/// Makes the filesystem chosen by the `fs` option and returns its UUID as the pool identity.
pub fn format(ctx: &PoolContext) -> Result<Identity> {
    format_as(ctx, fs_type(ctx)?)
}

/// Makes a filesystem of type `fs` on the pool's device; returns its UUID as the pool identity.
pub fn format_as(ctx: &PoolContext, fs: FsType) -> Result<Identity> {
    let dev = single_device(ctx)?;
    mkfs(dev, fs)?;
    let (_, uuid) = signature::fs_uuid(dev)?.ok_or_else(|| DriverError::Device {
        device: dev.to_path_buf(),
        reason: format!("no {} filesystem UUID after mkfs", fs.name()),
    })?;
    Identity::record("fs", &Recorded { fs_uuid: uuid, fs })
}

/// Makes a filesystem on `dev`, overwriting whatever is there (callers check signatures first).
/// The one place that knows blkdrv's mkfs arguments.
pub fn mkfs(dev: &Path, fs: FsType) -> Result<()> {
    mkfs_with(dev, fs, &[])
}

/// [`mkfs`] with the admin's extra arguments (`--mkfs-arg`), placed before the device so they
/// override blkdrv's defaults where the tool lets later options win.
pub fn mkfs_with(dev: &Path, fs: FsType, extra: &[String]) -> Result<()> {
    let (program, defaults, purpose): (&str, &[&str], &'static str) = match fs {
        // -K: do not discard the whole device at mkfs (slow on big sparse loop files).
        FsType::Xfs => (
            "mkfs.xfs",
            &["-q", "-f", "-K", "-m", "reflink=1"],
            "format an xfs filesystem",
        ),
        // Lazy init off: otherwise ext4 zeroes inode tables in the background after mount,
        // which skews the first minutes of any benchmark.
        FsType::Ext4 => (
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            ],
            "format an ext4 filesystem",
        ),
        FsType::Btrfs => (
            "mkfs.btrfs",
            &["-q", "-f", "-K"],
            "format a btrfs filesystem",
        ),
    };
    let args = defaults
        .iter()
        .map(std::ffi::OsStr::new)
        .chain(extra.iter().map(std::ffi::OsStr::new))
        .chain(std::iter::once(dev.as_os_str()));
    exec::run(program, args, purpose).map(drop)
}

/// A mounted file-level backing.
#[derive(Debug)]
pub struct FsBacking {
    pub mnt: PathBuf,
    /// A second mount of the same filesystem with `nodev`, made by the first export that asks
    /// for nodev (see [`FsBacking::export_source`]).
    export_mnt: PathBuf,
    pub fs: FsType,
    pub device: PathBuf,
    /// The filesystem UUID recorded at format and found on the device.
    pub uuid: String,
}

impl FsBacking {
    /// Checks the device still carries the recorded filesystem, then mounts it (unless it is
    /// already mounted there) and makes sure `subdir` exists.
    pub fn open(ctx: &PoolContext, identity: &Identity, subdir: &str) -> Result<FsBacking> {
        Self::open_as(ctx, identity, fs_type(ctx)?, subdir)
    }

    /// [`FsBacking::open`] for a filesystem type the driver fixes itself.
    pub fn open_as(
        ctx: &PoolContext,
        identity: &Identity,
        fs: FsType,
        subdir: &str,
    ) -> Result<FsBacking> {
        let dev = single_device(ctx)?.to_path_buf();
        let found = signature::fs_uuid(&dev)?.map(|(_, u)| u);
        let recorded = identity.read::<Recorded>(&dev)?.fs_uuid;
        if found.as_deref() != Some(recorded.as_str()) {
            return Err(DriverError::IdentityMismatch {
                device: dev,
                field: "fs_uuid".into(),
                recorded: recorded.clone(),
                found: found.unwrap_or_else(|| "no filesystem".into()),
            });
        }
        let mnt = ctx.state_dir.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| DriverError::io("create", &mnt, e))?;
        if !mount::is_mountpoint(&mnt)? {
            mount::mount(&dev, &mnt, fs.name(), nix::mount::MsFlags::empty(), None)?;
        }
        let sub = mnt.join(subdir);
        std::fs::create_dir_all(&sub).map_err(|e| DriverError::io("create", &sub, e))?;
        Ok(FsBacking {
            export_mnt: ctx.state_dir.join("export"),
            mnt,
            fs,
            device: dev,
            uuid: recorded,
        })
    }

    pub fn space(&self) -> Result<Space> {
        let st = nix::sys::statvfs::statvfs(&self.mnt)
            .map_err(|e| DriverError::sys("statvfs", self.mnt.display(), e))?;
        let frsize = st.fragment_size();
        let total = Bytes(st.blocks() * frsize);
        let free = Bytes(st.blocks_free() * frsize);
        let available = Bytes(st.blocks_available() * frsize);
        Ok(Space {
            total,
            used: total.saturating_sub(free),
            available,
            inodes_total: st.files(),
            inodes_free: st.files_free(),
            // xfs and ext4 grow online into a longer device: what they have left is what the
            // pool watches to grow a loopback file (btrfs reports its unallocated chunks).
            unallocated: (self.fs != FsType::Btrfs).then_some(available),
            pending: None,
            metadata: None,
            details: vec![
                ("Backing Filesystem".into(), self.fs.name().into()),
                ("Backing Device".into(), self.device.display().to_string()),
                ("Mounted At".into(), self.mnt.display().to_string()),
            ],
        })
    }

    pub fn deactivate(&self) -> Result<()> {
        if mount::is_mountpoint(&self.export_mnt).unwrap_or(false) {
            mount::unmount(&self.export_mnt)?;
        }
        mount::unmount(&self.mnt)
    }

    /// Where another process binds `path` (a dir under [`FsBacking::mnt`]) from. A bind mount
    /// takes the per-mount flags of the mount it is made from, and containerd makes read-write
    /// binds in one mount(2) that ignores `nodev`: so a `nodev` export names the dir through a
    /// second mount of the same filesystem (same superblock, same files) that is `nodev`
    /// itself. Never `nosuid`: containers run setuid programs.
    pub fn export_source(&self, path: &Path, flags: crate::MountFlags) -> Result<PathBuf> {
        if !flags.nodev {
            return Ok(path.to_path_buf());
        }
        let rel = path.strip_prefix(&self.mnt).map_err(|_| {
            DriverError::io("export", path, std::io::Error::other("not in the backing"))
        })?;
        if !mount::is_mountpoint(&self.export_mnt)? {
            std::fs::create_dir_all(&self.export_mnt)
                .map_err(|e| DriverError::io("create", &self.export_mnt, e))?;
            mount::mount(
                &self.device,
                &self.export_mnt,
                self.fs.name(),
                nix::mount::MsFlags::MS_NODEV,
                None,
            )?;
        }
        Ok(self.export_mnt.join(rel))
    }

    /// Takes up a grown device online: xfs_growfs works on the mount point, resize2fs on the
    /// mounted device. btrfs grows through its own ioctl (the btrfs driver).
    pub fn grow(&self) -> Result<()> {
        match self.fs {
            FsType::Xfs => exec::run(
                "xfs_growfs",
                [std::ffi::OsStr::new("-d"), self.mnt.as_os_str()],
                "grow an xfs filesystem",
            )
            .map(drop),
            FsType::Ext4 => exec::run(
                "resize2fs",
                [self.device.as_os_str()],
                "grow an ext4 filesystem",
            )
            .map(drop),
            FsType::Btrfs => Ok(()),
        }
    }
}

/// Creates `final_dir` atomically: `build` fills a sibling temp dir, which is then renamed.
/// A leftover temp or final dir from a crashed attempt is removed first, so a retried create
/// after a crash starts clean.
pub fn create_atomically(final_dir: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = final_dir.with_extension("tmp");
    crate::sys::tree::remove_tree(&tmp)?;
    crate::sys::tree::remove_tree(final_dir)?;
    std::fs::create_dir(&tmp).map_err(|e| DriverError::io("create", &tmp, e))?;
    build(&tmp)?;
    std::fs::rename(&tmp, final_dir).map_err(|e| DriverError::io("rename into place", final_dir, e))
}

/// Ids of layer directories under `dir` (names that are decimal object ids).
pub fn list_ids(dir: &Path) -> Result<Vec<crate::ObjectId>> {
    let mut ids: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| DriverError::io("list", dir, e))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // A half-built `<id>.tmp` is an on-disk object too: report it so checks see it.
            crate::ObjectId::parse(name.strip_suffix(".tmp").unwrap_or(&name))
        })
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// What the directory drivers (vfs, overlay) answer a volume limit: their volumes are plain
/// directories on the shared backing, which has no per-directory quota (as Docker's `local`
/// volumes without options). Asked before anything is made, so a refused create leaves nothing.
pub fn refuse_volume_limit(driver: &'static str, id: crate::ObjectId, limit: Bytes) -> DriverError {
    DriverError::Unsupported {
        driver,
        what: format!(
            "a size limit of {limit} on volume object {id}: {driver} volumes are plain \
             directories without per-volume limits, like Docker's local volumes"
        ),
    }
}
