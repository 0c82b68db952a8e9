//! `pool init`: a zpool blkdrv creates on the pool's devices, a dataset of its own in an existing
//! zpool, or an existing dataset taken as it is.

use super::identity::{Created, Recorded};
use super::settings::{bad, Settings, KEY_DATASET, KEY_ZPOOL};
use super::{collides, vdevs, Vdev, NAME};
use crate::error::{DriverError, Result};
use crate::sys::blockdev;
use crate::sys::zfs::{self as z, Dataset, Failure, ZpoolName};
use crate::{Identity, PoolContext};
use std::path::{Path, PathBuf};

/// libefi (behind `zpool create`) treats sd, hd, vd, xvd and nvme disks as whole disks: it
/// partitions them and waits up to 30 s until libudev calls the new partition initialized,
/// which means udev wrote its database entry under /run/udev/data. With no udev database at
/// all (no udevd, no stand-in like the test VM's) that wait always fails: say so at once.
fn refuse_whole_disk_without_udev(dev: &Path) -> Result<()> {
    if Path::new("/run/udev/control").exists() || Path::new("/run/udev/data").is_dir() {
        return Ok(());
    }
    let real = dev.canonicalize().unwrap_or_else(|_| dev.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let whole = ["sd", "hd", "vd", "xvd", "nvme"]
        .iter()
        .any(|p| name.starts_with(p))
        && !blockdev::is_partition(&name);
    if whole {
        return Err(DriverError::Device {
            device: dev.to_path_buf(),
            reason: "is a whole disk and udev is not running: zpool create would partition it and \
                     wait in vain for udev to register the partition; give a partition (e.g. \
                     /dev/vdb1) or start udev"
                .into(),
        });
    }
    Ok(())
}

/// Pool-level guid of `name`, or a clear refusal when no such pool is imported.
fn zpool_guid_of(name: &ZpoolName, key: &str) -> Result<u64> {
    z::zpool_guid(name)?.ok_or_else(|| {
        bad(
            key,
            name.as_str(),
            "no imported zpool has this name (import it first)",
        )
    })
}

fn dataset_guid(ds: &Dataset) -> Result<u64> {
    z::get(ds.as_str(), &["guid"])?.num("guid")
}

/// `pool init` on devices or loopback files: a new zpool.
fn create_zpool(ctx: &PoolContext, s: &Settings, vdevs: &[Vdev]) -> Result<Recorded> {
    let name = match &s.zpool {
        Some(n) => n.clone(),
        // Zpool names are global to the host: a random part keeps pools of the same name under
        // different roots (every test pool is "t") apart.
        None => ZpoolName::new(&format!("blkdrv-{}-{}", ctx.pool, crate::id::random_tag()))
            .map_err(|e| bad(KEY_ZPOOL, &ctx.pool, e.to_string()))?,
    };
    if z::zpool_guid(&name)?.is_some() {
        return Err(bad(
            KEY_ZPOOL,
            name.as_str(),
            "a zpool of this name is already imported: pick another name, or give no --device \
             and no --size to put the pool's layers in it",
        ));
    }
    for v in vdevs {
        if let Vdev::Device(d) = v {
            refuse_whole_disk_without_udev(d)?;
        }
    }
    let paths: Vec<PathBuf> = vdevs.iter().map(|v| v.path().to_path_buf()).collect();
    z::zpool_create(
        &name,
        &paths,
        &[("ashift", "12".into()), ("cachefile", "none".into())],
        &[
            ("mountpoint", "none".into()),
            ("compression", s.compression.clone()),
        ],
    )?;
    let root = name.root();
    let rec = (|| {
        Ok(Recorded {
            zpool_guid: zpool_guid_of(&name, KEY_ZPOOL)?,
            dataset_guid: dataset_guid(&root)?,
            zpool: name.clone(),
            dataset: root.clone(),
            created: Created::Zpool,
        })
    })();
    if rec.is_err() {
        // The pool manager deletes the loopback files next: do not leave a zpool on them.
        if let Err(u) = z::zpool_destroy(&name) {
            tracing::warn!("cleaning up after a failed zpool init: {u}");
        }
    }
    rec
}

/// `pool init --zpool NAME` without devices: a dataset of blkdrv's own in an existing zpool.
fn create_parent(ctx: &PoolContext, s: &Settings, zpool: &ZpoolName) -> Result<Recorded> {
    let zpool_guid = zpool_guid_of(zpool, KEY_ZPOOL)?;
    let parent = zpool
        .root()
        .child(&format!("blkdrv-{}", ctx.pool))
        .map_err(|e| bad(KEY_ZPOOL, zpool.as_str(), e.to_string()))?;
    let props = [
        ("mountpoint", "none".to_string()),
        ("compression", s.compression.clone()),
    ];
    match z::create(&parent, &props) {
        Ok(()) => {}
        Err(e) if z::failure(&e) == Failure::Exists => {
            return Err(bad(
                KEY_ZPOOL,
                zpool.as_str(),
                format!("dataset {parent} already exists: to use it, pass --dataset {parent}"),
            ))
        }
        Err(e) => return Err(e),
    }
    let guid = dataset_guid(&parent).inspect_err(|_| {
        let _ = z::destroy(&parent, false);
    })?;
    Ok(Recorded {
        zpool: zpool.clone(),
        zpool_guid,
        dataset: parent,
        dataset_guid: guid,
        created: Created::Dataset,
    })
}

/// `pool init --dataset NAME`: an existing dataset, as it is.
fn adopt_dataset(ds: &Dataset, adopt: bool) -> Result<Recorded> {
    let props = match z::get(ds.as_str(), &["type", "guid"]) {
        Ok(p) => p,
        Err(e) if z::failure(&e) == Failure::Missing => {
            return Err(bad(KEY_DATASET, ds.as_str(), "no such dataset"))
        }
        Err(e) => return Err(e),
    };
    let kind = props.text("type")?;
    if kind != "filesystem" {
        return Err(bad(
            KEY_DATASET,
            ds.as_str(),
            format!("is a {kind}, not a filesystem"),
        ));
    }
    let below = z::list_below(ds, &["filesystem", "volume", "snapshot"])?;
    let names = |v: &[&z::Entry]| {
        let mut n: Vec<&str> = v.iter().take(5).map(|e| e.name.as_str()).collect();
        if v.len() > 5 {
            n.push("...");
        }
        n.join(", ")
    };
    if !adopt && !below.is_empty() {
        let all: Vec<&z::Entry> = below.iter().collect();
        return Err(bad(
            KEY_DATASET,
            ds.as_str(),
            format!(
                "is not empty ({} children or snapshots: {}); blkdrv takes only an empty dataset \
                 unless -o adopt=on",
                below.len(),
                names(&all)
            ),
        ));
    }
    let clash: Vec<&z::Entry> = below
        .iter()
        .filter(|e| e.kind != "snapshot" && collides(ds, &e.name))
        .collect();
    if !clash.is_empty() {
        return Err(bad(
            KEY_DATASET,
            ds.as_str(),
            format!(
                "has children named like blkdrv's layers ({}): they would be taken for layers",
                names(&clash)
            ),
        ));
    }
    let zpool = ds.pool();
    Ok(Recorded {
        zpool_guid: zpool_guid_of(&zpool, KEY_DATASET)?,
        zpool,
        dataset: ds.clone(),
        dataset_guid: props.num("guid")?,
        created: Created::Nothing,
    })
}

/// `pool init`: a new zpool, a dataset of blkdrv's own in an existing zpool, or an existing
/// dataset, by the options and whether the pool has devices.
pub(super) fn format(ctx: &PoolContext) -> Result<Identity> {
    let s = Settings::parse(&ctx.options)?;
    let vdevs = vdevs(ctx)?;
    let rec = match (&s.dataset, &s.zpool, vdevs.is_empty()) {
        (Some(ds), _, true) => adopt_dataset(ds, s.adopt)?,
        (Some(ds), _, false) => {
            return Err(bad(
                KEY_DATASET,
                ds.as_str(),
                "an existing dataset is used as it is: give no --device and no --size",
            ))
        }
        (None, _, false) => create_zpool(ctx, &s, &vdevs)?,
        (None, Some(p), true) => create_parent(ctx, &s, p)?,
        (None, None, true) => {
            return Err(DriverError::Device {
                device: ctx.state_dir.clone(),
                reason: "a zfs pool needs --device, a loopback --size, --zpool NAME (an \
                         existing zpool) or --dataset NAME (an existing dataset)"
                    .into(),
            })
        }
    };
    Identity::record(NAME, &rec)
}
