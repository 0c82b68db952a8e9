//! The pool's backing: space, growing file vdevs, export on deactivate, and destroy of what
//! blkdrv made (only its layers, in an adopted dataset).

use super::identity::Created;
use super::{collides, Vdev, Zfs};
use crate::error::{DriverError, Result};
use crate::sys::zfs::{self as z, Dataset, Failure};
use crate::{Backing, Space};
use std::path::{Path, PathBuf};

impl Zfs {
    fn file_vdevs(&self) -> impl Iterator<Item = &Path> {
        self.vdevs.iter().filter_map(|v| match v {
            Vdev::File(p) => Some(p.as_path()),
            Vdev::Device(_) => None,
        })
    }

    /// Destroys blkdrv's layers in an adopted dataset, clones before their origins, and leaves
    /// everything else.
    fn destroy_layers(&self) -> Result<()> {
        loop {
            let mine: Vec<z::Entry> = z::list_below(&self.rec.dataset, &["filesystem"])?
                .into_iter()
                .filter(|e| collides(&self.rec.dataset, &e.name))
                .collect();
            if mine.is_empty() {
                return Ok(());
            }
            // Leaves first: datasets whose snapshot no other of ours was cloned from.
            let leaves: Vec<&z::Entry> = mine
                .iter()
                .filter(|e| {
                    let snap = format!("{}@", e.name);
                    !mine.iter().any(|o| {
                        o.origin
                            .as_deref()
                            .is_some_and(|origin| origin.starts_with(&snap))
                    })
                })
                .collect();
            if leaves.is_empty() {
                return Err(DriverError::Device {
                    device: PathBuf::from(self.rec.dataset.as_str()),
                    reason: "could not order the layers for destruction (clone cycle?)".into(),
                });
            }
            for e in leaves {
                let ds = Dataset::new(&e.name).map_err(|err| DriverError::Device {
                    device: PathBuf::from(&e.name),
                    reason: err.to_string(),
                })?;
                match z::destroy(&ds, true) {
                    Ok(()) => {}
                    Err(err) if z::failure(&err) == Failure::Missing => {}
                    Err(err) => return Err(err),
                }
            }
        }
    }
}

impl Backing for Zfs {
    fn space(&self) -> Result<Space> {
        let pool = z::zpool_get(
            &self.rec.zpool,
            &[
                "size",
                "allocated",
                "free",
                "health",
                "capacity",
                "fragmentation",
            ],
        )?;
        let ds = z::get(
            self.rec.dataset.as_str(),
            &["used", "available", "compressratio"],
        )?;
        // The parent dataset's view: `available` already leaves out ZFS's slop reserve (up to
        // 128 MiB, a quarter of a small pool), which zpool `free` still counts.
        let used = ds.bytes("used")?;
        let available = ds.bytes("available")?;
        Ok(Space {
            total: used + available,
            used,
            available,
            inodes_total: 0,
            inodes_free: 0,
            // Only a zpool on blkdrv's own loopback files can grow (`zpool online -e` after the
            // pool lengthens a file); what writers can still use is what the policy watches.
            unallocated: (self.rec.created == Created::Zpool && self.file_vdevs().next().is_some())
                .then_some(available),
            pending: None,
            metadata: None,
            details: self.space_details(&pool, &ds),
        })
    }

    fn deactivate(&self) -> Result<()> {
        if self.rec.created != Created::Zpool {
            // Not blkdrv's zpool to take down; its layers are unmounted already.
            return Ok(());
        }
        match z::zpool_export(&self.rec.zpool) {
            Err(e) if z::failure(&e) == Failure::Missing => Ok(()),
            r => r,
        }
    }

    fn destroy(&self) -> Result<()> {
        match self.rec.created {
            Created::Zpool => match z::zpool_destroy(&self.rec.zpool) {
                Err(e) if z::failure(&e) == Failure::Missing => Ok(()),
                r => r,
            },
            Created::Dataset => match z::destroy(&self.rec.dataset, true) {
                Err(e) if z::failure(&e) == Failure::Missing => Ok(()),
                r => r,
            },
            Created::Nothing => self.destroy_layers(),
        }
    }

    fn grow(&self) -> Result<()> {
        if self.rec.created != Created::Zpool {
            return Ok(());
        }
        for f in self.file_vdevs() {
            z::zpool_expand(&self.rec.zpool, f)?;
        }
        Ok(())
    }
}
