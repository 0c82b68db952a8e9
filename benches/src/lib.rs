//! Benchmark workloads shared by `blkdrv bench` and the criterion benches: every driver runs the
//! same work in one run, each phase timed separately, and the report keeps every sample.
//!
//! Drivers join by implementing the driver trait (plus, optionally, the bench capabilities the
//! pool asks for: more than one configuration to compare, and the raw kernel operation behind a
//! layer create); nothing here names a driver, and the drivers crate is reached only through
//! the pool.
//!
//! Files: [`run`] resolves what to run and drives it, [`workload`] is the table of workloads
//! and their functions, `bench` the per-variant pool they share, [`scale`] the sizes, [`gen`]
//! the generated content, [`report`] and [`chart`] the output.

mod bench;
pub mod chart;
mod env;
pub mod gen;
pub mod report;
pub mod run;
pub mod scale;
mod volumes;
pub mod workload;

pub use report::{Environment, Report, ResultRow, RunConfig, Stats, Unit};
pub use run::{Event, Options};
pub use scale::{Scale, Sizes};
pub use workload::{Workload, WORKLOADS};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("driver {driver} cannot run on this host: {reason}")]
    Unavailable { driver: String, reason: String },
    #[error("{driver}: {op}: {source}")]
    Pool {
        driver: String,
        op: &'static str,
        // Boxed: PoolError is large and this variant is rare.
        #[source]
        source: Box<blkdrv_pool::PoolError>,
    },
    #[error("{driver}: cleaning up the bench pool failed: {reason}")]
    Cleanup { driver: String, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> BenchError {
        BenchError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Bad arguments (exit code 2) rather than a failed run.
    pub fn is_usage(&self) -> bool {
        matches!(self, BenchError::Usage(_))
    }
}

/// Seconds with a unit a person reads at once (3 significant digits).
pub fn fmt_secs(s: f64) -> String {
    // Infinity marks an event that did not happen within the workload's deadline.
    if !s.is_finite() {
        return "timeout".into();
    }
    let (v, unit) = if s < 1e-3 {
        (s * 1e6, "µs")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    format!("{} {unit}", sig3(v))
}

pub fn fmt_bytes(b: f64) -> String {
    let mib = b / (1u64 << 20) as f64;
    if mib >= 1024.0 {
        format!("{} GiB", sig3(mib / 1024.0))
    } else {
        format!("{} MiB", sig3(mib))
    }
}

fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Seconds => fmt_secs(v),
        Unit::Bytes => fmt_bytes(v),
    }
}

/// Drivers in the order the report ran them.
fn drivers(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report.config.drivers.clone();
    for r in &report.results {
        if !out.contains(&r.driver) {
            out.push(r.driver.clone());
        }
    }
    out.retain(|d| report.results.iter().any(|r| &r.driver == d));
    out
}

/// (workload, phase, param) groups in workload order, then first appearance.
pub fn panels(report: &Report) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for r in &report.results {
        let k = (r.workload.clone(), r.phase.clone(), r.param.clone());
        if !out.contains(&k) {
            out.push(k);
        }
    }
    // Workload order, then the order phases and params were first measured in (a driver
    // without a raw row must not push "raw" behind "commit").
    let rank = |w: &str| {
        WORKLOADS
            .iter()
            .position(|n| n.name == w)
            .unwrap_or(usize::MAX)
    };
    let first = |f: &dyn Fn(&ResultRow) -> bool| report.results.iter().position(f);
    let keys: Vec<_> = out
        .iter()
        .map(|k| {
            (
                rank(&k.0),
                first(&|r| r.workload == k.0 && r.phase == k.1),
                first(&|r| r.workload == k.0 && r.param == k.2),
            )
        })
        .collect();
    let mut idx: Vec<usize> = (0..out.len()).collect();
    idx.sort_by_key(|&i| keys[i]);
    idx.into_iter().map(|i| out[i].clone()).collect()
}

fn find<'a>(
    report: &'a Report,
    driver: &str,
    workload: &str,
    phase: &str,
    param: &str,
) -> Option<&'a ResultRow> {
    report.results.iter().find(|r| {
        r.driver == driver && r.workload == workload && r.phase == phase && r.param == param
    })
}

fn median(report: &Report, driver: &str, workload: &str, phase: &str, param: &str) -> Option<f64> {
    find(report, driver, workload, phase, param)
        .and_then(|r| r.stats())
        .map(|s| s.median)
}

