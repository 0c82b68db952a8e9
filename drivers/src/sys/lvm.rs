//! LVM, the Red Hat/Fedora way of giving device-mapper thin pools a home: a volume group on the
//! admin's disks and a thin-pool LV in it, with an autoextend profile like container-storage-setup
//! writes. LVM has no stable library (liblvm2app is gone), so this runs the `lvm` tool; every
//! call is here. blkdrv is a "foreign user" of the pool LV: it sends thin messages to the pool
//! device itself, which LVM supports for pools without LVM thin volumes.

use crate::error::{DriverError, Result};
use crate::sys::exec;
use crate::Bytes;
use std::path::{Path, PathBuf};

/// A volume group or logical volume name as LVM accepts it.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
}

/// `VG/LV` of a thin-pool LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLv {
    pub vg: String,
    pub lv: String,
}

impl std::str::FromStr for PoolLv {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (vg, lv) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not VG/LV"))?;
        for n in [vg, lv] {
            if !valid_name(n) {
                return Err(format!("'{n}' is not a valid LVM name"));
            }
        }
        Ok(PoolLv {
            vg: vg.into(),
            lv: lv.into(),
        })
    }
}

impl std::fmt::Display for PoolLv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

impl PoolLv {
    /// The device-mapper name LVM gives the LV: dashes in names doubled, joined by one dash.
    pub fn dm_name(&self, suffix: &str) -> String {
        format!(
            "{}-{}{suffix}",
            self.vg.replace('-', "--"),
            self.lv.replace('-', "--")
        )
    }

    /// The profile that carries this pool's autoextend policy.
    pub fn profile_name(&self) -> String {
        format!("blkdrv-{}-{}", self.vg, self.lv)
    }
}

fn lvm<I, S>(args: I, purpose: &'static str) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    exec::run("lvm", args, purpose)
}

/// What `lvs` says of a thin-pool LV.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub uuid: String,
    pub segtype: String,
    pub chunk: Bytes,
    /// LVM thin volumes in the pool; blkdrv's thin devices are not LVs and do not count.
    pub thin_lvs: u64,
    pub data_percent: Option<f64>,
    pub size: Bytes,
}

/// Profile directory LVM reads `--metadataprofile` from.
pub const PROFILE_DIR: &str = "/etc/lvm/profile";

/// Autoextend policy, as LVM's thin_pool_autoextend_threshold/percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoextend {
    pub threshold_pct: u8,
    pub percent: u8,
}

fn profile_path(p: &PoolLv) -> PathBuf {
    Path::new(PROFILE_DIR).join(format!("{}.profile", p.profile_name()))
}

fn write_profile(p: &PoolLv, ax: Autoextend) -> Result<PathBuf> {
    let path = profile_path(p);
    std::fs::create_dir_all(PROFILE_DIR).map_err(|e| DriverError::io("create", PROFILE_DIR, e))?;
    let text = format!(
        "# Written by blkdrv for {p}: grow the thin pool by {pct}% when it is {thr}% full.\n\
         activation {{\n\tthin_pool_autoextend_threshold = {thr}\n\tthin_pool_autoextend_percent = {pct}\n}}\n",
        thr = ax.threshold_pct,
        pct = ax.percent,
    );
    std::fs::write(&path, text).map_err(|e| DriverError::io("write LVM profile", &path, e))?;
    Ok(path)
}

/// What [`create_thin_pool`] made, so that destroy removes exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub pool: PoolLv,
    pub vg_created: bool,
}

/// pvcreate + vgcreate (unless the VG exists) and a thin-pool LV on `devices`: data takes
/// `data_pct` of the VG's free space (container-storage-setup's 40% leaves room to autoextend),
/// metadata `meta`, no zeroing, errors instead of queueing when full.
pub fn create_thin_pool(
    pool: &PoolLv,
    devices: &[PathBuf],
    chunk: Bytes,
    meta: Bytes,
    data_pct: u8,
    ax: Autoextend,
) -> Result<Created> {
    let vg_exists = vg_exists(&pool.vg)?;
    if !vg_exists {
        if devices.is_empty() {
            return Err(DriverError::Device {
                device: PathBuf::from(&pool.vg),
                reason: "volume group does not exist and no --device was given to create it".into(),
            });
        }
        let mut pv = vec!["pvcreate".into(), "-y".into()];
        pv.extend(devices.iter().map(|d| d.as_os_str().to_owned()));
        lvm(&pv, "turn the devices into LVM physical volumes")?;
        let mut vg: Vec<std::ffi::OsString> = vec!["vgcreate".into(), pool.vg.clone().into()];
        vg.extend(devices.iter().map(|d| d.as_os_str().to_owned()));
        if let Err(e) = lvm(&vg, "create the volume group") {
            let mut undo = vec!["pvremove".into(), "-y".into()];
            undo.extend(devices.iter().map(|d| d.as_os_str().to_owned()));
            if let Err(u) = lvm(&undo, "undo pvcreate") {
                tracing::warn!("rolling back pvcreate: {u}");
            }
            return Err(e);
        }
    }
    let made = (|| {
        write_profile(pool, ax)?;
        lvm(
            [
                "lvcreate",
                "-y",
                "--type",
                "thin-pool",
                "--zero",
                "n",
                "--chunksize",
                &format!("{}k", chunk / Bytes::kib(1)),
                "--poolmetadatasize",
                &format!("{}m", meta.div_ceil(Bytes::mib(1))),
                "-l",
                &format!("{data_pct}%FREE"),
                "--metadataprofile",
                &pool.profile_name(),
                "-n",
                &pool.lv,
                &pool.vg,
            ],
            "create the thin-pool LV",
        )?;
        // lvcreate takes no --errorwhenfull for thin pools; writers must get ENOSPC, not hang.
        lvm(
            ["lvchange", "--errorwhenfull", "y", &pool.to_string()],
            "make the full thin pool fail writes",
        )
        .map(drop)
    })();
    if let Err(e) = made {
        let undo = Created {
            pool: pool.clone(),
            vg_created: !vg_exists,
        };
        if let Err(u) = remove_thin_pool(&undo, devices) {
            tracing::warn!("rolling back a failed thin-pool creation: {u}");
        }
        return Err(e);
    }
    Ok(Created {
        pool: pool.clone(),
        vg_created: !vg_exists,
    })
}

