//! `pool activate --all`: every pool under a root brought back after a reboot, each reported.
//!
//! Opening a pool already activates it (loop files attached, dm tables rebuilt from the store,
//! an exported zpool blkdrv made imported, filesystems mounted) and a writer finishes what a
//! dead process left in flight; this walks every pool, keeps going past one that fails, and
//! says for each what came up and what recovery did.

use super::{Access, Pool, Root, STORE};
use crate::config::PoolConfig;
use crate::error::{PoolError, Result};
use crate::layer::PoolName;
use crate::store::Store;
use serde::Serialize;

/// Where one pool ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationState {
    /// Backing up, writer recovery done.
    Active,
    /// Backing up, but another process holds the writer lock (a running snapshotter): that
    /// process is the one that finishes unfinished operations.
    ActiveBusy,
    /// The backing could not be brought up, or the store could not be read.
    Failed,
}

/// One pool's line of `pool activate --all`.
#[derive(Debug, Serialize)]
pub struct Activation {
    pub pool: String,
    pub state: ActivationState,
    /// Recorded driver (None when the pool could not be opened at all).
    pub driver: Option<String>,
    pub layers: Option<usize>,
    /// What opening the pool finished, undid or forgot (mounts gone with the reboot).
    pub recovered: Vec<String>,
    /// What the pool did on its own (autoextend).
    pub notices: Vec<String>,
    /// Why the pool is not active (escaped when printed).
    pub error: Option<String>,
    /// The same error, kept for the exit status.
    #[serde(skip)]
    pub cause: Option<PoolError>,
}

impl Activation {
    fn failed(root: &Root, pool: &PoolName, e: PoolError) -> Activation {
        Activation {
            pool: pool.to_string(),
            state: ActivationState::Failed,
            driver: recorded_driver(root, pool),
            layers: None,
            recovered: Vec::new(),
            notices: Vec::new(),
            error: Some(e.to_string()),
            cause: Some(e),
        }
    }

    fn from_pool(root: &Root, mut pool: Pool, state: ActivationState) -> Activation {
        let name = pool.name().to_string();
        let driver = Some(pool.driver_name().to_string());
        let recovered = pool.recovered().to_vec();
        let notices = pool.take_notices();
        // The status reads the driver: a pool that opened but cannot answer is not up.
        match pool.status() {
            Ok(s) => Activation {
                pool: name,
                state,
                driver,
                layers: Some(s.layers),
                recovered,
                notices,
                error: None,
                cause: None,
            },
            Err(e) => Activation {
                driver,
                recovered,
                notices,
                ..Activation::failed(root, pool.name(), e)
            },
        }
    }
}

/// The driver a pool that would not open was made with, read from its store alone (which
/// needs no backing), so the report says which driver failed.
fn recorded_driver(root: &Root, name: &PoolName) -> Option<String> {
    let path = root.pool_dir(name).join(STORE);
    // Never create a store where there is none.
    if !path.is_file() {
        return None;
    }
    let store = Store::open(&path).ok()?;
    let config: PoolConfig = serde_json::from_str(&store.meta("config").ok()??).ok()?;
    Some(config.driver)
}

/// Activates one pool for `--all`: a writer when it can get the lock, else a reader (the
/// lock's holder has the pool open, so its backing is up; opening checks that it still is).
pub fn activate_one(root: &Root, name: &PoolName) -> Activation {
    match Pool::open(root, name, Access::Write) {
        Ok(p) => Activation::from_pool(root, p, ActivationState::Active),
        Err(PoolError::Busy { .. }) => match Pool::open(root, name, Access::Read) {
            Ok(p) => Activation::from_pool(root, p, ActivationState::ActiveBusy),
            Err(e) => Activation::failed(root, name, e),
        },
        Err(e) => Activation::failed(root, name, e),
    }
}

/// Every pool under `root`, in name order; one that fails does not stop the others. A pool
/// directory whose store is gone is reported failed too (`pool ls` skips it; at boot it is
/// better said). Errs only when the root itself cannot be listed.
pub fn activate_all(root: &Root) -> Result<Vec<Activation>> {
    // `pools()` lists those with a store (and says why the root cannot be read); the
    // directory adds those without one.
    let mut names: Vec<PoolName> = root.pools()?;
    let extra = std::fs::read_dir(root.path.join("pools"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| PoolName::new(&e.file_name().to_string_lossy()).ok());
    for n in extra {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(names.iter().map(|name| activate_one(root, name)).collect())
}

/// The verdict of `--all`: an error naming every pool that did not come up.
pub fn all_active(report: &[Activation]) -> Result<()> {
    let failed: Vec<String> = report
        .iter()
        .filter(|a| a.state == ActivationState::Failed)
        .map(|a| a.pool.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(PoolError::NotActivated {
            total: report.len(),
            failed,
        })
    }
}
