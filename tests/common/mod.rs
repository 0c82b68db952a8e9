//! Shared by the CLI-level test files: a state root with a pool, the CLI run in-process, and
//! cleanup through Drop even when a test fails.
#![allow(dead_code)] // each test file uses a different part

use blkdrv_pool::pool::teardown_dir;
use std::ffi::OsString;
use std::path::PathBuf;

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

/// A state root with one pool "t"; destroyed (with its loop device) on drop, even on panic.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A root with an overlay pool "t".
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
        let mut full: Vec<OsString> = vec![
            "blkdrv".into(),
            "--root".into(),
            self.root().into(),
            "--config".into(),
            "/nonexistent/blkdrv.toml".into(),
        ];
        full.extend(args);
        run_cli(full)
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_os(args.iter().map(OsString::from).collect())
    }

    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "{args:?} failed: {}", o.stderr);
        o
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
        self.ok(&[
            "layer",
            "create",
            "base",
            "--from-dir",
            src.to_str().unwrap(),
            "--pool",
            "t",
        ]);
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

/// Runs a system tool (mkfs.*, btrfs) the way a test sets the scene; panics with its stderr.
pub fn tool(program: &str, args: &[&std::ffi::OsStr]) -> String {
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
