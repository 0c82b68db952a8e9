//! `blkdrv bench`: argument parsing and output of the driver comparison (the work itself is in
//! the blkdrv-benches crate).

use blkdrv_benches::{chart, run, BenchError, Event, Options, Report, Scale};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// `blkdrv bench --help`.
pub const LONG_ABOUT: &str = "Compare storage drivers on the same work in one run. Each driver (overlay twice: \
on ext4, where copy-up copies whole files, and on xfs, where it reflinks) gets a fresh pool on \
loopback files of the same size under --dir; every workload runs one warm-up and --runs measured \
runs per phase; pools are destroyed afterwards, also on failure.\n\nWorkloads (each phase timed \
separately):\n  import       generated rootfs tree as a committed layer; same content again (build cache)\n  \
create       layer on a small and a large parent, vs the raw kernel op (btrfs snapshot, dm create_snap)\n  \
mount        mount and unmount of a writable layer\n  \
first_write  first and second 4 KiB write into a large inherited file (copy-on-write)\n  \
density      container layers on one image, each writing 1 MiB: pool space used vs full copies\n  \
scale        many layers in one pool: create of the first vs the last, layer ls\n  \
seq_read     sequential read of a large file through a layer vs a host file\n  \
deep_chain   read a file from the bottom of a long chain, via the bottom and the top layer\n  \
remove       layer removal time; when and whether the space comes back\n  \
volume       volume create and fill; native clone (--from) of 1 MiB vs 256 MiB vs a plain copy; first write into a clone\n\n\
Sizes: full (default) uses 1 GiB files, 100 density layers, 1,000 layers, a 64-layer chain; \
--quick a quarter of that and finishes in minutes; --smoke is tiny (CI).\n\n\
Output: a table of medians and the ratios that matter on stdout (--json: the whole report), \
plus any of --json FILE (every sample and the environment), --svg FILE (a chart), --out DIR \
(bench.json, bench.svg, bench.txt). Drivers this kernel lacks (devicemapper here) are listed \
as not measured; run them in the test VM: tests/vm/run --exec --out DIR -- blkdrv bench ...\n\n\
Examples:\n  blkdrv bench --quick --out results/\n  \
blkdrv bench --drivers btrfs,overlay-xfs --workloads create,first_write --runs 5\n  \
blkdrv bench --from-json results/bench.json --svg chart.svg";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Drivers or variants to compare, comma-separated (default: all this host can run).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    drivers: Option<Vec<String>>,
    /// Workloads to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    workloads: Option<Vec<String>>,
    /// Smaller sizes: a few minutes for every driver.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// Tiny sizes that only prove every code path works (CI).
    #[arg(long)]
    smoke: bool,
    /// Measured runs per phase, after one warm-up run.
    #[arg(long, default_value_t = 3, value_name = "N")]
    runs: usize,
    /// Write the report (every sample, the environment) as JSON to FILE (`--json FILE` works
    /// too).
    #[arg(long = "json-file", value_name = "FILE")]
    json_file: Option<PathBuf>,
    /// Write a chart of the medians (with min-max whiskers) as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Write bench.json, bench.svg and bench.txt into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Scratch directory for the pools' loopback files, generated trees and mounts. Its
    /// filesystem is the backing every driver shares.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp/blkdrv-bench")]
    dir: PathBuf,
    /// Render the table and outputs from an earlier report instead of running.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["drivers", "workloads", "quick", "smoke"])]
    from_json: Option<PathBuf>,
}

/// `--json FILE` is documented for bench, but `--json` is also the global output flag. After the
/// `bench` word, `--json` followed by a value (not another flag) becomes `--json-file`.
pub fn rewrite_json_file(args: Vec<OsString>) -> Vec<OsString> {
    let Some(at) = args.iter().position(|a| a == "bench") else {
        return args;
    };
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter().enumerate().peekable();
    while let Some((i, a)) = it.next() {
        if i > at {
            if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--json=")) {
                out.push(OsString::from(format!("--json-file={v}")));
                continue;
            }
            let value_follows = it
                .peek()
                .is_some_and(|(_, n)| !n.to_string_lossy().starts_with('-'));
            if a == "--json" && value_follows {
                out.push(OsString::from("--json-file"));
                continue;
            }
        }
        out.push(a);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum BenchCmdError {
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error("{op} {}: {reason}", path.display())]
    Output {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{failed} workload(s) failed; the report lists them under \"skipped\"")]
    Failed { failed: usize },
}

impl BenchCmdError {
    pub fn is_usage(&self) -> bool {
        matches!(self, BenchCmdError::Bench(e) if e.is_usage())
    }
}