/// The medians as a matrix (one row per phase, one column per driver), then the ratios the
/// comparison is about, then min / median / max of every row.
pub fn table(report: &Report) -> String {
    let drivers = drivers(report);
    let mut out = String::new();
    let e = &report.environment;
    let _ = writeln!(
        out,
        "blkdrv bench ({} scale, {} runs after {} warm-up) on {}, {} x {}, {} GiB RAM, kernel {}{}",
        report.config.scale,
        report.config.runs,
        report.config.warmup,
        e.backing,
        e.cpus,
        e.cpu,
        e.memory_bytes >> 30,
        e.kernel,
        if e.vm {
            " (VM, software emulation: compare ratios, not absolute times)"
        } else {
            ""
        }
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["workload".to_string(), "phase".into(), "param".into()];
    head.extend(drivers.iter().cloned());
    rows.push(head);
    for (w, p, param) in panels(report) {
        let mut line = vec![w.clone(), p.clone(), param.clone()];
        for d in &drivers {
            let cell = match find(report, d, &w, &p, &param) {
                Some(r) => match r.stats() {
                    Some(s) => fmt_value(r.unit, s.median),
                    None => "-".into(),
                },
                None => "-".into(),
            };
            line.push(cell);
        }
        rows.push(line);
    }
    out.push_str(&grid(&rows));
    let ratios = ratios(report);
    if !ratios.is_empty() {
        out.push_str("\nratios (medians):\n");
        for (what, per) in ratios {
            let _ = writeln!(out, "  {what}");
            for (d, v) in per {
                let _ = writeln!(out, "    {d:<14} {v}");
            }
        }
    }
    if !report.skipped.is_empty() {
        out.push_str("\nnot measured:\n");
        for s in &report.skipped {
            let what = s
                .workload
                .as_deref()
                .map(|w| format!(" {w}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}{what}: {}", s.driver, s.reason);
        }
    }
    out
}

/// Every row with min / median / max and the sample count (the text report's appendix).
pub fn details(report: &Report) -> String {
    let mut rows = vec![vec![
        "driver".to_string(),
        "workload".into(),
        "phase".into(),
        "param".into(),
        "min".into(),
        "median".into(),
        "max".into(),
        "n".into(),
    ]];
    for r in &report.results {
        let Some(s) = r.stats() else { continue };
        rows.push(vec![
            r.driver.clone(),
            r.workload.clone(),
            r.phase.clone(),
            r.param.clone(),
            fmt_value(r.unit, s.min),
            fmt_value(r.unit, s.median),
            fmt_value(r.unit, s.max),
            r.samples().len().to_string(),
        ]);
    }
    grid(&rows)
}

fn grid(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = width[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// A ratio of two phases of one workload, per driver: (workload, numerator, denominator,
/// heading with `{param}`).
const PHASE_RATIOS: &[(&str, &str, &str, &str)] = &[
    (
        "create",
        "blkdrv",
        "raw",
        "layer create via blkdrv vs the raw kernel op, {param}:",
    ),
    (
        "first_write",
        "first",
        "second",
        "first vs second 4 KiB write into a {param} (copy-on-write cost):",
    ),
    (
        "density",
        "pool_used",
        "full_copies",
        "density, {param}: pool space used vs full copies:",
    ),
    (
        "scale",
        "create_last",
        "create_first",
        "scale, {param}: create of the last vs the first:",
    ),
    (
        "seq_read",
        "layer",
        "host_file",
        "sequential read of a {param}, through a layer vs a host file:",
    ),
    (
        "volume",
        "copy",
        "clone",
        "volume of {param}: plain copy vs native clone (volume create --from):",
    ),
    (
        "deep_chain",
        "read_via_top",
        "read_via_bottom",
        "deep chain ({param}): read via the top vs the bottom layer:",
    ),
];

/// The ratios the README reads: (what, [(driver, value)]).
pub fn ratios(report: &Report) -> Vec<(String, Vec<(String, String)>)> {
    let drivers = drivers(report);
    let params = |w: &str, p: &str| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in report
            .results
            .iter()
            .filter(|r| r.workload == w && r.phase == p)
        {
            if !v.contains(&r.param) {
                v.push(r.param.clone());
            }
        }
        v
    };
    let unit = |w: &str, p: &str| {
        report
            .results
            .iter()
            .find(|r| r.workload == w && r.phase == p)
            .map_or(Unit::Seconds, |r| r.unit)
    };
    // "2.00x (a vs b)", or a percentage for space.
    let show = |u: Unit, a: f64, b: f64| match u {
        Unit::Seconds if b > 0.0 => {
            format!("{:.2}x ({} vs {})", a / b, fmt_secs(a), fmt_secs(b))
        }
        Unit::Bytes if b > 0.0 => {
            format!(
                "{:.1}% ({} vs {})",
                100.0 * a / b,
                fmt_bytes(a),
                fmt_bytes(b)
            )
        }
        _ => "-".into(),
    };
    // Per driver, `f` gives (numerator, denominator) or nothing.
    let per_driver = |u: Unit, f: &dyn Fn(&str) -> Option<(f64, f64)>| -> Vec<(String, String)> {
        drivers
            .iter()
            .filter_map(|d| f(d).map(|(a, b)| (d.clone(), show(u, a, b))))
            .collect()
    };
    let mut out = Vec::new();

    // Does create cost depend on the parent's size?
    let ps = params("create", "blkdrv");
    if ps.len() >= 2 {
        let (small, big) = (&ps[0], &ps[ps.len() - 1]);
        let per = per_driver(Unit::Seconds, &|d| {
            Some((
                median(report, d, "create", "blkdrv", big)?,
                median(report, d, "create", "blkdrv", small)?,
            ))
        });
        out.push((format!("layer create, {big} vs {small}:"), per));
    }
    // Is a volume's clone constant-time (~1x for native clones)?
    let ps = params("volume", "clone");
    if ps.len() >= 2 {
        let (small, big) = (&ps[0], &ps[ps.len() - 1]);
        let per = per_driver(Unit::Seconds, &|d| {
            Some((
                median(report, d, "volume", "clone", big)?,
                median(report, d, "volume", "clone", small)?,
            ))
        });
        out.push((format!("volume clone, {big} vs {small}:"), per));
    }
    for (w, pa, pb, heading) in PHASE_RATIOS {
        for param in params(w, pa) {
            let per = per_driver(unit(w, pa), &|d| {
                Some((
                    median(report, d, w, pa, &param)?,
                    median(report, d, w, pb, &param)?,
                ))
            });
            out.push((heading.replace("{param}", &param), per));
        }
        // The copy-on-write cost across drivers: each first write against the quickest one's.
        if *w == "first_write" {
            for param in params(w, "first") {
                let best = drivers
                    .iter()
                    .filter_map(|d| median(report, d, w, "first", &param))
                    .fold(f64::INFINITY, f64::min);
                if best.is_finite() {
                    let per = per_driver(Unit::Seconds, &|d| {
                        Some((median(report, d, w, "first", &param)?, best))
                    });
                    out.push((
                        format!("first 4 KiB write into a {param}, against the quickest driver:"),
                        per,
                    ));
                }
            }
        }
    }
    out.retain(|(_, per)| !per.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(driver: &str, workload: &str, phase: &str, param: &str, s: &[f64]) -> ResultRow {
        ResultRow::new(driver, workload, phase, param, Unit::Seconds, s.to_vec())
    }

    #[test]
    fn units_read_at_a_glance() {
        assert_eq!(fmt_secs(0.000_012_3), "12.3 µs");
        assert_eq!(fmt_secs(0.25), "250 ms");
        assert_eq!(fmt_secs(2.0), "2.00 s");
        assert_eq!(fmt_secs(f64::INFINITY), "timeout");
        assert_eq!(fmt_bytes(3.0 * 1048576.0), "3.00 MiB");
        assert_eq!(fmt_bytes(2048.0 * 1048576.0), "2.00 GiB");
    }

    #[test]
    fn table_orders_by_workload_and_computes_ratios() {
        let report = Report {
            results: vec![
                row("a", "remove", "rm", "x", &[1.0]),
                row(
                    "a",
                    "create",
                    "blkdrv",
                    "parent 1 MiB",
                    &[0.010, 0.012, 0.011],
                ),
                row("a", "create", "raw", "parent 1 MiB", &[0.005]),
                row("a", "create", "blkdrv", "parent 1 GiB", &[0.022]),
                row("b", "create", "blkdrv", "parent 1 MiB", &[0.5]),
            ],
            ..Report::default()
        };
        let t = table(&report);
        let create = t.find("create").unwrap();
        let remove = t.find("remove").unwrap();
        assert!(create < remove, "{t}");
        assert!(t.contains("2.00x (22.0 ms vs 11.0 ms)"), "{t}");
        assert!(t.contains("2.20x (11.0 ms vs 5.00 ms)"), "{t}");
        // Driver b has no raw row: it is left out of that ratio, not shown as zero.
        let raw_section = &t[t.find("raw kernel op").unwrap()..];
        assert!(
            !raw_section.lines().nth(2).unwrap_or("").contains(" b "),
            "{t}"
        );
    }
}
