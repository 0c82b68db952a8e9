//! The container and volume model: validated names, container paths and the mounts a
//! container records, spelled on the command line as Docker spells them (`-v`, `--mount`).

use crate::error::{PoolError, Result};
use blkdrv_drivers::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A volume name. Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`): it names an object in the
/// pool and appears in paths and messages, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

/// A container name, by the same rule as Docker's (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

/// A path inside a container's root filesystem: absolute, without `.`/`..` components, empty
/// components, NUL or control characters, and not the root itself. Kept as the user wrote it
/// minus redundant slashes; resolving it (symlinks in the writable layer included) happens
/// inside the root at mount time, never on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerPath(String);

/// Where a container mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSource {
    /// A volume of the pool. `name: None` only as parsed from `-v /path` or `--mount
    /// type=volume` without a source: `container create` names it and records `anonymous`.
    /// `nocopy`: do not fill a new, empty volume from the image's directory at the target.
    Volume {
        name: Option<VolumeName>,
        anonymous: bool,
        nocopy: bool,
    },
    /// A host directory or file (absolute path), bind-mounted recursively.
    Bind { source: PathBuf },
    /// A fresh tmpfs, gone at unmount.
    Tmpfs {
        size: Option<Bytes>,
        /// Permission bits of its root (Docker's default 1777).
        mode: Option<u32>,
    },
}

/// One mount of a container, as `container create` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    #[serde(flatten)]
    pub source: MountSource,
    pub target: ContainerPath,
    pub readonly: bool,
}

mod parse;
#[cfg(test)]
mod tests;

fn validate_docker_name(what: &str, s: &str) -> Result<()> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if s.len() < 2 || s.len() > crate::layer::MAX_NAME_BYTES || !ok_first || !ok_rest {
        return Err(PoolError::Invalid(format!(
            "invalid {what} name {:?}: use 2 to {} characters of [a-zA-Z0-9_.-], starting with a letter or digit",
            crate::text::escape_controls(s),
            crate::layer::MAX_NAME_BYTES
        )));
    }
    Ok(())
}

macro_rules! docker_name {
    ($t:ident, $what:literal) => {
        impl $t {
            pub fn new(s: &str) -> Result<$t> {
                validate_docker_name($what, s).map(|()| $t(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $t {
            type Error = PoolError;
            fn try_from(s: String) -> Result<$t> {
                $t::new(&s)
            }
        }

        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }
    };
}

docker_name!(VolumeName, "volume");
docker_name!(ContainerName, "container");

impl ContainerPath {
    pub fn new(s: &str) -> Result<ContainerPath> {
        let bad = |why: &str| {
            Err(PoolError::Invalid(format!(
                "invalid container path {:?}: {why}",
                crate::text::escape_controls(s)
            )))
        };
        if !s.starts_with('/') {
            return bad("must be absolute");
        }
        if s.chars().any(|c| c == '\0' || c.is_control()) {
            return bad("contains a control character");
        }
        let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return bad("is the container's root");
        }
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return bad("must not contain '.' or '..' components");
        }
        Ok(ContainerPath(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components below the root, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|p| !p.is_empty())
    }

    /// Whether `self` lies strictly below `other` (`/a/b` below `/a`, not below `/ab`).
    pub fn is_below(&self, other: &ContainerPath) -> bool {
        self.0.len() > other.0.len()
            && self.0.starts_with(&other.0)
            && self.0.as_bytes()[other.0.len()] == b'/'
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ContainerPath {
    type Error = PoolError;
    fn try_from(s: String) -> Result<ContainerPath> {
        ContainerPath::new(&s)
    }
}

impl From<ContainerPath> for String {
    fn from(p: ContainerPath) -> String {
        p.0
    }
}
