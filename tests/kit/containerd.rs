//! A private containerd for tests: its own config, root, state and sockets in a directory under
//! the run's directory ([`crate::pool::run_dir`]), the CRI plugin and the snapshotters it does
//! not need disabled, proxy snapshotters (`[proxy_plugins.NAME] type = "snapshot"`) at the
//! sockets the test gives. [`Containerd::ctr`] runs `ctr` against it with output captured.
//!
//! Dropping it leaves nothing behind, also when a case fails halfway: the tasks it runs are
//! killed, containerd is stopped by pid (SIGTERM, then SIGKILL), shims it started that outlive
//! it are killed with their containers, mounts under its directory are undone, and what
//! containerd 1.6 keeps in /run/containerd whatever its `state` says (shim sockets in `s/`, runc's
//! state in `runc/<namespace>`, ctr's fifos in `fifo/`) is removed: only this instance's
//! entries, and the directories themselves only when empty and no other containerd runs.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What containerd 1.6 puts under /run/containerd regardless of its configured `state`.
const RUN_CONTAINERD: &str = "/run/containerd";

/// How long containerd may take to open its socket, and `ctr` to finish, here and under the
/// VM's emulation (where everything is ~10x slower).
fn slow_factor() -> u32 {
    if crate::config::get().in_vm {
        10
    } else {
        1
    }
}

/// A proxy snapshotter entry of the config.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The snapshotter name (`ctr --snapshotter NAME`); containerd sends it in each request.
    pub name: String,
    pub socket: PathBuf,
}

/// A running private containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// containerd's gRPC socket (`ctr -a`).
    pub address: PathBuf,
    /// The namespace `ctr` uses unless told otherwise: unique per instance, so that runc's
    /// state (/run/containerd/runc/<namespace>) and fifos are known to be this instance's.
    pub namespace: String,
    /// (namespace, container id) of every container started through [`Containerd::ctr`], for
    /// the shim sockets to remove.
    containers: Mutex<BTreeSet<(String, String)>>,
}

/// The output of one `ctr` run.
#[derive(Debug, Clone)]
pub struct CtrOutput {
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Containerd {
    /// Starts containerd with `proxies` and waits until its socket answers.
    pub fn start(proxies: &[Proxy]) -> Result<Containerd, String> {
        for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"] {
            which(tool).ok_or_else(|| {
                format!("containerd test: `{tool}` is not on PATH (scripts/setup.sh installs containerd and runc)")
            })?;
        }
        std::fs::create_dir_all(crate::pool::run_dir())
            .map_err(|e| format!("containerd test: mkdir run dir: {e}"))?;
        // Short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in(crate::pool::run_dir())
            .map_err(|e| format!("containerd test: tempdir: {e}"))?;
        let d = dir.path();
        for sub in ["root", "state", "tmp"] {
            std::fs::create_dir_all(d.join(sub))
                .map_err(|e| format!("containerd test: mkdir {sub}: {e}"))?;
        }
        let address = d.join("c.sock");
        let config = config_toml(d, &address, proxies);
        let config_path = d.join("config.toml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("containerd test: write {}: {e}", config_path.display()))?;
        let log = std::fs::File::create(d.join("containerd.log"))
            .map_err(|e| format!("containerd test: create log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("containerd test: log: {e}"))?;
        let namespace = format!(
            "blkdrv-{}-{}",
            std::process::id(),
            d.file_name()
                .map(|n| n
                    .to_string_lossy()
                    .trim_start_matches("ctrd-")
                    .to_lowercase())
                .unwrap_or_default()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            // Temporary mounts of the unpacker and of `ctr` go under this directory, where the
            // leak check looks.
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("containerd test: spawn containerd: {e}"))?;
        let mut c = Containerd {
            dir,
            child: Some(child),
            address,
            namespace,
            containers: Mutex::new(BTreeSet::new()),
        };
        c.wait_ready(Duration::from_secs(20 * slow_factor() as u64))?;
        Ok(c)
    }

    /// The instance's directory (config, root, state, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's log so far (its stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.address).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "containerd exited at start ({status}):\n{}",
                        self.log_tail(30)
                    ));
                }
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "containerd: socket {} not ready after {timeout:?}:\n{}",
                    self.address.display(),
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// containerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `ctr -a ADDRESS -n NAMESPACE args...` in this instance's namespace; fails with ctr's
    /// stderr unless it exits 0.
    pub fn ctr(&self, args: &[&str]) -> Result<CtrOutput, String> {
        self.ctr_in(&self.namespace, args)
    }

