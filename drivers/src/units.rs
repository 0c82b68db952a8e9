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
    pub const ZERO: Bytes = Bytes(0);

    pub const fn kib(n: u64) -> Bytes {
        Bytes(n * Self::KIB)
    }

    pub const fn mib(n: u64) -> Bytes {
        Bytes(n * Self::MIB)
    }

    pub const fn gib(n: u64) -> Bytes {
        Bytes(n * Self::GIB)
    }

    /// Whole sectors; a partial trailing sector is dropped (a device cannot expose half a sector).
    pub fn sectors(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }

    pub fn checked_add(self, other: Bytes) -> Option<Bytes> {
        self.0.checked_add(other.0).map(Bytes)
    }

    pub fn checked_sub(self, other: Bytes) -> Option<Bytes> {
        self.0.checked_sub(other.0).map(Bytes)
    }

    pub fn checked_mul(self, n: u64) -> Option<Bytes> {
        self.0.checked_mul(n).map(Bytes)
    }

    pub fn saturating_add(self, other: Bytes) -> Bytes {
        Bytes(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(other.0))
    }

    pub fn saturating_mul(self, n: u64) -> Bytes {
        Bytes(self.0.saturating_mul(n))
    }

    /// How many `unit`s it takes to hold `self`, a partial one counting as one ("64m" for
    /// lvcreate). `unit` must not be zero.
    pub fn div_ceil(self, unit: Bytes) -> u64 {
        self.0.div_ceil(unit.0)
    }

    /// Whether `self` is a whole number of `unit`s (as u64's: only zero is a multiple of zero).
    pub fn is_multiple_of(self, unit: Bytes) -> bool {
        self.0.is_multiple_of(unit.0)
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

// The operators behave as u64's do (overflow panics in debug builds); the checked_ and
// saturating_ forms are there where a size comes from outside.
impl std::ops::Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 + rhs.0)
    }
}

impl std::ops::AddAssign for Bytes {
    fn add_assign(&mut self, rhs: Bytes) {
        self.0 += rhs.0;
    }
}

impl std::ops::Sub for Bytes {
    type Output = Bytes;
    fn sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0 - rhs.0)
    }
}

impl std::ops::SubAssign for Bytes {
    fn sub_assign(&mut self, rhs: Bytes) {
        self.0 -= rhs.0;
    }
}

/// A size times a count (`n` blocks of `size`).
impl std::ops::Mul<u64> for Bytes {
    type Output = Bytes;
    fn mul(self, n: u64) -> Bytes {
        Bytes(self.0 * n)
    }
}

impl std::ops::Mul<Bytes> for u64 {
    type Output = Bytes;
    fn mul(self, b: Bytes) -> Bytes {
        Bytes(self * b.0)
    }
}

/// A size split in `n` parts, rounded down.
impl std::ops::Div<u64> for Bytes {
    type Output = Bytes;
    fn div(self, n: u64) -> Bytes {
        Bytes(self.0 / n)
    }
}

/// How many whole `unit`s fit in a size: a count, not a size.
impl std::ops::Div for Bytes {
    type Output = u64;
    fn div(self, unit: Bytes) -> u64 {
        self.0 / unit.0
    }
}

/// What is left over after the whole `unit`s.
impl std::ops::Rem for Bytes {
    type Output = Bytes;
    fn rem(self, unit: Bytes) -> Bytes {
        Bytes(self.0 % unit.0)
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        Bytes(iter.map(|b| b.0).sum())
    }
}

impl<'a> std::iter::Sum<&'a Bytes> for Bytes {
    fn sum<I: Iterator<Item = &'a Bytes>>(iter: I) -> Bytes {
        iter.copied().sum()
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
        assert_eq!(Sectors(0).bytes(), Bytes::ZERO);
    }

    #[test]
    fn arithmetic() {
        let (a, b) = (Bytes::mib(3), Bytes::mib(1));
        assert_eq!(a + b, Bytes::mib(4));
        assert_eq!(a - b, Bytes::mib(2));
        let mut c = a;
        c += b;
        c -= Bytes::kib(1024);
        assert_eq!(c, a);
        assert_eq!(b * 3, a);
        assert_eq!(3 * b, a);
        assert_eq!(a / 3, b);
        assert_eq!(a / b, 3);
        assert_eq!(Bytes(1000) / Bytes(512), 1);
        assert_eq!(Bytes(1000) % Bytes(512), Bytes(488));
        assert_eq!(Bytes::kib(1), Bytes(1024));
        assert_eq!(Bytes::gib(1), Bytes::mib(1024));
    }

    #[test]
    fn checked_and_saturating() {
        let max = Bytes(u64::MAX);
        assert_eq!(max.checked_add(Bytes(1)), None);
        assert_eq!(Bytes(1).checked_add(Bytes(2)), Some(Bytes(3)));
        assert_eq!(Bytes(1).checked_sub(Bytes(2)), None);
        assert_eq!(Bytes(3).checked_sub(Bytes(2)), Some(Bytes(1)));
        assert_eq!(max.checked_mul(2), None);
        assert_eq!(Bytes(4).checked_mul(2), Some(Bytes(8)));
        assert_eq!(max.saturating_add(Bytes(1)), max);
        assert_eq!(Bytes(1).saturating_sub(Bytes(2)), Bytes::ZERO);
        assert_eq!(max.saturating_mul(4), max);
        assert_eq!(Bytes::gib(1).saturating_mul(4), Bytes::gib(4));
    }

    #[test]
    fn rounding_and_multiples() {
        assert_eq!(Bytes::mib(4).div_ceil(Bytes::mib(1)), 4);
        assert_eq!((Bytes::mib(4) + Bytes(1)).div_ceil(Bytes::mib(1)), 5);
        assert_eq!(Bytes::ZERO.div_ceil(Bytes::mib(1)), 0);
        assert!(Bytes::gib(2).is_multiple_of(Bytes::gib(1)));
        assert!(!Bytes::mib(1536).is_multiple_of(Bytes::gib(1)));
        assert!(!Bytes(5).is_multiple_of(Bytes::ZERO));
        assert!(Bytes::ZERO.is_multiple_of(Bytes(512)));
    }

    #[test]
    fn sums_and_order() {
        let v = [Bytes(1), Bytes(2), Bytes(3)];
        assert_eq!(v.iter().sum::<Bytes>(), Bytes(6));
        assert_eq!(v.into_iter().sum::<Bytes>(), Bytes(6));
        assert!(Bytes(2) > Bytes(1));
        assert_eq!(v.iter().max(), Some(&Bytes(3)));
        assert_eq!(Bytes(1).percent_of(Bytes(4)), 25.0);
        assert_eq!(Bytes(1).percent_of(Bytes::ZERO), 0.0);
    }
}
