//! CLI-level fixtures: a state root with a pool, the CLI run in-process, cleanup through Drop
//! even when a test fails, and the helpers the CLI-level tests share.

use blkdrv_pool::pool::teardown_dir;
use libtest_mimic::Failed;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::MIB;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI in-process with `args` (starting with the program name).
pub fn run_cli(args: Vec<OsString>) -> Out {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = blkdrv_cli::run(args, &mut out, &mut err);
    Out {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// `blkdrv --root ROOT ARGS` in-process, with no host config file (the host's own
/// /etc/blkdrv/blkdrv.toml must not change what a test sees).
pub fn run_in<S: Into<OsString>>(root: &Path, args: impl IntoIterator<Item = S>) -> Out {
    let mut full: Vec<OsString> = vec![
        "blkdrv".into(),
        "--root".into(),
        root.into(),
        "--config".into(),
        "/nonexistent/blkdrv.toml".into(),
    ];
    full.extend(args.into_iter().map(Into::into));
    run_cli(full)
}

/// A state root with one pool "t"; destroyed (with its loop device) on drop, even on panic.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A root with an overlay pool "t".
    #[allow(clippy::new_without_default)] // makes a pool: not a plain default value
    pub fn new() -> Env {
        Env::with_pool(&["--driver", "overlay", "--size", "400M"])
    }

    /// A root with a pool "t" made by `pool init t <init_args>`.
    pub fn with_pool(init_args: &[&str]) -> Env {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the CLI tests need root (loop devices, mounts)"
        );
        std::fs::create_dir_all("/tmp/blkdrv-cli-tests").unwrap();
        let env = Env {
            dir: tempfile::tempdir_in("/tmp/blkdrv-cli-tests").unwrap(),
        };
        let mut args = vec!["pool", "init", "t"];
        args.extend_from_slice(init_args);
        let o = env.run(&args);
        assert_eq!(o.code, 0, "pool init: {}", o.stderr);
        env
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn run_os(&self, args: Vec<OsString>) -> Out {
        run_in(&self.root(), args)
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_os(args.iter().map(OsString::from).collect())
    }

    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "{args:?} failed: {}{}", o.stdout, o.stderr);
        o
    }

    /// `layer create NAME --from-dir DIR --pool t`, which must succeed.
    pub fn create_from_dir(&self, name: &str, dir: &Path) -> Out {
        self.ok(&[
            "layer",
            "create",
            name,
            "--from-dir",
            dir.to_str().unwrap(),
            "--pool",
            "t",
        ])
    }

    /// `layer diff NAME -o FILE --pool t`, which must succeed.
    pub fn diff_to(&self, name: &str, file: &Path) -> Out {
        self.ok(&[
            "layer",
            "diff",
            name,
            "-o",
            file.to_str().unwrap(),
            "--pool",
            "t",
        ])
    }

    /// `layer mount LAYER <dir>/DIR --pool t` (read-write); returns the mountpoint.
    pub fn mount_rw(&self, layer: &str, dir: &str) -> PathBuf {
        let m = self.path(dir);
        self.ok(&["layer", "mount", layer, m.to_str().unwrap(), "--pool", "t"]);
        m
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What a bad input must not change.
    pub fn state(&self) -> String {
        let o = self.ok(&["layer", "ls", "--json", "--pool", "t"]);
        let check = self.run(&["pool", "check", "t"]);
        assert_eq!(
            check.code, 0,
            "pool drifted: {}{}",
            check.stdout, check.stderr
        );
        o.stdout
    }

    /// Runs a bad command: exit 2, one-line error containing `needle`, state unchanged.
    pub fn refused(&self, args: &[&str], needle: &str) {
        self.refused_os(args.iter().map(OsString::from).collect(), needle)
    }

    pub fn refused_os(&self, args: Vec<OsString>, needle: &str) {
        let before = self.state();
        let o = self.run_os(args.clone());
        assert_eq!(o.code, 2, "{args:?}: exit {} ({})", o.code, o.stderr);
        let lines: Vec<&str> = o.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one-line error, got {:?}",
            o.stderr
        );
        assert!(
            o.stderr.contains(needle),
            "{args:?}: error {:?} should mention {needle:?}",
            o.stderr
        );
        assert_eq!(self.state(), before, "{args:?} changed the pool");
    }

    pub fn base(&self) {
        let src = self.path("src");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/hostname"), "h").unwrap();
        self.create_from_dir("base", &src);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.run(&["pool", "destroy", "t", "--force"]);
        if let Err(e) = teardown_dir(self.dir.path()) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Runs a system tool (mkfs.*, btrfs, zfs, lvm) the way a test sets the scene; panics with its
/// stderr.
pub fn tool<S: AsRef<OsStr> + std::fmt::Debug>(program: &str, args: &[S]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `args` with `--json` added; panics unless it succeeds with JSON.
pub fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&env.ok(&a).stdout).expect("JSON output")
}

