//! `pool init` as the command line asks for it: flags and defaults in, a pool out. The driver's
//! option table turns flags into options, and the driver's plan says what the request means
//! (loopback files, devices, existing storage), so no front end knows a driver's flags.

use crate::config::{self, AutoExtend, PoolDefaults};
use crate::error::{PoolError, Result};
use crate::layer::PoolName;
use crate::pool::{factory, Planned, Pool, Root};
use blkdrv_drivers::{
    registry, sys, BackingPlan, BackingRequest, Bytes, DriverError, DriverFactory, DriverOptions,
    HostFacts, OptionSpec,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `blkdrv pool init` was given, before defaults and before the driver reads it.
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub name: PoolName,
    /// `--driver`; default from the host config, else [`config::DEFAULT_DRIVER`]. `auto`
    /// (either way) is [`auto_pick`]'s driver for the root.
    pub driver: Option<String>,
    /// `--size` of a loopback pool.
    pub size: Option<Bytes>,
    /// `--device`.
    pub devices: Vec<PathBuf>,
    /// `-o KEY=VALUE`, in order.
    pub options: Vec<(String, String)>,
    /// Values given to the drivers' own flags (see [`driver_flags`]), by flag name; a switch
    /// has one (empty) value per use.
    pub flags: Vec<(String, Vec<String>)>,
    pub max_size: Option<Bytes>,
    pub no_autoextend: bool,
    pub min_free: Option<u8>,
    pub force: bool,
}

/// A compiled-in driver as `blkdrv info` shows it.
#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// Why the driver cannot run on this host; `None`: it can.
    pub unavailable: Option<String>,
    pub options: &'static [OptionSpec],
}

/// Every compiled-in driver, checked against this host.
pub fn drivers() -> Vec<DriverInfo> {
    registry::all()
        .iter()
        .map(|f| DriverInfo {
            name: f.name(),
            description: f.description(),
            unavailable: f.check_host().err().map(|e| e.to_string()),
            options: f.options(),
        })
        .collect()
}

/// What `pool init --driver auto` picks on this host, and why (also shown by `blkdrv info`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AutoPick {
    pub driver: &'static str,
    pub why: String,
    /// Every compiled-in driver as `auto` judged it, in registry order.
    pub considered: Vec<AutoCandidate>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AutoCandidate {
    pub driver: &'static str,
    /// How well it suits (`None`: never picked automatically, or unavailable).
    pub suits: Option<blkdrv_drivers::Suitability>,
    /// Why it cannot run here.
    pub unavailable: Option<String>,
}

/// The driver `--driver auto` picks for pools under `state_dir` (which need not exist yet:
/// its nearest existing ancestor's filesystem counts): the highest-ranked available driver
/// by [`DriverFactory::suits`], the first in registry order among equals.
pub fn auto_pick(state_dir: &std::path::Path) -> AutoPick {
    pick_among(registry::all(), &sys::host::facts(state_dir))
}

fn pick_among(factories: &[&'static dyn DriverFactory], host: &HostFacts) -> AutoPick {
    let considered: Vec<AutoCandidate> = factories
        .iter()
        .map(|f| match f.check_host() {
            Ok(()) => AutoCandidate {
                driver: f.name(),
                suits: f.suits(host),
                unavailable: None,
            },
            Err(e) => AutoCandidate {
                driver: f.name(),
                suits: None,
                unavailable: Some(match e {
                    DriverError::Unavailable { reason, .. } => reason,
                    other => other.to_string(),
                }),
            },
        })
        .collect();
    let fs = match &host.state_fs {
        Some(fs) => format!("the state directory is on {fs}"),
        None => "the state directory's filesystem is unknown".to_string(),
    };
    let best = considered
        .iter()
        .filter_map(|c| c.suits.as_ref().map(|s| (c.driver, s)))
        // max_by_key keeps the last of equals: compare reversed positions for the first.
        .enumerate()
        .max_by_key(|(i, (_, s))| (s.rank, std::cmp::Reverse(*i)))
        .map(|(_, (d, s))| (d, s.why.clone()));
    let (driver, why) = match best {
        Some((d, why)) => (d, format!("{why} ({fs})")),
        // Nothing runs here: name the usual driver, whose check then says what is missing.
        None => (
            "overlay",
            format!("no driver is available on this host ({fs})"),
        ),
    };
    AutoPick {
        driver,
        why,
        considered,
    }
}

impl AutoPick {
    /// One line for the user: what was picked, why, and why each better-ranked kind was not
    /// (`driver auto: overlay (devicemapper is unavailable: missing ...; the state ...)`).
    pub fn notice(&self) -> String {
        let mut reasons: Vec<String> = self
            .considered
            .iter()
            .filter(|c| c.driver != self.driver)
            .filter_map(|c| match (&c.unavailable, &c.suits) {
                (Some(u), _) => Some(format!("{} is unavailable: {u}", c.driver)),
                (None, None) => Some(format!("{} does not suit this host", c.driver)),
                (None, Some(_)) => None,
            })
            .collect();
        reasons.insert(0, self.why.clone());
        format!("driver auto: {} ({})", self.driver, reasons.join("; "))
    }
}

/// Every compiled-in driver's option table, without checking the host (for help texts).
pub fn drivers_options() -> Vec<(&'static str, &'static [OptionSpec])> {
    registry::all()
        .iter()
        .map(|f| (f.name(), f.options()))
        .collect()
}

/// Every compiled-in driver's paragraph for `pool init --help` (name, text), where it has one.
pub fn drivers_init_help() -> Vec<(&'static str, &'static str)> {
    registry::all()
        .iter()
        .map(|f| (f.name(), f.init_help()))
        .filter(|(_, text)| !text.is_empty())
        .collect()
}

/// Names of every compiled-in driver, in display order.
pub fn driver_names() -> Vec<&'static str> {
    registry::names()
}