    /// [`Containerd::ctr`] in namespace `ns` (several namespaces of one instance keep images
    /// and snapshots of different snapshotters apart).
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Result<CtrOutput, String> {
        self.note_container(ns, args);
        let timeout = Duration::from_secs(120 * slow_factor() as u64);
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(ns);
        match args {
            // pivot_root(2) fails with EINVAL when / is the initramfs (the VM): runc must move
            // the container's root with MS_MOVE and chroot instead.
            ["run", rest @ ..] if root_is_initramfs() => {
                cmd.arg("run").arg("--no-pivot").args(rest);
            }
            _ => {
                cmd.args(args);
            }
        }
        let out = run_captured(cmd, timeout)
            .map_err(|e| format!("ctr -n {ns} {}: {e}", args.join(" ")))?;
        if !out.0.success() {
            return Err(format!(
                "ctr -n {ns} {} failed ({}): {}{}\ncontainerd log:\n{}",
                args.join(" "),
                out.0,
                out.2.trim_end(),
                if out.1.is_empty() {
                    String::new()
                } else {
                    format!("\nstdout: {}", out.1.trim_end())
                },
                self.log_tail(15)
            ));
        }
        Ok(CtrOutput {
            stdout: out.1,
            stderr: out.2,
            took: out.3,
        })
    }

    /// Remembers the container a `ctr` command starts, for cleanup.
    fn note_container(&self, ns: &str, args: &[&str]) {
        if let Some(id) = started_container(args) {
            if let Ok(mut set) = self.containers.lock() {
                set.insert((ns.to_string(), id.to_string()));
            }
        }
    }

    /// Stops containerd (SIGTERM, SIGKILL after 10 s) after killing the tasks of the
    /// namespaces it knows. Idempotent.
    pub fn stop(&mut self) -> Result<(), String> {
        if self.child.is_none() {
            return Ok(());
        }
        // Tasks first: a shim killed under a running container would orphan it.
        let namespaces: BTreeSet<String> = self
            .containers
            .lock()
            .map(|s| s.iter().map(|(ns, _)| ns.clone()).collect())
            .unwrap_or_default();
        for ns in namespaces.iter().chain(std::iter::once(&self.namespace)) {
            if let Ok(out) = self.ctr_in(ns, &["tasks", "ls", "-q"]) {
                for id in out.stdout.split_whitespace() {
                    let _ = self.ctr_in(ns, &["tasks", "kill", "-s", "SIGKILL", id]);
                    let _ = self.ctr_in(ns, &["tasks", "delete", "-f", id]);
                }
            }
        }
        let mut child = self.child.take().expect("checked above");
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        Ok(())
    }

