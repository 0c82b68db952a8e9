//! Object ids. The pool allocates them; drivers derive their on-disk names from them, so that a
//! crash between "record the intent" and "create the object" can always find the object again.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Eight random hex digits for names that must not collide with another pool's on the same host
/// (dm device prefixes, zpool names).
pub fn random_tag() -> String {
    let mut b = [0u8; 4];
    let got = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    if got.is_err() {
        // Time and pid are unique enough for a name.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t ^ std::process::id()).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Identifies one layer's storage object inside a pool. Fits in 24 bits because device-mapper
/// thin ids do, and the devicemapper driver uses the object id as its thin id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ObjectId(u32);

impl ObjectId {
    pub const MAX: u32 = (1 << 24) - 1;

    /// The one valid id the store never allocates ([`ObjectId::is_allocatable`]): the scratch
    /// object of a bench hook ([`crate::BenchHooks::raw_snapshot`]) is named after it, so a
    /// benchmark can never touch, or be mistaken for, a layer. Drivers that name scratch
    /// objects by id (dm: the thin id) use this one.
    pub const SCRATCH: ObjectId = ObjectId(Self::MAX);

    /// Whether the store may hand `self` out to a layer: every valid id but [`Self::SCRATCH`].
    pub fn is_allocatable(self) -> bool {
        self != Self::SCRATCH
    }

    pub fn new(v: u32) -> Result<ObjectId, InvalidObjectId> {
        if v == 0 || v > Self::MAX {
            Err(InvalidObjectId(v as u64))
        } else {
            Ok(ObjectId(v))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// Parses the directory or device name a driver gave the object (decimal).
    pub fn parse(s: &str) -> Option<ObjectId> {
        s.parse::<u32>().ok().and_then(|v| ObjectId::new(v).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object id {0} is out of range (1..=16777215)")]
pub struct InvalidObjectId(pub u64);

impl TryFrom<u32> for ObjectId {
    type Error = InvalidObjectId;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        ObjectId::new(v)
    }
}

impl From<ObjectId> for u32 {
    fn from(id: ObjectId) -> u32 {
        id.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_enforced() {
        assert!(ObjectId::new(0).is_err());
        assert!(ObjectId::new(1).is_ok());
        assert!(ObjectId::new(ObjectId::MAX).is_ok());
        assert!(ObjectId::new(ObjectId::MAX + 1).is_err());
        assert_eq!(ObjectId::parse("42").map(ObjectId::get), Some(42));
        assert_eq!(ObjectId::parse("x"), None);
        assert!(serde_json::from_str::<ObjectId>("0").is_err());
        assert!(ObjectId::new(1).unwrap().is_allocatable());
        assert!(ObjectId::new(ObjectId::MAX - 1).unwrap().is_allocatable());
        assert!(!ObjectId::SCRATCH.is_allocatable());
    }
}