/// A `pool init` flag a driver publishes, with every driver that takes it (`--fs`: overlay, vfs
/// and devicemapper), for building the command line. The first driver's spec words the help.
#[derive(Debug, Clone)]
pub struct DriverFlag {
    pub spec: &'static OptionSpec,
    pub drivers: Vec<&'static str>,
}

/// The flags of every driver's option table, once each, in registry order.
pub fn driver_flags() -> Vec<DriverFlag> {
    let mut out: Vec<DriverFlag> = Vec::new();
    for f in registry::all() {
        for spec in f.options().iter().filter(|o| o.flag.is_some()) {
            match out.iter_mut().find(|d| d.spec.flag == spec.flag) {
                Some(d) => d.drivers.push(f.name()),
                None => out.push(DriverFlag {
                    spec,
                    drivers: vec![f.name()],
                }),
            }
        }
    }
    out
}

fn invalid(e: impl std::fmt::Display) -> PoolError {
    PoolError::Invalid(e.to_string())
}

impl Pool {
    /// `blkdrv pool init` from what the user typed and the host config's `[pool]` defaults.
    pub fn init_request(root: &Root, defaults: &PoolDefaults, req: InitRequest) -> Result<Pool> {
        let name = req.name.clone();
        let driver = req
            .driver
            .clone()
            .or_else(|| defaults.driver.clone())
            .unwrap_or_else(|| config::DEFAULT_DRIVER.to_string());
        let auto = (driver == config::AUTO_DRIVER).then(|| auto_pick(&root.path));
        let f = match &auto {
            Some(pick) => factory(pick.driver)?,
            None => factory(&driver)?,
        };
        let (options, option_devices) = driver_options(f, defaults, &req)?;
        f.check_host().map_err(|e| PoolError::backing(&name, e))?;
        let options = f.validate_options(&options).map_err(invalid)?;
        let default_size = match &defaults.size {
            Some(s) => s.parse().map_err(invalid)?,
            None => config::DEFAULT_SIZE,
        };
        let request = BackingRequest {
            size: req.size,
            default_size,
            devices: req.devices.clone(),
            option_devices,
        };
        let plan = f.plan(&options, &request).map_err(invalid)?;
        let autoextend = match &plan {
            BackingPlan::Loopback { size, .. } if !req.no_autoextend => {
                if req.max_size.is_some_and(|m| m < *size) {
                    return Err(invalid(format!(
                        "--max-size must be at least --size ({size})"
                    )));
                }
                Some(AutoExtend::for_size(*size, req.max_size))
            }
            BackingPlan::Devices(_) if req.max_size.is_some() => {
                return Err(invalid(
                    "--max-size applies to loopback pools only, not --device",
                ))
            }
            _ => None,
        };
        let planned = Planned {
            name,
            min_free_pct: req
                .min_free
                .or(defaults.min_free)
                .unwrap_or(config::DEFAULT_MIN_FREE_PCT),
            force: req.force,
            autoextend,
        };
        let mut pool = Pool::provision(root, &planned, f, options, plan)?;
        if let Some(pick) = auto {
            pool.push_notice(pick.notice());
        }
        Ok(pool)
    }
}

