//! The [`DriverFactory`]: planning, formatting and opening a pool.

use super::lvm::format_lvm;
use super::names::{Names, ThinId};
use super::pool_target::{areas, attach_pool, exists, remove_all, setup_pool, zero_head};
use super::record::{LvmRecorded, Recorded};
use super::settings::{
    bad, base_size_for, metadata_size_for, Settings, KEY_LVM, KEY_METADATA_DEVICE, OPTIONS,
};
use super::thin::make_base;
use super::{block_size_of, dm, DmThin, Home, Inner, NAME};
use crate::error::{DriverError, Result};
use crate::plan::{self, BackingPlan, BackingRequest, LoopbackFile, OptionSpec};
use crate::sys::{lvm, signature};
use crate::{Bytes, Driver, DriverFactory, DriverOptions, Identity, PoolContext, Requirements};
use std::path::PathBuf;
use std::sync::Mutex;

pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn suits(&self, _host: &crate::HostFacts) -> Option<crate::Suitability> {
        Some(crate::Suitability {
            rank: 50,
            why: "the kernel has dm-thin: block-level copy-on-write".into(),
        })
    }

    fn description(&self) -> &'static str {
        "device-mapper thin provisioning (block copy-on-write, thin snapshots)"
    }

    fn init_help(&self) -> &'static str {
        "devicemapper makes a thin pool on two loopback files, on --device DATA \
[--metadata-device META], on an LVM volume group it creates (--lvm --device DEV [--vg NAME]) or \
on an existing empty LVM thin pool (--thinpool VG/LV). Examples:\n  \
blkdrv pool init --driver devicemapper --size 20G\n  \
blkdrv pool init --driver devicemapper --lvm --device /dev/sdb\n  \
blkdrv pool init --driver devicemapper --thinpool docker/thinpool"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            filesystems: vec!["xfs", "ext4"],
            tools: vec!["thin_check", "thin_ls", "mkfs.xfs", "mkfs.ext4"],
            // The node /dev/mapper/control can exist without the driver (packages create it);
            // sysfs shows whether the kernel really has device-mapper.
            paths: vec!["/sys/class/misc/device-mapper"],
        }
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        Settings::parse(options).map(|s| s.to_options())
    }

    fn plan(&self, options: &DriverOptions, request: &BackingRequest) -> Result<BackingPlan> {
        let s = Settings::parse(options)?;
        let meta_device = request
            .option_devices
            .get(KEY_METADATA_DEVICE)
            .is_some_and(|d| !d.is_empty());
        if s.lvm && meta_device {
            return Err(DriverError::BadRequest {
                driver: NAME,
                reason: "--metadata-device goes with plain devices; --lvm puts metadata in the \
                         volume group: pick one"
                    .into(),
            });
        }
        // An existing VG's free space: nothing to provision.
        if s.lvm && s.vg.is_some() && request.devices.is_empty() && request.size.is_none() {
            return Ok(BackingPlan::Existing);
        }
        // A VG on the pool's own loopback files takes an explicit --size (tests do that).
        if s.lvm && request.devices.is_empty() && request.size.is_none() {
            return Err(bad(
                KEY_LVM,
                "on",
                "--lvm needs --device DEV for the volume group",
            ));
        }
        // A thin pool on loopback files: data, then metadata sized for it.
        let files = |size: Bytes| {
            let meta = s
                .metadata_size
                .unwrap_or_else(|| metadata_size_for(size, s.block_size));
            vec![
                LoopbackFile { stem: "data", size },
                LoopbackFile {
                    stem: "metadata",
                    size: meta,
                },
            ]
        };
        plan::standard(NAME, OPTIONS, options, request, s.min_size(), &files)
    }

    fn min_device_size(&self, options: &DriverOptions) -> Bytes {
        Settings::parse(options).map_or(Bytes::mib(320), |s| s.min_size())
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        let s = Settings::parse(&ctx.options)?;
        let dm = dm()?;
        if s.lvm || s.thinpool.is_some() {
            return format_lvm(&dm, ctx, &s);
        }
        let a = areas(ctx, &s)?;
        let names = Names::new(format!("blkdrv-{}", crate::id::random_tag()), None);
        let base_size = base_size_for(&s, a.data.len, s.min_size())?;
        // Fresh metadata: the kernel formats the area only if its superblock is blank.
        zero_head(&a.meta.device, a.meta.offset)?;
        let made = setup_pool(&dm, &names, &a, &s, true)
            .and_then(|pool| make_base(&dm, &names, &pool, &s, base_size));
        if made.is_err() {
            // A half-made pool would keep the loop devices busy: take it all down.
            if let Err(r) = remove_all(&dm, &names) {
                tracing::warn!("cleaning up after a failed format: {r}");
            }
        }
        let uuid = made?;
        let rec = Recorded {
            dm_prefix: names.prefix.clone(),
            base_fs_uuid: uuid,
            base_size,
            fs: s.fs,
            lvm: None,
        };
        Identity::record(NAME, &rec)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        let s = Settings::parse(&ctx.options)?;
        let label = ctx
            .devices
            .first()
            .cloned()
            .unwrap_or_else(|| ctx.state_dir.clone());
        let rec = Recorded::read(identity, &label)?;
        let prefix = rec.dm_prefix;
        let base_size = rec.base_size;
        let recorded_uuid = rec.base_fs_uuid;
        let dm = dm()?;
        let (names, pool, home, label) = match rec.lvm {
            Some(LvmRecorded {
                lvm_pool: lv,
                lvm_uuid: recorded,
                lvm_created,
                lvm_vg_created,
            }) => {
                let lv_path = PathBuf::from(format!("/dev/{lv}"));
                let info = lvm::pool_info(&lv)?;
                if info.uuid != recorded {
                    return Err(DriverError::IdentityMismatch {
                        device: lv_path,
                        field: "LVM thin-pool LV UUID".into(),
                        recorded,
                        found: format!("{}: {lv} was recreated or is another pool", info.uuid),
                    });
                }
                let names = Names::new(prefix, Some(&lv));
                if !exists(&dm, &names.pool())? {
                    lvm::activate(&lv)?;
                }
                let pool = attach_pool(&dm, &names.pool())?;
                let home = Home::Lvm {
                    created: lvm_created,
                    vg_created: lvm_vg_created,
                    pool: lv,
                };
                (names, pool, home, lv_path)
            }
            None => {
                let a = areas(ctx, &s)?;
                let names = Names::new(prefix, None);
                let pool = setup_pool(&dm, &names, &a, &s, false)?;
                (names, pool, Home::Devices, a.data.device)
            }
        };
        let d = DmThin {
            block: block_size_of(&pool),
            inner: Mutex::new(Inner { dm, pool }),
            names,
            settings: s,
            base_size,
            sizes: super::sizes::Sizes::new(&ctx.state_dir),
            devices: ctx.devices.clone(),
            home,
        };
        let txid = d.txid()?;
        if let Some(g) = ctx.generation {
            // One ahead is a crash between a kernel change and the store update, which the
            // pool's recovery finishes or undoes; anything else was done behind our back.
            if txid != g && txid != g + 1 {
                return Err(DriverError::IdentityMismatch {
                    device: label,
                    field: "thin-pool transaction id".into(),
                    recorded: g.to_string(),
                    found: format!(
                        "{txid}: the pool was changed outside blkdrv (or belongs to another pool record)"
                    ),
                });
            }
        }
        let found = d.with_thin(ThinId::BASE, signature::fs_uuid)?;
        let found = found
            .map(|(_, u)| u)
            .unwrap_or_else(|| "no filesystem".into());
        if found != recorded_uuid {
            return Err(DriverError::IdentityMismatch {
                device: label,
                field: "base filesystem UUID".into(),
                recorded: recorded_uuid,
                found,
            });
        }
        Ok(Box::new(d))
    }
}

