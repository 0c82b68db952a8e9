//! What a `pool init` request means for a driver: the table of options a driver publishes (the
//! one place its flags, help and option keys are written) and the plan a factory makes of a
//! request (loopback files, devices or existing storage).
//!
//! The command line builds its `pool init` flags from these tables, and the pool turns flag
//! values into option keys through them, so a new driver brings its flags with it.

use crate::error::{DriverError, Result};
use crate::{Bytes, DriverOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// A flag without a value that sets the option to `value` (`--lvm` is `lvm=on`,
    /// `--no-quota` is `quota=off`).
    Switch { value: &'static str },
    /// One value (`--zpool NAME`).
    Value,
    /// Repeatable, one word each, stored joined by spaces (`--mkfs-arg`).
    Words,
    /// A device path that joins the pool's devices instead of its stored options
    /// (`--metadata-device`); repeatable.
    Device,
}

/// What an option says about the pool's backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionRole {
    /// A setting of the driver; the backing is loopback files or `--device`.
    Setting,
    /// Names storage that already exists (`--thinpool`, `--dataset`): no `--device`, no `--size`.
    Existing,
    /// Names storage to create on `--device` or a loopback `--size`, and existing storage when
    /// neither is given (`--zpool`).
    ExistingUnlessBacked,
}

/// One option a driver takes, with the `pool init` flag (if any) that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The key in the driver's options (`-o KEY=VALUE`, the stored config).
    pub key: &'static str,
    /// Long flag of `pool init`, without the dashes; `None`: only `-o KEY=VALUE` sets it.
    pub flag: Option<&'static str>,
    /// Placeholder of the flag's value in help (`NAME`, `VG/LV`).
    pub value_name: &'static str,
    pub help: &'static str,
    pub kind: OptionKind,
    pub role: OptionRole,
    /// A host config default of the same key (`[pool] fs`) applies to this driver.
    pub host_default: bool,
}

impl OptionSpec {
    /// An option set by `-o KEY=VALUE` only.
    pub const fn key(key: &'static str, help: &'static str) -> OptionSpec {
        OptionSpec {
            key,
            flag: None,
            value_name: "VALUE",
            help,
            kind: OptionKind::Value,
            role: OptionRole::Setting,
            host_default: false,
        }
    }

    /// An option with a `pool init` flag that takes one value.
    pub const fn flag(
        key: &'static str,
        flag: &'static str,
        value_name: &'static str,
        help: &'static str,
    ) -> OptionSpec {
        OptionSpec {
            key,
            flag: Some(flag),
            value_name,
            help,
            kind: OptionKind::Value,
            role: OptionRole::Setting,
            host_default: false,
        }
    }

    pub const fn kind(mut self, kind: OptionKind) -> OptionSpec {
        self.kind = kind;
        self
    }

    pub const fn role(mut self, role: OptionRole) -> OptionSpec {
        self.role = role;
        self
    }

    pub const fn host_default(mut self) -> OptionSpec {
        self.host_default = true;
        self
    }

    /// Whether the key is one the driver stores (device options are not).
    pub fn is_stored(&self) -> bool {
        self.kind != OptionKind::Device
    }
}

/// The keys of `table` that the driver stores, for [`crate::options::check_known`].
pub fn stored_keys(table: &[OptionSpec]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|o| o.is_stored())
        .map(|o| o.key)
        .collect()
}

/// What `pool init` asked for, in driver terms, before the driver says what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackingRequest {
    /// `--size`: a loopback file of this size.
    pub size: Option<Bytes>,
    /// The size of a loopback pool when `--size` is not given (host config or built in).
    pub default_size: Bytes,
    /// `--device`.
    pub devices: Vec<PathBuf>,
    /// Values of the driver's [`OptionKind::Device`] options, by key.
    pub option_devices: BTreeMap<String, Vec<PathBuf>>,
}

/// A sparse file of a loopback pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackFile {
    /// File stem under the pool's backing directory (`data`, `metadata`).
    pub stem: &'static str,
    pub size: Bytes,
}

