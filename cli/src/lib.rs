//! The `blkdrv` command. Glue only: parses arguments, calls the pool manager, prints results.
//! Nothing here touches the kernel.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad input, 128+N stopped by
//! signal N (SIGINT 130, SIGTERM 143) at a safe point, with the operation rolled back.

mod args;
mod assets_cmd;
mod bench;
mod container_cmd;
mod layer_cmd;
mod output;
mod output_containers;
mod pool_cmd;
mod report;
mod snapshotter_cmd;
mod storage_setup_cmd;
mod volume_cmd;

use args::{Cli, Cmd, DriverFlagValues};
use blkdrv_pool::config::{self, HostConfig};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Pool, PoolError, Root};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Runs the command line and returns the process exit code.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = bench::rewrite_json_file(args.into_iter().map(Into::into).collect());
    let args = storage_setup_cmd::rewrite_config(args);
    let (cli, driver_flags) = match args::parse(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            // A value its parser refused (`--size lots`) is bad input: one line, as every
            // other bad input, without clap's usage tip.
            if e.kind() == clap::error::ErrorKind::ValueValidation {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                let first = first.strip_prefix("error: ").unwrap_or(first);
                let _ = writeln!(err, "blkdrv: error: {}", escape_controls(first));
                return EXIT_USAGE;
            }
            // Colours only for a terminal; scripts and logs get plain text.
            let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let _ = if e.use_stderr() {
                write!(err, "{text}")
            } else {
                write!(out, "{text}")
            };
            return code;
        }
    };
    // A server logs what it serves by default; commands stay quiet unless asked.
    let server = matches!(cli.cmd, Cmd::Snapshotter(_));
    init_tracing(if server {
        cli.verbose().max(1)
    } else {
        cli.verbose()
    });
    if let Cmd::Snapshotter(c) = &cli.cmd {
        return snapshotter_cmd::main(cli.root.clone(), &cli.config, c, err);
    }
    // Completions and man pages describe the command line; they read no state.
    match &cli.cmd {
        Cmd::Completion(a) => return assets_cmd::completion(a, out, err),
        Cmd::Manpages(a) => return assets_cmd::manpages(a, err),
        Cmd::StorageSetup(a) => return storage_setup_cmd::main(&cli, a, out, err),
        _ => {}
    }
    // The bench needs no state dir or host config: it makes and destroys its own pools.
    if let Cmd::Bench(b) = &cli.cmd {
        return match bench::bench(b, cli.json, out, err) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                let _ = writeln!(err, "blkdrv: error: {e}");
                if e.is_usage() {
                    EXIT_USAGE
                } else {
                    EXIT_FAILED
                }
            }
        };
    }
    // Commands that change a pool stop at their next safe point on SIGINT/SIGTERM.
    if matches!(
        cli.cmd,
        Cmd::Pool(_) | Cmd::Layer(_) | Cmd::Volume(_) | Cmd::Container(_)
    ) {
        if let Err(e) = blkdrv_pool::signal::install() {
            let _ = writeln!(err, "blkdrv: warning: {}", escape_controls(&e.to_string()));
        }
    }
    match dispatch(&cli, driver_flags, out, err) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            // One line, whatever the error carries (tar header bytes, paths, tool output).
            let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&e.to_string()));
            if let Some(n) = e.interrupted_by() {
                128 + n
            } else if e.is_user_error() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            }
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Tests call run() many times in one process; only the first subscriber sticks.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes only for a terminal: a server's log usually goes to a file or journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

struct Ctx {
    root: Root,
    host: HostConfig,
    json: bool,
    /// Values of the drivers' `pool init` flags.
    driver_flags: DriverFlagValues,
}

fn dispatch(
    cli: &Cli,
    driver_flags: DriverFlagValues,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), PoolError> {
    let host = HostConfig::load(&cli.config)?;
    let root = cli
        .root
        .clone()
        .or_else(|| host.root.clone())
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_ROOT));
    let ctx = Ctx {
        root: Root::new(root),
        host,
        json: cli.json,
        driver_flags,
    };
    match &cli.cmd {
        Cmd::Pool(c) => emit(pool_cmd::pool_cmd(&ctx, c, err)?, ctx.json, out),
        Cmd::Layer(c) => emit(layer_cmd::layer_cmd(&ctx, c, err)?, ctx.json, out),
        Cmd::Volume(c) => emit(volume_cmd::volume_cmd(&ctx, c, err)?, ctx.json, out),
        Cmd::Container(c) => emit(container_cmd::container_cmd(&ctx, c, err)?, ctx.json, out),
        Cmd::History(h) => emit(
            report::Outcome::History {
                no_trunc: h.no_trunc,
                human: h.human,
                entries: layer_cmd::open_read(&ctx, &h.sel)?.history(&h.layer)?,
            },
            ctx.json,
            out,
        ),
        Cmd::Info => output::info(&ctx.root, &cli.config, ctx.json, out),
        Cmd::Bench(_)
        | Cmd::Snapshotter(_)
        | Cmd::StorageSetup(_)
        | Cmd::Completion(_)
        | Cmd::Manpages(_) => {
            unreachable!("handled before the state dir is read")
        }
    }
}

/// Shows what a command did, then gives its verdict.
fn emit(outcome: report::Outcome, json: bool, out: &mut dyn Write) -> Result<(), PoolError> {
    outcome.emit(out, json)?;
    outcome.verdict()
}

fn io_err(e: std::io::Error) -> PoolError {
    PoolError::io("write output", "-", e)
}

/// Says what a writer did on its own (growing the pool).
fn print_notices(pool: &mut Pool, err: &mut dyn Write) {
    for n in pool.take_notices() {
        let _ = writeln!(err, "blkdrv: note: {}", escape_controls(&n));
    }
}

/// Names of every compiled-in driver (for help and `info`).
pub fn driver_names() -> Vec<&'static str> {
    blkdrv_pool::init::driver_names()
}
