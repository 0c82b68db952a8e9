//! `blkdrv snapshotter serve`: the containerd proxy snapshotter (crate blkdrv-snapshotter) on a
//! unix socket. Glue only: the arguments become `ServeOptions`.

use blkdrv_pool::text::escape_controls;
use blkdrv_pool::HostConfig;
use blkdrv_snapshotter::{ServeError, ServeOptions};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SERVE_ABOUT: &str =
    "Serve pools to containerd as a proxy snapshotter (gRPC on a unix socket)";

/// `serve --help`: what containerd needs to be told, and how requests find their pool.
pub fn serve_long_about() -> String {
    format!(
        "Serve pools to containerd as a proxy snapshotter: containerd's snapshots API \
(Prepare, View, Mounts, Commit, Remove, Stat, Update, Usage, Walk, Cleanup) over gRPC on a \
unix socket. containerd mounts what it gets back itself; snapshots made through the socket are \
the only ones it lists (layers made with `blkdrv layer` stay invisible to containerd, whose \
garbage collector would remove them).\n\n\
Point containerd at it in /etc/containerd/config.toml (then restart containerd):\n\n\
{config}\n\n\
and use it with `ctr --snapshotter blkdrv` or, for Kubernetes, the CRI plugin's \
`snapshotter = \"blkdrv\"` under [plugins.\"io.containerd.grpc.v1.cri\".containerd].\n\n\
Each request names its snapshotter (the proxy_plugins entry). With one --pool, every name is \
served by it; with several, --pool NAME=SNAPSHOTTER says which name each serves (default: the \
pool's own name) and an unknown name is answered NotFound.\n\n\
The pools are opened as writers for the server's life, so `blkdrv layer` commands on them \
wait (BLKDRV_LOCK_TIMEOUT) while it runs; read-only commands work. Unfinished operations of a \
killed server are finished or undone when it starts again. SIGTERM or SIGINT: stops \
accepting, lets the requests in flight finish (or roll back), removes the socket and exits 0.",
        config = indent(blkdrv_snapshotter::CONTAINERD_CONFIG)
    )
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Subcommand, Debug)]
pub enum SnapshotterCmd {
    #[command(about = SERVE_ABOUT, long_about = serve_long_about())]
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Pool to serve, repeatable; NAME=SNAPSHOTTER serves it under another snapshotter name.
    #[arg(
        long = "pool",
        env = "BLKDRV_POOL",
        default_value = "default",
        value_name = "NAME[=SNAPSHOTTER]"
    )]
    pub pools: Vec<String>,

    /// Unix socket to listen on (its directory is created root-only if missing).
    #[arg(long, value_name = "PATH", default_value = blkdrv_snapshotter::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Hand out mounts without `nodev`, so device nodes in images can be opened (off by
    /// default: see the README's Security section).
    #[arg(long)]
    pub allow_devices: bool,
}

/// `NAME[=SNAPSHOTTER]` -> (snapshotter name, pool name).
pub fn parse_pool(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((pool, name)) => (name.to_string(), pool.to_string()),
        None => (s.to_string(), s.to_string()),
    }
}

/// Runs the command; the exit code (0 also after SIGTERM: a stop asked for is a clean one).
pub fn main(
    root: Option<PathBuf>,
    config: &Path,
    cmd: &SnapshotterCmd,
    err: &mut dyn Write,
) -> i32 {
    let root = match HostConfig::load(config) {
        Ok(host) => root
            .or(host.root)
            .unwrap_or_else(|| PathBuf::from(blkdrv_pool::config::DEFAULT_ROOT)),
        Err(e) => {
            let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&e.to_string()));
            return crate::EXIT_USAGE;
        }
    };
    match run(root, cmd) {
        Ok(()) => crate::EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&e.to_string()));
            if e.is_usage() {
                crate::EXIT_USAGE
            } else {
                crate::EXIT_FAILED
            }
        }
    }
}

fn run(root: PathBuf, cmd: &SnapshotterCmd) -> Result<(), ServeError> {
    let SnapshotterCmd::Serve(a) = cmd;
    let opts = ServeOptions {
        root,
        pools: a.pools.iter().map(|p| parse_pool(p)).collect(),
        socket: a.socket.clone(),
        allow_devices: a.allow_devices,
    };
    tracing::info!(
        socket = %opts.socket.display(),
        pools = %escape_controls(&a.pools.join(",")),
        "starting the snapshotter"
    );
    blkdrv_snapshotter::serve(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_and_snapshotter_names() {
        assert_eq!(parse_pool("p"), ("p".into(), "p".into()));
        assert_eq!(parse_pool("p=blkdrv"), ("blkdrv".into(), "p".into()));
        assert!(serve_long_about().contains("[proxy_plugins.blkdrv]"));
    }
}
