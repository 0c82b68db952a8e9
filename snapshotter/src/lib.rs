//! blkdrv's containerd proxy snapshotter: `containerd.services.snapshots.v1.Snapshots` over gRPC
//! on a unix socket, one blkdrv pool per snapshotter name. A front end like the CLI: it calls
//! the pool manager only (`blkdrv_pool`), never the drivers or the kernel.
//!
//! - `service`: the generated service over the pool's snapshot API (one writer per pool, read
//!   handles for Stat/Walk/Usage, everything in `spawn_blocking`);
//! - `convert`: wire types and the error codes containerd branches on;
//! - `filter`: containerd's Walk filter syntax;
//! - here: the socket, the runtime, and the stop on SIGTERM/SIGINT.

// `tonic::Status` (176 bytes) is the error type the generated service returns; the helpers
// that build it return it too, rather than boxing it only to unbox it at every call.
#![allow(clippy::result_large_err)]

/// The generated API (server and client), re-exported for the tests and tools.
pub use containerd_snapshots::api;
/// The gRPC stack the API is generated for, so that clients (the tests) use the same version.
pub use containerd_snapshots::tonic;

mod convert;
pub mod filter;
pub mod notify;
mod service;

use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{ExportPolicy, PoolName, Root};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default socket, as containerd's `[proxy_plugins.blkdrv] address` names it.
pub const DEFAULT_SOCKET: &str = "/run/blkdrv/snapshotter.sock";

/// Logged (info) once the socket accepts requests: what a supervisor or a test waits for.
pub const LISTENING: &str = "listening on the socket";

/// The containerd configuration that points at a server on [`DEFAULT_SOCKET`].
pub const CONTAINERD_CONFIG: &str = r#"[proxy_plugins.blkdrv]
  type = "snapshot"
  address = "/run/blkdrv/snapshotter.sock""#;

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
        source: Box<blkdrv_pool::PoolError>,
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

impl ServeError {
    fn pool(pool: impl Into<String>, source: blkdrv_pool::PoolError) -> ServeError {
        ServeError::Pool {
            pool: pool.into(),
            source: Box::new(source),
        }
    }

    fn io(op: &'static str, path: &Path, source: std::io::Error) -> ServeError {
        ServeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Bad input from the user (the CLI's exit code 2).
    pub fn is_usage(&self) -> bool {
        match self {
            ServeError::Invalid(_) => true,
            ServeError::Pool { source, .. } => source.is_user_error(),
            ServeError::Io { .. } => false,
        }
    }
}

/// How long the in-flight requests get to finish after SIGTERM before the server exits anyway.
const DRAIN: Duration = Duration::from_secs(60);
/// How often the server looks at the pool's signal flag.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Serves until SIGTERM or SIGINT, then finishes the request in flight and returns.
///
/// The signals go to the pool's handler (`blkdrv_pool::signal`), the same one the CLI uses: a
/// pool operation in flight sees it at its next safe point and rolls back, so a SIGTERM never
/// leaves half a Prepare; the server sees the same flag, stops accepting, lets the requests in
/// flight return, and removes its socket.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let pools = check_names(&opts.pools)?;
    blkdrv_pool::signal::install().map_err(|e| ServeError::pool("-", e))?;
    let root = Root::new(&opts.root);
    let mut served = Vec::new();
    for (name, pool) in pools {
        let s = service::Served::open(&root, name.clone(), pool.clone())
            .map_err(|e| ServeError::pool(pool.to_string(), e))?;
        for r in s.recovered() {
            tracing::warn!(pool = %pool, "recovered: {}", escape_controls(&r));
        }
        tracing::info!(pool = %pool, snapshotter = %escape_controls(&name), "serving");
        served.push(s);
    }
    let policy = ExportPolicy {
        dev: opts.allow_devices,
    };
    let service = service::Service::new(served, policy);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("blkdrv-snapshotter")
        .build()
        .map_err(|e| ServeError::io("start the runtime", &opts.socket, e))?;
    rt.block_on(run(service, &opts.socket))
}

/// Pool names checked, and the snapshotter names unique (two pools under one name could not
/// be told apart).
fn check_names(pools: &[(String, String)]) -> Result<Vec<(String, PoolName)>, ServeError> {
    if pools.is_empty() {
        return Err(ServeError::Invalid("no pool to serve".into()));
    }
    let mut out: Vec<(String, PoolName)> = Vec::new();
    for (name, pool) in pools {
        let p = PoolName::new(pool).map_err(|e| ServeError::pool(pool.clone(), e))?;
        if name.is_empty() {
            return Err(ServeError::Invalid(format!(
                "pool {pool:?}: empty snapshotter name"
            )));
        }
        if let Some((_, other)) = out.iter().find(|(n, _)| n == name) {
            return Err(ServeError::Invalid(format!(
                "snapshotter name {:?} given to pools {other} and {p}",
                escape_controls(name)
            )));
        }
        out.push((name.clone(), p));
    }
    Ok(out)
}

async fn run(service: service::Service, socket: &Path) -> Result<(), ServeError> {
    let listener = bind(socket).await?;
    let _socket = SocketGuard(socket.to_path_buf());
    tracing::info!(socket = %socket.display(), "{LISTENING}");
    ready("READY=1");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(api::snapshots::v1::snapshots_server::SnapshotsServer::new(
            service,
        ))
        .serve_with_incoming_shutdown(incoming, signalled());
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        // The graceful stop waits for every request in flight; a client that never lets go
        // does not keep the server alive forever.
        () = async { signalled().await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("requests still in flight {}s after the signal; exiting", DRAIN.as_secs());
            Ok(())
        }
    };
    served.map_err(|e| {
        ServeError::io(
            "serve on",
            socket,
            std::io::Error::other(convert::chain(&e)),
        )
    })?;
    if let Some(sig) = blkdrv_pool::signal::pending() {
        tracing::info!("stopped by {}", sig.as_str());
    }
    Ok(())
}

