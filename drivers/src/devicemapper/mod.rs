//! devicemapper: block-granularity copy-on-write on a dm-thin pool, the way Red Hat and Fedora
//! hosts ran container storage.
//!
//! The pool is a `thin-pool` target over a metadata and a data device (two loopback files, two
//! block devices, or one device split in two). One base thin device (thin id 0) is formatted once
//! at `pool init`; every layer is a thin snapshot (`create_snap`) of its parent or of the base, so
//! no layer pays for mkfs. Thin ids are the pool's object ids. Each create and delete advances the
//! thin-pool transaction id, which the pool records, so a pool changed behind blkdrv's back is
//! refused on open.
//!
//! Everything goes through the `devicemapper` crate's ioctls; device nodes are `/dev/dm-N` from
//! devtmpfs, so no udev is needed. `thin_check` (on activation) and `thin_ls` (listing and exact
//! per-layer usage) run through `sys::exec`.
//!
//! Files: `settings` (options, sizes), `names` (dm names by role, thin ids), `record` (the
//! identity kept at init), `factory` (plan, format, open), `pool_target` (the thin-pool target,
//! its status, transaction id and metadata snapshots), `thin` (thin devices: the layers),
//! `lvm` (init on an LVM thin-pool LV), `sizes` (thin devices not of the base's size), `backing` and `status` (the pool's lifecycle and space),
//! `bench` (bench hooks). This file: the driver's state and dm error mapping.

mod backing;
mod bench;
mod factory;
mod lvm;
mod names;
mod pool_target;
mod record;
mod settings;
mod sizes;
mod status;
mod thin;

pub use factory::Factory;

use crate::error::{DriverError, Result};
use crate::sys::lvm::PoolLv;
use crate::{Bytes, Sectors};
use devicemapper as dmc;
use devicemapper::{Device, DmError, ThinPoolDev, DM};
use names::Names;
use settings::Settings;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const NAME: &str = "devicemapper";

fn dm_errno(e: &DmError) -> Option<nix::errno::Errno> {
    match e {
        DmError::Core(dmc::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno),
        _ => None,
    }
}

fn dm_err(op: &'static str, target: impl std::fmt::Display, e: DmError) -> DriverError {
    match dm_errno(&e) {
        Some(errno) => DriverError::sys(op, target, errno),
        None => DriverError::Kernel {
            op,
            target: target.to_string(),
            message: e.to_string(),
        },
    }
}

fn device_of(dev: &Path) -> Result<Device> {
    let devno = dmc::devnode_to_devno(dev)
        .map_err(|e| dm_err("look up device number of", dev.display(), e))?
        .ok_or_else(|| DriverError::Device {
            device: dev.to_path_buf(),
            reason: "not a block device".into(),
        })?;
    Ok(Device::from(devno))
}

fn sectors(b: Bytes) -> dmc::Sectors {
    dmc::Sectors(b.sectors().0)
}

/// A size the devicemapper crate gives in its sectors.
fn bytes(s: dmc::Sectors) -> Bytes {
    Sectors(s.0).bytes()
}

/// The pool's data block size, from its table (an adopted LVM pool has its own).
fn block_size_of(pool: &ThinPoolDev) -> Bytes {
    bytes(pool.data_block_size())
}

fn dm() -> Result<DM> {
    DM::new().map_err(|e| DriverError::Unavailable {
        driver: NAME.into(),
        reason: format!("cannot open /dev/mapper/control: {e}"),
    })
}

struct Inner {
    dm: DM,
    pool: ThinPoolDev,
}

/// Where the thin pool lives.
#[derive(Debug, Clone)]
enum Home {
    /// blkdrv's own thin-pool target over two areas (loopback files or block devices).
    Devices,
    /// An LVM thin-pool LV: made by `--lvm` (and its VG too if `vg_created`) or adopted.
    Lvm {
        pool: PoolLv,
        created: bool,
        vg_created: bool,
    },
}

pub struct DmThin {
    // libdevmapper was never thread-safe and the pool table is reloaded on grow: one lock.
    inner: Mutex<Inner>,
    names: Names,
    settings: Settings,
    /// Data block size, from the pool's table (an adopted LVM pool has its own).
    block: Bytes,
    base_size: Bytes,
    /// Sizes of the thin devices made with a size of their own (sized volumes, their copies).
    sizes: sizes::Sizes,
    devices: Vec<PathBuf>,
    home: Home,
}
