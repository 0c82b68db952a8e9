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

/// The first line of `vgs`/`lvs` FIELDS for OBJECT: sizes in bytes without suffix, fields
/// separated by `|` (a field of LVM's may hold spaces).
fn report(cmd: &str, fields: &str, object: &str, purpose: &'static str) -> Result<String> {
    let args = [
        cmd,
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "--separator",
        "|",
        "-o",
        fields,
        object,
    ];
    let out = lvm(args, purpose)?;
    Ok(out.lines().next().unwrap_or("").trim().to_string())
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

/// How big the thin pool's data starts, as container-storage-setup's DATA_SIZE says it:
/// a share of the VG's free space, of the whole VG, or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSize {
    FreePct(u8),
    VgPct(u8),
    Exact(Bytes),
}

impl Default for DataSize {
    /// container-storage-setup's 40%FREE: the rest of the VG is room to autoextend.
    fn default() -> Self {
        DataSize::FreePct(40)
    }
}

impl std::str::FromStr for DataSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let pct = |n: &str| {
            n.parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| format!("'{s}': the percentage must be 1 to 100"))
        };
        if let Some(n) = s.strip_suffix("%FREE") {
            return pct(n).map(DataSize::FreePct);
        }
        if let Some(n) = s.strip_suffix("%VG") {
            return pct(n).map(DataSize::VgPct);
        }
        if s.contains('%') {
            return Err(format!("'{s}': a percentage must be N%FREE or N%VG"));
        }
        match s.parse::<Bytes>() {
            Ok(b) if b > Bytes::ZERO => Ok(DataSize::Exact(b)),
            Ok(_) => Err(format!("'{s}': the size must not be zero")),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl std::fmt::Display for DataSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSize::FreePct(p) => write!(f, "{p}%FREE"),
            DataSize::VgPct(p) => write!(f, "{p}%VG"),
            DataSize::Exact(b) => write!(f, "{}", b.0),
        }
    }
}

/// A volume group's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgSpace {
    pub size: Bytes,
    pub free: Bytes,
}

impl VgSpace {
    /// The data size `want` means in this VG, raised to `min`; an error if the VG's free
    /// space is under `min` (container-storage-setup's MIN_DATA_SIZE rule).
    pub fn plan(&self, vg: &str, want: DataSize, min: Option<Bytes>) -> Result<PlannedData> {
        let of = |total: Bytes, p: u8| Bytes((u128::from(total.0) * u128::from(p) / 100) as u64);
        let planned = match want {
            DataSize::FreePct(p) => of(self.free, p),
            DataSize::VgPct(p) => of(self.size, p),
            DataSize::Exact(b) => b,
        };
        match min {
            Some(m) if self.free < m => Err(DriverError::Device {
                device: PathBuf::from(vg),
                reason: format!(
                    "has {} free, less than the minimum data size {m}",
                    self.free
                ),
            }),
            Some(m) if planned < m => Ok(PlannedData {
                bytes: m,
                arg: SizeArg::Bytes(m),
            }),
            _ => Ok(PlannedData {
                bytes: planned,
                arg: match want {
                    DataSize::Exact(b) => SizeArg::Bytes(b),
                    // LVM computes percentages itself, rounded to its extents.
                    p => SizeArg::Extents(p.to_string()),
                },
            }),
        }
    }
}

/// The data size to ask lvcreate for, and about how many bytes that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedData {
    pub bytes: Bytes,
    pub arg: SizeArg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeArg {
    /// `-l 40%FREE`
    Extents(String),
    /// `-L <n>b`
    Bytes(Bytes),
}

pub fn vg_space(vg: &str) -> Result<VgSpace> {
    let line = report("vgs", "vg_size,vg_free", vg, "read the volume group's size")?;
    let f: Vec<u64> = line
        .split('|')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    match f[..] {
        [size, free] => Ok(VgSpace {
            size: Bytes(size),
            free: Bytes(free),
        }),
        _ => Err(DriverError::Device {
            device: PathBuf::from(vg),
            reason: format!("unexpected vgs output '{line}'"),
        }),
    }
}

