//! The virtual size of each thin device that is not the base's: sized volumes (`volume create
//! --size`) and the copies made of them. dm-thin's metadata keeps mappings, not sizes (a size is
//! only in the table of an active device), so activating a device after a reboot needs it from
//! here. One small file per device, `<state dir>/thin-sizes/<thin id>`, holding the size in
//! bytes; no file: the base's size, as every layer has.

use super::names::ThinId;
use crate::error::{DriverError, Result};
use crate::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub(super) struct Sizes {
    dir: PathBuf,
}

impl Sizes {
    pub(super) fn new(state_dir: &Path) -> Sizes {
        Sizes {
            dir: state_dir.join("thin-sizes"),
        }
    }

    fn path(&self, id: ThinId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The recorded size of `id`; `None`: it has the base's.
    pub(super) fn get(&self, id: ThinId) -> Result<Option<Bytes>> {
        let p = self.path(id);
        match std::fs::read_to_string(&p) {
            Ok(text) => text.trim().parse().map(|n| Some(Bytes(n))).map_err(|e| {
                DriverError::io(
                    "read thin device size from",
                    &p,
                    std::io::Error::other(format!("{e}: {:?}", text.trim())),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DriverError::io("read thin device size from", &p, e)),
        }
    }

    /// Records `size` for `id` durably (a temp file synced and renamed, the dir synced), before
    /// the device is made: a crash leaves a record for a device that may not exist, which
    /// [`Sizes::forget`] (every remove) takes away, never a device without its size.
    pub(super) fn set(&self, id: ThinId, size: Bytes) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| DriverError::io("create", &self.dir, e))?;
        let p = self.path(id);
        let tmp = p.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", size.0)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| DriverError::io("record thin device size in", &p, e))
    }

    /// Drops the record of `id`; none is fine.
    pub(super) fn forget(&self, id: ThinId) -> Result<()> {
        let p = self.path(id);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DriverError::io("remove thin device size", &p, e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_kept_per_device_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sizes::new(dir.path());
        let id: ThinId = "7".parse().unwrap();
        assert_eq!(s.get(id).unwrap(), None, "no dir yet: the base's size");
        s.set(id, Bytes::mib(512)).unwrap();
        assert_eq!(s.get(id).unwrap(), Some(Bytes::mib(512)));
        assert_eq!(s.get("8".parse().unwrap()).unwrap(), None);
        s.set(id, Bytes::gib(1)).unwrap();
        assert_eq!(Sizes::new(dir.path()).get(id).unwrap(), Some(Bytes::gib(1)));
        s.forget(id).unwrap();
        s.forget(id).unwrap();
        assert_eq!(s.get(id).unwrap(), None);
        std::fs::write(dir.path().join("thin-sizes/9"), "lots\n").unwrap();
        let e = s.get("9".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("lots"), "{e}");
    }
}
