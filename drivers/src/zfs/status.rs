//! The lines `pool status` shows about a zfs pool: zpool, dataset, health, vdevs.

use super::identity::Created;
use super::{Vdev, Zfs};
use crate::sys::zfs as z;
use crate::{Bytes, Sectors};

impl Zfs {
    pub(super) fn space_details(&self, pool: &z::Props, ds: &z::Props) -> Vec<(String, String)> {
        let bytes = |k: &str| pool.bytes(k).ok();
        let mut d = Vec::new();
        let home = match self.rec.created {
            Created::Zpool => {
                let files = self
                    .vdevs
                    .iter()
                    .filter(|v| matches!(v, Vdev::File(_)))
                    .count();
                if files > 0 {
                    format!("made by blkdrv on {files} loopback file vdev(s)")
                } else {
                    format!("made by blkdrv on {} device(s)", self.vdevs.len())
                }
            }
            _ => "an existing zpool".into(),
        };
        d.push(("Zpool".into(), format!("{} ({home})", self.rec.zpool)));
        d.push(("Zpool GUID".into(), self.rec.zpool_guid.to_string()));
        d.push((
            "Dataset".into(),
            format!(
                "{} ({})",
                self.rec.dataset,
                match self.rec.created {
                    Created::Zpool => "the zpool's root dataset",
                    Created::Dataset => "made by blkdrv",
                    Created::Nothing => "adopted",
                }
            ),
        ));
        d.push((
            "Health".into(),
            pool.get("health").unwrap_or("unknown").to_string(),
        ));
        if let (Some(size), Some(alloc), Some(free)) =
            (bytes("size"), bytes("allocated"), bytes("free"))
        {
            d.push((
                "Zpool Size".into(),
                format!("{size} ({alloc} allocated, {free} free)"),
            ));
        }
        let pct = |k: &str| pool.get(k).map_or("-".to_string(), |v| format!("{v}%"));
        d.push(("Capacity".into(), pct("capacity")));
        d.push(("Fragmentation".into(), pct("fragmentation")));
        d.push((
            "Compression".into(),
            match ds.get("compressratio") {
                Some(r) if self.compression != "off" => {
                    format!("{} (ratio {r}x)", self.compression)
                }
                _ => self.compression.clone(),
            },
        ));
        d.push(("Record Size".into(), self.recordsize.to_string()));
        for v in &self.vdevs {
            let line = match v {
                Vdev::File(p) => {
                    use std::os::unix::fs::MetadataExt;
                    match std::fs::metadata(p) {
                        Ok(md) => format!(
                            "{} (file, {} allocated of {})",
                            p.display(),
                            // st_blocks counts 512-byte units whatever the block size.
                            Sectors(md.blocks()).bytes(),
                            Bytes(md.len())
                        ),
                        Err(e) => format!("{} (file: {e})", p.display()),
                    }
                }
                Vdev::Device(p) => format!("{} (device)", p.display()),
            };
            d.push(("Vdev".into(), line));
        }
        d
    }
}
