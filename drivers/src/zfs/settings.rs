//! The zfs driver's options: the table `pool init` offers, and their one parse into [`Settings`].

use super::{MAX_PARENT, NAME};
use crate::error::{DriverError, Result};
use crate::options;
use crate::plan::{self, OptionRole, OptionSpec};
use crate::sys::zfs::{Dataset, ZpoolName};
use crate::DriverOptions;

pub(super) const KEY_ZPOOL: &str = "zpool";
pub(super) const KEY_DATASET: &str = "dataset";
pub(super) const KEY_COMPRESSION: &str = "compression";
pub(super) const KEY_ADOPT: &str = "adopt";
/// The options, in the order unknown-option errors list them.
pub(super) const OPTIONS: &[OptionSpec] = &[
    OptionSpec::flag(
        KEY_ZPOOL,
        "zpool",
        "NAME",
        "Name of the zpool. With --device or --size blkdrv creates it; alone it uses this \
         existing, imported zpool.",
    )
    .role(OptionRole::ExistingUnlessBacked),
    OptionSpec::flag(
        KEY_DATASET,
        "dataset",
        "POOL/DATASET",
        "Use this existing, empty dataset (-o adopt=on: one with other children too).",
    )
    .role(OptionRole::Existing),
    OptionSpec::flag(
        KEY_COMPRESSION,
        "compression",
        "ALGO",
        "Compression of the layers (default off): lz4, zstd, zstd-N, gzip-N, ...",
    ),
    OptionSpec::key(
        KEY_ADOPT,
        "with --dataset: take a dataset that has other children: on or off (default)",
    ),
];

pub(super) fn bad(key: &str, value: &str, reason: impl Into<String>) -> DriverError {
    options::bad(NAME, key, value, reason)
}

/// ZFS's compression values (zfs_prop.c), levels included.
fn valid_compression(v: &str) -> bool {
    let level = |s: &str, ok: &dyn Fn(u32) -> bool| s.parse::<u32>().is_ok_and(ok);
    match v {
        "on" | "off" | "lz4" | "lzjb" | "zle" | "gzip" | "zstd" | "zstd-fast" => true,
        _ => {
            if let Some(n) = v.strip_prefix("gzip-") {
                level(n, &|n| (1..=9).contains(&n))
            } else if let Some(n) = v.strip_prefix("zstd-fast-") {
                level(n, &|n| {
                    (1..=10).contains(&n)
                        || (n % 10 == 0 && (20..=100).contains(&n))
                        || n == 500
                        || n == 1000
                })
            } else if let Some(n) = v.strip_prefix("zstd-") {
                level(n, &|n| (1..=19).contains(&n))
            } else {
                false
            }
        }
    }
}

/// Validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    /// With devices: the name of the zpool to create; without: an existing zpool to use.
    pub(super) zpool: Option<ZpoolName>,
    /// An existing dataset to use as the parent.
    pub(super) dataset: Option<Dataset>,
    pub(super) compression: String,
    /// Take a dataset that already has other children.
    pub(super) adopt: bool,
}

