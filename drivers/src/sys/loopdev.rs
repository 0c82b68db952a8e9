//! Loop devices for loopback pools, through the loopdev-3 crate (LOOP_CTL_GET_FREE +
//! LOOP_CONFIGURE ioctls), LOOP_GET_STATUS64 and sysfs for lookups.
//!
//! A device belongs to a file when it is attached to that file's inode (device and inode
//! number), never because the kernel's name for its backing file matches a path: after the file
//! is deleted and a new one created under the same name, a device kept attached by some holder
//! still shows that name. Who holds a device is [`blockdev::holders`].

use super::blockdev::{self, DevNo};
use crate::error::{DriverError, Result};
use std::path::{Path, PathBuf};

/// An attached loop device, held open. Keep it alive until something else (a mount, a dm
/// table) holds the device: autoclear detaches it as soon as the last opener closes it.
pub struct AttachedLoop {
    pub path: PathBuf,
    _dev: loopdev::LoopDevice,
}

/// Attaches `file` to a free loop device. If the file is already attached (a previous command,
/// or a crash), that device is reused, so attaching is idempotent.
///
/// "Already attached" means attached to this inode, not to this path: a device still attached to
/// an earlier file of the same name (deleted, but held open by some process) is the old file's
/// device, and formatting it would put the new data into an inode that vanishes with the last
/// holder. Such a device is left alone (and its holders named in a warning).
///
/// Autoclear is set: the kernel detaches the device when its last user (the mount, the dm table)
/// goes away, so an unmounted pool never leaks a loop device, even if blkdrv is killed.
pub fn attach(file: &Path) -> Result<AttachedLoop> {
    let file = file
        .canonicalize()
        .map_err(|e| DriverError::io("resolve loop backing file", file, e))?;
    let id = FileId::of(&file)?;
    for st in status_all()? {
        if st.file == Some(id) {
            let dev = loopdev::LoopDevice::open(&st.device)
                .map_err(|e| DriverError::io("open loop device", &st.device, e))?;
            // It may have been detached and reused for another file since the listing.
            if query(&dev).ok().flatten() == Some(id) {
                return Ok(AttachedLoop {
                    path: st.device,
                    _dev: dev,
                });
            }
        } else if st.deleted && st.backing == file {
            let who = blockdev::describe(&blockdev::holders(&st.device));
            tracing::warn!(
                "{} is still attached to a deleted earlier {} ({who}); not reusing it",
                st.device.display(),
                file.display()
            );
        }
    }
    let ctl = loopdev::LoopControl::open()
        .map_err(|e| DriverError::io("open", "/dev/loop-control", e))?;
    // Another process can take the free device between GET_FREE and the attach; retry then.
    let mut last = None;
    for _ in 0..16 {
        let dev = ctl
            .next_free()
            .map_err(|e| DriverError::io("find free loop device", "/dev/loop-control", e))?;
        match dev.with().autoclear(true).attach(&file) {
            Ok(()) => {
                let path = dev.path().ok_or_else(|| DriverError::Device {
                    device: file.clone(),
                    reason: "attached loop device has no path".into(),
                })?;
                tracing::debug!(file = %file.display(), dev = %path.display(), "loop attached");
                return Ok(AttachedLoop { path, _dev: dev });
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => last = Some(e),
            Err(e) => return Err(DriverError::io("attach loop device to", &file, e)),
        }
    }
    Err(DriverError::io(
        "attach loop device to",
        &file,
        last.unwrap_or_else(|| std::io::Error::other("no free loop device")),
    ))
}

/// Detaches a loop device (no-op when it has no backing file any more). While another process
/// holds the device open the kernel only marks it autoclear: it stays attached until that
/// process closes it (see [`blockdev::holders`]).
pub fn detach(dev: &Path) -> Result<()> {
    let ld = match loopdev::LoopDevice::open(dev) {
        Ok(ld) => ld,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DriverError::io("open loop device", dev, e)),
    };
    match ld.detach() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => Ok(()),
        Err(e) => Err(DriverError::io("detach loop device", dev, e)),
    }
}

