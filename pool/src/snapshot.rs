//! containerd's snapshot model, as the pool keeps it: arbitrary keys (`default/17/extract-1
//! sha256:...`, any bytes but NUL, 300+ bytes long) in a table of their own, mapped to layers.
//! Only snapshots made through this model are listed by it: layers made by the CLI never appear
//! (containerd's garbage collector removes every listed snapshot it does not know).

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