/// What the pool provisions for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackingPlan {
    /// Sparse files, in the order the driver wants them as devices. `size` is the pool's size
    /// as asked; `min_size` the smallest the driver can format with the options.
    Loopback {
        size: Bytes,
        min_size: Bytes,
        files: Vec<LoopbackFile>,
    },
    /// Block devices, in the order the driver wants them.
    Devices(Vec<PathBuf>),
    /// Storage the options name; nothing to provision.
    Existing,
}

/// The plan most drivers make: existing storage if an option names it, else the devices, else
/// the loopback `files` for the size. Refuses what the table says cannot go together.
pub fn standard(
    driver: &'static str,
    table: &[OptionSpec],
    options: &DriverOptions,
    request: &BackingRequest,
    min_size: Bytes,
    files: &dyn Fn(Bytes) -> Vec<LoopbackFile>,
) -> Result<BackingPlan> {
    let backed = request.size.is_some() || !request.devices.is_empty();
    let mut existing = false;
    for spec in table.iter().filter(|o| options.contains_key(o.key)) {
        match spec.role {
            OptionRole::Setting => {}
            OptionRole::ExistingUnlessBacked => existing |= !backed,
            OptionRole::Existing => {
                if backed {
                    return Err(conflict(
                        driver,
                        spec,
                        &options[spec.key],
                        "names existing storage, used as it is: give no --device and no --size",
                    ));
                }
                existing = true;
            }
        }
    }
    if let Some((key, _)) = request.option_devices.iter().find(|(_, v)| !v.is_empty()) {
        if request.devices.is_empty() {
            let spec = table.iter().find(|o| o.key == key);
            return Err(DriverError::BadRequest {
                driver,
                reason: format!("{} goes with --device", flag_name(spec, key)),
            });
        }
    }
    if existing {
        return Ok(BackingPlan::Existing);
    }
    if request.devices.is_empty() {
        let size = request.size.unwrap_or(request.default_size);
        return Ok(BackingPlan::Loopback {
            size,
            min_size,
            files: files(size),
        });
    }
    let mut devices = request.devices.clone();
    devices.extend(request.option_devices.values().flatten().cloned());
    Ok(BackingPlan::Devices(devices))
}

/// `--flag` if the option has one, else `-o key`.
fn flag_name(spec: Option<&OptionSpec>, key: &str) -> String {
    match spec.and_then(|s| s.flag) {
        Some(f) => format!("--{f}"),
        None => format!("-o {key}"),
    }
}

fn conflict(driver: &'static str, spec: &OptionSpec, value: &str, why: &str) -> DriverError {
    DriverError::BadRequest {
        driver,
        reason: format!("{} {value}: {why}", flag_name(Some(spec), spec.key)),
    }
}

