//! Human-readable and JSON output.

use blkdrv_pool::config::Backing;
use blkdrv_pool::pool::{Activation, ActivationState, CheckReport, LayerInfo, PoolStatus};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Access, Bytes, Pool, PoolError, Root};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

type Out<'a> = &'a mut dyn Write;

fn io(e: std::io::Error) -> PoolError {
    PoolError::io("write output", "-", e)
}

pub fn json<T: Serialize + ?Sized>(out: Out<'_>, v: &T) -> Result<(), PoolError> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(|e| io(e.into()))?;
    writeln!(out).map_err(io)
}

/// `BLKDRV_NO_PROGRESS=1` hides progress bars even on a terminal (serial consoles, tests).
fn new_bar() -> ProgressBar {
    if std::env::var_os("BLKDRV_NO_PROGRESS").is_some() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    }
}

/// A spinner on stderr for steps that can take seconds; hidden when stderr is not a terminal.
pub fn spinner(msg: &str) -> ProgressBar {
    let pb = new_bar();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Byte counter for imports (the total is unknown for stdin).
pub fn byte_bar(msg: &str) -> ProgressBar {
    let pb = new_bar();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {bytes} ({bytes_per_sec}) {elapsed}")
            .expect("template"),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub fn size(b: Option<u64>) -> String {
    b.map(|b| Bytes(b).to_string())
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn age(created: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(created);
    let s = (now - created).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn backing_summary(s: &PoolStatus) -> String {
    let fs = s
        .options
        .get("fs")
        .map(|f| format!(", {f}"))
        .unwrap_or_default();
    match &s.backing {
        Backing::Loopback { files } => {
            let total: Bytes = files.iter().map(|f| f.size).sum();
            format!(
                "{total} sparse loopback file under {}{fs}",
                s.dir.join("backing").display()
            )
        }
        Backing::Devices { paths } => {
            let p: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!("device {}{fs}", p.join(", "))
        }
        Backing::Existing {} => format!("existing storage named by the driver options{fs}"),
    }
}

fn kv(out: Out<'_>, k: &str, v: impl std::fmt::Display) -> Result<(), PoolError> {
    writeln!(out, " {k}: {v}").map_err(io)
}

pub fn pool_status(out: Out<'_>, s: &PoolStatus) -> Result<(), PoolError> {
    writeln!(out, "Pool: {}", s.name).map_err(io)?;
    kv(out, "Driver", &s.driver)?;
    kv(out, "Backing", backing_summary(s))?;
    kv(out, "Copy-on-write", s.capabilities.granularity)?;
    kv(out, "Native Snapshots", s.capabilities.native_snapshots)?;
    kv(
        out,
        "Space",
        format!(
            "{} used, {} available, {} total ({:.1}% free)",
            s.space.used,
            s.space.available,
            s.space.total,
            s.space.available.percent_of(s.space.total)
        ),
    )?;
    if let Some(p) = s.space.pending {
        // Freed by `layer rm` but not usable yet (btrfs cleaner); new layers wait for it.
        kv(out, "Pending Space", format!("{p} freed, not yet reusable"))?;
    }
    // btrfs allocates inodes dynamically and statvfs reports 0 of 0.
    let inodes = if s.space.inodes_total == 0 {
        "n/a (allocated dynamically)".to_string()
    } else {
        format!("{} free of {}", s.space.inodes_free, s.space.inodes_total)
    };
    kv(out, "Inodes", inodes)?;
    kv(out, "Min Free Space", format!("{}%", s.min_free_pct))?;
    for (k, v) in &s.space.details {
        kv(out, k, v)?;
    }
    kv(
        out,
        "Layers",
        format!(
            "{} ({} committed, {} active, {} in flight)",
            s.layers, s.committed, s.active, s.in_flight
        ),
    )?;
    kv(out, "Mounts", s.mounts.len())?;
    for m in &s.mounts {
        writeln!(
            out,
            "   layer {} at {} ({})",
            m.layer,
            m.target.display(),
            m.mode
        )
        .map_err(io)?;
    }
    Ok(())
}

pub fn pool_table(out: Out<'_>, rows: &[serde_json::Value]) -> Result<(), PoolError> {
    writeln!(
        out,
        "{:<16} {:<10} {:>8} {:>10} {:>10}",
        "NAME", "DRIVER", "LAYERS", "USED", "TOTAL"
    )
    .map_err(io)?;
    for r in rows {
        let name = r["name"].as_str().unwrap_or("?");
        if let Some(e) = r.get("error").and_then(|e| e.as_str()) {
            writeln!(out, "{name:<16} error: {e}").map_err(io)?;
            continue;
        }
        let b = |v: &serde_json::Value| Bytes(v.as_u64().unwrap_or(0)).to_string();
        writeln!(
            out,
            "{:<16} {:<10} {:>8} {:>10} {:>10}",
            name,
            r["driver"].as_str().unwrap_or("?"),
            r["layers"].as_u64().unwrap_or(0),
            b(&r["space"]["used"]),
            b(&r["space"]["total"]),
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `pool activate --all`: one line per pool, then what recovery did and what failed, indented.
/// Errors and recovery lines carry paths and names from the store: escaped.
pub fn activation_report(out: Out<'_>, report: &[Activation]) -> Result<(), PoolError> {
    if report.is_empty() {
        return writeln!(out, "no pools").map_err(io);
    }
    for a in report {
        let state = match a.state {
            ActivationState::Active => "active",
            ActivationState::ActiveBusy => "active (in use by another blkdrv process)",
            ActivationState::Failed => "FAILED",
        };
        let driver = a.driver.as_deref().unwrap_or("?");
        match a.layers {
            Some(n) => writeln!(out, "{:<16} {driver:<12} {state}, {n} layers", a.pool),
            None => writeln!(out, "{:<16} {driver:<12} {state}", a.pool),
        }
        .map_err(io)?;
        for r in &a.recovered {
            writeln!(out, "  recovered: {}", escape_controls(r)).map_err(io)?;
        }
        for n in &a.notices {
            writeln!(out, "  {}", escape_controls(n)).map_err(io)?;
        }
        if let Some(e) = &a.error {
            writeln!(out, "  error: {}", escape_controls(e)).map_err(io)?;
        }
    }
    Ok(())
}

pub fn check_report(out: Out<'_>, r: &CheckReport) -> Result<(), PoolError> {
    for x in &r.recovered {
        writeln!(out, "recovered: {x}").map_err(io)?;
    }
    for o in &r.orphans {
        writeln!(out, "orphan: object {o} is on disk but not in the store").map_err(io)?;
    }
    for m in &r.missing {
        writeln!(
            out,
            "missing: layer {m} is in the store but its object is gone"
        )
        .map_err(io)?;
    }
    for m in &r.stale_mounts {
        writeln!(
            out,
            "stale mount: {} is recorded but not mounted",
            m.target.display()
        )
        .map_err(io)?;
    }
    for m in &r.unverified_mounts {
        writeln!(
            out,
            "kept mount: {} (mount namespace {} has no process to look through; it may still be mounted)",
            m.target.display(),
            m.ns.map(|n| n.to_string()).unwrap_or_default()
        )
        .map_err(io)?;
    }
    for x in &r.repaired {
        writeln!(out, "repaired: {x}").map_err(io)?;
    }
    if r.is_clean() {
        writeln!(out, "pool is consistent").map_err(io)?;
    }
    Ok(())
}

fn mounts_col(l: &LayerInfo) -> String {
    let v: Vec<String> = l
        .mounts
        .iter()
        .map(|m| format!("{}({})", m.target.display(), m.mode))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

pub fn layer_table(out: Out<'_>, layers: &[LayerInfo]) -> Result<(), PoolError> {
    writeln!(
        out,
        "{:<24} {:>6} {:<20} {:<10} {:>10} {:<10} MOUNTS",
        "NAME", "ID", "PARENT", "STATE", "SIZE", "CREATED"
    )
    .map_err(io)?;
    for l in layers {
        let name = if l.names.len() > 1 {
            l.names.join(",")
        } else {
            l.name.clone()
        };
        writeln!(
            out,
            "{:<24} {:>6} {:<20} {:<10} {:>10} {:<10} {}",
            name,
            l.id,
            l.parent.as_deref().unwrap_or("-"),
            l.state,
            size(l.size_bytes),
            age(l.created),
            mounts_col(l)
        )
        .map_err(io)?;
    }
    Ok(())
}

/// Parent/child tree, each layer with its own size (like `docker history`, but a forest).
pub fn layer_tree(out: Out<'_>, layers: &[LayerInfo]) -> Result<(), PoolError> {
    let mut children: BTreeMap<Option<u32>, Vec<&LayerInfo>> = BTreeMap::new();
    for l in layers {
        children.entry(l.parent_id).or_default().push(l);
    }
    // Iterative DFS: chains can be hundreds of layers deep.
    let mut stack: Vec<(&LayerInfo, String, bool)> = Vec::new();
    if let Some(roots) = children.get(&None) {
        for (i, r) in roots.iter().enumerate().rev() {
            stack.push((r, String::new(), i + 1 == roots.len()));
        }
    }
    while let Some((l, prefix, last)) = stack.pop() {
        let is_root = l.parent_id.is_none();
        let branch = if is_root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let names = if l.names.len() > 1 {
            l.names.join(",")
        } else {
            l.name.clone()
        };
        writeln!(
            out,
            "{prefix}{branch}{names} [{}] {} {}{}",
            l.id,
            size(l.size_bytes),
            l.state,
            if l.mounts.is_empty() {
                String::new()
            } else {
                format!(" mounted {}", mounts_col(l))
            }
        )
        .map_err(io)?;
        let child_prefix = if is_root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        if let Some(kids) = children.get(&Some(l.id)) {
            for (i, k) in kids.iter().enumerate().rev() {
                stack.push((k, child_prefix.clone(), i + 1 == kids.len()));
            }
        }
    }
    Ok(())
}

pub fn layer_details(out: Out<'_>, l: &LayerInfo) -> Result<(), PoolError> {
    writeln!(out, "Layer: {}", l.name).map_err(io)?;
    kv(out, "Names", l.names.join(", "))?;
    kv(out, "Id", l.id)?;
    kv(out, "Kind", l.kind)?;
    kv(out, "State", l.state)?;
    kv(out, "Parent", l.parent.as_deref().unwrap_or("-"))?;
    kv(out, "Depth", l.depth)?;
    kv(out, "Digest", l.digest.as_deref().unwrap_or("-"))?;
    kv(out, "Size", size(l.size_bytes))?;
    if let Some(r) = l.referenced_bytes {
        kv(out, "Referenced", Bytes(r))?;
    }
    if let Some(lim) = l.limit_bytes {
        kv(out, "Size Limit", Bytes(lim))?;
    }
    kv(
        out,
        "Inodes",
        l.inodes
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into()),
    )?;
    kv(out, "Created", age(l.created))?;
    kv(out, "Mounts", mounts_col(l))
}

#[derive(Serialize)]
struct DriverRow {
    name: &'static str,
    description: &'static str,
    available: bool,
    reason: Option<String>,
}

/// `blkdrv info`.
pub fn info(root: &Root, config: &Path, as_json: bool, out: Out<'_>) -> Result<(), PoolError> {
    let drivers: Vec<DriverRow> = blkdrv_pool::init::drivers()
        .into_iter()
        .map(|d| DriverRow {
            name: d.name,
            description: d.description,
            available: d.unavailable.is_none(),
            reason: d.unavailable,
        })
        .collect();
    let mut pools = Vec::new();
    for name in root.pools()? {
        pools.push(
            match Pool::open(root, &name, Access::Read).and_then(|p| p.status()) {
                Ok(s) => serde_json::to_value(s).unwrap_or_default(),
                Err(e) => serde_json::json!({"name": name.as_str(), "error": e.to_string()}),
            },
        );
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let auto = blkdrv_pool::init::auto_pick(&root.path);
    if as_json {
        return json(
            out,
            &serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "root": root.path,
                "config": config,
                "kernel": kernel,
                "drivers": drivers,
                "auto_driver": auto,
                "pools": pools,
            }),
        );
    }
    writeln!(out, "blkdrv {}", env!("CARGO_PKG_VERSION")).map_err(io)?;
    kv(out, "Root Dir", root.path.display())?;
    kv(
        out,
        "Config File",
        format!(
            "{}{}",
            config.display(),
            if config.exists() { "" } else { " (absent)" }
        ),
    )?;
    kv(out, "Kernel Version", kernel)?;
    writeln!(out, "Drivers:").map_err(io)?;
    for d in &drivers {
        let state = match &d.reason {
            None => "available".to_string(),
            Some(r) => format!("unavailable: {r}"),
        };
        writeln!(out, "  {:<12} {} ({state})", d.name, d.description).map_err(io)?;
    }
    // What `pool init` does without --driver (unless the config file names one).
    kv(
        out,
        "Auto Driver",
        format!("auto would pick: {} ({})", auto.driver, auto.why),
    )?;
    writeln!(out, "Pools: {}", pools.len()).map_err(io)?;
    pool_table(out, &pools)
}
