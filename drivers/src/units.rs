//! Size newtypes. Bytes, sectors and filesystem blocks are different units; mixing them up is a
//! classic storage bug, so each gets its own type and conversions are explicit.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A size or offset in bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

/// A size in 512-byte sectors, the unit of the block layer and of device-mapper tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sectors(pub u64);

pub const SECTOR_SIZE: u64 = 512;

impl Bytes {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;
    pub const TIB: u64 = 1 << 40;

    pub fn mib(n: u64) -> Bytes {
        Bytes(n * Self::MIB)
    }

    pub fn gib(n: u64) -> Bytes {
        Bytes(n * Self::GIB)
    }

    /// Whole sectors; a partial trailing sector is dropped (a device cannot expose half a sector).
    pub fn sectors(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }

    pub fn saturating_sub(self, other: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(other.0))
    }

    /// Percentage of `self` in `total`, 0 when `total` is 0.
    pub fn percent_of(self, total: Bytes) -> f64 {
        if total.0 == 0 {
            0.0
        } else {
            self.0 as f64 * 100.0 / total.0 as f64
        }
    }
}

impl Sectors {
    pub fn bytes(self) -> Bytes {
        Bytes(self.0 * SECTOR_SIZE)
    }
}

impl std::ops::Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 + rhs.0)
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        Bytes(iter.map(|b| b.0).sum())
    }
}

/// Human form with binary units, as `docker` and `lvs` print them ("1.5GiB", "512B").
impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut i = 0;
        while v >= 1024.0 && i < UNITS.len() - 1 {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{}B", self.0)
        } else if v >= 100.0 || (v - v.round()).abs() < 0.05 {
            write!(f, "{:.0}{}", v, UNITS[i])
        } else {
            write!(f, "{:.1}{}", v, UNITS[i])
        }
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sectors", self.0)
    }
}

/// Error from parsing a size given by a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason} (examples: 4G, 512M, 1.5T, 1048576)")]
pub struct ParseSizeError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses "20G", "512MiB", "1.5t", "4096" (bytes). Suffixes are binary (K = 1024), like
/// `lvcreate` and `truncate`.
impl FromStr for Bytes {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseSizeError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err("no number"));
        }
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => Self::KIB,
            "m" | "mb" | "mib" => Self::MIB,
            "g" | "gb" | "gib" => Self::GIB,
            "t" | "tb" | "tib" => Self::TIB,
            _ => return Err(err("unknown unit")),
        };
        if num.contains('.') {
            let v: f64 = num.parse().map_err(|_| err("not a number"))?;
            let b = v * mult as f64;
            if !b.is_finite() || b >= u64::MAX as f64 {
                return Err(err("too large"));
            }
            if b.fract() != 0.0 {
                return Err(err("not a whole number of bytes"));
            }
            Ok(Bytes(b as u64))
        } else {
            let v: u64 = num.parse().map_err(|_| err("not a number"))?;
            v.checked_mul(mult)
                .map(Bytes)
                .ok_or_else(|| err("too large"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("4096".parse::<Bytes>().unwrap(), Bytes(4096));
        assert_eq!("20G".parse::<Bytes>().unwrap(), Bytes::gib(20));
        assert_eq!("512MiB".parse::<Bytes>().unwrap(), Bytes::mib(512));
        assert_eq!("1.5g".parse::<Bytes>().unwrap(), Bytes(3 * Bytes::GIB / 2));
        assert_eq!("64k".parse::<Bytes>().unwrap(), Bytes(65536));
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in ["", "G", "12X", "-1G", "1.2.3G", "99999999999999T", "0.1b"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn displays_binary_units() {
        assert_eq!(Bytes(512).to_string(), "512B");
        assert_eq!(Bytes::mib(5).to_string(), "5MiB");
        assert_eq!(Bytes(3 * Bytes::GIB / 2).to_string(), "1.5GiB");
    }

    #[test]
    fn sectors_round_trip() {
        assert_eq!(Bytes(4096).sectors(), Sectors(8));
        assert_eq!(Sectors(8).bytes(), Bytes(4096));
        assert_eq!(Bytes(1000).sectors(), Sectors(1));
    }
}
