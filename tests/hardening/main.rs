//! Hardening: what an adversarial user or a container engine does to a pool (other mount
//! namespaces, stale loop devices, hostile tars, full pools, signals), each defect's reproduction
//! kept as a test. Needs root. Every module lists its own trials; a child mode re-runs the CLI
//! in a separate process (for other namespaces, signals and kills).

#[path = "../common/mod.rs"]
mod common;

mod archive;
mod cli;
mod loopdev;
mod namespaces;
mod space;

use libtest_mimic::{Arguments, Failed, Trial};
use std::process::Command;

/// Set in the environment of a child: the CLI's arguments as JSON.
const ENV_CHILD: &str = "BLKDRV_HARDENING_CHILD";

/// A command that runs `blkdrv <args>` in a child process (this binary in child mode).
pub fn child(args: &[&str]) -> Command {
    let mut full = vec!["blkdrv".to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.env(ENV_CHILD, serde_json::to_string(&full).expect("json"))
        .env("BLKDRV_CONFIG", "/nonexistent");
    cmd
}

/// A trial from a closure that may panic (the assert style of tests/common).
pub fn trial(name: &str, run: fn()) -> Trial {
    Trial::test(name, move || {
        std::panic::catch_unwind(run).map_err(|p| {
            Failed::from(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            )
        })
    })
}

fn main() {
    if let Ok(args) = std::env::var(ENV_CHILD) {
        let args: Vec<String> = serde_json::from_str(&args).expect("child args are JSON");
        let code = blkdrv_cli::run(args, &mut std::io::stdout(), &mut std::io::stderr());
        std::process::exit(code);
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(archive::trials());
    trials.extend(cli::trials());
    trials.extend(loopdev::trials());
    trials.extend(namespaces::trials());
    trials.extend(space::trials());
    libtest_mimic::run(&args, trials).exit()
}
