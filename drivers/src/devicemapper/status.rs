//! What `pool status` shows of a thin pool: data and metadata space, state and details.

use super::{DmThin, Home};
use crate::error::Result;
use crate::sys::lvm;
use crate::{Bytes, MetaSpace, Space};
use devicemapper::ThinPoolStatusSummary;

/// The thin-pool's metadata block size, fixed by the kernel.
const META_BLOCK: Bytes = Bytes::kib(4);

impl DmThin {
    /// Space and the details `pool status` shows.
    pub(super) fn space_report(&self) -> Result<Space> {
        let w = self.status()?;
        let total = self.block * w.usage.total_data.0;
        let used = self.block * w.usage.used_data.0;
        let meta_total = META_BLOCK * w.usage.total_meta.0;
        let meta_used = META_BLOCK * w.usage.used_meta.0;
        let state = match w.summary {
            ThinPoolStatusSummary::Good => "ok",
            ThinPoolStatusSummary::ReadOnly => "read-only (metadata problem: run thin_check)",
            ThinPoolStatusSummary::OutOfSpace => "out of data space (writes fail with ENOSPC)",
        };
        let mut details = vec![
            ("Pool Device".into(), (*self.names.pool()).to_string()),
            (
                "Pool Home".into(),
                match &self.home {
                    Home::Devices => "blkdrv's own thin-pool target".into(),
                    Home::Lvm { pool, created, .. } => format!(
                        "LVM thin-pool LV {pool} ({}, autoextend at {}% by {}%)",
                        if *created {
                            "made by blkdrv"
                        } else {
                            "adopted"
                        },
                        lvm::profile_threshold(pool)
                            .unwrap_or(self.settings.autoextend.threshold_pct),
                        self.settings.autoextend.percent
                    ),
                },
            ),
            ("Pool State".into(), state.to_string()),
            ("Needs Check".into(), w.needs_check.to_string()),
            (
                "Metadata Space".into(),
                format!("{meta_used} used of {meta_total}"),
            ),
            ("Transaction Id".into(), w.transaction_id.to_string()),
            ("Block Size".into(), self.block.to_string()),
            ("Base Device Size".into(), self.base_size.to_string()),
            ("Base Filesystem".into(), self.settings.fs.name().into()),
            (
                "Discard On Remove".into(),
                if self.settings.discard { "on" } else { "off" }.into(),
            ),
        ];
        // Loopback files: what the host really spends vs. their apparent size.
        let loops = crate::sys::loopdev::list().unwrap_or_default();
        for (dev, file) in loops.iter().filter(|(d, _)| self.devices.contains(d)) {
            use std::os::unix::fs::MetadataExt;
            if let Ok(md) = std::fs::metadata(file) {
                details.push((
                    format!("Loop File {}", dev.display()),
                    format!(
                        "{} ({} allocated of {})",
                        file.display(),
                        Bytes(md.blocks() * 512),
                        Bytes(md.len())
                    ),
                ));
            }
        }
        Ok(Space {
            total,
            used,
            available: total.saturating_sub(used),
            inodes_total: 0,
            inodes_free: 0,
            unallocated: Some(total.saturating_sub(used)),
            pending: None,
            metadata: Some(MetaSpace {
                total: meta_total,
                available: meta_total.saturating_sub(meta_used),
            }),
            details,
        })
    }
}
