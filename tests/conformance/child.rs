//! Runs the blkdrv CLI in a child process (this test binary re-executed in child mode), so that
//! tests can cross process boundaries and crash a process at a chosen step.

use crate::harness::TestPool;
use std::process::Command;

pub const ENV_CHILD: &str = "BLKDRV_CONFORMANCE_CHILD";

/// In child mode, runs the CLI with the arguments passed in the environment and exits.
pub fn maybe_run_child() {
    let Ok(args) = std::env::var(ENV_CHILD) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("child args are JSON");
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let code = blkdrv_cli::run(args, &mut out, &mut err);
    std::process::exit(code);
}

/// The command that runs `blkdrv --root <pool root> <args> --pool t` in a child.
pub fn command(tp: &TestPool, args: &[&str]) -> Result<Command, String> {
    let mut full: Vec<String> = vec![
        "blkdrv".into(),
        "--root".into(),
        tp.root.path.display().to_string(),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["--pool".to_string(), tp.name.to_string()]);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV_CHILD, serde_json::to_string(&full).expect("json"))
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
