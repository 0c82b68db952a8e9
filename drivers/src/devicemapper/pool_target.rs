//! The thin-pool target: its linear metadata/data devices, activation, attaching to a pool
//! LVM set up, status, the transaction id and metadata snapshots read by thin_ls.

use super::names::{Names, Role, ThinId};
use super::settings::{metadata_size_for, Settings};
use super::{device_of, dm_err, dm_errno, sectors};
use crate::error::{DriverError, Result};
use crate::sys::{blockdev, exec};
use crate::{Bytes, PoolContext};
use devicemapper as dmc;
use devicemapper::{
    DevId, Device, DmDevice, DmError, DmFlags, DmName, DmNameBuf, DmOptions, LinearDev,
    LinearDevTargetParams, LinearTargetParams, TargetLine, ThinPoolDev, ThinPoolStatus, DM,
};
use std::path::{Path, PathBuf};

/// One area of the pool: a range of a device.
pub(super) struct Area {
    pub(super) device: PathBuf,
    pub(super) offset: Bytes,
    pub(super) len: Bytes,
}

impl Area {
    fn whole(device: &Path) -> Result<Area> {
        Ok(Area {
            device: device.to_path_buf(),
            offset: Bytes::ZERO,
            len: blockdev::size(device)?,
        })
    }
}

/// Where the metadata and data areas live on the pool's devices.
pub(super) struct Areas {
    pub(super) meta: Area,
    pub(super) data: Area,
}

/// Devices in context order: [data, metadata] (two devices or two loopback files), or [one]
/// split into metadata first, then data.
pub(super) fn areas(ctx: &PoolContext, options: &Settings) -> Result<Areas> {
    match ctx.devices.as_slice() {
        [data, meta] => Ok(Areas {
            data: Area::whole(data)?,
            meta: Area::whole(meta)?,
        }),
        [one] => {
            let total = blockdev::size(one)?;
            let meta = options
                .metadata_size
                .unwrap_or_else(|| metadata_size_for(total, options.block_size));
            if meta * 2 >= total {
                return Err(DriverError::Device {
                    device: one.clone(),
                    reason: format!("{total} is too small to hold {meta} of metadata and data"),
                });
            }
            Ok(Areas {
                meta: Area {
                    device: one.clone(),
                    offset: Bytes::ZERO,
                    len: meta,
                },
                data: Area {
                    device: one.clone(),
                    offset: meta,
                    len: total - meta,
                },
            })
        }
        other => Err(DriverError::Device {
            device: ctx.state_dir.clone(),
            reason: format!(
                "a thin pool needs a data device and optionally a metadata device, got {}",
                other.len()
            ),
        }),
    }
}

/// Removes every dm device of one pool: thin devices, then the pool, then the linear devices
/// under it.
pub(super) fn remove_all(dm: &DM, names: &Names) -> Result<()> {
    let prefix = format!("{}-", names.prefix);
    let all = dm
        .list_devices()
        .map_err(|e| dm_err("list devices", "device-mapper", e))?;
    let mut order: Vec<DmNameBuf> = all.into_iter().map(|(n, _, _)| n).collect();
    order.retain(|n| n.to_string().starts_with(&prefix));
    order.sort_by_key(|n| match names.role_of(&n.to_string()) {
        Some(Role::Pool) => 1,
        Some(Role::Meta | Role::Data) => 2,
        _ => 0,
    });
    for n in order {
        let name: &DmName = &n;
        dm.device_remove(&DevId::Name(name), DmOptions::default())
            .map_err(|e| dm_err("deactivate", name, e))?;
    }
    Ok(())
}

/// [`setup_pool_inner`], and on failure takes down what it set up (the linear devices would
/// otherwise hold the loop devices), unless the pool was already active before.
pub(super) fn setup_pool(
    dm: &DM,
    names: &Names,
    a: &Areas,
    s: &Settings,
    fresh: bool,
) -> Result<ThinPoolDev> {
    let was_active = dmc::device_exists(dm, &names.pool())
        .map_err(|e| dm_err("list devices for", &*names.pool(), e))?;
    setup_pool_inner(dm, names, a, s, fresh).inspect_err(|_| {
        if !was_active {
            if let Err(r) = remove_all(dm, names) {
                tracing::warn!("cleaning up after a failed activation: {r}");
            }
        }
    })
}

