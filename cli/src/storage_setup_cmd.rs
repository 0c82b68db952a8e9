//! `blkdrv storage-setup [--config FILE] [--reset]`: container-storage-setup's variables
//! (/etc/sysconfig/docker-storage-setup) turned into a devicemapper pool on LVM.
// OWNER: storage-setup helper (issue 15). Stub of the interface commit.

use crate::args::Cli;
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
pub struct StorageSetupArgs {
    /// Give the devices back: remove the pool, its thin pool, VG and PV labels.
    #[arg(long)]
    pub reset: bool,
}

pub(crate) fn main(
    _cli: &Cli,
    _a: &StorageSetupArgs,
    _out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let _ = writeln!(err, "blkdrv: error: storage-setup: not built yet");
    crate::EXIT_FAILED
}
