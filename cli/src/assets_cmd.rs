//! `blkdrv completion SHELL` and the hidden `blkdrv manpages DIR`: shell completions and man
//! pages generated from the clap definitions (the packages ship both).
// OWNER: packaging helper (issue 15). Stub of the interface commit.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// bash, zsh or fish.
    pub shell: String,
}

#[derive(Args, Debug)]
pub struct ManpagesArgs {
    /// Directory to write blkdrv.8 and blkdrv-<subcommand>.8 into (created if missing).
    pub dir: PathBuf,
}

pub(crate) fn completion(_a: &CompletionArgs, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let _ = writeln!(err, "blkdrv: error: completion: not built yet");
    crate::EXIT_FAILED
}

pub(crate) fn manpages(_a: &ManpagesArgs, err: &mut dyn Write) -> i32 {
    let _ = writeln!(err, "blkdrv: error: manpages: not built yet");
    crate::EXIT_FAILED
}