/// Brings up the linear metadata/data devices and the thin-pool (or attaches to them).
pub(super) fn setup_pool_inner(
    dm: &DM,
    names: &Names,
    a: &Areas,
    s: &Settings,
    fresh: bool,
) -> Result<ThinPoolDev> {
    // The pool first: a table-less pool holds nothing, a table-less linear device nothing.
    clear_tableless(dm, &names.pool())?;
    for role in [Role::Meta, Role::Data] {
        clear_tableless(dm, &names.of(role))?;
    }
    let linear = |role: Role, area: &Area| -> Result<LinearDev> {
        let params = LinearDevTargetParams::Linear(LinearTargetParams::new(
            device_of(&area.device)?,
            sectors(area.offset),
        ));
        LinearDev::setup(
            dm,
            &names.of(role),
            None,
            vec![TargetLine::new(dmc::Sectors(0), sectors(area.len), params)],
        )
        .map_err(|e| dm_err("set up linear device", &*names.of(role), e))
    };
    let meta = linear(Role::Meta, &a.meta)?;
    let data = linear(Role::Data, &a.data)?;
    let block = sectors(s.block_size);
    let lwm = s.low_water(a.data.len);
    let pool = names.pool();
    let pool_exists =
        dmc::device_exists(dm, &pool).map_err(|e| dm_err("list devices for", &*pool, e))?;
    if fresh {
        ThinPoolDev::new(dm, &pool, None, meta, data, block, lwm, s.feature_args())
            .map_err(|e| dm_err("create thin-pool", &*pool, e))
    } else {
        if !pool_exists {
            // LVM runs thin_check before activating a pool; so do we: activating damaged
            // metadata can make it worse.
            let node = meta.devnode();
            exec::run(
                "thin_check",
                [node.as_os_str()],
                "check thin-pool metadata before activation",
            )
            .map_err(|e| DriverError::Device {
                device: a.meta.device.clone(),
                reason: format!(
                    "thin_check found damaged pool metadata ({e}); repair it with thin_repair before using the pool"
                ),
            })?;
        }
        ThinPoolDev::setup(dm, &pool, None, meta, data, block, lwm, s.feature_args())
            .map_err(|e| dm_err("activate thin-pool", &*pool, e))
    }
}

/// Removes `name` if it exists without a live table: what a process killed between creating a
/// dm device and loading its table leaves behind (setup would otherwise fail on it forever).
pub(super) fn clear_tableless(dm: &DM, name: &DmName) -> Result<()> {
    if !exists(dm, name)? {
        return Ok(());
    }
    let info = dm
        .device_info(&DevId::Name(name))
        .map_err(|e| dm_err("read device info of", name, e))?;
    if !info.flags().contains(DmFlags::DM_ACTIVE_PRESENT) && info.open_count() == 0 {
        tracing::info!(device = %name, "removing a device left without a table");
        dm.device_remove(&DevId::Name(name), DmOptions::default())
            .map_err(|e| dm_err("remove table-less device", name, e))?;
    }
    Ok(())
}

pub(super) fn exists(dm: &DM, name: &DmName) -> Result<bool> {
    dmc::device_exists(dm, name).map_err(|e| dm_err("list devices for", name, e))
}

/// Builds a [`ThinPoolDev`] handle for a thin pool someone else set up (LVM), from the kernel's
/// own tables, so thin devices can be made on it as on blkdrv's own pools.
pub(super) fn attach_pool(dm: &DM, name: &DmName) -> Result<ThinPoolDev> {
    let table = |n: &DmName| {
        dm.table_status(
            &DevId::Name(n),
            DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
        )
        .map_err(|e| dm_err("read table of", n, e))
    };
    let uuid = |info: &dmc::DeviceInfo| info.uuid().map(|u| u.to_owned());
    let bad_table = |n: &DmName, e: DmError| DriverError::Kernel {
        op: "parse table of",
        target: n.to_string(),
        message: e.to_string(),
    };
    let all = dm
        .list_devices()
        .map_err(|e| dm_err("list devices", "device-mapper", e))?;
    let linear = |dev: Device| -> Result<LinearDev> {
        let (n, _, _) =
            all.iter()
                .find(|(_, d, _)| *d == dev)
                .ok_or_else(|| DriverError::Kernel {
                    op: "find device-mapper device",
                    target: dev.to_string(),
                    message: "the thin pool's metadata or data device is not a dm device".into(),
                })?;
        let (info, lines) = table(n)?;
        let mut t = Vec::new();
        for (start, len, ty, params) in lines {
            let p = format!("{ty} {params}")
                .parse::<LinearDevTargetParams>()
                .map_err(|e| bad_table(n, e))?;
            t.push(TargetLine::new(dmc::Sectors(start), dmc::Sectors(len), p));
        }
        LinearDev::setup(dm, n, uuid(&info).as_deref(), t).map_err(|e| dm_err("attach to", &**n, e))
    };
    let (info, lines) = table(name)?;
    let [(_, _, ty, params)] = lines.as_slice() else {
        return Err(DriverError::Kernel {
            op: "parse table of",
            target: name.to_string(),
            message: format!("expected one thin-pool line, found {}", lines.len()),
        });
    };
    let p = format!("{ty} {params}")
        .parse::<dmc::ThinPoolTargetParams>()
        .map_err(|e| bad_table(name, e))?;
    let meta = linear(p.metadata_dev)?;
    let data = linear(p.data_dev)?;
    ThinPoolDev::setup(
        dm,
        name,
        uuid(&info).as_deref(),
        meta,
        data,
        p.data_block_size,
        p.low_water_mark,
        p.feature_args.into_iter().collect(),
    )
    .map_err(|e| dm_err("attach to thin-pool", name, e))
}