/// What to make: the LV, its chunk size, the data size and its floor, the metadata size for a
/// data size (its default depends on it), the autoextend policy.
pub struct ThinPoolSpec<'a> {
    pub pool: &'a PoolLv,
    pub chunk: Bytes,
    pub data: DataSize,
    pub min_data: Option<Bytes>,
    pub meta_for: &'a dyn Fn(Bytes) -> Bytes,
    pub autoextend: Autoextend,
}

/// pvcreate + vgcreate (unless the VG exists and no devices are given) and a thin-pool LV:
/// data as `spec.data` says (container-storage-setup's 40%FREE leaves room to autoextend),
/// no zeroing, errors instead of queueing when full. Devices are never added to an existing
/// VG: that would change storage blkdrv does not own.
pub fn create_thin_pool(spec: &ThinPoolSpec<'_>, devices: &[PathBuf]) -> Result<Created> {
    let pool = spec.pool;
    let vg_exists = vg_exists(&pool.vg)?;
    if vg_exists && !devices.is_empty() {
        return Err(DriverError::Device {
            device: PathBuf::from(&pool.vg),
            reason: "volume group exists already: blkdrv does not add devices to it (name a \
                     new volume group, or give no devices to use its free space)"
                .into(),
        });
    }
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
        let data = vg_space(&pool.vg)?.plan(&pool.vg, spec.data, spec.min_data)?;
        let meta = (spec.meta_for)(data.bytes);
        write_profile(pool, spec.autoextend)?;
        let (size_flag, size) = match &data.arg {
            SizeArg::Extents(e) => ("-l", e.clone()),
            SizeArg::Bytes(b) => ("-L", format!("{}b", b.0)),
        };
        lvm(
            [
                "lvcreate",
                "-y",
                "--type",
                "thin-pool",
                "--zero",
                "n",
                "--chunksize",
                &format!("{}k", spec.chunk / Bytes::kib(1)),
                "--poolmetadatasize",
                &format!("{}m", meta.div_ceil(Bytes::mib(1))),
                size_flag,
                &size,
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
            // Both go up: what failed, and what is left behind because the undo failed too.
            return Err(DriverError::Device {
                device: PathBuf::from(pool.to_string()),
                reason: format!("{e}; and removing what was made failed: {u}"),
            });
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
    let line = report(
        "lvs",
        "lv_uuid,segtype,chunk_size,thin_count,data_percent,lv_size",
        &pool.to_string(),
        "read the thin-pool LV",
    )?;
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

    #[test]
    fn data_sizes_parse_and_plan() {
        assert_eq!("40%FREE".parse(), Ok(DataSize::FreePct(40)));
        assert_eq!("95%VG".parse(), Ok(DataSize::VgPct(95)));
        assert_eq!("2G".parse(), Ok(DataSize::Exact(Bytes::gib(2))));
        for bad in ["0%FREE", "101%VG", "40%PVS", "40%", "0", "lots", "%FREE"] {
            assert!(bad.parse::<DataSize>().is_err(), "{bad}");
        }
        let vg = VgSpace {
            size: Bytes::gib(10),
            free: Bytes::gib(8),
        };
        let p = vg.plan("vg", DataSize::FreePct(50), None).unwrap();
        assert_eq!(p.bytes, Bytes::gib(4));
        assert_eq!(p.arg, SizeArg::Extents("50%FREE".into()));
        let p = vg
            .plan("vg", DataSize::VgPct(10), Some(Bytes::gib(2)))
            .unwrap();
        assert_eq!(
            p.arg,
            SizeArg::Bytes(Bytes::gib(2)),
            "raised to the minimum"
        );
        let e = vg.plan("vg", DataSize::FreePct(40), Some(Bytes::gib(9)));
        assert!(e.unwrap_err().to_string().contains("minimum data size"));
        let p = vg.plan("vg", DataSize::Exact(Bytes::gib(3)), None).unwrap();
        assert_eq!(p.arg, SizeArg::Bytes(Bytes::gib(3)));
    }
}
