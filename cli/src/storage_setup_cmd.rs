//! `blkdrv storage-setup [--config FILE] [--reset]`: container-storage-setup's variables
//! (/etc/sysconfig/docker-storage-setup) turned into a devicemapper pool on LVM.

use crate::args::Cli;
use crate::output;
use blkdrv_pool::config::{self, HostConfig};
use blkdrv_pool::storage_setup::{self, Applied, Reset, Setup};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{PoolError, Root};
use clap::Args;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

/// `storage-setup --help`: what it does, and which `--config` is which.
pub(crate) const LONG_ABOUT: &str = "Read a container-storage-setup file (default \
/etc/sysconfig/docker-storage-setup: the shell-variable file Red Hat and Fedora \
hosts configured Docker's thin pool with) and make the same thing with `pool init --driver \
devicemapper --lvm`: a volume group on DEVS (or an existing VG's free space), a thin-pool LV \
named CONTAINER_THINPOOL (also the blkdrv pool's name) of DATA_SIZE, with CHUNK_SIZE blocks and \
an LVM autoextend profile. The file is read, never run: expansions and commands are refused with \
their line; a variable blkdrv does not know or does not do is named in the error. Running it \
again with the same file finds the pool and changes nothing.\n\n`--config FILE` after \
`storage-setup` is this file; before it (`blkdrv --config F storage-setup`) it is blkdrv's own \
config, as for every command.";

pub(crate) const AFTER_HELP: &str = "Examples:\n  blkdrv storage-setup\n  blkdrv storage-setup --config vagrant/docker-storage-setup\n  \
blkdrv storage-setup --config vagrant/docker-storage-setup --reset";

#[derive(Args, Debug)]
pub struct StorageSetupArgs {
    /// The container-storage-setup file [default: /etc/sysconfig/docker-storage-setup].
    /// Spelled `--config` on the command line (see [`rewrite_config`]).
    #[arg(long = "setup-config", value_name = "FILE", hide = true)]
    pub file: Option<PathBuf>,
    /// Give the devices back: remove the pool, its thin pool, VG and PV labels.
    #[arg(long)]
    pub reset: bool,
}

const SUBCOMMAND: &str = "storage-setup";

/// `--config` is global (blkdrv.toml), but the issue spells storage-setup's file `--config FILE`
/// as container-storage-setup users know it. clap cannot hold two `--config`s on one command, so
/// a `--config` after the `storage-setup` word is renamed to its hidden `--setup-config`; one
/// before it stays blkdrv's config.
pub(crate) fn rewrite_config(mut args: Vec<OsString>) -> Vec<OsString> {
    // The global options that take a separate value, so their values are not the subcommand.
    const VALUED: &[&str] = &["--root", "--config"];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return args;
        }
        if VALUED.contains(&a.as_ref()) {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            break;
        }
        i += 1;
    }
    if args.get(i).is_none_or(|a| a != SUBCOMMAND) {
        return args;
    }
    for a in args.iter_mut().skip(i + 1) {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            *a = "--setup-config".into();
        } else if let Some(v) = s.strip_prefix("--config=") {
            *a = format!("--setup-config={v}").into();
        }
    }
    args
}

pub(crate) fn main(
    cli: &Cli,
    a: &StorageSetupArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match run(cli, a, out, err) {
        Ok(()) => crate::EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&e.to_string()));
            if e.is_user_error() {
                crate::EXIT_USAGE
            } else {
                crate::EXIT_FAILED
            }
        }
    }
}

fn run(
    cli: &Cli,
    a: &StorageSetupArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), PoolError> {
    let file = a
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(storage_setup::DEFAULT_FILE));
    // The whole file is checked before anything is touched: bad input creates nothing.
    let setup = Setup::from_file(&file)?;
    let host = HostConfig::load(&cli.config)?;
    let root = Root::new(
        cli.root
            .clone()
            .or_else(|| host.root.clone())
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_ROOT)),
    );
    if let Err(e) = blkdrv_pool::signal::install() {
        let _ = writeln!(err, "blkdrv: warning: {}", escape_controls(&e.to_string()));
    }
    if a.reset {
        let r = setup.reset(&root)?;
        return if cli.json {
            output::json(out, &r)
        } else {
            print_reset(out, &r)
        };
    }
    let bar = output::spinner(&format!(
        "setting up pool {} from {}",
        setup.pool,
        file.display()
    ));
    let applied = setup.apply(&root, &host.pool);
    bar.finish_and_clear();
    let applied = applied?;
    if cli.json {
        output::json(out, &applied)
    } else {
        print_applied(out, &applied)
    }
}

fn io(e: std::io::Error) -> PoolError {
    PoolError::io("write output", "-", e)
}

fn print_applied(out: &mut dyn Write, a: &Applied) -> Result<(), PoolError> {
    let s = &a.status;
    let verb = if a.created {
        "created"
    } else {
        "already set up (nothing changed)"
    };
    writeln!(
        out,
        "Pool {} {verb}: driver {}, thin pool {}/{}, {}",
        escape_controls(&s.name),
        s.driver,
        escape_controls(&a.vg),
        escape_controls(&a.thinpool_lv),
        output::backing_summary(s)
    )
    .map_err(io)?;
    match a.autoextend {
        Some(ax) => writeln!(
            out,
            "LVM autoextend: +{}% when {}% full",
            ax.percent, ax.threshold_pct
        ),
        None => writeln!(out, "LVM autoextend: off (AUTO_EXTEND_POOL=no)"),
    }
    .map_err(io)
}

fn print_reset(out: &mut dyn Write, r: &Reset) -> Result<(), PoolError> {
    let devices: Vec<String> = r
        .devices
        .iter()
        .map(|d| escape_controls(&d.display().to_string()))
        .collect();
    let back = if devices.is_empty() {
        format!(
            "the thin pool is gone from volume group {}",
            escape_controls(&r.vg)
        )
    } else {
        format!("{} given back with no signature", devices.join(", "))
    };
    writeln!(out, "Pool {} destroyed; {back}", escape_controls(&r.pool)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn config_after_the_subcommand_is_its_file() {
        for (given, want) in [
            (
                "blkdrv storage-setup --config F",
                "blkdrv storage-setup --setup-config F",
            ),
            (
                "blkdrv storage-setup --reset --config=F",
                "blkdrv storage-setup --reset --setup-config=F",
            ),
            (
                "blkdrv --config T storage-setup --config F",
                "blkdrv --config T storage-setup --setup-config F",
            ),
            (
                "blkdrv --config storage-setup pool ls",
                "blkdrv --config storage-setup pool ls",
            ),
            (
                "blkdrv --root R --json storage-setup",
                "blkdrv --root R --json storage-setup",
            ),
            ("blkdrv pool ls --config F", "blkdrv pool ls --config F"),
            (
                "blkdrv -- storage-setup --config F",
                "blkdrv -- storage-setup --config F",
            ),
        ] {
            assert_eq!(rewrite_config(words(given)), words(want), "{given}");
        }
    }
}