pub(super) fn zero_head(dev: &Path, offset: Bytes) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| DriverError::io("open", dev, e))?;
    f.seek(SeekFrom::Start(offset.0))
        .and_then(|_| f.write_all(&[0u8; 4096]))
        .and_then(|_| f.sync_all())
        .map_err(|e| DriverError::io("zero metadata superblock on", dev, e))
}

pub(super) fn set_txid(dm: &DM, names: &Names, old: u64, new: u64) -> Result<()> {
    dm.target_msg(
        &DevId::Name(&names.pool()),
        None,
        &format!("set_transaction_id {old} {new}"),
    )
    .map(drop)
    .map_err(|e| dm_err("set transaction id of", &*names.pool(), e))
}

pub(super) fn pool_status(
    dm: &DM,
    names: &Names,
    pool: &ThinPoolDev,
) -> Result<Box<dmc::ThinPoolWorkingStatus>> {
    match pool.status(dm, DmOptions::default()) {
        Ok(ThinPoolStatus::Working(w)) => Ok(w),
        Ok(other) => Err(DriverError::Kernel {
            op: "read status of",
            target: (*names.pool()).to_string(),
            message: format!("thin-pool is {other:?}: it needs repair (thin_check / thin_repair)"),
        }),
        Err(e) => Err(dm_err("read status of", &*names.pool(), e)),
    }
}

/// Thin ids in the pool's metadata and their exclusive/mapped bytes, from thin_ls on a
/// metadata snapshot (the live metadata cannot be read while the pool runs).
pub(super) fn thin_ls(
    dm: &DM,
    names: &Names,
    pool: &ThinPoolDev,
) -> Result<Vec<(ThinId, Bytes, Bytes)>> {
    let id = DevId::Name(&names.pool);
    let meta_node = pool.meta_dev().devnode();
    // A pool has one metadata snapshot. Readers (`layer ls`) take it without the pool's writer
    // lock, so processes take turns through a flock on the metadata device, which the kernel
    // drops when a process dies. Holding it, a reservation that exists was left by a process
    // killed between reserve and release: release it, or no usage could be read again.
    let meta = std::fs::File::open(&meta_node)
        .map_err(|e| DriverError::io("open metadata device", &meta_node, e))?;
    let _turn = nix::fcntl::Flock::lock(meta, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| DriverError::sys("lock metadata device", meta_node.display(), e))?;
    let reserve = || dm.target_msg(&id, None, "reserve_metadata_snap");
    match reserve() {
        Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => {
            tracing::info!(pool = %&*names.pool, "releasing a metadata snapshot left by a killed process");
            dm.target_msg(&id, None, "release_metadata_snap")
                .map_err(|e| dm_err("release stale metadata snapshot of", &*names.pool, e))?;
            reserve()
        }
        r => r,
    }
    .map_err(|e| dm_err("reserve metadata snapshot of", &*names.pool, e))?;
    let out = exec::run(
        "thin_ls",
        [
            "--metadata-snap".as_ref(),
            "--no-headers".as_ref(),
            "-o".as_ref(),
            "DEV,EXCLUSIVE_BYTES,MAPPED_BYTES".as_ref(),
            meta_node.as_os_str(),
        ],
        "list thin devices",
    );
    let released = dm
        .target_msg(&id, None, "release_metadata_snap")
        .map_err(|e| dm_err("release metadata snapshot of", &*names.pool, e));
    let out = out?;
    released?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.parse().ok()?;
            let excl = f.next()?.parse().ok()?;
            let mapped = f.next()?.parse().ok()?;
            Some((id, Bytes(excl), Bytes(mapped)))
        })
        .collect())
}
