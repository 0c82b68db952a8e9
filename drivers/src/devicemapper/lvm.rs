//! LVM mode: a thin pool in an LVM thin-pool LV, made by `--lvm` or adopted with `--thinpool`
//! (`sys::lvm` wraps the tools).

use super::names::Names;
use super::pool_target::{attach_pool, exists, pool_status, remove_all, thin_ls};
use super::record::{LvmRecorded, Recorded};
use super::settings::{base_size_for, metadata_size_for, Settings, LVM_POOL_LV};
use super::thin::make_base;
use super::{block_size_of, bytes, NAME};
use crate::error::{DriverError, Result};
use crate::sys::lvm::{self, PoolLv};
use crate::{Bytes, Identity, PoolContext};
use devicemapper::{DevId, DmDevice, DM};
use std::path::PathBuf;

/// `pool init --lvm` (a new VG and thin-pool LV on the devices) or `--thinpool VG/LV` (an
/// existing, empty thin-pool LV), then the base device as for any pool.
pub(super) fn format_lvm(dm: &DM, ctx: &PoolContext, s: &Settings) -> Result<Identity> {
    let (lv, created) = match &s.thinpool {
        Some(t) => (t.clone(), None),
        None => {
            let vg =
                s.vg.clone()
                    .unwrap_or_else(|| format!("blkdrv-{}", ctx.pool));
            let lv = PoolLv {
                vg,
                lv: s.pool_lv.clone().unwrap_or_else(|| LVM_POOL_LV.into()),
            };
            // No devices: the VG must exist (plan() allows that only with --vg); its free
            // space takes the pool.
            let meta_for = |data: Bytes| {
                s.metadata_size
                    .unwrap_or_else(|| metadata_size_for(data, s.block_size))
            };
            let c = lvm::create_thin_pool(
                &lvm::ThinPoolSpec {
                    pool: &lv,
                    chunk: s.block_size,
                    data: s.data_size.unwrap_or_default(),
                    min_data: s.min_data_size,
                    meta_for: &meta_for,
                    autoextend: s.autoextend,
                },
                &ctx.devices,
            )?;
            (lv, Some(c))
        }
    };
    let names = Names::new(format!("blkdrv-{}", crate::id::random_tag()), Some(&lv));
    let made = (|| {
        let info = lvm::pool_info(&lv)?;
        if info.thin_lvs > 0 {
            return Err(DriverError::Device {
                device: PathBuf::from(format!("/dev/{lv}")),
                reason: format!(
                    "has {} LVM thin volume(s); blkdrv needs a thin pool of its own (lvcreate --type thin-pool)",
                    info.thin_lvs
                ),
            });
        }
        if !exists(dm, &names.pool())? {
            lvm::activate(&lv)?;
        }
        let pool = attach_pool(dm, &names.pool())?;
        if created.is_none() {
            // Someone else's thin devices would collide with blkdrv's ids.
            let txid = pool_status(dm, &names, &pool)?.transaction_id;
            let ids = thin_ls(dm, &names, &pool)?;
            if txid != 0 || !ids.is_empty() {
                return Err(DriverError::Device {
                    device: PathBuf::from(format!("/dev/{lv}")),
                    reason: format!(
                        "is in use: transaction id {txid} and {} thin device(s) (ids {}); blkdrv adopts only an empty thin pool",
                        ids.len(),
                        ids.iter().map(|(i, _, _)| i.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        let data = bytes(pool.data_dev().size());
        let mut s = s.clone();
        s.block_size = block_size_of(&pool);
        let base_size = base_size_for(&s, data, s.min_size())?;
        let uuid = make_base(dm, &names, &pool, &s, base_size).inspect_err(|_| {
            if created.is_none() {
                // Give the adopted pool back as found: without the half-made base.
                let _ = dm.target_msg(&DevId::Name(&names.pool()), None, "delete 0");
            }
        })?;
        Ok((info, base_size, uuid))
    })();
    let (info, base_size, uuid) = match made {
        Ok(m) => m,
        Err(e) => {
            // Leave an adopted pool as found; remove what blkdrv made.
            let undo = match &created {
                Some(c) => {
                    remove_all(dm, &names).and_then(|()| lvm::remove_thin_pool(c, &ctx.devices))
                }
                None => remove_all(dm, &names),
            };
            if let Err(u) = undo {
                tracing::warn!("cleaning up after a failed LVM pool init: {u}");
            }
            return Err(e);
        }
    };
    let rec = Recorded {
        dm_prefix: names.prefix.clone(),
        base_fs_uuid: uuid,
        base_size,
        fs: s.fs,
        lvm: Some(LvmRecorded {
            lvm_pool: lv,
            lvm_uuid: info.uuid,
            lvm_created: created.is_some(),
            lvm_vg_created: created.as_ref().is_some_and(|c| c.vg_created),
        }),
    };
    Identity::record(NAME, &rec)
}
