//! Facts about block devices, from sysfs, /proc and a few ioctls: device numbers, size,
//! partitions, what uses a device (mounts, processes, stacked dm/md devices), and discard.
//!
//! Every driver and the pool ask here; none reads /sys/dev/block or /sys/block itself.

use super::mount::{self, MountInfo};
use super::signature;
use crate::error::{DriverError, Result};
use crate::units::{Bytes, Sectors};
use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A device number as sysfs and /proc/self/mountinfo write it ("8:16").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

impl DevNo {
    /// Splits a glibc dev_t (st_rdev, st_dev).
    pub fn from_raw(dev: u64) -> DevNo {
        DevNo {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
        }
    }

    /// The number of the block device node `node`; an error if it is something else.
    pub fn of_node(node: &Path) -> Result<DevNo> {
        let md = std::fs::metadata(node).map_err(|e| DriverError::io("stat device", node, e))?;
        if !md.file_type().is_block_device() {
            return Err(DriverError::Device {
                device: node.to_path_buf(),
                reason: "is not a block device".to_string(),
            });
        }
        Ok(DevNo::from_raw(md.rdev()))
    }

    /// The number of the device holding the filesystem `path` is on (its st_dev).
    pub fn of_filesystem(path: &Path) -> Result<DevNo> {
        let md = std::fs::metadata(path).map_err(|e| DriverError::io("stat", path, e))?;
        Ok(DevNo::from_raw(md.dev()))
    }

    /// The device's sysfs directory, /sys/dev/block/MAJ:MIN (a link into /sys/devices).
    pub fn sys_dir(self) -> PathBuf {
        Path::new(SYS_DEV_BLOCK).join(self.to_string())
    }
}

impl std::fmt::Display for DevNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for DevNo {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<DevNo, String> {
        let bad = || format!("'{s}' is not MAJOR:MINOR");
        let (major, minor) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(DevNo {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

const SYS_DEV_BLOCK: &str = "/sys/dev/block";
const SYS_BLOCK: &str = "/sys/block";

/// Size of the block device `node`, from sysfs (no open, so it works on busy devices).
pub fn size(node: &Path) -> Result<Bytes> {
    let sys = DevNo::of_node(node)?.sys_dir().join("size");
    // sysfs counts 512-byte sectors whatever the device's logical block size.
    let sectors: u64 = std::fs::read_to_string(&sys)
        .map_err(|e| DriverError::io("read", &sys, e))?
        .trim()
        .parse()
        .map_err(|_| DriverError::Device {
            device: node.to_path_buf(),
            reason: format!("unreadable size in {}", sys.display()),
        })?;
    Ok(Sectors(sectors).bytes())
}

/// Whether the filesystem holding `path` sits on a loop device.
pub fn on_loop_device(path: &Path) -> Result<bool> {
    Ok(DevNo::of_filesystem(path)?.sys_dir().join("loop").exists())
}

/// Whether the kernel device `name` (sda1, vdb) is a partition of another disk.
pub fn is_partition(name: &str) -> bool {
    Path::new("/sys/class/block")
        .join(name)
        .join("partition")
        .exists()
}

/// The device-mapper name of the kernel device `name` (dm-3), None if it is not a dm device.
pub fn dm_name(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(SYS_BLOCK).join(name).join("dm/name"))
        .ok()
        .map(|n| n.trim().to_string())
}

/// The device and each of its partitions.
fn with_partitions(dev: DevNo) -> Vec<DevNo> {
    with_partitions_in(Path::new(SYS_DEV_BLOCK), dev)
}

/// `own` and the partitions listed under `sys_root/own` (sysfs layout).
fn with_partitions_in(sys_root: &Path, own: DevNo) -> Vec<DevNo> {
    let mut out = vec![own];
    let sys_dir = sys_root.join(own.to_string());
    // Partitions are subdirectories named after the disk (sda/sda1, nvme0n1/nvme0n1p1).
    let Some(name) = std::fs::canonicalize(&sys_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return out;
    };
    for entry in std::fs::read_dir(&sys_dir).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&name) {
            continue;
        }
        if let Some(dev) = read_devno(&entry.path().join("dev")) {
            out.push(dev);
        }
    }
    out
}

fn read_devno(path: &Path) -> Option<DevNo> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

/// The devices of every mounted btrfs filesystem that has one of `numbers` as a member: btrfs
/// shows one anonymous st_dev and a single source for all its devices, so a second member would
/// otherwise look unused.
fn btrfs_siblings_in(sys_fs_btrfs: &Path, numbers: &HashSet<DevNo>) -> Vec<DevNo> {
    let mut out = Vec::new();
    for fs_dir in std::fs::read_dir(sys_fs_btrfs)
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(members) = std::fs::read_dir(fs_dir.path().join("devices")) else {
            continue;
        };
        let devs: Vec<DevNo> = members
            .flatten()
            .filter_map(|m| read_devno(&m.path().join("dev")))
            .collect();
        if devs.iter().any(|d| numbers.contains(d)) {
            out.extend(devs);
        }
    }
    out
}

