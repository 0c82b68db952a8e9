//! The pool's backing: space (see `status`), grow, autoextend, deactivate, destroy.

use super::pool_target::{attach_pool, pool_status, remove_all, set_txid, thin_ls};
use super::{bytes, device_of, dm_err, sectors, DmThin, Home, Inner};
use crate::error::{DriverError, Result};
use crate::sys::{blockdev, lvm};
use crate::{Backing, Bytes, Space};
use devicemapper as dmc;
use devicemapper::{DevId, DmDevice, LinearDevTargetParams, LinearTargetParams, TargetLine};
use std::path::PathBuf;

impl Backing for DmThin {
    fn space(&self) -> Result<Space> {
        self.space_report()
    }

    fn deactivate(&self) -> Result<()> {
        let g = self.lock();
        remove_all(&g.dm, &self.names)?;
        if let Home::Lvm { pool, .. } = &self.home {
            lvm::deactivate(pool)?;
        }
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        let g = self.lock();
        remove_all(&g.dm, &self.names)?;
        match &self.home {
            Home::Devices => Ok(()),
            Home::Lvm {
                pool,
                created: true,
                vg_created,
            } => lvm::remove_thin_pool(
                &lvm::Created {
                    pool: pool.clone(),
                    vg_created: *vg_created,
                },
                &self.devices,
            ),
            Home::Lvm { pool, .. } => {
                // An adopted pool goes back empty: blkdrv's thin devices (and base) deleted.
                let id = DevId::Name(&self.names.pool);
                for (n, _, _) in thin_ls(&g.dm, &self.names, &g.pool)? {
                    g.dm.target_msg(&id, None, &format!("delete {n}"))
                        .map_err(|e| dm_err("delete thin device from", &*self.names.pool, e))?;
                }
                let t = pool_status(&g.dm, &self.names, &g.pool)?.transaction_id;
                set_txid(&g.dm, &self.names, t, 0)?;
                lvm::deactivate(pool)
            }
        }
    }

    fn autoextend(&self) -> Result<Option<String>> {
        let Home::Lvm { pool, .. } = &self.home else {
            return Ok(None);
        };
        // dmeventd does this on hosts that run it; blkdrv also checks at each command, so
        // pools grow where nothing monitors them (containers, the test VM).
        let threshold =
            lvm::profile_threshold(pool).unwrap_or(self.settings.autoextend.threshold_pct);
        let w = self.status()?;
        let (used, total) = (w.usage.used_data.0, w.usage.total_data.0.max(1));
        if used * 100 < total * u64::from(threshold) {
            return Ok(None);
        }
        let grown = lvm::extend_by_policy(pool)?;
        // The pool's table changed under the handle: attach again.
        let mut g = self.lock();
        let fresh = attach_pool(&g.dm, &self.names.pool)?;
        g.pool = fresh;
        Ok(grown.map(|size| {
            format!(
                "grew LVM thin pool {pool} to {size}: {}% of its data was used (threshold {threshold}%)",
                used * 100 / total
            )
        }))
    }

    fn grow(&self) -> Result<()> {
        if matches!(self.home, Home::Lvm { .. }) {
            return Ok(());
        }
        let mut g = self.lock();
        let data_dev = self.devices.first().cloned().ok_or(DriverError::Device {
            device: PathBuf::from("-"),
            reason: "no data device".into(),
        })?;
        let size = blockdev::size(&data_dev)?;
        let offset = if self.devices.len() == 1 {
            // Split device: data follows the metadata area.
            bytes(g.pool.meta_dev().size())
        } else {
            Bytes::ZERO
        };
        let len = size.saturating_sub(offset);
        let params = LinearDevTargetParams::Linear(LinearTargetParams::new(
            device_of(&data_dev)?,
            sectors(offset),
        ));
        let Inner { dm, pool } = &mut *g;
        pool.set_data_table(
            dm,
            vec![TargetLine::new(dmc::Sectors(0), sectors(len), params)],
        )
        .and_then(|()| pool.resume(dm))
        .map_err(|e| dm_err("grow data of", &*self.names.pool(), e))
    }

    fn generation(&self) -> Result<Option<u64>> {
        self.txid().map(Some)
    }
}
