//! The driver comparison: one fresh pool per driver variant on the same kind of backing, the
//! same workloads in the same order, each phase timed separately (like containerd's snapshot
//! benchsuite), warm-up runs discarded, every sample kept.

use crate::bench::Bench;
use crate::gen::{self, TreeStats};
use crate::report::{Report, RunConfig, Skipped, SCHEMA};
use crate::scale::Scale;
use crate::workload::{self, WORKLOADS};
use crate::{env, BenchError};
use std::path::{Path, PathBuf};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Driver names (or variant labels such as `overlay-xfs`); `None`: every driver this host
    /// can run.
    pub drivers: Option<Vec<String>>,
    /// Workload names; `None`: all of [`WORKLOADS`].
    pub workloads: Option<Vec<String>>,
    pub scale: Scale,
    /// Measured runs per phase (after one warm-up run).
    pub runs: usize,
    /// Scratch directory: pools (loopback files), generated trees, mount points.
    pub dir: PathBuf,
}

/// A driver configuration under test (the pool's list of what each driver wants compared).
pub type Variant = blkdrv_pool::bench::BenchVariant;

/// Progress, for a bar or a log.
#[derive(Debug, Clone)]
pub enum Event {
    /// The run starts: how many (variant, workload) steps there are.
    Start { steps: usize },
    /// A step starts.
    Step {
        driver: String,
        workload: &'static str,
    },
    /// Something the user should read (a skipped driver, a failed workload).
    Note(String),
}

/// Resolves `--drivers` to variants. Unknown names are errors; a named driver this host cannot
/// run is an error too (asking for it and getting silence would be a lie). Unnamed drivers the
/// host lacks are recorded as skipped.
pub fn variants(wanted: Option<&[String]>) -> Result<(Vec<Variant>, Vec<Skipped>), BenchError> {
    let all = blkdrv_pool::bench::variants();
    let mut skipped = Vec::new();
    let Some(wanted) = wanted else {
        let mut out = Vec::new();
        for v in all {
            match v.check_host() {
                Ok(()) => out.push(v),
                Err(e) => skipped.push(Skipped {
                    driver: v.label,
                    workload: None,
                    reason: e.to_string(),
                }),
            }
        }
        return Ok((out, skipped));
    };
    let mut out: Vec<Variant> = Vec::new();
    for w in wanted {
        let matched: Vec<&Variant> = all
            .iter()
            .filter(|v| v.label == *w || v.driver() == w)
            .collect();
        if matched.is_empty() {
            let labels: Vec<&str> = all.iter().map(|v| v.label.as_str()).collect();
            return Err(BenchError::Usage(format!(
                "unknown driver {w:?} (available: {})",
                labels.join(", ")
            )));
        }
        for v in matched {
            v.check_host().map_err(|e| BenchError::Unavailable {
                driver: v.label.clone(),
                reason: e.to_string(),
            })?;
            if !out.iter().any(|o| o.label == v.label) {
                out.push(v.clone());
            }
        }
    }
    Ok((out, skipped))
}

/// Resolves `--workloads`.
pub fn workloads(wanted: Option<&[String]>) -> Result<Vec<&'static str>, BenchError> {
    let Some(wanted) = wanted else {
        return Ok(WORKLOADS.iter().map(|w| w.name).collect());
    };
    for w in wanted {
        if !WORKLOADS.iter().any(|n| n.name == w) {
            let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
            return Err(BenchError::Usage(format!(
                "unknown workload {w:?} (available: {})",
                names.join(", ")
            )));
        }
    }
    // Report order is the canonical order, whatever order they were asked in.
    Ok(WORKLOADS
        .iter()
        .map(|w| w.name)
        .filter(|n| wanted.iter().any(|w| w == n))
        .collect())
}

