//! `blkdrv bench --smoke` on the drivers this host runs: every workload produces rows, the JSON
//! keeps every sample, the chart is written and no pool is left behind. Needs root.
//! (devicemapper runs the same smoke bench in the VM: tests/drivers/devicemapper.rs.)

use kit::cli::{run_cli, Out};
use std::ffi::OsString;
use std::path::Path;

fn run(args: &[&str], extra: &[(&str, &Path)]) -> Out {
    let mut v: Vec<OsString> = args.iter().map(OsString::from).collect();
    for (flag, p) in extra {
        v.push(OsString::from(flag));
        v.push(p.as_os_str().to_owned());
    }
    let mut full: Vec<OsString> = vec!["blkdrv".into()];
    full.extend(v);
    run_cli(full)
}

#[test]
fn smoke_bench_measures_every_workload_on_every_host_driver() {
    assert!(nix::unistd::geteuid().is_root(), "the bench needs root");
    std::fs::create_dir_all("/tmp/blkdrv-cli-tests").unwrap();
    let tmp = tempfile::tempdir_in("/tmp/blkdrv-cli-tests").unwrap();
    let work = tmp.path().join("work");
    let out_dir = tmp.path().join("out");
    let json = tmp.path().join("r.json");
    let o = run(
        &[
            "bench",
            "--smoke",
            "--runs",
            "1",
            "--drivers",
            "vfs,overlay,btrfs",
        ],
        &[("--json", &json), ("--dir", &work), ("--out", &out_dir)],
    );
    assert_eq!(o.code, 0, "bench failed: {}\n{}", o.stderr, o.stdout);
    assert!(o.stdout.contains("ratios (medians)"), "{}", o.stdout);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(!report["environment"]["kernel"].as_str().unwrap().is_empty());
    let results = report["results"].as_array().unwrap();
    for driver in ["vfs", "overlay-ext4", "overlay-xfs", "btrfs"] {
        for w in blkdrv_benches::WORKLOADS.iter().map(|w| &w.name) {
            let rows: Vec<&serde_json::Value> = results
                .iter()
                .filter(|r| r["driver"] == driver && r["workload"] == *w)
                .collect();
            assert!(!rows.is_empty(), "{driver} has no {w} rows");
            for r in rows {
                let n = if r["unit"] == "seconds" {
                    r["samples_s"].as_array().unwrap().len()
                } else {
                    r["values"].as_array().unwrap().len()
                };
                assert!(n >= 1, "{driver} {w} {} has no samples", r["phase"]);
            }
        }
    }
    // The raw kernel operation is timed where there is one.
    for driver in ["vfs", "btrfs"] {
        assert!(
            results
                .iter()
                .any(|r| r["driver"] == driver && r["phase"] == "raw"),
            "{driver} has no raw create rows"
        );
    }
    assert!(report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| !s["reason"].as_str().unwrap().starts_with("failed")));

    let svg = std::fs::read_to_string(out_dir.join("bench.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("btrfs"), "chart");
    let txt = std::fs::read_to_string(out_dir.join("bench.txt")).unwrap();
    assert!(txt.contains("min / median / max"));
    assert!(out_dir.join("bench.json").is_file());

    // Re-rendering from the JSON gives the same table without running anything.
    let again = run(&["bench"], &[("--from-json", &json)]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, o.stdout);

    // Nothing left: no loop device on the bench dir, no mount under it.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(work.to_str().unwrap()), "mounts left");
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(work.to_str().unwrap()),
        "loop devices left: {loops}"
    );
    // Nor any variant's directory: each goes with its pool.
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left under --dir: {left:?}");
}

#[test]
fn bad_names_are_usage_errors_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("never");
    let o = run(
        &["bench", "--smoke", "--drivers", "nope"],
        &[("--dir", &work)],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("unknown driver \"nope\""), "{}", o.stderr);
    let o = run(
        &["bench", "--smoke", "--workloads", "fast"],
        &[("--dir", &work)],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("deep_chain"), "{}", o.stderr);
    let o = run(&["bench", "--smoke", "--runs", "0"], &[("--dir", &work)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(!work.exists(), "bad input created the scratch dir");
}