/// Mount points of the block device `device` or of any of its partitions.
pub fn mounted_at(device: &Path) -> Result<Vec<PathBuf>> {
    let mut numbers: HashSet<DevNo> = with_partitions(DevNo::of_node(device)?)
        .into_iter()
        .collect();
    let siblings = btrfs_siblings_in(Path::new("/sys/fs/btrfs"), &numbers);
    numbers.extend(siblings);
    // Filesystems with an anonymous st_dev (btrfs) are found by their source device instead;
    // only /dev paths are stat'ed, so a dead network mount cannot hang us.
    let source_devno = |source: &str| {
        source
            .starts_with("/dev/")
            .then(|| DevNo::of_node(Path::new(source)).ok())
            .flatten()
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for m in mount::mountinfo()? {
        let on_it = numbers.contains(&m.major_minor)
            || source_devno(&m.source).is_some_and(|d| numbers.contains(&d));
        // Stacked mounts list the same point twice.
        if on_it && !out.contains(&m.target) {
            out.push(m.target);
        }
    }
    Ok(out)
}

/// Ok if `device` is a block device that is not mounted and carries no known signature.
/// Mounted devices are refused even with `force`; `force` only skips the signature check.
pub fn check_device_free(device: &Path, force: bool) -> Result<()> {
    let refuse = |reason: String| DriverError::Device {
        device: device.to_path_buf(),
        reason,
    };
    let mounts = mounted_at(device)?;
    if !mounts.is_empty() {
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        return Err(refuse(format!("is mounted at {}", list.join(", "))));
    }
    if force {
        return Ok(());
    }
    match signature::describe_found(device)? {
        None => Ok(()),
        Some(found) => Err(refuse(format!("has {found}; pass --force to overwrite"))),
    }
}

/// Something that keeps a block device in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process with the device open.
    Process { pid: u32, name: String },
    /// A block device stacked on it (/sys/block/NAME/holders: dm, md).
    Device(String),
    /// A filesystem mounted from it.
    Mount(PathBuf),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Process { pid, name } => write!(f, "pid {pid} ({name})"),
            Holder::Device(d) => write!(f, "device {d}"),
            Holder::Mount(m) => write!(f, "mount at {}", m.display()),
        }
    }
}

/// "held by pid 1234 (sleep), mount at /x", or that nothing visible holds it (a lazily
/// unmounted filesystem still in use, or a holder in another PID namespace).
pub fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "no holder visible: a lazily unmounted filesystem may still be in use".into();
    }
    let v: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    format!("held by {}", v.join(", "))
}

/// The process `pid` as a holder, named by its comm.
pub(crate) fn process(pid: u32, proc_dir: &Path) -> Holder {
    let name = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    Holder::Process {
        pid,
        name: name.trim().to_string(),
    }
}

