//! Hardening: what an adversarial user or a container engine does to a pool (other mount
//! namespaces, stale loop devices, hostile tars, full pools, signals), each defect's reproduction
//! kept as a test. Needs root. Every module lists its own trials; a child mode re-runs the CLI
//! in a separate process (for other namespaces, signals and kills).

mod archive;
mod cli;
mod loopdev;
mod namespaces;
mod space;

use libtest_mimic::Arguments;
use std::process::Command;

/// A command that runs `blkdrv <args>` in a child process (this binary in child mode).
pub fn child(args: &[&str]) -> Command {
    kit::child::command(&kit::child::blkdrv_args(args))
}

fn main() {
    kit::child::maybe_run_child();
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(archive::trials());
    trials.extend(cli::trials());
    trials.extend(loopdev::trials());
    trials.extend(namespaces::trials());
    trials.extend(space::trials());
    libtest_mimic::run(&args, trials).exit()
}