/// `layer inspect` of `name` in pool "t".
pub fn layer(env: &Env, name: &str) -> serde_json::Value {
    json(env, &["layer", "inspect", name, "--pool", "t"])
}

/// The driver's detail line `key` of a `pool status`, or "" without one.
pub fn detail(status: &serde_json::Value, key: &str) -> String {
    status["space"]["details"]
        .as_array()
        .and_then(|d| d.iter().find(|kv| kv[0] == key))
        .and_then(|kv| kv[1].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Writes `bytes` (rounded up to whole MiB) to `p`, each MiB made by `next`, then syncs.
fn write_chunks(p: &Path, bytes: u64, mut next: impl FnMut(&mut [u8])) -> std::io::Result<()> {
    let mut f = std::fs::File::create(p)?;
    let mut chunk = vec![0u8; MIB as usize];
    for _ in 0..bytes.div_ceil(MIB) {
        next(&mut chunk);
        f.write_all(&chunk)?;
    }
    f.sync_all()
}

/// Random-ish content so nothing can be deduplicated or compressed away (a fixed stream: the
/// content needs no replay).
pub fn write_file(p: &Path, bytes: u64) -> std::io::Result<()> {
    let mut rng = crate::rng::Rng::new(0x9E37_79B9);
    write_chunks(p, bytes, |chunk| rng.fill(chunk))
}

/// One repeated MiB: cheap for fills of hundreds of MiB where only the space counts.
pub fn fill(p: &Path, bytes: u64) -> std::io::Result<()> {
    write_chunks(p, bytes, |chunk| {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i * 7 + 13) as u8;
        }
    })
}

/// Imports a base layer holding `bytes` of data.
pub fn base_of(env: &Env, bytes: u64) {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_file(&src.join("blob"), bytes).unwrap();
    env.create_from_dir("base", &src);
}

/// `blkdrv bench --smoke` on `driver` alone: every workload has rows and the raw snapshot
/// (`raw` names it in the error) is timed; `check` adds the driver's own checks on the rows.
pub fn bench_smoke(
    driver: &str,
    raw: &str,
    check: impl FnOnce(&[serde_json::Value]) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let report = tmp.path().join("r.json");
    let args: Vec<OsString> = vec![
        "blkdrv".into(),
        "bench".into(),
        "--smoke".into(),
        "--runs".into(),
        "1".into(),
        "--drivers".into(),
        driver.into(),
        "--dir".into(),
        tmp.path().join("work").into(),
        "--json".into(),
        report.clone().into(),
    ];
    let o = run_cli(args);
    if o.code != 0 {
        return Err(format!("bench exited {}: {}", o.code, o.stderr).into());
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let rows = report["results"].as_array().ok_or("no results")?;
    for w in blkdrv_benches::WORKLOADS.iter().map(|w| &w.name) {
        if !rows.iter().any(|r| r["workload"] == *w) {
            return Err(format!("no {w} rows: {}", o.stderr).into());
        }
    }
    if !rows.iter().any(|r| r["phase"] == "raw") {
        return Err(format!("no raw {raw} timing").into());
    }
    check(rows)
}