/// Runs the comparison. Pools are destroyed before this returns, also on error. A workload that
/// fails on one driver is recorded in `skipped` with the error and the run goes on; the caller
/// decides the exit code from it.
pub fn run(opts: &Options, progress: &mut dyn FnMut(Event)) -> Result<Report, BenchError> {
    if opts.runs == 0 {
        return Err(BenchError::Usage("--runs must be at least 1".into()));
    }
    let (variants, mut skipped) = variants(opts.drivers.as_deref())?;
    let workloads = workloads(opts.workloads.as_deref())?;
    if variants.is_empty() {
        return Err(BenchError::Usage(
            "no driver to run: none of the selected drivers works on this host".into(),
        ));
    }
    for s in &skipped {
        progress(Event::Note(format!("skipping {}: {}", s.driver, s.reason)));
    }
    mkdir(&opts.dir)?;
    let sizes = opts.scale.sizes();
    let mut report = Report {
        schema: SCHEMA,
        environment: env::collect(&opts.dir),
        config: RunConfig {
            scale: opts.scale.name().into(),
            runs: opts.runs,
            warmup: 1,
            drivers: variants.iter().map(|v| v.label.clone()).collect(),
            workloads: workloads.iter().map(|w| w.to_string()).collect(),
            pool_size: sizes.pool.0,
        },
        results: Vec::new(),
        skipped: Vec::new(),
    };
    progress(Event::Start {
        steps: variants.len() * workloads.len(),
    });
    // Generated once and shared, so every driver imports the same bytes.
    let tree_dir = opts.dir.join("rootfs");
    let tree = if workloads
        .iter()
        .any(|w| workload::find(w).is_some_and(|w| w.uses_rootfs))
    {
        let _ = std::fs::remove_dir_all(&tree_dir);
        gen::rootfs(&tree_dir, sizes.tree)
            .map_err(|e| BenchError::io("generate rootfs", &tree_dir, e))?
    } else {
        TreeStats::default()
    };
    for v in &variants {
        let mut b = match Bench::start(v, opts, sizes, &tree_dir, tree) {
            Ok(b) => b,
            Err(e) => {
                progress(Event::Note(format!("{}: pool init failed: {e}", v.label)));
                skipped.push(Skipped {
                    driver: v.label.clone(),
                    workload: None,
                    reason: format!("failed: pool init: {e}"),
                });
                continue;
            }
        };
        for w in &workloads {
            progress(Event::Step {
                driver: v.label.clone(),
                workload: w,
            });
            if let Err(e) = b.workload(w) {
                progress(Event::Note(format!("{} {w}: failed: {e}", v.label)));
                skipped.push(Skipped {
                    driver: v.label.clone(),
                    workload: Some(w.to_string()),
                    reason: format!("failed: {e}"),
                });
                // Leave nothing mounted for the next workload.
                b.unmount_all();
            }
        }
        for note in &b.notes {
            skipped.push(Skipped {
                driver: v.label.clone(),
                workload: Some(note.0.clone()),
                reason: note.1.clone(),
            });
        }
        report.results.append(&mut b.rows);
        b.finish().map_err(|e| BenchError::Cleanup {
            driver: v.label.clone(),
            reason: e,
        })?;
    }
    let _ = std::fs::remove_dir_all(&tree_dir);
    report.skipped = skipped;
    Ok(report)
}

pub(crate) fn mkdir(p: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(p).map_err(|e| BenchError::io("create directory", p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_usage_errors() {
        let e = variants(Some(&["nope".to_string()])).unwrap_err();
        assert!(e.to_string().contains("unknown driver \"nope\""), "{e}");
        assert!(e.to_string().contains("overlay-ext4"), "{e}");
        let e = workloads(Some(&["nope".to_string()])).unwrap_err();
        assert!(e.to_string().contains("deep_chain"), "{e}");
    }

    #[test]
    fn workloads_keep_the_canonical_order() {
        let w = workloads(Some(&["remove".to_string(), "import".to_string()])).unwrap();
        assert_eq!(w, vec!["import", "remove"]);
    }

    #[test]
    fn overlay_runs_on_ext4_and_xfs() {
        let (all, _) = variants(None).unwrap();
        let skipped_or_run = |l: &str| {
            all.iter().any(|v| v.label == l)
                || variants(None).unwrap().1.iter().any(|s| s.driver == l)
        };
        assert!(skipped_or_run("overlay-ext4") && skipped_or_run("overlay-xfs"));
    }
}
