//! The layer model: validated names, kinds and states.

use crate::error::{PoolError, Result};
use blkdrv_drivers::{ObjectId, Usage};
use serde::{Deserialize, Serialize};
use std::fmt;

pub const MAX_NAME_BYTES: usize = 128;

/// A layer name (like an image tag or a container name). Validated at construction: it becomes
/// part of paths and messages, so `/`, `..`, NUL and control characters are refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct LayerName(String);

impl LayerName {
    pub fn new(s: &str) -> Result<LayerName> {
        validate_name("layer", s, MAX_NAME_BYTES).map(|_| LayerName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pool name: stricter than layer names because it names a directory and kernel objects
/// (dm device names, zpool names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PoolName(String);

impl PoolName {
    pub fn new(s: &str) -> Result<PoolName> {
        validate_name("pool", s, 64)?;
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(PoolError::Invalid(format!(
                "invalid pool name {s:?}: use letters, digits, '_', '-' and '.'"
            )));
        }
        Ok(PoolName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_name(what: &str, s: &str, max: usize) -> Result<()> {
    let bad = |why: &str| {
        Err(PoolError::Invalid(format!(
            "invalid {what} name {s:?}: {why}"
        )))
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > max {
        return bad(&format!("{} bytes, the limit is {max}", s.len()));
    }
    if s.contains('\0') {
        return bad("contains NUL");
    }
    if s.contains('/') {
        return bad("contains '/'");
    }
    if s.contains("..") {
        return bad("contains '..'");
    }
    if s.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if s.starts_with('-') || s.starts_with('.') {
        return bad("must not start with '-' or '.'");
    }
    Ok(())
}

/// A layer's comment (`layer create --comment "RUN pip install flask"`), shown by `history`
/// like `docker history`'s CREATED BY. Any text up to 1024 bytes but NUL; printed escaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LayerComment(String);

impl LayerComment {
    pub const MAX_BYTES: usize = 1024;

    pub fn new(s: &str) -> Result<LayerComment> {
        if s.len() > Self::MAX_BYTES {
            return Err(PoolError::Invalid(format!(
                "comment is {} bytes, the limit is {}",
                s.len(),
                Self::MAX_BYTES
            )));
        }
        if s.contains('\0') {
            return Err(PoolError::Invalid("comment contains NUL".into()));
        }
        Ok(LayerComment(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a layer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Imported from a tar or directory; identified by parent + content digest.
    Image,
    /// Snapshot of a committed layer, writable until committed (a container's layer).
    Container,
    /// A volume's object: writable, no parent, never committed.
    Volume,
}

/// Lifecycle of a layer. The in-flight states (`Creating`, `Committing`, `Removing`) are the
/// recorded intent of the operation under way; a process that dies in one of them leaves the
/// state behind and the next writer to open the pool finishes or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerState {
    Creating,
    Active,
    Committing,
    Committed,
    Removing,
}

impl LayerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Image => "image",
            LayerKind::Container => "container",
            LayerKind::Volume => "volume",
        }
    }

    pub fn parse(s: &str) -> Option<LayerKind> {
        [LayerKind::Image, LayerKind::Container, LayerKind::Volume]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl LayerState {
    pub const ALL: [LayerState; 5] = [
        LayerState::Creating,
        LayerState::Active,
        LayerState::Committing,
        LayerState::Committed,
        LayerState::Removing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerState::Creating => "creating",
            LayerState::Active => "active",
            LayerState::Committing => "committing",
            LayerState::Committed => "committed",
            LayerState::Removing => "removing",
        }
    }

    pub fn parse(s: &str) -> Option<LayerState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the layer is usable (not mid-operation).
    pub fn is_settled(self) -> bool {
        matches!(self, LayerState::Active | LayerState::Committed)
    }
}

impl fmt::Display for LayerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a layer belongs to, when not to the CLI's user. Layers with an owner have no name: the
/// CLI's layer commands cannot reach them, and only their owner's API lists or removes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerOwner {
    /// A snapshot's layer, made and removed through containerd's snapshots API.
    Containerd,
    /// A volume's object (`blkdrv volume`).
    Volume,
    /// A container's writable layer (`blkdrv container`).
    Container,
}

impl LayerOwner {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerOwner::Containerd => "containerd",
            LayerOwner::Volume => "volume",
            LayerOwner::Container => "container",
        }
    }

    pub fn parse(s: &str) -> Option<LayerOwner> {
        [
            LayerOwner::Containerd,
            LayerOwner::Volume,
            LayerOwner::Container,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

impl fmt::Display for LayerOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the store's layer table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRecord {
    pub id: ObjectId,
    pub parent: Option<ObjectId>,
    pub kind: LayerKind,
    pub state: LayerState,
    /// Content digest ("sha256:...") of an image layer's uncompressed tar.
    pub digest: Option<String>,
    /// The name to bind once an in-flight create finishes.
    pub pending_name: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Exclusive usage, recorded at commit (committed layers never change).
    pub size: Option<Usage>,
    /// Size limit given at create/snapshot (drivers with per-layer limits).
    pub limit: Option<blkdrv_drivers::Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_are_validated() {
        for ok in ["base", "my-app_1.0", "ubuntu:22.04", "a b"] {
            assert!(LayerName::new(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "a\0b",
            "-x",
            ".hidden",
            "tab\t",
            long.as_str(),
        ] {
            assert!(LayerName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(LayerName::new(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn pool_names_are_strict() {
        assert!(PoolName::new("default").is_ok());
        assert!(PoolName::new("a:b").is_err());
        assert!(PoolName::new("a b").is_err());
    }

    #[test]
    fn states_round_trip() {
        for s in LayerState::ALL {
            assert_eq!(LayerState::parse(s.as_str()), Some(s));
        }
        assert_eq!(LayerKind::parse("image"), Some(LayerKind::Image));
        for k in [LayerKind::Image, LayerKind::Container, LayerKind::Volume] {
            assert_eq!(LayerKind::parse(k.as_str()), Some(k));
        }
        for o in [
            LayerOwner::Containerd,
            LayerOwner::Volume,
            LayerOwner::Container,
        ] {
            assert_eq!(LayerOwner::parse(o.as_str()), Some(o));
        }
        assert_eq!(LayerOwner::parse("user"), None);
        assert_eq!(LayerState::parse("bogus"), None);
    }
}
