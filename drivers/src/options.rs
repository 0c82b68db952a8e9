//! Checks of `--option key=value` shared by the drivers, so every driver words a bad option the
//! same way: the driver, the key, the value and what was expected.

use crate::error::{DriverError, Result};
use crate::{Bytes, DriverOptions};

pub fn bad(driver: &'static str, key: &str, value: &str, reason: impl Into<String>) -> DriverError {
    DriverError::BadOption {
        driver,
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Refuses any key outside `known`, listing the known ones.
pub fn check_known(driver: &'static str, options: &DriverOptions, known: &[&str]) -> Result<()> {
    match options.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        Some((k, v)) => Err(DriverError::UnknownOption {
            driver,
            key: k.clone(),
            value: v.clone(),
            known: known.join(", "),
        }),
        None => Ok(()),
    }
}

pub fn on_off(driver: &'static str, key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(bad(driver, key, v, "expected on or off")),
    }
}

/// A size with its unit (`64KiB`, `1G`), as [`Bytes`] parses it.
pub fn size(driver: &'static str, key: &str, v: &str) -> Result<Bytes> {
    v.parse::<Bytes>()
        .map_err(|e| bad(driver, key, v, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let mut o = DriverOptions::new();
        o.insert("quota".into(), "on".into());
        assert!(check_known("t", &o, &["quota"]).is_ok());
        o.insert("colour".into(), "blue".into());
        let e = check_known("t", &o, &["quota", "fs"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("quota, fs"), "{e}");
    }

    #[test]
    fn switches_and_sizes() {
        assert!(on_off("t", "k", "yes").unwrap());
        assert!(!on_off("t", "k", "off").unwrap());
        assert!(on_off("t", "k", "maybe").is_err());
        assert_eq!(size("t", "k", "64KiB").unwrap(), Bytes(64 << 10));
        assert!(size("t", "k", "lots").is_err());
    }
}