/// The options `req` gives driver `f`: `-o` pairs, the host's defaults where the driver's table
/// takes them, then its flags through the table; device flags apart, by key.
fn driver_options(
    f: &dyn DriverFactory,
    defaults: &PoolDefaults,
    req: &InitRequest,
) -> Result<(DriverOptions, BTreeMap<String, Vec<PathBuf>>)> {
    let mut options: DriverOptions = req.options.iter().cloned().collect();
    // A host default applies only to drivers whose table takes it, so a default for one
    // driver never breaks another. It wins over -o as it always has; a flag wins over both.
    for (key, value) in defaults.driver_options() {
        if f.options().iter().any(|o| o.key == key && o.host_default) {
            options.insert(key.into(), value.into());
        }
    }
    let mut option_devices = BTreeMap::new();
    for (flag, values) in req.flags.iter().filter(|(_, v)| !v.is_empty()) {
        let own = f.options().iter().find(|o| o.flag == Some(flag.as_str()));
        match own {
            Some(spec) => spec
                .apply(values, &mut options, &mut option_devices)
                .map_err(PoolError::Invalid)?,
            // Another driver's flag: its key, which this driver refuses by name.
            None => match registry::all()
                .iter()
                .flat_map(|d| d.options())
                .find(|o| o.flag == Some(flag.as_str()))
            {
                Some(spec) => {
                    let mut devices = BTreeMap::new();
                    spec.apply(values, &mut options, &mut devices)
                        .map_err(PoolError::Invalid)?;
                    for (key, paths) in devices {
                        let joined: Vec<String> =
                            paths.iter().map(|p| p.display().to_string()).collect();
                        options.insert(key, joined.join(" "));
                    }
                }
                None => return Err(invalid(format!("unknown flag --{flag}"))),
            },
        }
    }
    Ok((options, option_devices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(flags: &[(&str, &[&str])], options: &[(&str, &str)]) -> InitRequest {
        InitRequest {
            name: PoolName::new("t").unwrap(),
            driver: None,
            size: None,
            devices: Vec::new(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags
                .iter()
                .map(|(f, v)| (f.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            max_size: None,
            no_autoextend: false,
            min_free: None,
            force: false,
        }
    }

    #[test]
    fn flags_defaults_and_options_make_the_driver_options() {
        let dm = registry::get("devicemapper").unwrap();
        let host = PoolDefaults {
            fs: Some("ext4".into()),
            ..PoolDefaults::default()
        };
        let req = request(
            &[
                ("lvm", &[""]),
                ("vg", &["v"]),
                ("mkfs-arg", &["-i", "size=512"]),
                ("metadata-device", &["/dev/m"]),
                ("zpool", &[]),
            ],
            &[("block_size", "128K"), ("fs", "xfs")],
        );
        let (o, d) = driver_options(dm, &host, &req).unwrap();
        assert_eq!(o["lvm"], "on");
        assert_eq!(o["vg"], "v");
        assert_eq!(o["mkfs_args"], "-i size=512");
        assert_eq!(o["block_size"], "128K");
        assert_eq!(o["fs"], "ext4", "the host default wins over -o, as before");
        assert_eq!(d["metadata_device"], vec![PathBuf::from("/dev/m")]);
        assert!(!o.contains_key("zpool"), "a flag not given");

        // btrfs takes no fs: the host default does not reach it; another driver's flag becomes
        // its key, which the driver refuses by name.
        let btrfs = registry::get("btrfs").unwrap();
        let (o, _) = driver_options(btrfs, &host, &request(&[("zpool", &["z"])], &[])).unwrap();
        assert_eq!(o.get("fs"), None);
        let e = btrfs.validate_options(&o).unwrap_err().to_string();
        assert!(e.contains("zpool") && e.contains("unknown option"), "{e}");

        let e = driver_options(dm, &host, &request(&[("mkfs-arg", &["a b"])], &[])).unwrap_err();
        assert!(e.to_string().contains("one word per --mkfs-arg"), "{e}");
    }

    /// A driver kind that suits with `rank` (or never), available unless `missing`.
    struct Fake {
        name: &'static str,
        rank: Option<u8>,
        missing: bool,
    }

    impl DriverFactory for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn description(&self) -> &'static str {
            "fake"
        }
        fn requirements(&self) -> blkdrv_drivers::Requirements {
            blkdrv_drivers::Requirements::default()
        }
        fn options(&self) -> &'static [OptionSpec] {
            &[]
        }
        fn validate_options(&self, o: &DriverOptions) -> blkdrv_drivers::Result<DriverOptions> {
            Ok(o.clone())
        }
        fn format(
            &self,
            _: &blkdrv_drivers::PoolContext,
        ) -> blkdrv_drivers::Result<blkdrv_drivers::Identity> {
            unreachable!()
        }
        fn open(
            &self,
            _: &blkdrv_drivers::PoolContext,
            _: &blkdrv_drivers::Identity,
        ) -> blkdrv_drivers::Result<Box<dyn blkdrv_drivers::Driver>> {
            unreachable!()
        }
        fn check_host(&self) -> blkdrv_drivers::Result<()> {
            match self.missing {
                true => Err(DriverError::Unavailable {
                    driver: self.name.into(),
                    reason: "missing thin_ls".into(),
                }),
                false => Ok(()),
            }
        }
        fn suits(&self, host: &HostFacts) -> Option<blkdrv_drivers::Suitability> {
            self.rank.map(|rank| blkdrv_drivers::Suitability {
                rank,
                why: format!("{} suits {:?}", self.name, host.state_fs),
            })
        }
    }

    #[test]
    fn auto_picks_the_highest_available_rank_and_says_why_not_the_others() {
        static DM: Fake = Fake {
            name: "dm",
            rank: Some(50),
            missing: true,
        };
        static BTRFS: Fake = Fake {
            name: "btrfs",
            rank: None,
            missing: false,
        };
        static OVL: Fake = Fake {
            name: "ovl",
            rank: Some(10),
            missing: false,
        };
        static OVL2: Fake = Fake {
            name: "ovl2",
            rank: Some(10),
            missing: false,
        };
        static VFS: Fake = Fake {
            name: "vfs",
            rank: Some(1),
            missing: false,
        };
        let host = HostFacts {
            state_dir: "/var/lib/blkdrv".into(),
            state_fs: Some("ext4".into()),
        };
        let all: [&'static dyn DriverFactory; 5] = [&DM, &BTRFS, &OVL, &OVL2, &VFS];
        let pick = pick_among(&all, &host);
        assert_eq!(
            pick.driver, "ovl",
            "highest available rank, first among equals"
        );
        assert_eq!(pick.considered.len(), 5);
        assert!(
            pick.considered[0].suits.is_none(),
            "unavailable: never asked"
        );
        assert_eq!(
            pick.considered[0].unavailable.as_deref(),
            Some("missing thin_ls")
        );
        let n = pick.notice();
        assert!(
            n.starts_with("driver auto: ovl (ovl suits Some(\"ext4\")"),
            "{n}"
        );
        assert!(n.contains("the state directory is on ext4"), "{n}");
        assert!(n.contains("dm is unavailable: missing thin_ls"), "{n}");
        assert!(n.contains("btrfs does not suit this host"), "{n}");
        assert!(!n.contains("vfs"), "{n}");

        let none = pick_among(
            &[&DM],
            &HostFacts {
                state_fs: None,
                ..host
            },
        );
        assert_eq!(none.driver, "overlay");
        assert!(none.why.contains("no driver is available"), "{}", none.why);
    }

    #[test]
    fn real_drivers_rank_as_documented() {
        let host = |fs: &str| HostFacts {
            state_dir: "/x".into(),
            state_fs: Some(fs.into()),
        };
        let rank = |d: &str, fs: &str| registry::get(d).unwrap().suits(&host(fs)).map(|s| s.rank);
        assert_eq!(rank("btrfs", "btrfs"), Some(100));
        assert_eq!(rank("btrfs", "ext4"), None);
        assert_eq!(rank("zfs", "zfs"), Some(100));
        assert_eq!(rank("zfs", "xfs"), None);
        assert_eq!(rank("devicemapper", "ext4"), Some(50));
        assert_eq!(rank("overlay", "ext4"), Some(10));
        assert_eq!(rank("vfs", "ext4"), Some(1));
    }

    #[test]
    fn shared_flags_are_listed_once_with_their_drivers() {
        let flags = driver_flags();
        let fs: Vec<_> = flags.iter().filter(|f| f.spec.flag == Some("fs")).collect();
        assert_eq!(fs.len(), 1);
        assert!(fs[0].drivers.contains(&"overlay") && fs[0].drivers.contains(&"devicemapper"));
        for f in [
            "thinpool",
            "zpool",
            "dataset",
            "no-quota",
            "metadata-device",
            "mkfs-arg",
        ] {
            assert!(flags.iter().any(|d| d.spec.flag == Some(f)), "--{f}");
        }
    }
}