#[cfg(test)]
mod tests {
    use super::super::settings::{KEY_THINPOOL, KIB64};
    use super::*;

    fn plan_of(options: &[(&str, &str)], request: &BackingRequest) -> Result<BackingPlan> {
        let o: DriverOptions = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Factory.plan(&Factory.validate_options(&o)?, request)
    }

    #[test]
    fn init_requests_are_planned() {
        let loopback = BackingRequest {
            size: Some(Bytes::gib(1)),
            ..BackingRequest::default()
        };
        match plan_of(&[], &loopback).unwrap() {
            BackingPlan::Loopback {
                files, min_size, ..
            } => {
                assert_eq!(min_size, Bytes::mib(320));
                assert_eq!(
                    files[0],
                    LoopbackFile {
                        stem: "data",
                        size: Bytes::gib(1)
                    }
                );
                assert_eq!(files[1].stem, "metadata");
                assert_eq!(files[1].size, metadata_size_for(Bytes::gib(1), KIB64));
            }
            other => panic!("{other:?}"),
        }
        let existing = BackingRequest::default();
        assert_eq!(
            plan_of(&[(KEY_THINPOOL, "vg/tp")], &existing).unwrap(),
            BackingPlan::Existing
        );
        let e = plan_of(&[(KEY_THINPOOL, "vg/tp")], &loopback)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--thinpool vg/tp") && e.contains("--size"),
            "{e}"
        );
        let devices = BackingRequest {
            devices: vec!["/dev/d".into()],
            option_devices: [(KEY_METADATA_DEVICE.to_string(), vec!["/dev/m".into()])].into(),
            ..BackingRequest::default()
        };
        assert_eq!(
            plan_of(&[], &devices).unwrap(),
            BackingPlan::Devices(vec!["/dev/d".into(), "/dev/m".into()])
        );
        let e = plan_of(&[(KEY_LVM, "on")], &devices)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--metadata-device") && e.contains("--lvm"),
            "{e}"
        );
        let e = plan_of(&[(KEY_LVM, "on")], &existing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--lvm needs --device"), "{e}");
        assert_eq!(
            plan_of(&[(KEY_LVM, "on"), ("vg", "rootvg")], &existing).unwrap(),
            BackingPlan::Existing,
            "an existing VG's free space"
        );
        let no_data = BackingRequest {
            option_devices: devices.option_devices.clone(),
            ..BackingRequest::default()
        };
        let e = plan_of(&[], &no_data).unwrap_err().to_string();
        assert!(e.contains("--metadata-device goes with --device"), "{e}");
    }
}
