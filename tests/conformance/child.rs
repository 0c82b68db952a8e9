//! Runs the blkdrv CLI in a child process (this test binary re-executed in child mode), so that
//! tests can cross process boundaries and crash a process at a chosen step.

use crate::harness::TestPool;
use std::process::Command;

pub const ENV_CHILD: &str = "BLKDRV_CONFORMANCE_CHILD";
/// Script mode: a JSON list of full command lines, run one after another in this process (one
/// `blkdrv_cli::run` each), stopping at the first that fails. Saves a process spawn per
/// operation where many operations run (the concurrency case).
pub const ENV_SCRIPT: &str = "BLKDRV_CONFORMANCE_SCRIPT";

/// In child mode, runs the CLI with the arguments passed in the environment and exits.
pub fn maybe_run_child() {
    if let Ok(script) = std::env::var(ENV_SCRIPT) {
        run_script(&script);
    }
    let Ok(args) = std::env::var(ENV_CHILD) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args are JSON");
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
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

/// The command that runs `blkdrv --root <pool root> <args> --pool t` in a child.
pub fn command(tp: &TestPool, args: &[&str]) -> Result<Command, String> {
    command_full(&layer_args(tp, args))
}

/// A child running the CLI with a full command line (see [`layer_args`], [`pool_args`]).
pub fn command_full(full: &[String]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV_CHILD, serde_json::to_string(full).expect("json"))
        .env_remove(ENV_SCRIPT)
        .env("BLKDRV_CONFIG", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Ok(cmd)
}

/// Runs the CLI in a child and waits; `crash_at` sets a crash point.
pub fn run_cli(tp: &TestPool, args: &[&str], crash_at: Option<&str>) -> Result<i32, String> {
    let mut cmd = command(tp, args)?;
    match crash_at {
        Some(s) => cmd.env(blkdrv_pool::crash::ENV, s),
        None => cmd.env_remove(blkdrv_pool::crash::ENV),
    };
    let out = cmd.output().map_err(|e| format!("spawn child: {e}"))?;
    if crash_at.is_none() && !out.status.success() {
        return Err(format!(
            "child {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // A crash is an abort (SIGABRT): report it as a non-zero code.
    Ok(out.status.code().unwrap_or(128 + 6))
}

/// A child that runs `script` (full command lines) in one process; see [`ENV_SCRIPT`].
pub fn script_command(script: &[Vec<String>]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV_SCRIPT, serde_json::to_string(script).expect("json"))
        .env_remove(ENV_CHILD)
        .env("BLKDRV_CONFIG", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Ok(cmd)
}
