//! `blkdrv snapshotter serve` as a child process, and a gRPC client on its socket.
//!
//! [`Server::start`] runs the CLI in a child (this test binary in child mode, see
//! [`crate::child`], or another executable given in [`ServerSpec::exe`]), waits until the socket
//! answers, and connects a client. Dropping the [`Server`] stops the child by its pid: SIGTERM,
//! then SIGKILL if it has not exited after [`STOP_TIMEOUT`]; a case that needs the exit status
//! calls [`Server::stop`] or [`Server::kill`] itself. The server's log (its stderr) goes to a
//! file next to the socket, for failure messages ([`Server::log`]); `RUST_LOG` in
//! [`ServerSpec::env`] changes what it holds.

use blkdrv_snapshotter::api::snapshots::v1::snapshots_client::SnapshotsClient;
use blkdrv_snapshotter::tonic::transport::{Channel, Endpoint, Uri};
use nix::sys::signal::kill;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The generated client over the server's socket.
pub type Client = SnapshotsClient<Channel>;

/// How long a server gets to start (open its pools, recover) and answer on its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopped server gets to exit before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a server. `Default`: the pool `t` (the kit's [`crate::pool::TestPool`] name)
/// served under any snapshotter name.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The state directory (`--root`).
    pub root: PathBuf,
    /// `--pool` values (`NAME[=SNAPSHOTTER]`).
    pub pools: Vec<String>,
    /// The socket; its directory also receives the log.
    pub socket: PathBuf,
    /// Extra environment (a crash or stall point, RUST_LOG).
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve` (`--allow-devices`).
    pub args: Vec<String>,
    /// The executable to run in child mode; `None`: this test binary (which must call
    /// [`crate::child::maybe_run_child`] first, as the libtest-mimic binaries do).
    pub exe: Option<PathBuf>,
}

impl ServerSpec {
    /// The kit's test pool, served on a socket in `dir`.
    pub fn for_pool(tp: &crate::pool::TestPool, dir: &Path) -> ServerSpec {
        ServerSpec {
            root: tp.root.path.clone(),
            pools: vec![tp.name.to_string()],
            socket: dir.join("snapshotter.sock"),
            env: Vec::new(),
            args: Vec::new(),
            exe: None,
        }
    }
}

/// A running `blkdrv snapshotter serve`, stopped on drop.
pub struct Server {
    pub spec: ServerSpec,
    child: Option<Child>,
    log: PathBuf,
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Server {
    /// Starts the server and waits until its socket answers.
    pub fn start(spec: ServerSpec) -> Result<Server, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("test runtime: {e}"))?;
        let log = spec.socket.with_extension("log");
        let mut full = vec![
            "blkdrv".to_string(),
            "--root".into(),
            spec.root.display().to_string(),
            "-v".into(),
            "snapshotter".into(),
            "serve".into(),
            "--socket".into(),
            spec.socket.display().to_string(),
        ];
        for p in &spec.pools {
            full.extend(["--pool".to_string(), p.clone()]);
        }
        full.extend(spec.args.iter().cloned());
        let mut cmd = match &spec.exe {
            Some(exe) => crate::child::command_of(exe, &full),
            None => crate::child::command(&full),
        };
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("create server log {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .env_remove("BLKDRV_POOL")
            // Each request at debug, without the HTTP/2 frames.
            .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info,tonic=info");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn the snapshotter server: {e}"))?;
        let server = {
            let deadline = Instant::now() + START_TIMEOUT;
            let mut child = child;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the snapshotter server exited before it answered ({status}):\n{}",
                        read_log(&log)
                    ));
                }
                // The log line, not the socket alone: a socket may be another server's
                // (which this one then refuses to replace, and exits).
                if read_log(&log).contains(blkdrv_snapshotter::LISTENING) {
                    if let Ok(c) = rt.block_on(connect(&spec.socket)) {
                        break Server {
                            spec,
                            child: Some(child),
                            log,
                            rt,
                            client: c,
                        };
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the snapshotter server did not answer on {} within {}s:\n{}",
                        spec.socket.display(),
                        START_TIMEOUT.as_secs(),
                        read_log(&log)
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        Ok(server)
    }

    /// A client on the server's socket (cheap to clone: one connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs a future on the kit's runtime (two worker threads, so spawned requests overlap).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The runtime, to spawn concurrent requests on.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Whether the child has exited (without waiting); its status if so.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM and waits for the exit (SIGKILL after [`STOP_TIMEOUT`]: then an error).
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        self.stop_with(Signal::SIGTERM)
    }

    /// SIGKILL (a crash) and waits for the exit.
    pub fn kill(mut self) -> Result<ExitStatus, String> {
        self.stop_with(Signal::SIGKILL)
    }

    /// Waits for the child to exit on its own (a crash point) within `timeout`.
    pub fn wait_exit(mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("the server was already stopped".into());
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the server did not exit within {}s; killed:\n{}",
                    timeout.as_secs(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits for the exit (SIGKILL after [`STOP_TIMEOUT`]: then an error),
    /// keeping the runtime, so requests in flight can still be awaited for their answers.
    pub fn signal_and_wait(&mut self, sig: Signal) -> Result<ExitStatus, String> {
        self.stop_with(sig)
    }

    fn stop_with(&mut self, sig: Signal) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("the server was already stopped".into());
        };
        let pid = Pid::from_raw(child.id() as i32);
        // The child is ours and not yet reaped, so the pid cannot have been reused.
        let _ = kill(pid, sig);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(s) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "the server did not exit within {}s of {}; killed:\n{}",
                    STOP_TIMEOUT.as_secs(),
                    sig.as_str(),
                    read_log(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop_with(Signal::SIGTERM) {
                eprintln!("test cleanup: {e}");
            }
        }
    }
}

/// A client over a unix socket. The URI is a placeholder that only gives the `:authority`
/// (`localhost`, as containerd's Go client sends); the connector ignores it.
pub async fn connect(socket: &Path) -> Result<Client, String> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://localhost")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            tokio::net::UnixStream::connect(path.clone())
        }))
        .await
        .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
    Ok(SnapshotsClient::new(channel))
}

fn read_log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("(no log at {}: {e})", p.display()))
}