impl OptionSpec {
    /// Applies the values a `pool init` flag of this option was given: to `options`, or for a
    /// device option to `devices` under its key. A switch's list holds one value per use.
    pub fn apply(
        &self,
        values: &[String],
        options: &mut DriverOptions,
        devices: &mut BTreeMap<String, Vec<PathBuf>>,
    ) -> std::result::Result<(), String> {
        let flag = self.flag.unwrap_or(self.key);
        match self.kind {
            OptionKind::Switch { value } => {
                options.insert(self.key.into(), value.into());
            }
            OptionKind::Value => {
                let v = values.last().cloned().unwrap_or_default();
                options.insert(self.key.into(), v);
            }
            OptionKind::Words => {
                if let Some(bad) = values.iter().find(|a| a.contains(char::is_whitespace)) {
                    return Err(format!("--{flag} '{bad}': one word per --{flag}"));
                }
                options.insert(self.key.into(), values.join(" "));
            }
            OptionKind::Device => {
                devices
                    .entry(self.key.to_string())
                    .or_default()
                    .extend(values.iter().map(PathBuf::from));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[OptionSpec] = &[
        OptionSpec::flag("fs", "fs", "FS", "filesystem").host_default(),
        OptionSpec::flag("lvm", "lvm", "", "make a VG").kind(OptionKind::Switch { value: "on" }),
        OptionSpec::flag("mkfs_args", "mkfs-arg", "ARG", "mkfs").kind(OptionKind::Words),
        OptionSpec::flag("meta", "metadata-device", "DEV", "meta").kind(OptionKind::Device),
        OptionSpec::key("block_size", "block size"),
    ];

    fn apply(
        flag: &str,
        values: &[&str],
        o: &mut DriverOptions,
        d: &mut BTreeMap<String, Vec<PathBuf>>,
    ) -> std::result::Result<(), String> {
        let spec = TABLE.iter().find(|s| s.flag == Some(flag)).unwrap();
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        spec.apply(&values, o, d)
    }

    #[test]
    fn flags_become_options_and_devices() {
        let mut o = DriverOptions::new();
        let mut d = BTreeMap::new();
        apply("fs", &["ext4"], &mut o, &mut d).unwrap();
        apply("lvm", &[""], &mut o, &mut d).unwrap();
        apply("mkfs-arg", &["-i", "size=512"], &mut o, &mut d).unwrap();
        apply("metadata-device", &["/dev/x"], &mut o, &mut d).unwrap();
        assert_eq!(o["fs"], "ext4");
        assert_eq!(o["lvm"], "on");
        assert_eq!(o["mkfs_args"], "-i size=512");
        assert!(!o.contains_key("meta"));
        assert_eq!(d["meta"], vec![PathBuf::from("/dev/x")]);
        assert_eq!(stored_keys(TABLE), ["fs", "lvm", "mkfs_args", "block_size"]);
    }

    #[test]
    fn words_are_one_each() {
        let e = apply(
            "mkfs-arg",
            &["-i size=512"],
            &mut DriverOptions::new(),
            &mut BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(e, "--mkfs-arg '-i size=512': one word per --mkfs-arg");
    }

    fn request(size: Option<u64>, devices: &[&str]) -> BackingRequest {
        BackingRequest {
            size: size.map(Bytes),
            default_size: Bytes(7),
            devices: devices.iter().map(PathBuf::from).collect(),
            option_devices: BTreeMap::new(),
        }
    }

    const ZFSLIKE: &[OptionSpec] = &[
        OptionSpec::flag("zpool", "zpool", "NAME", "").role(OptionRole::ExistingUnlessBacked),
        OptionSpec::flag("dataset", "dataset", "DS", "").role(OptionRole::Existing),
    ];

    #[test]
    fn roles_decide_existing_storage() {
        let one = |size| vec![LoopbackFile { stem: "data", size }];
        let plan = |o: &[(&str, &str)], r: &BackingRequest| {
            let o: DriverOptions = o
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            standard("t", ZFSLIKE, &o, r, Bytes(1), &one)
        };
        assert_eq!(
            plan(&[], &request(None, &[])).unwrap(),
            BackingPlan::Loopback {
                size: Bytes(7),
                min_size: Bytes(1),
                files: one(Bytes(7))
            }
        );
        assert_eq!(
            plan(&[("zpool", "z")], &request(None, &[])).unwrap(),
            BackingPlan::Existing
        );
        assert_eq!(
            plan(&[("zpool", "z")], &request(None, &["/dev/x"])).unwrap(),
            BackingPlan::Devices(vec![PathBuf::from("/dev/x")])
        );
        assert_eq!(
            plan(&[("dataset", "z/d")], &request(None, &[])).unwrap(),
            BackingPlan::Existing
        );
        let e = plan(&[("dataset", "z/d")], &request(Some(1 << 30), &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--dataset z/d") && e.contains("--size"), "{e}");
        let mut r = request(None, &[]);
        r.option_devices
            .insert("meta".into(), vec![PathBuf::from("/dev/m")]);
        let e = plan(&[], &r).unwrap_err().to_string();
        assert!(e.contains("-o meta goes with --device"), "{e}");
    }
}
