//! container-storage-setup compatibility: its sysconfig variables (STORAGE_DRIVER, DEVS, VG,
//! DATA_SIZE, CHUNK_SIZE, ...) parsed and turned into an LVM-backed pool init request.
//!
//! The file is shell, but it is never run: [`parse_assignments`] reads `NAME=value` lines with
//! shell quoting and refuses anything that would need a shell (expansions, command
//! substitution, commands), so what blkdrv does is what the file says. [`Setup::from_file`]
//! then maps each variable the way container-storage-setup's script uses it; a variable it does
//! not know, or one whose job blkdrv does not do, is an error that names it.

use crate::error::PoolError;
use crate::init::InitRequest;
use crate::layer::PoolName;
use blkdrv_drivers::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod shell;
#[cfg(test)]
mod tests;

pub use shell::{parse_assignments, Assignment};

/// Where container-storage-setup (in its Docker mode) reads its settings.
pub const DEFAULT_FILE: &str = "/etc/sysconfig/docker-storage-setup";
/// The driver storage-setup makes pools with: data, like `--driver devicemapper`.
pub const DRIVER: &str = "devicemapper";
/// container-storage-setup's thin-pool LV name in Docker mode; also the blkdrv pool's name.
pub const DEFAULT_THINPOOL: &str = "docker-pool";

/// A bad file: syntax, a value, or a variable blkdrv does not take. Always the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {reason}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}:{line}: {var}={value:?}: {reason}", file.display())]
    Value {
        file: PathBuf,
        line: usize,
        var: String,
        value: String,
        reason: String,
    },
    #[error("{}: unknown variable(s) {}: not container-storage-setup's (typo?)", file.display(), list(.vars))]
    Unknown {
        file: PathBuf,
        vars: Vec<(String, usize)>,
    },
    #[error("{}:{line}: {var}={value:?} is not supported: {why}", file.display())]
    Unsupported {
        file: PathBuf,
        line: usize,
        var: String,
        value: String,
        why: &'static str,
    },
    #[error("device {} did not appear within {waited}s (DEVICE_WAIT_TIMEOUT)", device.display())]
    DeviceMissing { device: PathBuf, waited: u64 },
}

fn list(vars: &[(String, usize)]) -> String {
    let v: Vec<String> = vars
        .iter()
        .map(|(n, l)| format!("{n} (line {l})"))
        .collect();
    v.join(", ")
}

/// container-storage-setup's sizes: an integer with an optional unit (b, s = 512 bytes, k, m,
/// g, t, p, e; optionally followed by `b` or `ib`; either case, all binary); no unit means
/// `default`.
fn css_size(s: &str, default: Bytes) -> Option<Bytes> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let mult = match unit {
        "" => default.0,
        "b" => 1,
        "s" => 512,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        "e" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(mult).map(Bytes)
}

/// DATA_SIZE: `N%FREE`, `N%VG` or a size (MiB without a unit, as `lvcreate -L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSize {
    FreePct(u8),
    VgPct(u8),
    Exact(Bytes),
}

impl DataSize {
    /// As the devicemapper driver's `data_size` option spells it.
    fn option(&self) -> String {
        match self {
            DataSize::FreePct(p) => format!("{p}%FREE"),
            DataSize::VgPct(p) => format!("{p}%VG"),
            DataSize::Exact(b) => b.0.to_string(),
        }
    }
}

impl std::fmt::Display for DataSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSize::Exact(b) => write!(f, "{b}"),
            p => f.write_str(&p.option()),
        }
    }
}

/// The LVM autoextend policy, or none (AUTO_EXTEND_POOL=no).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Autoextend {
    pub threshold_pct: u8,
    pub percent: u8,
}

/// What a container-storage-setup file asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub file: PathBuf,
    /// The blkdrv pool, named as the thin-pool LV (CONTAINER_THINPOOL).
    pub pool: PoolName,
    pub devices: Vec<PathBuf>,
    pub vg: String,
    pub thinpool_lv: String,
    pub data_size: DataSize,
    pub min_data_size: Option<Bytes>,
    pub chunk_size: Bytes,
    pub metadata_size: Option<Bytes>,
    pub autoextend: Option<Autoextend>,
    /// WIPE_SIGNATURES=true: devices with signatures are overwritten (`--force`).
    pub wipe_signatures: bool,
    pub device_wait: Duration,
}

