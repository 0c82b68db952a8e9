//! containerd's snapshot model, as the pool keeps it: arbitrary keys (`default/17/extract-1
//! sha256:...`, any bytes but NUL, 300+ bytes long) in a table of their own, mapped to layers.
//! Only snapshots made through this model are listed by it: layers made by the CLI never appear
//! (containerd's garbage collector removes every listed snapshot it does not know).

use crate::error::{PoolError, Result};
use blkdrv_drivers::{ObjectId, Usage};
use serde::Serialize;
use std::collections::BTreeMap;

/// containerd's snapshot kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A read-only snapshot of a committed parent (no layer of its own, no copy).
    View,
    /// A writable layer.
    Active,
    /// A committed, read-only layer that others can be prepared on.
    Committed,
}

/// Nanoseconds since the Unix epoch (containerd compares timestamps at nanosecond precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_nanos() as i64)
    }

    pub fn seconds(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    pub fn subsec_nanos(self) -> i32 {
        self.0.rem_euclid(1_000_000_000) as i32
    }
}

pub type Labels = BTreeMap<String, String>;

/// One snapshot as Stat and Walk report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub key: String,
    pub kind: SnapshotKind,
    /// The committed snapshot it was prepared or viewed on.
    pub parent: Option<String>,
    pub labels: Labels,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// What an Update changes (containerd's field mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelUpdate {
    /// No field paths: the labels are replaced by the given ones.
    ReplaceAll,
    /// `labels.KEY` paths: each named key is set to its new value, or deleted when the new
    /// labels lack it. (`labels` alone is `ReplaceAll`.)
    Keys(Vec<String>),
}

/// A snapshot's own space: its delta, never its parents'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SnapshotUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The longest key or name the pool stores. containerd's keys are `<namespace>/<seq>/<key>`
/// with keys of a few hundred bytes; a bound keeps one request from bloating the store.
pub const MAX_KEY_BYTES: usize = 4096;

/// A validated snapshot key or committed name: any bytes but NUL (SQLite and C callers stop at
/// it), not empty, at most [`MAX_KEY_BYTES`]. Slashes, spaces, quotes and commas are all fine:
/// the key never becomes a path or a kernel object's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SnapshotKey(String);

impl SnapshotKey {
    /// `what` says which argument it is ("key", "parent", "name") in the error.
    pub fn new(what: &str, s: &str) -> Result<SnapshotKey> {
        let bad = |why: String| {
            Err(PoolError::Invalid(format!(
                "invalid snapshot {what} {:?}: {why}",
                preview(s)
            )))
        };
        if s.is_empty() {
            return bad("empty".into());
        }
        if s.len() > MAX_KEY_BYTES {
            return bad(format!("{} bytes, the limit is {MAX_KEY_BYTES}", s.len()));
        }
        if s.contains('\0') {
            return bad("contains NUL".into());
        }
        Ok(SnapshotKey(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The start of a key for an error message: a 4 KiB key would drown the message.
fn preview(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl SnapshotKind {
    pub const ALL: [SnapshotKind; 3] = [
        SnapshotKind::View,
        SnapshotKind::Active,
        SnapshotKind::Committed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::View => "view",
            SnapshotKind::Active => "active",
            SnapshotKind::Committed => "committed",
        }
    }

    pub fn parse(s: &str) -> Option<SnapshotKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the store's snapshot table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub key: String,
    pub kind: SnapshotKind,
    /// The snapshot's own layer; for a view, its parent's layer (a view has none of its own).
    pub layer: ObjectId,
    pub parent: Option<String>,
    pub labels: Labels,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// Measured at commit (committed snapshots never change); `None` before, or where the
    /// driver could not tell.
    pub usage: Option<SnapshotUsage>,
}

impl SnapshotRecord {
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            key: self.key.clone(),
            kind: self.kind,
            parent: self.parent.clone(),
            labels: self.labels.clone(),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// Applies an Update's `new` labels to `labels` as `update` says.
pub fn apply_label_update(labels: &mut Labels, new: Labels, update: &LabelUpdate) {
    match update {
        LabelUpdate::ReplaceAll => *labels = new,
        LabelUpdate::Keys(keys) => {
            for k in keys {
                match new.get(k) {
                    Some(v) => labels.insert(k.clone(), v.clone()),
                    None => labels.remove(k),
                };
            }
        }
    }
}

impl From<Usage> for SnapshotUsage {
    fn from(u: Usage) -> SnapshotUsage {
        SnapshotUsage {
            bytes: u.bytes.0,
            inodes: u.inodes.unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_take_anything_but_nul_empty_and_huge() {
        let long = format!("default/17/extract-123 sha256:{}", "a".repeat(300));
        for ok in [
            "k",
            "default/17/extract-123 sha256:abc",
            "a \"quoted\", 'key'",
            "../..",
            long.as_str(),
        ] {
            assert_eq!(SnapshotKey::new("key", ok).unwrap().as_str(), ok);
        }
        assert!(SnapshotKey::new("key", &"x".repeat(MAX_KEY_BYTES)).is_ok());
        for bad in ["", "a\0b", &"x".repeat(MAX_KEY_BYTES + 1)] {
            let e = SnapshotKey::new("key", bad).unwrap_err();
            assert!(matches!(e, PoolError::Invalid(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn error_messages_cut_long_keys_on_a_char_boundary() {
        let key = format!("{}\0", "é".repeat(3000));
        let e = SnapshotKey::new("name", &key).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
        assert!(e.contains("snapshot name"), "{e}");
    }

    #[test]
    fn kinds_round_trip() {
        for k in SnapshotKind::ALL {
            assert_eq!(SnapshotKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(SnapshotKind::parse("Active"), None);
    }

    #[test]
    fn replace_all_replaces_and_keys_set_or_delete() {
        let mut l = labels(&[("a", "1"), ("b", "2")]);
        apply_label_update(&mut l, labels(&[("c", "3")]), &LabelUpdate::ReplaceAll);
        assert_eq!(l, labels(&[("c", "3")]));

        let mut l = labels(&[("a", "1"), ("b", "2"), ("keep", "k")]);
        apply_label_update(
            &mut l,
            labels(&[("a", "new"), ("z", "ignored: not named")]),
            &LabelUpdate::Keys(vec!["a".into(), "b".into(), "absent".into()]),
        );
        assert_eq!(l, labels(&[("a", "new"), ("keep", "k")]));
    }

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let t = Timestamp(1_700_000_000_123_456_789);
        assert_eq!(
            (t.seconds(), t.subsec_nanos()),
            (1_700_000_000, 123_456_789)
        );
        let neg = Timestamp(-1);
        assert_eq!((neg.seconds(), neg.subsec_nanos()), (-1, 999_999_999));
    }
}
