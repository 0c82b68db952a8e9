//! The CLI in a child process: the test binary re-executed in child mode, so that a test can
//! cross process boundaries, kill a process at a chosen moment, crash it at a crash point or
//! run it in another mount namespace. Binaries with their own `main` (libtest-mimic) call
//! [`maybe_run_child`] first; binaries on the standard harness use the `blkdrv-test-child`
//! binary of this package ([`command_of`]).

use crate::pool::TestPool;
use std::path::Path;
use std::process::{Command, Stdio};

/// Set in a child's environment: the CLI's full command line as JSON.
pub const ENV_CHILD: &str = "BLKDRV_TEST_CHILD";
/// Script mode: a JSON list of full command lines, run one after another in the child (one
/// `blkdrv_cli::run` each), stopping at the first that fails. Saves a process spawn per
/// operation where many operations run (the concurrency case).
pub const ENV_SCRIPT: &str = "BLKDRV_TEST_SCRIPT";

/// In child mode, runs the CLI with the arguments passed in the environment and exits;
/// otherwise returns.
pub fn maybe_run_child() {
    if let Ok(script) = std::env::var(ENV_SCRIPT) {
        run_script(&script);
    }
    let Ok(args) = std::env::var(ENV_CHILD) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args are JSON");
    let mut out = std::io::stdout().lock();
    // Unlocked, as in cli/src/main.rs: a server child logs from other threads.
    let mut err = std::io::stderr();
    let code = blkdrv_cli::run(args, &mut out, &mut err);
    std::process::exit(code);
}

fn run_script(script: &str) -> ! {
    let script: Vec<Vec<String>> = serde_json::from_str(script).expect("script is JSON");
    for (i, args) in script.iter().enumerate() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = blkdrv_cli::run(args.clone(), &mut out, &mut err);
        if code != 0 {
            eprintln!(
                "script step {i} {args:?}: exit {code}: {}{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
            std::process::exit(1);
        }
    }
    std::process::exit(0);
}

/// A child of this test binary running `full` (`["blkdrv", ...]`): no host config, no crash
/// point unless the caller sets one. Standard input and output are the caller's to set.
pub fn command(full: &[String]) -> Command {
    command_of(&std::env::current_exe().expect("test binary path"), full)
}

/// [`command`] with another executable in child mode (`env!("CARGO_BIN_EXE_blkdrv-test-child")`
/// from a test on the standard harness).
pub fn command_of(exe: &Path, full: &[String]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env(ENV_CHILD, serde_json::to_string(full).expect("json"))
        .env_remove(ENV_SCRIPT)
        .env_remove(blkdrv_pool::crash::ENV)
        .env("BLKDRV_CONFIG", "/nonexistent");
    cmd
}

/// `["blkdrv", args...]`.
pub fn blkdrv_args(args: &[&str]) -> Vec<String> {
    let mut full = vec!["blkdrv".to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    full
}

/// The full command line `blkdrv --root <pool root> <args> --pool t` (layer commands).
pub fn layer_args(tp: &TestPool, args: &[&str]) -> Vec<String> {
    let mut full = pool_args(tp, args);
    full.extend(["--pool".to_string(), tp.name.to_string()]);
    full
}

/// The full command line `blkdrv --root <pool root> <args>` (pool commands name the pool).
pub fn pool_args(tp: &TestPool, args: &[&str]) -> Vec<String> {
    let mut full: Vec<String> = vec![
        "blkdrv".into(),
        "--root".into(),
        tp.root.path.display().to_string(),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    full
}

/// A child running a full command line, its output captured.
pub fn piped(full: &[String]) -> Command {
    let mut cmd = command(full);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// The child that runs `blkdrv --root <pool root> <args> --pool t`, its output captured.
pub fn layer_command(tp: &TestPool, args: &[&str]) -> Command {
    piped(&layer_args(tp, args))
}

/// Runs a layer command in a child and waits; `crash_at` sets a crash point. Without one, a
/// failure is an error; with one, the exit code (an abort is reported as 128 + SIGABRT).
pub fn run_layer_command(
    tp: &TestPool,
    args: &[&str],
    crash_at: Option<&str>,
) -> Result<i32, String> {
    let mut cmd = layer_command(tp, args);
    if let Some(s) = crash_at {
        cmd.env(blkdrv_pool::crash::ENV, s);
    }
    let out = cmd.output().map_err(|e| format!("spawn child: {e}"))?;
    if crash_at.is_none() && !out.status.success() {
        return Err(format!(
            "child {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.status.code().unwrap_or(128 + 6))
}

/// Runs a full command line in a child and waits; a failure is an error.
pub fn run_full(full: &[String]) -> Result<i32, String> {
    let out = piped(full)
        .output()
        .map_err(|e| format!("spawn child: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "child {full:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.status.code().unwrap_or(-1))
}

/// A child that runs `script` (full command lines) in one process; see [`ENV_SCRIPT`].
pub fn script_command(script: &[Vec<String>]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.env(ENV_SCRIPT, serde_json::to_string(script).expect("json"))
        .env_remove(ENV_CHILD)
        .env_remove(blkdrv_pool::crash::ENV)
        .env("BLKDRV_CONFIG", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}