    /// Shims of this instance still running: `containerd-shim-runc-v2 ... -address ADDRESS`.
    pub fn shims(&self) -> Vec<u32> {
        let want = self.address.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|(_, argv)| {
                argv.first().is_some_and(|a| a.contains("containerd-shim"))
                    && argv.windows(2).any(|w| w[0] == "-address" && w[1] == want)
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Kills the shims that outlive containerd, and their children (the containers' processes:
    /// the shim is their subreaper).
    fn kill_shims(&self) {
        for _ in 0..3 {
            let shims = self.shims();
            if shims.is_empty() {
                return;
            }
            let all = processes_with_parent();
            for &s in &shims {
                for pid in descendants(&all, s) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                let _ = kill(Pid::from_raw(s as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Removes this instance's entries of /run/containerd: runc's state of its namespaces, the
    /// sockets of its shims (named `sha256(ADDRESS/NAMESPACE/ID)`, as containerd 1.6's
    /// `shim.SocketAddress` names them), ctr's fifo directories of its containers; then the
    /// directories themselves when empty and no containerd process runs any more.
    fn clean_run_dir(&self) {
        let run = Path::new(RUN_CONTAINERD);
        let containers = self
            .containers
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let namespaces: BTreeSet<&String> = containers
            .iter()
            .map(|(ns, _)| ns)
            .chain(std::iter::once(&self.namespace))
            .collect();
        for ns in &namespaces {
            let _ = std::fs::remove_dir_all(run.join("runc").join(ns));
        }
        for (ns, id) in &containers {
            let key = format!("{}/{ns}/{id}", self.address.display());
            let name = format!("{:x}", Sha256::digest(key.as_bytes()));
            let _ = std::fs::remove_file(run.join("s").join(name));
        }
        if let Ok(rd) = std::fs::read_dir(run.join("fifo")) {
            for d in rd.flatten() {
                let ours = std::fs::read_dir(d.path()).is_ok_and(|files| {
                    files.flatten().any(|f| {
                        let n = f.file_name().to_string_lossy().into_owned();
                        containers
                            .iter()
                            .any(|(_, id)| n.starts_with(&format!("{id}-")))
                    })
                });
                if ours {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
        let others = processes()
            .iter()
            .any(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("containerd")));
        if !others {
            for sub in ["s", "runc", "fifo"] {
                let _ = std::fs::remove_dir(run.join(sub));
            }
            let _ = std::fs::remove_dir(run);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("containerd test cleanup: {e}");
        }
        self.kill_shims();
        // Rootfs mounts of killed shims, the unpacker's temporary mounts, a snapshotter's
        // mounts: everything under this instance's directory.
        if let Err(e) = blkdrv_pool::pool::teardown_dir(self.dir.path()) {
            eprintln!("containerd test cleanup: {e}");
        }
        self.clean_run_dir();
    }
}

/// The config: containerd's own root, state and sockets in `d`; CRI, tracing and the
/// snapshotters that need their own filesystems disabled (overlayfs and native stay, for
/// comparison); `proxies` as `[proxy_plugins]`.
fn config_toml(d: &Path, address: &Path, proxies: &[Proxy]) -> String {
    let q = |p: &Path| toml_string(&p.to_string_lossy());
    let mut s = format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {grpc}

[ttrpc]
  address = {ttrpc}

[debug]
  address = {debug}
  level = "info"
"#,
        root = q(&d.join("root")),
        state = q(&d.join("state")),
        grpc = q(address),
        ttrpc = q(&d.join("c.sock.ttrpc")),
        debug = q(&d.join("debug.sock")),
    );
    for p in proxies {
        s.push_str(&format!(
            "\n[proxy_plugins.{}]\n  type = \"snapshot\"\n  address = {}\n",
            toml_string(&p.name),
            q(&p.socket)
        ));
    }
    s
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `cmd` with stdin closed and stdout/stderr captured; kills it after `timeout`.
/// Returns (status, stdout, stderr, wall time).
pub fn run_captured(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String, String, Duration), String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status, stdout, stderr, took))
}

/// The container id of `ctr run [flags] IMAGE ID ...` or `ctr containers create [flags] IMAGE
/// ID`: the second positional argument.
fn started_container<'a>(args: &[&'a str]) -> Option<&'a str> {
    let sub = match args {
        ["run", rest @ ..] => rest,
        ["containers" | "c", "create", rest @ ..] => rest,
        _ => return None,
    };
    // Flags of ctr run that take a value (the ones the tests use); the rest are booleans.
    const WITH_VALUE: &[&str] = &["--snapshotter", "--env", "--mount", "--cwd", "--label"];
    let mut positional = Vec::new();
    let mut it = sub.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(a) {
            it.next();
        } else if !a.starts_with('-') {
            positional.push(*a);
        }
    }
    positional.get(1).copied()
}

/// Whether / is the initramfs (`rootfs`), as in the test VM, where pivot_root(2) cannot work.
pub fn root_is_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .rev()
            .find(|l| l.split_whitespace().nth(1) == Some("/"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("rootfs"))
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Every process's pid and command line.
fn processes() -> Vec<(u32, Vec<String>)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let argv = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, argv))
        })
        .collect()
}

/// (pid, parent pid) of every process.
fn processes_with_parent() -> Vec<(u32, u32)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// The descendants of `root` in `all` (children before their own children are listed).
fn descendants(all: &[(u32, u32)], root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &(c, pp) in all {
            if pp == p && !out.contains(&c) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_own_paths_and_the_proxy() {
        let d = Path::new("/x/ctrd-1");
        let c = config_toml(
            d,
            &d.join("c.sock"),
            &[Proxy {
                name: "blkdrv".into(),
                socket: "/run/blkdrv/s.sock".into(),
            }],
        );
        assert!(c.starts_with("version = 2\n"));
        assert!(c.contains("root = \"/x/ctrd-1/root\""));
        assert!(c.contains("state = \"/x/ctrd-1/state\""));
        assert!(c.contains("\"io.containerd.grpc.v1.cri\""));
        assert!(c.contains(
            "[proxy_plugins.\"blkdrv\"]\n  type = \"snapshot\"\n  address = \"/run/blkdrv/s.sock\""
        ));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("a\nb"), "\"a\\u000ab\"");
    }

    #[test]
    fn the_started_container_is_the_second_positional_argument() {
        let run = [
            "run",
            "--rm",
            "--snapshotter",
            "blkdrv",
            "-d",
            "img:1",
            "c1",
            "sh",
            "-c",
            "x",
        ];
        assert_eq!(started_container(&run), Some("c1"));
        assert_eq!(
            started_container(&["containers", "create", "img", "c2"]),
            Some("c2")
        );
        assert_eq!(started_container(&["images", "import", "a", "b"]), None);
        assert_eq!(started_container(&["run", "img"]), None);
    }

    #[test]
    fn descendants_are_transitive() {
        let all = [(2, 1), (3, 2), (4, 3), (5, 1)];
        let mut d = descendants(&all, 2);
        d.sort();
        assert_eq!(d, vec![3, 4]);
    }

    #[test]
    fn run_captured_times_out() {
        let mut c = Command::new("sleep");
        c.arg("5");
        let e = run_captured(c, Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }
}
