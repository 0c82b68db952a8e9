//! The bench report: every raw sample plus the environment it was taken in. Serialized as the
//! `--json` file; the table and the chart are rendered from it (and can be re-rendered later).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped when a field changes meaning, so old JSON files are not misread.
pub const SCHEMA: u32 = 1;

/// What a row's samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Wall time of one phase, in seconds (`samples_s`).
    Seconds,
    /// Space, in bytes (`values`): pool space used, space returned.
    Bytes,
}

/// One measured phase of one workload on one driver variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Driver variant label ("btrfs", "overlay-ext4", ...).
    pub driver: String,
    pub workload: String,
    pub phase: String,
    /// What the workload was run with (parent size, layer count), human-readable.
    pub param: String,
    pub unit: Unit,
    /// Seconds, one per measured run (warm-up excluded). Empty for byte rows. `null` in JSON:
    /// the event did not happen within the workload's deadline (space never came back).
    #[serde(with = "null_is_never")]
    pub samples_s: Vec<f64>,
    /// Bytes, one per measured run. Empty for time rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
}

impl ResultRow {
    /// A row whose `samples` are in `unit` (seconds go to `samples_s`, bytes to `values`).
    pub fn new(
        driver: &str,
        workload: &str,
        phase: &str,
        param: &str,
        unit: Unit,
        samples: Vec<f64>,
    ) -> ResultRow {
        let (samples_s, values) = match unit {
            Unit::Seconds => (samples, Vec::new()),
            Unit::Bytes => (Vec::new(), samples),
        };
        ResultRow {
            driver: driver.into(),
            workload: workload.into(),
            phase: phase.into(),
            param: param.into(),
            unit,
            samples_s,
            values,
        }
    }

    /// The samples in the row's unit.
    pub fn samples(&self) -> &[f64] {
        match self.unit {
            Unit::Seconds => &self.samples_s,
            Unit::Bytes => &self.values,
        }
    }

    pub fn stats(&self) -> Option<Stats> {
        Stats::of(self.samples())
    }
}

/// JSON has no infinity: "never happened" is written as `null` and read back as infinity.
mod null_is_never {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<Option<f64>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::INFINITY)).collect())
    }
}

/// min / median / max of a row's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Option<Stats> {
        // Infinity ("never") sorts last, so a median of mostly-never reads as never.
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }
}

/// Where the numbers were taken: they mean little without it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    /// True inside the test VM (software emulation: absolute times are inflated).
    pub vm: bool,
    /// What the pools sat on ("loopback files on ext4 (/var/tmp/bench)").
    pub backing: String,
    /// blkdrv's version and those of the tools the drivers shell out to.
    pub versions: BTreeMap<String, String>,
    /// Unix time the run started.
    pub started: u64,
}

/// How the run was configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// "full", "quick" or "smoke".
    pub scale: String,
    pub runs: usize,
    pub warmup: usize,
    pub drivers: Vec<String>,
    pub workloads: Vec<String>,
    /// Loopback file size of each pool, bytes.
    pub pool_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub environment: Environment,
    pub config: RunConfig,
    pub results: Vec<ResultRow>,
    /// Drivers or workloads that could not run here, with why (never silently dropped).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub driver: String,
    pub workload: Option<String>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle_of_even_and_odd_runs() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn json_uses_samples_s_for_times_and_values_for_bytes() {
        let row = ResultRow {
            driver: "vfs".into(),
            workload: "create".into(),
            phase: "blkdrv".into(),
            param: "parent 1 MiB".into(),
            unit: Unit::Seconds,
            samples_s: vec![0.5],
            values: vec![],
        };
        let j = serde_json::to_value(&row).unwrap();
        assert_eq!(j["samples_s"][0], 0.5);
        assert!(j.get("values").is_none());
        assert_eq!(j["unit"], "seconds");
    }

    #[test]
    fn never_round_trips_through_json_as_null() {
        let row = ResultRow {
            driver: "btrfs".into(),
            workload: "remove".into(),
            phase: "space_back_after".into(),
            param: String::new(),
            unit: Unit::Seconds,
            samples_s: vec![0.25, f64::INFINITY],
            values: vec![],
        };
        let text = serde_json::to_string(&row).unwrap();
        assert!(text.contains("[0.25,null]"), "{text}");
        let back: ResultRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back.samples_s, row.samples_s);
        assert_eq!(back.stats().unwrap().max, f64::INFINITY);
    }
}