/// Variables container-storage-setup reads whose job blkdrv does not do: refused when set to
/// anything but empty, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "ROOT_SIZE",
        "it grows the root LV; blkdrv never resizes the root filesystem",
    ),
    (
        "CONTAINER_ROOT_LV_NAME",
        "a filesystem LV for the runtime's root dir is not made by blkdrv (its pools keep their state under --root)",
    ),
    (
        "CONTAINER_ROOT_LV_SIZE",
        "a filesystem LV for the runtime's root dir is not made by blkdrv (its pools keep their state under --root)",
    ),
    (
        "CONTAINER_ROOT_LV_MOUNT_PATH",
        "a filesystem LV for the runtime's root dir is not made by blkdrv (its pools keep their state under --root)",
    ),
    (
        "DOCKER_ROOT_VOLUME",
        "a filesystem LV for Docker's root dir is not made by blkdrv",
    ),
    (
        "DOCKER_ROOT_VOLUME_SIZE",
        "a filesystem LV for Docker's root dir is not made by blkdrv",
    ),
    (
        "EXTRA_STORAGE_OPTIONS",
        "these are container runtime daemon flags; blkdrv writes no daemon options",
    ),
    (
        "EXTRA_DOCKER_STORAGE_OPTIONS",
        "these are Docker daemon flags; blkdrv writes no daemon options",
    ),
];

/// Every variable taken, for the unknown-variable check.
const KNOWN: &[&str] = &[
    "STORAGE_DRIVER",
    "DEVS",
    "VG",
    "CONTAINER_THINPOOL",
    "DATA_SIZE",
    "MIN_DATA_SIZE",
    "POOL_META_SIZE",
    "CHUNK_SIZE",
    "GROWPART",
    "AUTO_EXTEND_POOL",
    "POOL_AUTOEXTEND_THRESHOLD",
    "POOL_AUTOEXTEND_PERCENT",
    "DEVICE_WAIT_TIMEOUT",
    "WIPE_SIGNATURES",
];

