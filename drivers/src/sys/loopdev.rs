//! Loop devices for loopback pools, through the loopdev-3 crate (LOOP_CTL_GET_FREE +
//! LOOP_CONFIGURE ioctls) and sysfs for lookups.

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
/// Autoclear is set: the kernel detaches the device when its last user (the mount, the dm table)
/// goes away, so an unmounted pool never leaks a loop device, even if blkdrv is killed.
pub fn attach(file: &Path) -> Result<AttachedLoop> {
    let file = file
        .canonicalize()
        .map_err(|e| DriverError::io("resolve loop backing file", file, e))?;
    if let Some(path) = find_by_backing_file(&file)?.into_iter().next() {
        let dev = loopdev::LoopDevice::open(&path)
            .map_err(|e| DriverError::io("open loop device", &path, e))?;
        return Ok(AttachedLoop { path, _dev: dev });
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

/// Detaches a loop device (no-op when it has no backing file any more).
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

/// Loop devices whose backing file is `file`, from /sys/block/loopN/loop/backing_file.
pub fn find_by_backing_file(file: &Path) -> Result<Vec<PathBuf>> {
    Ok(list()?
        .into_iter()
        .filter(|(_, backing)| backing == file)
        .map(|(dev, _)| dev)
        .collect())
}

/// Every attached loop device with its backing file.
pub fn list() -> Result<Vec<(PathBuf, PathBuf)>> {
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
            // The kernel appends " (deleted)" when the file was unlinked while attached.
            let b = b.trim_end_matches('\n');
            let b = b.strip_suffix(" (deleted)").unwrap_or(b);
            out.push((PathBuf::from("/dev").join(&name), PathBuf::from(b)));
        }
    }
    out.sort();
    Ok(out)
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