/// Every /proc/PID directory, with its pid.
pub(crate) fn proc_dirs() -> impl Iterator<Item = (u32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| Some((p.file_name().to_str()?.parse().ok()?, p.path())))
}

/// Who keeps `dev` in use: processes with it open (/proc/*/fd), stacked devices
/// (/sys/block/NAME/holders) and mounts of it (/proc/self/mountinfo). Best effort: entries
/// that vanish or cannot be read while scanning are skipped.
pub fn holders(dev: &Path) -> Vec<Holder> {
    let mut out = Vec::new();
    let Ok(md) = std::fs::metadata(dev) else {
        return out;
    };
    let rdev = md.rdev();
    for (pid, dir) in proc_dirs() {
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        // stat follows the fd link to the device node without opening it.
        let holds = fds.flatten().any(|fd| {
            std::fs::metadata(fd.path())
                .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
        });
        if holds {
            out.push(process(pid, &dir));
        }
    }
    if let Some(name) = dev.file_name() {
        let dir = Path::new(SYS_BLOCK).join(name).join("holders");
        for h in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let n = h.file_name().to_string_lossy().into_owned();
            out.push(Holder::Device(match dm_name(&n) {
                Some(dm) => format!("{n} ({dm})"),
                None => n,
            }));
        }
    }
    if let Ok(ms) = mount::mountinfo() {
        out.extend(
            ms.into_iter()
                .filter(|m| mounted_from(m, &[dev.to_path_buf()]))
                .map(|m| Holder::Mount(m.target)),
        );
    }
    out
}

/// The block devices stacked on `dev`, recursively (a dm thin-pool on the loop device, the thin
/// volumes on that), from /sys/block/*/holders: their mounts use the pool too.
pub fn stacked_on(dev: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo: Vec<std::ffi::OsString> =
        dev.file_name().map(|n| vec![n.into()]).unwrap_or_default();
    // A holder graph is acyclic; the bound only guards against a sysfs surprise.
    while let Some(name) = todo.pop().filter(|_| out.len() < 4096) {
        let dir = Path::new(SYS_BLOCK).join(&name).join("holders");
        for h in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = Path::new("/dev").join(h.file_name());
            if !out.contains(&p) {
                out.push(p);
                todo.push(h.file_name());
            }
        }
    }
    out
}

/// Whether `m` is a filesystem on one of `devices` (block device paths). By the source, not
/// only by major:minor: btrfs reports an anonymous device number for its mounts.
pub(crate) fn mounted_from(m: &MountInfo, devices: &[PathBuf]) -> bool {
    let source = Path::new(&m.source);
    // Only absolute sources are paths ("overlay", "tmpfs" are not, and would resolve in cwd).
    let source = source
        .is_absolute()
        .then(|| source.canonicalize().ok())
        .flatten();
    devices.iter().any(|d| {
        source.as_deref() == Some(d.as_path())
            || std::fs::metadata(d).is_ok_and(|md| DevNo::from_raw(md.rdev()) == m.major_minor)
    })
}

