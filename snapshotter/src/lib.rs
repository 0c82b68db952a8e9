//! blkdrv's containerd proxy snapshotter: `containerd.services.snapshots.v1.Snapshots` over gRPC
//! on a unix socket, one blkdrv pool per snapshotter name. A front end like the CLI: it calls
//! the pool manager only (`blkdrv_pool`), never the drivers or the kernel.

/// The generated API (server and client), re-exported for the tests and tools.
pub use containerd_snapshots::api;

use std::path::PathBuf;

/// Default socket, as containerd's `[proxy_plugins.blkdrv] address` names it.
pub const DEFAULT_SOCKET: &str = "/run/blkdrv/snapshotter.sock";

/// What `blkdrv snapshotter serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The state directory holding the pools (`--root`).
    pub root: PathBuf,
    /// (snapshotter name as containerd sends it, pool name), at least one.
    pub pools: Vec<(String, String)>,
    pub socket: PathBuf,
    /// Mounts without `nodev` (see the README's Security section).
    pub allow_devices: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("pool {pool:?}: {source}")]
    Pool {
        pool: String,
        #[source]
        source: blkdrv_pool::PoolError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Serves until SIGTERM or SIGINT, then finishes the request in flight and returns.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let _ = opts;
    Err(ServeError::Invalid("not implemented yet".into()))
}
