//! blkdrv pool manager.
//!
//! The only owner of pool config, layer metadata, ids, parent links, state, locking and space
//! policy. It calls drivers (never the kernel directly) and is called by the CLI.

pub mod bench;
pub mod config;
pub mod crash;
pub mod error;
pub mod layer;
pub mod lock;
pub mod pool;
pub mod signal;
pub mod store;
pub mod text;

pub use config::{HostConfig, PoolConfig};
pub use error::{PoolError, Result};
pub use layer::{LayerKind, LayerName, LayerState, PoolName};
pub use layertar::DiffStats;
pub use pool::{Access, BackingSpec, CreateOutcome, InitSpec, LayerInfo, Pool, Root, Source};

// The vocabulary `blkdrv bench` and its hot-path benches use, so they need no drivers crate.
pub use blkdrv_drivers::{Bytes, DriverOptions, ObjectId};