/// Loop devices attached to the inode `file` names now (matched by device and inode, never by
/// path). Empty when `file` does not exist.
pub fn find_by_backing_file(file: &Path) -> Result<Vec<PathBuf>> {
    let id = match FileId::of(file) {
        Ok(id) => id,
        Err(DriverError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    Ok(status_all()?
        .into_iter()
        .filter(|s| s.file == Some(id))
        .map(|s| s.device)
        .collect())
}

/// Every attached loop device with its backing file as the kernel names it: a file unlinked
/// while attached keeps the kernel's " (deleted)" suffix, so the name never passes for the
/// file that now has that path. [`status_all`] has the parsed form.
pub fn list() -> Result<Vec<(PathBuf, PathBuf)>> {
    Ok(sysfs_loops()?
        .into_iter()
        .map(|(dev, raw, _)| (dev, PathBuf::from(raw)))
        .collect())
}

/// A file's identity: the device number of its filesystem and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// The filesystem's device.
    pub dev: DevNo,
    pub inode: u64,
}

impl FileId {
    pub fn of(path: &Path) -> Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let md =
            std::fs::metadata(path).map_err(|e| DriverError::io("stat backing file", path, e))?;
        Ok(FileId {
            dev: DevNo::from_raw(md.dev()),
            inode: md.ino(),
        })
    }

    /// From LOOP_GET_STATUS64, whose lo_device is the kernel's huge_encode_dev (major in bits
    /// 8..20, minor split around it), not glibc's dev_t layout.
    fn from_kernel(lo_device: u64, lo_inode: u64) -> FileId {
        FileId {
            dev: DevNo {
                major: ((lo_device >> 8) & 0xfff) as u32,
                minor: ((lo_device & 0xff) | ((lo_device >> 12) & 0xfff_ff00)) as u32,
            },
            inode: lo_inode,
        }
    }
}

/// One attached loop device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopStatus {
    /// /dev/loopN.
    pub device: PathBuf,
    /// The device's own number; None if sysfs did not say (detached while being listed).
    pub major_minor: Option<DevNo>,
    /// The backing file's last path, without the kernel's " (deleted)" suffix.
    pub backing: PathBuf,
    /// The backing file was unlinked while attached.
    pub deleted: bool,
    /// The backing file's identity; None if the device was detached while being listed.
    pub file: Option<FileId>,
}

/// Every attached loop device, with the identity of its backing file (LOOP_GET_STATUS64).
pub fn status_all() -> Result<Vec<LoopStatus>> {
    let mut out = Vec::new();
    for (device, raw, major_minor) in sysfs_loops()? {
        let (backing, deleted) = match raw.strip_suffix(" (deleted)") {
            Some(b) => (PathBuf::from(b), true),
            None => (PathBuf::from(&raw), false),
        };
        // Read-only: closing a device opened for writing makes udev re-probe it.
        let file = match std::fs::File::open(&device) {
            Ok(f) => query(&f).ok().flatten(),
            Err(_) => None,
        };
        out.push(LoopStatus {
            device,
            major_minor,
            backing,
            deleted,
            file,
        });
    }
    Ok(out)
}

/// (/dev/loopN, backing_file as sysfs has it, device number) of attached devices.
fn sysfs_loops() -> Result<Vec<(PathBuf, String, Option<DevNo>)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir("/sys/block") {
        Ok(e) => e,
        Err(e) => return Err(DriverError::io("list", "/sys/block", e)),
    };
    for ent in entries.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(ent.path().join("loop/backing_file")) {
            let devno = std::fs::read_to_string(ent.path().join("dev"))
                .ok()
                .and_then(|d| d.parse().ok());
            out.push((
                PathBuf::from("/dev").join(&name),
                b.trim_end_matches('\n').to_string(),
                devno,
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// struct loop_info64 of <linux/loop.h>; loopdev-3 keeps its binding private.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);

/// The backing file of an open loop device; None when it is not attached (ENXIO).
fn query(dev: &impl std::os::fd::AsRawFd) -> std::io::Result<Option<FileId>> {
    // SAFETY: all-zero is a valid loop_info64 (integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is an open loop device and `info` is a loop_info64 the kernel fills.
    match unsafe { loop_get_status64(dev.as_raw_fd(), &mut info) } {
        Ok(_) => Ok(Some(FileId::from_kernel(info.lo_device, info.lo_inode))),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Tells the loop driver that the backing file changed size (after growing a sparse file).
pub fn refresh_capacity(dev: &Path) -> Result<()> {
    let ld =
        loopdev::LoopDevice::open(dev).map_err(|e| DriverError::io("open loop device", dev, e))?;
    ld.set_capacity()
        .map_err(|e| DriverError::io("set loop capacity", dev, e))
}

/// Creates a sparse file of `size` bytes (the data of a loopback pool). Fails if it exists.
pub fn create_sparse_file(path: &Path, size: crate::Bytes) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| DriverError::io("create sparse file", path, e))?;
    f.set_len(size.0)
        .map_err(|e| DriverError::io("size sparse file", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding_decodes_to_major_minor() {
        // huge_encode_dev(MKDEV(8, 1)) and MKDEV(259, 0x12345) (minor above 8 bits).
        let a = FileId::from_kernel(0x0801, 7);
        assert_eq!((a.dev.major, a.dev.minor, a.inode), (8, 1, 7));
        let d = 0x45 | (259 << 8) | ((0x12345u64 & !0xff) << 12);
        let b = FileId::from_kernel(d, 9);
        assert_eq!((b.dev.major, b.dev.minor), (259, 0x12345));
    }

    #[test]
    fn loop_info64_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
    }
}
