//! What callers hand the pool and what it hands back: requests, outcomes, reports.

use crate::config::{AutoExtend, Backing};
use crate::layer::{LayerKind, LayerOwner, LayerState, PoolName};
use crate::store::MountRecord;
use blkdrv_drivers::Identity;
use blkdrv_drivers::{Bytes, Capabilities, DriverOptions, Space};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What to back a new pool with.
#[derive(Debug, Clone)]
pub enum BackingSpec {
    Loopback {
        size: Bytes,
    },
    Devices(Vec<PathBuf>),
    /// Existing storage the driver options name (`--thinpool VG/LV`).
    Existing,
}

/// Parameters of `pool init`.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub name: PoolName,
    pub driver: String,
    pub backing: BackingSpec,
    pub options: DriverOptions,
    pub min_free_pct: u8,
    /// Overwrite devices that carry a signature.
    pub force: bool,
    /// Growth policy for loopback pools (ignored for devices).
    pub autoextend: Option<AutoExtend>,
}

/// The parts of a `pool init` that [`Pool::provision`](super::Pool::provision) needs besides
/// the driver's plan.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub name: PoolName,
    pub min_free_pct: u8,
    pub force: bool,
    /// Growth policy, for a loopback plan.
    pub autoextend: Option<AutoExtend>,
}

/// How `layer mount` mounts (see [`Pool::mount_with`](super::Pool::mount_with)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountRequest {
    pub read_only: bool,
    /// Let device nodes in the layer be opened through the mount (no `nodev`).
    pub dev: bool,
}

/// Where a layer's content comes from on `layer create`.
pub enum Source<'a> {
    /// A tar stream (plain or gzip) from a file or stdin.
    Tar(Box<dyn std::io::Read + 'a>),
    /// A directory tree, archived deterministically.
    Dir(&'a Path),
}

#[derive(Debug, Clone, Serialize)]
pub struct CreateOutcome {
    pub layer: LayerInfo,
    /// True when identical content on the same parent existed: the name now points at it.
    pub reused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoveOutcome {
    /// The layer had other names; only this name was dropped.
    Untagged,
    Removed,
    /// The driver found the object busy; the layer stays `removing` and the next writer retries.
    Deferred,
}

/// A layer as users see it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub names: Vec<String>,
    pub id: u32,
    pub parent: Option<String>,
    pub parent_id: Option<u32>,
    pub kind: LayerKind,
    pub state: LayerState,
    pub digest: Option<String>,
    pub created: i64,
    /// Bytes exclusive to this layer (recorded at commit; measured live for active layers).
    pub size_bytes: Option<u64>,
    pub inodes: Option<u64>,
    /// Bytes the layer references, shared ones included (drivers that know it).
    pub referenced_bytes: Option<u64>,
    /// Size limit set at create/snapshot.
    pub limit_bytes: Option<u64>,
    pub depth: usize,
    pub mounts: Vec<MountRecord>,
    /// Who the layer belongs to when not to the CLI's user: `containerd` for a snapshot's
    /// layer, which only containerd's snapshots API lists or removes.
    pub owner: Option<LayerOwner>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub driver: String,
    pub dir: PathBuf,
    pub backing: Backing,
    pub options: DriverOptions,
    pub identity: Identity,
    pub capabilities: Capabilities,
    pub space: Space,
    pub min_free_pct: u8,
    pub layers: usize,
    pub committed: usize,
    pub active: usize,
    pub in_flight: usize,
    pub mounts: Vec<MountRecord>,
}

/// Result of `pool check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Unfinished operations finished or undone when the pool was opened.
    pub recovered: Vec<String>,
    /// Objects on disk that the store does not know.
    pub orphans: Vec<u32>,
    /// Layers in the store whose object is missing on disk (volumes' and containers' too).
    pub missing: Vec<u32>,
    /// Of those, the volumes' and containers' (`volume NAME`, `container NAME`), to name them.
    pub missing_owned: Vec<String>,
    /// Mount records whose target is no longer mounted (in the namespace that made them).
    pub stale_mounts: Vec<MountRecord>,
    /// Mount records in a mount namespace this process cannot look into (no process is in it,
    /// something holds it open): kept, since they may still be mounted.
    pub unverified_mounts: Vec<MountRecord>,
    /// What `--repair` changed.
    pub repaired: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.orphans.is_empty() && self.missing.is_empty() && self.stale_mounts.is_empty()
    }
}