pub fn vg_exists(vg: &str) -> Result<bool> {
    let out = lvm(
        ["vgs", "--noheadings", "-o", "vg_name"],
        "list volume groups",
    )?;
    Ok(out.lines().any(|l| l.trim() == vg))
}

/// Reads the pool LV's attributes; an error if it is not a thin pool.
pub fn pool_info(pool: &PoolLv) -> Result<PoolInfo> {
    let out = lvm(
        [
            "lvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            "|",
            "-o",
            "lv_uuid,segtype,chunk_size,thin_count,data_percent,lv_size",
            &pool.to_string(),
        ],
        "read the thin-pool LV",
    )?;
    let line = out.lines().next().unwrap_or("").trim().to_string();
    let f: Vec<&str> = line.split('|').map(str::trim).collect();
    let not_pool = |why: String| DriverError::Device {
        device: PathBuf::from(pool.to_string()),
        reason: why,
    };
    if f.len() < 6 {
        return Err(not_pool(format!("unexpected lvs output '{line}'")));
    }
    if f[1] != "thin-pool" {
        return Err(not_pool(format!(
            "is a '{}' LV, not a thin pool (make one with lvcreate --type thin-pool)",
            f[1]
        )));
    }
    Ok(PoolInfo {
        uuid: f[0].into(),
        segtype: f[1].into(),
        chunk: Bytes(f[2].parse().unwrap_or(0)),
        thin_lvs: f[3].parse().unwrap_or(0),
        data_percent: f[4].parse().ok(),
        size: Bytes(f[5].parse().unwrap_or(0)),
    })
}

/// Activates the pool LV (LVM runs thin_check on its metadata first).
pub fn activate(pool: &PoolLv) -> Result<()> {
    lvm(
        ["lvchange", "-ay", "-K", &pool.to_string()],
        "activate the thin-pool LV",
    )
    .map(drop)
}

pub fn deactivate(pool: &PoolLv) -> Result<()> {
    lvm(
        ["lvchange", "-an", &pool.to_string()],
        "deactivate the thin-pool LV",
    )
    .map(drop)
}

/// What dmeventd does for monitored pools: grow by the profile's percent if the data is over its
/// threshold; does nothing under it. Some(new size) if it grew.
pub fn extend_by_policy(pool: &PoolLv) -> Result<Option<Bytes>> {
    let before = pool_info(pool)?.size;
    lvm(
        ["lvextend", "--use-policies", &pool.to_string()],
        "autoextend the thin-pool LV",
    )?;
    let after = pool_info(pool)?.size;
    Ok((after > before).then_some(after))
}

/// The autoextend threshold of the pool's profile, if blkdrv wrote one.
pub fn profile_threshold(pool: &PoolLv) -> Option<u8> {
    let text = std::fs::read_to_string(profile_path(pool)).ok()?;
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("thin_pool_autoextend_threshold")?
            .trim()
            .strip_prefix('=')?
            .trim()
            .parse()
            .ok()
    })
}

/// Removes the pool LV, its profile, and the VG and PVs if blkdrv made them.
pub fn remove_thin_pool(c: &Created, devices: &[PathBuf]) -> Result<()> {
    let name = c.pool.to_string();
    let exists = lvm(
        ["lvs", "--noheadings", "-o", "lv_name", &c.pool.vg],
        "list LVs",
    )
    .map(|o| o.lines().any(|l| l.trim() == c.pool.lv))
    .unwrap_or(false);
    if exists {
        lvm(["lvremove", "-y", &name], "remove the thin-pool LV")?;
    }
    let _ = std::fs::remove_file(profile_path(&c.pool));
    if c.vg_created && vg_exists(&c.pool.vg)? {
        lvm(["vgremove", "-y", &c.pool.vg], "remove the volume group")?;
        if !devices.is_empty() {
            let mut pv = vec!["pvremove".into(), "-y".into()];
            pv.extend(devices.iter().map(|d| d.as_os_str().to_owned()));
            lvm(&pv, "remove the physical volumes")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_lv_parses_and_maps_to_dm_names() {
        let p: PoolLv = "docker-vg/thin-pool".parse().unwrap();
        assert_eq!(p.dm_name(""), "docker--vg-thin--pool");
        assert_eq!(p.dm_name("_tmeta"), "docker--vg-thin--pool_tmeta");
        assert_eq!(p.to_string(), "docker-vg/thin-pool");
        assert!("nopool".parse::<PoolLv>().is_err());
        assert!("vg/".parse::<PoolLv>().is_err());
        assert!("vg/a b".parse::<PoolLv>().is_err());
        assert!("-vg/lv".parse::<PoolLv>().is_err());
    }
}
