//! Configuration: host defaults from /etc/blkdrv/blkdrv.toml, and each pool's own config, which
//! lives in its store so that config and metadata can never disagree.

use crate::error::{PoolError, Result};
use blkdrv_drivers::{Bytes, DriverOptions, Identity};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/var/lib/blkdrv";
pub const DEFAULT_CONFIG: &str = "/etc/blkdrv/blkdrv.toml";
/// `pool init`'s driver when neither `--driver` nor the host config names one: the pick of
/// [`crate::init::auto_pick`]. Pools record the driver picked, never this word.
pub const DEFAULT_DRIVER: &str = AUTO_DRIVER;
/// The driver name that asks for [`crate::init::auto_pick`].
pub const AUTO_DRIVER: &str = "auto";
pub const DEFAULT_SIZE: Bytes = Bytes(20 << 30);
pub const DEFAULT_MIN_FREE_PCT: u8 = 10;

/// /etc/blkdrv/blkdrv.toml. Every key is optional; command-line flags win over it.
///
/// ```toml
/// root = "/var/lib/blkdrv"
/// [pool]
/// driver = "auto"
/// size = "20G"
/// fs = "xfs"
/// min_free = 10
/// ```
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub pool: PoolDefaults,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolDefaults {
    pub driver: Option<String>,
    pub size: Option<String>,
    pub fs: Option<String>,
    pub min_free: Option<u8>,
}

impl PoolDefaults {
    /// The driver options the host config sets defaults for, by key.
    pub fn driver_options(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.fs.iter().map(|v| ("fs", v.as_str()))
    }
}

impl HostConfig {
    /// Reads `path`; a missing file is an empty config, a malformed one an error.
    pub fn load(path: &Path) -> Result<HostConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostConfig::default()),
            Err(e) => return Err(PoolError::io("read config", path, e)),
        };
        let cfg: HostConfig = toml::from_str(&text).map_err(|e| PoolError::Config {
            path: path.to_path_buf(),
            reason: e.to_string().trim().to_string(),
        })?;
        if let Some(s) = &cfg.pool.size {
            s.parse::<Bytes>().map_err(|e| PoolError::Config {
                path: path.to_path_buf(),
                reason: format!("pool.size: {e}"),
            })?;
        }
        if cfg.pool.min_free.is_some_and(|p| p > 99) {
            return Err(PoolError::Config {
                path: path.to_path_buf(),
                reason: "pool.min_free must be a percentage from 0 to 99".into(),
            });
        }
        Ok(cfg)
    }
}

/// What backs a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backing {
    /// Sparse files under the pool directory, attached as loop devices on activation.
    Loopback { files: Vec<LoopFile> },
    /// Block devices given by the admin.
    Devices { paths: Vec<PathBuf> },
    /// Storage that already exists and that the driver's options name (an LVM thin pool).
    Existing {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopFile {
    /// Relative to the pool directory, so a moved root keeps working.
    pub file: PathBuf,
    pub size: Bytes,
}

/// Growing a loopback pool's file when the driver runs short of unallocated space (btrfs chunks,
/// thin-pool data). Checked by every writer before it adds a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoExtend {
    /// Grow when unallocated space falls below this percentage of the file size.
    pub threshold_pct: u8,
    /// Grow by this percentage of the current size (at least 64 MiB).
    pub step_pct: u8,
    /// Never grow the file beyond this size.
    pub max: Bytes,
}

impl AutoExtend {
    /// Defaults for a loopback file of `size`: grow by a quarter below 20% unallocated, up to 4x.
    pub fn for_size(size: Bytes, max: Option<Bytes>) -> AutoExtend {
        AutoExtend {
            threshold_pct: 20,
            step_pct: 25,
            max: max.unwrap_or(size.saturating_mul(4)),
        }
    }

    /// Whether `unallocated` is below the threshold for a file of `current` bytes.
    pub fn is_low(&self, current: Bytes, unallocated: Bytes) -> bool {
        // In u128: a percentage of a file size near u64::MAX must not overflow.
        u128::from(unallocated.0) * 100 < u128::from(current.0) * u128::from(self.threshold_pct)
    }

    /// The size to grow a file of `current` bytes to, if `unallocated` is low and the ceiling
    /// allows; `None` when no growth is due or possible.
    pub fn next_size(&self, current: Bytes, unallocated: Bytes) -> Option<Bytes> {
        if !self.is_low(current, unallocated) {
            return None;
        }
        let step = (current / 100 * u64::from(self.step_pct)).max(Bytes::mib(64));
        let next = current.saturating_add(step).min(self.max);
        (next > current).then_some(next)
    }
}

/// A pool's configuration, stored in its metadata store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    pub driver: String,
    pub backing: Backing,
    pub options: DriverOptions,
    pub identity: Identity,
    pub min_free_pct: u8,
    pub created: i64,
    /// Loopback pools only; `None` means the file never grows.
    #[serde(default)]
    pub autoextend: Option<AutoExtend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoextend_grows_only_when_low_and_under_the_ceiling() {
        let ax = AutoExtend::for_size(Bytes::gib(1), None);
        assert_eq!(ax.max, Bytes::gib(4));
        assert_eq!(ax.next_size(Bytes::gib(1), Bytes::mib(500)), None);
        assert_eq!(
            ax.next_size(Bytes::gib(1), Bytes::mib(100)),
            Some(Bytes(Bytes::GIB + Bytes::GIB / 100 * 25))
        );
        assert_eq!(
            ax.next_size(Bytes::gib(4), Bytes(0)),
            None,
            "at the ceiling"
        );
        let small = AutoExtend::for_size(Bytes::mib(100), Some(Bytes::gib(1)));
        assert_eq!(
            small.next_size(Bytes::mib(100), Bytes(0)),
            Some(Bytes::mib(164)),
            "64 MiB minimum step"
        );
    }

    /// A pool config as stored before identities were typed: the driver's record is an opaque
    /// text map to the pool, read and written back unchanged.
    #[test]
    fn stored_pool_configs_keep_their_identity() {
        let stored = r#"{"name":"p","driver":"zfs","backing":{"type":"existing"},"options":{},"identity":{"created":"none","dataset":"tank/x","dataset_guid":"42","zpool":"tank","zpool_guid":"7"},"min_free_pct":10,"created":1,"autoextend":null}"#;
        let c: PoolConfig = serde_json::from_str(stored).unwrap();
        assert_eq!(c.identity.get("dataset_guid"), Some("42"));
        assert_eq!(serde_json::to_string(&c).unwrap(), stored);
    }

    #[test]
    fn missing_config_is_empty() {
        let c = HostConfig::load(Path::new("/nonexistent/blkdrv.toml")).unwrap();
        assert_eq!(c, HostConfig::default());
    }

    #[test]
    fn config_is_parsed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "root = \"/srv/b\"\n[pool]\ndriver = \"vfs\"\nsize = \"4G\"\n",
        )
        .unwrap();
        let c = HostConfig::load(&p).unwrap();
        assert_eq!(c.root.as_deref(), Some(Path::new("/srv/b")));
        assert_eq!(c.pool.driver.as_deref(), Some("vfs"));

        std::fs::write(&p, "[pool]\nsize = \"lots\"\n").unwrap();
        assert!(HostConfig::load(&p).is_err());
        std::fs::write(&p, "bogus = 1\n").unwrap();
        let e = HostConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