/// What `volume create` makes.
#[derive(Debug, Clone, Default)]
pub struct VolumeSpec {
    /// The most data the volume may hold (`--size`), where the driver can enforce it.
    pub limit: Option<Bytes>,
    /// Another volume to clone natively (`--from`): copy-on-write, in constant time where
    /// the driver has snapshots.
    pub from: Option<String>,
    /// `--label KEY=VALUE`, as `docker volume create` takes them.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A volume as users see it (`volume ls`, `volume inspect`).
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// The volume's object in the pool (a layer id no layer has).
    pub id: u32,
    pub state: LayerState,
    /// Unix seconds.
    pub created: i64,
    /// Made for one container by `-v /path` (removed with it by `container rm --volumes`).
    pub anonymous: bool,
    /// The volume it was cloned from, if it still exists.
    pub origin: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub limit_bytes: Option<u64>,
    /// Bytes exclusive to the volume, measured live (`None` in `volume ls` unless measured, or
    /// where the driver cannot tell).
    pub size_bytes: Option<u64>,
    pub referenced_bytes: Option<u64>,
    /// Containers that mount it.
    pub users: Vec<String>,
}

/// Lifecycle of a container. `Creating` and `Removing` are intents a crash may leave behind
/// (the next writer undoes or finishes them); a container is `Mounted` while `container mount`
/// has its root filesystem assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Creating,
    Created,
    Mounting,
    Mounted,
    Unmounting,
    Removing,
}

impl ContainerState {
    pub const ALL: [ContainerState; 6] = [
        ContainerState::Creating,
        ContainerState::Created,
        ContainerState::Mounting,
        ContainerState::Mounted,
        ContainerState::Unmounting,
        ContainerState::Removing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Creating => "creating",
            ContainerState::Created => "created",
            ContainerState::Mounting => "mounting",
            ContainerState::Mounted => "mounted",
            ContainerState::Unmounting => "unmounting",
            ContainerState::Removing => "removing",
        }
    }

    pub fn parse(s: &str) -> Option<ContainerState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `container create` makes.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The committed layer the container's writable layer goes on.
    pub image: String,
    /// Volumes, binds and tmpfs, as parsed from `-v` and `--mount`.
    pub mounts: Vec<crate::container::MountEntry>,
    /// Size limit of the writable layer, where the driver has per-layer limits.
    pub limit: Option<Bytes>,
}

/// A container as users see it (`container ls`, `container inspect`).
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub name: String,
    pub state: ContainerState,
    /// The image layer it was created on.
    pub image: String,
    pub image_id: u32,
    /// Its writable layer's object.
    pub layer_id: u32,
    /// Unix seconds.
    pub created: i64,
    /// Its mounts as recorded (anonymous volumes named).
    pub mounts: Vec<crate::container::MountEntry>,
    /// Where `container mount` assembled its root, while mounted.
    pub root: Option<PathBuf>,
    /// Bytes exclusive to the writable layer (measured by `container inspect`).
    pub size_bytes: Option<u64>,
}

/// What `container mount` assembled.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerMounted {
    pub name: String,
    pub root: PathBuf,
    /// Every mount made, in order: the writable layer at `root`, then each volume, bind and
    /// tmpfs at the host path its target resolved to inside the root, parents first.
    pub mounts: Vec<PathBuf>,
}

/// What `container rm` removed.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerRemoved {
    pub name: String,
    /// Anonymous volumes removed with it (`--volumes`).
    pub volumes_removed: Vec<String>,
    /// Whether the writable layer's removal was deferred (busy object; the next writer
    /// finishes it).
    pub deferred: bool,
}

/// One line of `blkdrv history`: a layer of the chain, top first.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// Its first name, or `<layer ID>` for a layer with none.
    pub layer: String,
    pub id: u32,
    pub kind: LayerKind,
    pub state: LayerState,
    /// Unix seconds.
    pub created: i64,
    /// The layer's own size (bytes exclusive to it).
    pub size_bytes: Option<u64>,
    /// Given at create (`layer create --comment`, `container commit --comment`).
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_states_round_trip_as_their_json_names() {
        for st in ContainerState::ALL {
            assert_eq!(ContainerState::parse(st.as_str()), Some(st));
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
        }
        assert_eq!(ContainerState::parse("running"), None);
    }
}