fn out_err(op: &'static str, path: &Path, e: impl std::fmt::Display) -> BenchCmdError {
    BenchCmdError::Output {
        op,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]").expect("template"),
    );
    pb
}

pub fn bench(
    args: &BenchArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), BenchCmdError> {
    let report = match &args.from_json {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| out_err("read", f, e))?;
            serde_json::from_str::<Report>(&text).map_err(|e| out_err("parse report", f, e))?
        }
        None => measure(args, err)?,
    };
    write_outputs(args, &report)?;
    let w = |out: &mut dyn Write, s: &str| {
        out.write_all(s.as_bytes())
            .map_err(|e| out_err("write", Path::new("-"), e))
    };
    if json {
        let s = serde_json::to_string_pretty(&report).expect("report serializes");
        w(out, &s)?;
        w(out, "\n")?;
    } else {
        w(out, &blkdrv_benches::table(&report))?;
    }
    let failed = report
        .skipped
        .iter()
        .filter(|s| s.reason.starts_with("failed"))
        .count();
    if failed > 0 {
        return Err(BenchCmdError::Failed { failed });
    }
    Ok(())
}

fn measure(args: &BenchArgs, err: &mut dyn Write) -> Result<Report, BenchCmdError> {
    let scale = if args.smoke {
        Scale::Smoke
    } else if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    };
    let opts = Options {
        drivers: args.drivers.clone(),
        workloads: args.workloads.clone(),
        scale,
        runs: args.runs,
        dir: args.dir.clone(),
    };
    let quiet = std::env::var_os("BLKDRV_NO_PROGRESS").is_some();
    let pb = progress_bar(quiet);
    let plain = pb.is_hidden();
    let mut done = 0u64;
    let started = std::time::Instant::now();
    let report = run::run(&opts, &mut |ev| match ev {
        Event::Start { steps } => pb.set_length(steps as u64),
        Event::Step { driver, workload } => {
            if done > 0 {
                pb.inc(1);
            }
            done += 1;
            pb.set_message(format!("{driver} {workload}"));
            if plain {
                // Logs and serial consoles get one line per step instead of a bar.
                let _ = writeln!(
                    err,
                    "bench: [{done}/{}] {driver} {workload} ({:.0} s)",
                    pb.length().unwrap_or(0),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Event::Note(n) => {
            pb.suspend(|| {
                let _ = writeln!(err, "bench: {n}");
            });
        }
    });
    pb.finish_and_clear();
    Ok(report?)
}

fn write_outputs(args: &BenchArgs, report: &Report) -> Result<(), BenchCmdError> {
    let mut json_files: Vec<PathBuf> = args.json_file.iter().cloned().collect();
    let mut svg_files: Vec<PathBuf> = args.svg.iter().cloned().collect();
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| out_err("create directory", dir, e))?;
        json_files.push(dir.join("bench.json"));
        svg_files.push(dir.join("bench.svg"));
        let txt = dir.join("bench.txt");
        let text = format!(
            "{}\nevery row (min / median / max):\n{}",
            blkdrv_benches::table(report),
            blkdrv_benches::details(report)
        );
        std::fs::write(&txt, text).map_err(|e| out_err("write", &txt, e))?;
    }
    for f in json_files {
        let s = serde_json::to_string_pretty(report).expect("report serializes");
        std::fs::write(&f, s + "\n").map_err(|e| out_err("write", &f, e))?;
    }
    for f in svg_files {
        chart::render_svg(report, &f).map_err(|e| out_err("write chart", &f, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn json_with_a_value_after_bench_is_the_report_file() {
        assert_eq!(
            rewrite_json_file(os(&["blkdrv", "bench", "--json", "r.json", "--quick"])),
            os(&["blkdrv", "bench", "--json-file", "r.json", "--quick"])
        );
        assert_eq!(
            rewrite_json_file(os(&["blkdrv", "bench", "--json=r.json"])),
            os(&["blkdrv", "bench", "--json-file=r.json"])
        );
        // The global flag stays a flag.
        assert_eq!(
            rewrite_json_file(os(&["blkdrv", "bench", "--json", "--quick"])),
            os(&["blkdrv", "bench", "--json", "--quick"])
        );
        assert_eq!(
            rewrite_json_file(os(&["blkdrv", "--json", "layer", "ls"])),
            os(&["blkdrv", "--json", "layer", "ls"])
        );
    }

    #[test]
    fn every_workload_is_in_the_help() {
        let mut cli = <crate::Cli as clap::CommandFactory>::command();
        let help = cli
            .find_subcommand_mut("bench")
            .expect("bench subcommand")
            .render_long_help()
            .to_string();
        for w in blkdrv_benches::WORKLOADS.iter().map(|w| &w.name) {
            assert!(help.contains(w), "{w} missing from bench --help");
        }
    }
}
