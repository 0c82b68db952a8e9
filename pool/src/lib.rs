//! blkdrv pool manager.
//!
//! The only owner of pool config, layer metadata, ids, parent links, state, locking and space
//! policy. It calls drivers (never the kernel directly) and is called by the CLI.

pub mod bench;
pub mod config;
pub mod container;
pub mod crash;
pub mod error;
pub mod init;
pub mod layer;
pub mod lock;
pub mod pool;
pub mod signal;
pub mod snapshot;
pub mod storage_setup;
pub mod store;
pub mod text;

/// The drivers' vocabulary the pool hands out, so front ends need not depend on the drivers.
pub use blkdrv_drivers::{
    Bytes, Capabilities, DriverOptions, Granularity, MountMode, MountSpec, ObjectId, OptionKind,
    OptionRole, OptionSpec, ParseSizeError, Space, Usage,
};
pub use config::{HostConfig, PoolConfig};
pub use container::{ContainerName, ContainerPath, MountEntry, MountSource, VolumeName};
pub use error::{PoolError, Result};
pub use init::{DriverFlag, DriverInfo, InitRequest};
pub use layer::{LayerComment, LayerKind, LayerName, LayerOwner, LayerState, PoolName};
pub use layertar::DiffStats;
pub use pool::{
    Access, BackingSpec, ContainerInfo, ContainerMounted, ContainerRemoved, ContainerSpec,
    ContainerState, CreateOutcome, ExportPolicy, HistoryEntry, InitSpec, LayerInfo, Pool, Root,
    Source, VolumeInfo, VolumeSpec,
};
pub use snapshot::{
    LabelUpdate, Labels, SnapshotInfo, SnapshotKind, SnapshotUsage, Timestamp, MAX_KEY_BYTES,
};