impl Setup {
    pub fn from_file(file: &Path) -> Result<Setup, SetupError> {
        let text = std::fs::read_to_string(file).map_err(|source| SetupError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Setup::from_text(file, &text)
    }

    /// Checks every variable; the first problem is the error, except that all unknown
    /// variables are named together (a file from another tool has several).
    pub fn from_text(file: &Path, text: &str) -> Result<Setup, SetupError> {
        let file = file.to_path_buf();
        let assignments = parse_assignments(text).map_err(|(line, reason)| SetupError::Syntax {
            file: file.clone(),
            line,
            reason,
        })?;
        // Later assignments win, as in a shell.
        let mut vars: BTreeMap<&str, &Assignment> = BTreeMap::new();
        for a in &assignments {
            vars.insert(a.name.as_str(), a);
        }
        let mut unknown: Vec<(String, usize)> = vars
            .values()
            .filter(|a| !KNOWN.contains(&a.name.as_str()))
            .filter(|a| !UNSUPPORTED.iter().any(|(n, _)| *n == a.name))
            .map(|a| (a.name.clone(), a.line))
            .collect();
        // In the file's order, as the user reads it.
        unknown.sort_by_key(|(_, line)| *line);
        if !unknown.is_empty() {
            return Err(SetupError::Unknown {
                file,
                vars: unknown,
            });
        }
        for (name, why) in UNSUPPORTED {
            if let Some(a) = vars.get(name).filter(|a| !a.value.is_empty()) {
                return Err(SetupError::Unsupported {
                    file,
                    line: a.line,
                    var: a.name.clone(),
                    value: a.value.clone(),
                    why,
                });
            }
        }
        let v = Vars { file: &file, vars };
        // An empty STORAGE_DRIVER tells container-storage-setup to do nothing at all.
        if let Some(a) = v.vars.get("STORAGE_DRIVER") {
            match a.value.as_str() {
                DRIVER => {}
                "" => return Err(v.unsupported(a, "an empty STORAGE_DRIVER means no storage setup; set devicemapper or drop the file")),
                "overlay" | "overlay2" => return Err(v.unsupported(a, "storage-setup makes devicemapper thin pools; an overlay pool needs no setup: `blkdrv pool init --driver overlay`")),
                _ => return Err(v.bad(a, "expected devicemapper")),
            }
        }
        if let Some(a) = v.set("GROWPART") {
            match a.value.as_str() {
                "false" => {}
                "true" => {
                    return Err(v.unsupported(
                        a,
                        "it grows the root disk's partition; blkdrv never changes the root disk",
                    ))
                }
                _ => return Err(v.bad(a, "expected true or false")),
            }
        }
        let thinpool_lv = match v.set("CONTAINER_THINPOOL") {
            Some(a) if !blkdrv_drivers::sys::lvm::valid_name(&a.value) => {
                return Err(v.bad(a, "not a valid LVM logical volume name"))
            }
            Some(a) => a.value.clone(),
            None => DEFAULT_THINPOOL.to_string(),
        };
        let pool = PoolName::new(&thinpool_lv).map_err(|e| match v.set("CONTAINER_THINPOOL") {
            Some(a) => v.bad(a, &format!("it names the blkdrv pool too: {e}")),
            None => v.syntax(0, e.to_string()),
        })?;
        let mut devices = Vec::new();
        if let Some(a) = v.set("DEVS") {
            for d in a.value.split_whitespace() {
                // container-storage-setup takes `vdb` and `/dev/vdb` alike.
                let p = if d.starts_with('/') {
                    PathBuf::from(d)
                } else {
                    Path::new("/dev").join(d)
                };
                if !p.starts_with("/dev") || d.contains("..") {
                    return Err(v.bad(a, &format!("{d}: devices are under /dev")));
                }
                if devices.contains(&p) {
                    return Err(v.bad(a, &format!("{d} is listed twice")));
                }
                devices.push(p);
            }
        }
        let vg = match v.set("VG") {
            Some(a) if !blkdrv_drivers::sys::lvm::valid_name(&a.value) => {
                return Err(v.bad(a, "not a valid LVM volume group name"))
            }
            Some(a) => a.value.clone(),
            None => {
                return Err(v.syntax(
                    0,
                    "VG is not set: container-storage-setup would use the root filesystem's volume group, \
                     which blkdrv never changes; set VG (a new one with DEVS, or an existing one without)"
                        .into(),
                ))
            }
        };
        let data_size = match v.set("DATA_SIZE") {
            None => DataSize::FreePct(40),
            Some(a) => {
                let pct = |n: &str| n.parse::<u8>().ok().filter(|p| (1..=100).contains(p));
                if let Some(p) = a.value.strip_suffix("%FREE").and_then(pct) {
                    DataSize::FreePct(p)
                } else if let Some(p) = a.value.strip_suffix("%VG").and_then(pct) {
                    DataSize::VgPct(p)
                } else if a.value.contains('%') {
                    return Err(v.bad(a, "expected N%FREE or N%VG (N from 1 to 100), or a size"));
                } else {
                    match css_size(&a.value, Bytes::mib(1)) {
                        Some(b) if b > Bytes::ZERO => DataSize::Exact(b),
                        _ => return Err(v.bad(a, "expected N%FREE, N%VG or a size such as 20G")),
                    }
                }
            }
        };
        let size_of = |name: &str, default_unit: Bytes| -> Result<Option<Bytes>, SetupError> {
            match v.set(name) {
                None => Ok(None),
                Some(a) => match css_size(&a.value, default_unit) {
                    Some(b) if b > Bytes::ZERO => Ok(Some(b)),
                    _ => Err(v.bad(a, "expected a size such as 512K, 2G (no unit: MiB)")),
                },
            }
        };
        // container-storage-setup's default; the file it ships says 2G too.
        let min_data_size = match v.vars.get("MIN_DATA_SIZE") {
            Some(a) if a.value.is_empty() => None,
            Some(_) => size_of("MIN_DATA_SIZE", Bytes::mib(1))?,
            None => Some(Bytes::gib(2)),
        };
        let metadata_size = size_of("POOL_META_SIZE", Bytes::mib(1))?;
        // lvconvert's chunk size unit is KiB.
        let chunk_size = match v.set("CHUNK_SIZE") {
            None => Bytes::kib(512),
            Some(a) => match css_size(&a.value, Bytes::kib(1)) {
                Some(b) if b >= Bytes::kib(64) && b <= Bytes::gib(1) && b.0 % (64 << 10) == 0 => b,
                _ => {
                    return Err(v.bad(
                        a,
                        "the thin-pool chunk size must be a multiple of 64K from 64K to 1G",
                    ))
                }
            },
        };
        let pct = |name: &str, default: u8| -> Result<u8, SetupError> {
            match v.set(name) {
                None => Ok(default),
                Some(a) => a
                    .value
                    .parse::<u8>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| v.bad(a, "expected a percentage from 1 to 100")),
            }
        };
        let threshold = pct("POOL_AUTOEXTEND_THRESHOLD", 60)?;
        let percent = pct("POOL_AUTOEXTEND_PERCENT", 20)?;
        let autoextend = match v.set("AUTO_EXTEND_POOL").map(|a| (a, a.value.as_str())) {
            None | Some((_, "yes")) => Some(Autoextend {
                threshold_pct: threshold,
                percent,
            }),
            Some((_, "no")) => None,
            Some((a, _)) => return Err(v.bad(a, "expected yes or no")),
        };
        let wipe_signatures = match v.set("WIPE_SIGNATURES").map(|a| (a, a.value.as_str())) {
            None | Some((_, "false")) => false,
            Some((_, "true")) => true,
            Some((a, _)) => return Err(v.bad(a, "expected true or false")),
        };
        let device_wait = match v.set("DEVICE_WAIT_TIMEOUT") {
            None => Duration::from_secs(60),
            Some(a) => Duration::from_secs(
                a.value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s <= 3600)
                    .ok_or_else(|| v.bad(a, "expected seconds, 0 to 3600 (0: no wait)"))?,
            ),
        };
        Ok(Setup {
            file,
            pool,
            devices,
            vg,
            thinpool_lv,
            data_size,
            min_data_size,
            chunk_size,
            metadata_size,
            autoextend,
            wipe_signatures,
            device_wait,
        })
    }

    /// The devicemapper `pool init --lvm` this file means.
    pub fn init_request(&self) -> InitRequest {
        let mut options: Vec<(String, String)> = vec![
            ("lvm".into(), "on".into()),
            ("vg".into(), self.vg.clone()),
            ("pool_lv".into(), self.thinpool_lv.clone()),
            ("data_size".into(), self.data_size.option()),
            ("block_size".into(), self.chunk_size.0.to_string()),
        ];
        if let Some(m) = self.min_data_size {
            options.push(("min_data_size".into(), m.0.to_string()));
        }
        if let Some(m) = self.metadata_size {
            options.push(("metadata_size".into(), m.0.to_string()));
        }
        // LVM reads a threshold of 100 as "never extend": the profile still says so plainly.
        let ax = self.autoextend.unwrap_or(Autoextend {
            threshold_pct: 100,
            percent: 20,
        });
        options.push(("autoextend_threshold".into(), ax.threshold_pct.to_string()));
        options.push(("autoextend_percent".into(), ax.percent.to_string()));
        InitRequest {
            name: self.pool.clone(),
            driver: Some(DRIVER.into()),
            size: None,
            devices: self.devices.clone(),
            options,
            flags: Vec::new(),
            max_size: None,
            no_autoextend: false,
            min_free: None,
            force: self.wipe_signatures,
        }
    }

    /// Waits up to DEVICE_WAIT_TIMEOUT for DEVS to appear (udev may still be creating them at
    /// boot, which is when a unit runs this).
    pub fn wait_for_devices(&self) -> Result<(), SetupError> {
        let deadline = std::time::Instant::now() + self.device_wait;
        for d in &self.devices {
            while !d.exists() {
                if std::time::Instant::now() >= deadline {
                    return Err(SetupError::DeviceMissing {
                        device: d.clone(),
                        waited: self.device_wait.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }
}

/// What `blkdrv storage-setup` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// False when the file's pool was already there (the command runs at every boot).
    pub created: bool,
    pub vg: String,
    pub thinpool_lv: String,
    pub devices: Vec<PathBuf>,
    pub autoextend: Option<Autoextend>,
    pub status: crate::pool::PoolStatus,
}

/// What `blkdrv storage-setup --reset` gave back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reset {
    pub pool: String,
    pub vg: String,
    pub devices: Vec<PathBuf>,
}

impl Setup {
    /// Makes the pool the file describes, or finds it made by an earlier run of the same
    /// file (container-storage-setup is run at every boot, and so may this be).
    pub fn apply(
        &self,
        root: &crate::pool::Root,
        defaults: &crate::config::PoolDefaults,
    ) -> crate::Result<Applied> {
        use crate::pool::{Access, Pool};
        let applied = |created, status| Applied {
            created,
            vg: self.vg.clone(),
            thinpool_lv: self.thinpool_lv.clone(),
            devices: self.devices.clone(),
            autoextend: self.autoextend,
            status,
        };
        if root.pools()?.contains(&self.pool) {
            let status = Pool::open(root, &self.pool, Access::Read)?.status()?;
            self.check_ours(&status, "storage-setup")?;
            return Ok(applied(false, status));
        }
        self.wait_for_devices()?;
        // container-storage-setup's own rule, in its words: pool init would say --force.
        if !self.wipe_signatures {
            for d in &self.devices {
                let found = blkdrv_drivers::sys::signature::describe_found(d)
                    .map_err(|e| PoolError::backing(&self.pool, e))?;
                if let Some(found) = found {
                    return Err(PoolError::Invalid(format!(
                        "{}: DEVS {} has {found}: wipe it, or set WIPE_SIGNATURES=true to overwrite",
                        self.file.display(),
                        d.display()
                    )));
                }
            }
        }
        let pool = Pool::init_request(root, defaults, self.init_request())?;
        Ok(applied(true, pool.status()?))
    }

    /// Refuses a pool of this name that is not this file's thin pool.
    fn check_ours(&self, status: &crate::pool::PoolStatus, op: &'static str) -> crate::Result<()> {
        let same = status.driver == DRIVER
            && status.options.get("vg") == Some(&self.vg)
            && status.options.get("pool_lv") == Some(&self.thinpool_lv);
        if same {
            return Ok(());
        }
        Err(PoolError::Refused {
            op,
            layer: self.pool.as_str().to_string(),
            reason: format!(
                "pool {} exists and is not the thin pool {}/{} of {} (set CONTAINER_THINPOOL to another name)",
                self.pool,
                self.vg,
                self.thinpool_lv,
                self.file.display()
            ),
        })
    }

    /// Destroys the pool (its thin-pool LV; the VG and PV labels if the pool made them) and
    /// checks that DEVS carry no signature afterwards: the devices are as blank as before.
    pub fn reset(&self, root: &crate::pool::Root) -> crate::Result<Reset> {
        use crate::pool::{Access, Pool};
        let pool = Pool::open(root, &self.pool, Access::Write)?;
        // Only what this file made: a pool of the same name made otherwise is not given away.
        self.check_ours(&pool.status()?, "storage-setup --reset")?;
        pool.destroy(false)?;
        for d in &self.devices {
            let found = blkdrv_drivers::sys::signature::describe_found(d)
                .map_err(|e| PoolError::backing(&self.pool, e))?;
            if let Some(found) = found {
                // A failure, not bad input: the reset did not give the device back blank.
                return Err(PoolError::backing(
                    &self.pool,
                    blkdrv_drivers::DriverError::Device {
                        device: d.clone(),
                        reason: format!(
                            "still has {found} after the reset (the pool is gone; wipefs -a it by hand)"
                        ),
                    },
                ));
            }
        }
        Ok(Reset {
            pool: self.pool.as_str().to_string(),
            vg: self.vg.clone(),
            devices: self.devices.clone(),
        })
    }
}

struct Vars<'a> {
    file: &'a Path,
    vars: BTreeMap<&'a str, &'a Assignment>,
}

impl Vars<'_> {
    /// A variable with a value: empty means "the default", as container-storage-setup reads it.
    fn set(&self, name: &str) -> Option<&Assignment> {
        self.vars.get(name).copied().filter(|a| !a.value.is_empty())
    }

    fn bad(&self, a: &Assignment, reason: &str) -> SetupError {
        SetupError::Value {
            file: self.file.to_path_buf(),
            line: a.line,
            var: a.name.clone(),
            value: a.value.clone(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, a: &Assignment, why: &'static str) -> SetupError {
        SetupError::Unsupported {
            file: self.file.to_path_buf(),
            line: a.line,
            var: a.name.clone(),
            value: a.value.clone(),
            why,
        }
    }

    fn syntax(&self, line: usize, reason: String) -> SetupError {
        SetupError::Syntax {
            file: self.file.to_path_buf(),
            line,
            reason,
        }
    }
}
