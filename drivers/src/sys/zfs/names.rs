//! Names of pools, datasets and snapshots as validated newtypes: what reaches a command line
//! is never taken for an option or for another object.

use std::fmt;

/// Longest dataset or snapshot name (ZFS_MAX_DATASET_NAME_LEN without the NUL).
pub const MAX_NAME: usize = 255;
/// Longest pool name: the kernel keeps room for "<pool>/$ORIGIN@$ORIGIN" (zfs_namecheck.c).
const MAX_POOL_NAME: usize = 256 - 2 - 2 * "$ORIGIN".len() - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ZFS {kind} name {name:?}: {reason}")]
pub struct InvalidName {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

fn invalid(kind: &'static str, name: &str, reason: impl Into<String>) -> InvalidName {
    InvalidName {
        kind,
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// One component of a name. ZFS also allows spaces; blkdrv does not, so names survive
/// mountinfo escaping and whitespace-split output unchanged.
fn check_component(kind: &'static str, whole: &str, c: &str) -> Result<(), InvalidName> {
    if c.is_empty() {
        return Err(invalid(kind, whole, "empty component"));
    }
    if c == "." || c == ".." {
        return Err(invalid(kind, whole, format!("component {c:?} is reserved")));
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':')))
    {
        return Err(invalid(
            kind,
            whole,
            format!("character {bad:?} is not allowed (letters, digits, - _ . :)"),
        ));
    }
    Ok(())
}

/// A zpool name, checked as the kernel checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZpoolName(String);

impl ZpoolName {
    pub fn new(s: &str) -> Result<ZpoolName, InvalidName> {
        check_component("pool", s, s)?;
        if s.len() > MAX_POOL_NAME {
            return Err(invalid(
                "pool",
                s,
                format!("longer than {MAX_POOL_NAME} characters"),
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(invalid("pool", s, "must start with a letter"));
        }
        if matches!(s, "mirror" | "raidz" | "draid") {
            return Err(invalid("pool", s, "the name is reserved"));
        }
        Ok(ZpoolName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool's root dataset.
    pub fn root(&self) -> Dataset {
        Dataset(self.0.clone())
    }
}

impl std::str::FromStr for ZpoolName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<ZpoolName, InvalidName> {
        ZpoolName::new(s)
    }
}

impl fmt::Display for ZpoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A filesystem or volume name (`pool/a/b`): no snapshot or bookmark part.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dataset(String);

impl Dataset {
    pub fn new(s: &str) -> Result<Dataset, InvalidName> {
        if s.len() > MAX_NAME {
            return Err(invalid(
                "dataset",
                s,
                format!("longer than {MAX_NAME} characters"),
            ));
        }
        let mut parts = s.split('/');
        let pool = parts.next().unwrap_or_default();
        ZpoolName::new(pool).map_err(|e| invalid("dataset", s, e.reason))?;
        for c in parts {
            check_component("dataset", s, c)?;
        }
        Ok(Dataset(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn pool(&self) -> ZpoolName {
        ZpoolName(self.0.split('/').next().unwrap_or_default().to_string())
    }

    /// The last component.
    pub fn leaf(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    pub fn child(&self, leaf: &str) -> Result<Dataset, InvalidName> {
        check_component("dataset", leaf, leaf)?;
        Dataset::new(&format!("{}/{leaf}", self.0))
    }

    pub fn snapshot(&self, name: &str) -> Result<Snapshot, InvalidName> {
        let whole = format!("{}@{name}", self.0);
        check_component("snapshot", &whole, name)?;
        if whole.len() > MAX_NAME {
            return Err(invalid(
                "snapshot",
                &whole,
                format!("longer than {MAX_NAME} characters"),
            ));
        }
        Ok(Snapshot(whole))
    }
}

impl std::str::FromStr for Dataset {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Dataset, InvalidName> {
        Dataset::new(s)
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `dataset@name`, only made from a valid [`Dataset`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot(String);

impl Snapshot {
    /// A `dataset@name` as ZFS prints it (an `origin` property), checked like one made here.
    pub fn parse(s: &str) -> Result<Snapshot, InvalidName> {
        let (ds, name) = s
            .split_once('@')
            .ok_or_else(|| invalid("snapshot", s, "no '@'"))?;
        Dataset::new(ds)?.snapshot(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The snapshot's own name, after the '@'.
    pub fn name(&self) -> &str {
        self.0.split_once('@').map(|(_, n)| n).unwrap_or_default()
    }

    /// The dataset it is a snapshot of.
    pub fn dataset(&self) -> Dataset {
        Dataset(
            self.0
                .split_once('@')
                .map(|(d, _)| d)
                .unwrap_or_default()
                .to_string(),
        )
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_follow_the_kernel_rules() {
        for ok in ["tank", "blkdrv-t-0a1b2c3d", "a.b:c_d-e", "mirrored"] {
            assert!(ZpoolName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "1tank", "-o", "mirror", "raidz", "ta nk", "ta/nk", "t@x", "t%",
        ] {
            assert!(ZpoolName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ZpoolName::new(&"a".repeat(MAX_POOL_NAME)).is_ok());
        assert!(ZpoolName::new(&"a".repeat(MAX_POOL_NAME + 1)).is_err());
    }

    #[test]
    fn dataset_names_are_checked_per_component() {
        let d = Dataset::new("tank/blkdrv/layers").unwrap();
        assert_eq!(d.pool().as_str(), "tank");
        assert_eq!(d.leaf(), "layers");
        assert_eq!(d.child("17").unwrap().as_str(), "tank/blkdrv/layers/17");
        assert_eq!(
            d.snapshot("committed").unwrap().as_str(),
            "tank/blkdrv/layers@committed"
        );
        assert_eq!(Dataset::new("tank").unwrap().leaf(), "tank");
        for bad in [
            "",
            "tank/",
            "/tank",
            "tank//a",
            "tank/../a",
            "tank/.",
            "tank@snap",
            "tank#book",
            "tank/a b",
            "1tank/a",
            "tank/-o\n",
        ] {
            assert!(Dataset::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(d.child("a/b").is_err());
        assert!(d.child("").is_err());
        assert!(d.snapshot("x@y").is_err());
        let long = format!("tank/{}", "a".repeat(MAX_NAME - 5));
        assert!(Dataset::new(&long).is_ok());
        assert!(Dataset::new(&format!("{long}a")).is_err());
        assert!(Dataset::new(&long).unwrap().snapshot("s").is_err());
        let s = Snapshot::parse("tank/blkdrv/7@clone-9").unwrap();
        assert_eq!(
            (s.dataset().as_str(), s.name()),
            ("tank/blkdrv/7", "clone-9")
        );
        for bad in ["tank/7", "tank/7@", "tank/7@a@b", "@x", "tank/a b@x"] {
            assert!(Snapshot::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Dataset::new("tank/a b").unwrap_err().to_string();
        assert!(e.contains("tank/a b") && e.contains("' '"), "{e}");
    }
}