/// Discards the first `len` bytes of the block device `node` (BLKDISCARD): the device may
/// return the space (a thin volume's blocks to its pool, a loop device's to its sparse file).
pub fn discard(node: &Path, len: Bytes) -> Result<()> {
    nix::ioctl_write_ptr_bad!(blkdiscard, 0x1277, [u64; 2]);
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(node)
        .map_err(|e| DriverError::io("open", node, e))?;
    let range = [0u64, len.0];
    // SAFETY: BLKDISCARD reads two u64 (start, length) from the pointer.
    unsafe { blkdiscard(f.as_raw_fd(), &range) }
        .map(drop)
        .map_err(|e| DriverError::sys("discard", node.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn dev(major: u32, minor: u32) -> DevNo {
        DevNo { major, minor }
    }

    #[test]
    fn devno_text_round_trips() {
        assert_eq!("259:4\n".parse::<DevNo>(), Ok(dev(259, 4)));
        assert_eq!(dev(8, 16).to_string(), "8:16");
        assert!("8".parse::<DevNo>().is_err());
        assert!("a:1".parse::<DevNo>().is_err());
        assert_eq!(
            DevNo::from_raw(nix::sys::stat::makedev(253, 7)),
            dev(253, 7)
        );
        assert_eq!(dev(7, 3).sys_dir(), PathBuf::from("/sys/dev/block/7:3"));
    }

    #[test]
    fn partitions_from_sysfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("devices/virtual/block/loop3");
        for (sub, dev) in [
            ("loop3p1", "259:4\n"),
            ("loop3p2", "259:5\n"),
            ("queue", ""),
        ] {
            std::fs::create_dir_all(disk.join(sub)).unwrap();
            if !dev.is_empty() {
                std::fs::write(disk.join(sub).join("dev"), dev).unwrap();
            }
        }
        std::fs::write(disk.join("dev"), "7:3\n").unwrap();
        let root = dir.path().join("dev-block");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&disk, root.join("7:3")).unwrap();
        let mut got = with_partitions_in(&root, dev(7, 3));
        got.sort();
        assert_eq!(got, vec![dev(7, 3), dev(259, 4), dev(259, 5)]);
        assert_eq!(with_partitions_in(&root, dev(8, 0)), vec![dev(8, 0)]);
    }

    #[test]
    fn btrfs_members_from_sysfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        for (fsid, member, dev) in [
            ("aaaa", "loop1", "7:1"),
            ("aaaa", "loop2", "7:2"),
            ("bbbb", "loop3", "7:3"),
        ] {
            let m = dir.path().join(fsid).join("devices").join(member);
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("dev"), format!("{dev}\n")).unwrap();
        }
        let numbers: HashSet<DevNo> = [dev(7, 2)].into();
        let mut got = btrfs_siblings_in(dir.path(), &numbers);
        got.sort();
        assert_eq!(got, vec![dev(7, 1), dev(7, 2)]);
        let none: HashSet<DevNo> = [dev(8, 0)].into();
        assert!(btrfs_siblings_in(dir.path(), &none).is_empty());
    }

    #[test]
    fn regular_file_is_not_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        File::create(&img).unwrap().set_len(1 << 20).unwrap();
        assert!(size(&img).is_err());
        for force in [false, true] {
            match check_device_free(&img, force) {
                Err(DriverError::Device { device, reason }) => {
                    assert_eq!(device, img);
                    assert!(reason.contains("not a block device"), "{reason}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn tmpfs_is_not_on_a_loop_device() {
        // /dev is devtmpfs everywhere blkdrv runs: an anonymous device, no loop/ in sysfs.
        assert!(!on_loop_device(Path::new("/dev")).unwrap());
        assert!(!is_partition("no-such-device"));
        assert_eq!(dm_name("no-such-device"), None);
    }

    /// The device holding / (when / is a plain block device, as on a VM) is reported mounted,
    /// and refused even with force.
    #[test]
    fn root_device_is_mounted() {
        let Some(root) = mount::mountinfo()
            .unwrap()
            .into_iter()
            .find(|m| m.target == Path::new("/"))
        else {
            return;
        };
        let dev = Path::new(&root.source);
        let is_blk = std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device());
        if !is_blk {
            eprintln!("skipping: / is on {}, not a block device", root.source);
            return;
        }
        assert!(size(dev).unwrap() > Bytes::ZERO);
        let mounts = mounted_at(dev).unwrap();
        assert!(mounts.contains(&PathBuf::from("/")), "{mounts:?}");
        match check_device_free(dev, true) {
            Err(DriverError::Device { reason, .. }) => {
                assert!(reason.contains("is mounted at"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