/// Tells systemd (a `Type=notify` unit) where the server is; a failure is logged only.
fn ready(state: &str) {
    match notify::notify(state) {
        Ok(true) => tracing::debug!("told systemd {state}"),
        Ok(false) => {}
        Err(e) => tracing::warn!("sd_notify {state}: {e}"),
    }
}

/// Resolves once SIGTERM or SIGINT has been received (the pool's flag).
async fn signalled() {
    while blkdrv_pool::signal::pending().is_none() {
        tokio::time::sleep(SIGNAL_POLL).await;
    }
}

/// Removes the socket when the server stops, however it stops (a clean stop or an error).
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(socket = %self.0.display(), "remove the socket: {e}");
            }
        }
    }
}

/// Binds the socket: its directory made root-only if missing (as /run/containerd is), a stale
/// socket of a dead server replaced, a live one (another server) or any other file refused.
async fn bind(socket: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| ServeError::io("create the socket directory", dir, e))?;
        }
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => match tokio::net::UnixStream::connect(socket).await {
            Ok(_) => {
                return Err(ServeError::Invalid(format!(
                "{} is the socket of a running server; stop it first or choose another --socket",
                socket.display()
            )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %socket.display(), "replacing a stale socket");
                std::fs::remove_file(socket)
                    .map_err(|e| ServeError::io("remove the stale socket", socket, e))?;
            }
            Err(e) => return Err(ServeError::io("probe the existing socket", socket, e)),
        },
        Ok(_) => {
            return Err(ServeError::Invalid(format!(
                "{} exists and is not a socket; refusing to replace it",
                socket.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServeError::io("look at the socket path", socket, e)),
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| ServeError::io("listen on", socket, e))?;
    // Whoever reaches the socket can make and remove snapshots, i.e. mount filesystems as root.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ServeError::io("restrict the socket", socket, e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn snapshotter_names_are_unique() {
        assert!(check_names(&pools(&[("blkdrv", "default")])).is_ok());
        assert!(check_names(&pools(&[("a", "p1"), ("b", "p2")])).is_ok());
        let e = check_names(&pools(&[("a", "p1"), ("a", "p2")])).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("\"a\""), "{e}");
        assert!(check_names(&[]).is_err());
        assert!(check_names(&pools(&[("a", "bad/name")])).is_err());
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub/s.sock");
        let live = bind(&sock).await.expect("fresh bind");
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(sock.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let e = bind(&sock).await.unwrap_err();
        assert!(e.to_string().contains("running server"), "{e}");
        drop(live);
        // The listener is gone but its socket file stays: a crashed server's leftover.
        assert!(sock.exists());
        let _again = bind(&sock).await.expect("stale socket replaced");
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let e = bind(&file).await.unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert!(file.exists());
    }
}