impl Settings {
    pub(super) fn parse(options: &DriverOptions) -> Result<Settings> {
        options::check_known(NAME, options, &plan::stored_keys(OPTIONS))?;
        let get = |k: &str| options.get(k).map(String::as_str);
        let zpool = get(KEY_ZPOOL)
            .map(|v| ZpoolName::new(v).map_err(|e| bad(KEY_ZPOOL, v, e.to_string())))
            .transpose()?;
        let dataset = get(KEY_DATASET)
            .map(|v| Dataset::new(v).map_err(|e| bad(KEY_DATASET, v, e.to_string())))
            .transpose()?;
        if let Some(d) = &dataset {
            if d.as_str().len() > MAX_PARENT {
                return Err(bad(
                    KEY_DATASET,
                    d.as_str(),
                    format!("longer than {MAX_PARENT} characters: layer names must fit below it"),
                ));
            }
            if let Some(p) = &zpool {
                return Err(bad(
                    KEY_DATASET,
                    d.as_str(),
                    format!("--dataset names the dataset to use and --zpool {p} a pool: give one"),
                ));
            }
        }
        let compression = get(KEY_COMPRESSION).unwrap_or("off").to_string();
        if !valid_compression(&compression) {
            return Err(bad(
                KEY_COMPRESSION,
                &compression,
                "expected off, on, lz4, zstd, zstd-N, zstd-fast-N, gzip, gzip-N, zle or lzjb",
            ));
        }
        let adopt = get(KEY_ADOPT)
            .map(|v| options::on_off(NAME, KEY_ADOPT, v))
            .transpose()?
            .unwrap_or(false);
        if adopt && dataset.is_none() {
            return Err(bad(
                KEY_ADOPT,
                "on",
                "adopt goes with --dataset (an existing dataset)",
            ));
        }
        Ok(Settings {
            zpool,
            dataset,
            compression,
            adopt,
        })
    }

    pub(super) fn to_options(&self) -> DriverOptions {
        let mut o = DriverOptions::new();
        if let Some(p) = &self.zpool {
            o.insert(KEY_ZPOOL.into(), p.to_string());
        }
        if let Some(d) = &self.dataset {
            o.insert(KEY_DATASET.into(), d.to_string());
        }
        o.insert(KEY_COMPRESSION.into(), self.compression.clone());
        if self.adopt {
            o.insert(KEY_ADOPT.into(), "on".into());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> DriverOptions {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_and_normalized() {
        let s = Settings::parse(&opts(&[])).unwrap();
        assert_eq!(s.compression, "off");
        assert_eq!(
            s.to_options(),
            opts(&[("compression", "off")]),
            "compression off is recorded explicitly"
        );
        let s = Settings::parse(&opts(&[("compression", "lz4"), ("zpool", "tank")])).unwrap();
        assert_eq!(s.zpool.as_ref().map(ZpoolName::as_str), Some("tank"));
        for (kv, needle) in [
            (vec![("compression", "fast")], "expected off"),
            (vec![("compression", "gzip-10")], "expected off"),
            (vec![("zpool", "1tank")], "start with a letter"),
            (vec![("dataset", "tank@snap")], "not allowed"),
            (vec![("dataset", "tank/a"), ("zpool", "tank")], "give one"),
            (vec![("adopt", "on")], "goes with --dataset"),
            (vec![("adopt", "maybe"), ("dataset", "tank/a")], "on or off"),
            (vec![("colour", "blue")], "unknown option"),
        ] {
            let e = Settings::parse(&opts(&kv)).unwrap_err().to_string();
            assert!(e.contains(needle), "{kv:?}: {e}");
        }
        let long = format!("tank/{}", "a".repeat(MAX_PARENT));
        assert!(Settings::parse(&opts(&[("dataset", &long)])).is_err());
        let ok = format!("tank/{}", "a".repeat(MAX_PARENT - 5));
        let s = Settings::parse(&opts(&[("dataset", &ok), ("adopt", "yes")])).unwrap();
        assert!(s.adopt);
        assert_eq!(s.to_options()["adopt"], "on");
    }

    #[test]
    fn compression_values_follow_zfs() {
        for ok in [
            "on",
            "off",
            "lz4",
            "zstd",
            "zstd-3",
            "zstd-19",
            "zstd-fast",
            "zstd-fast-1",
            "zstd-fast-50",
            "zstd-fast-1000",
            "gzip",
            "gzip-9",
            "zle",
            "lzjb",
        ] {
            assert!(valid_compression(ok), "{ok}");
        }
        for bad in [
            "",
            "lz5",
            "zstd-0",
            "zstd-20",
            "zstd-fast-11",
            "zstd-fast-200",
            "gzip-0",
            "gzip-",
            "LZ4",
        ] {
            assert!(!valid_compression(bad), "{bad}");
        }
    }
}
