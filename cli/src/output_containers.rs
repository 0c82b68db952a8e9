//! Tables and details of volumes, containers and `history`, laid out as Docker's.

use crate::output::{age, size};
use blkdrv_pool::pool::{
    ContainerInfo, ContainerMounted, ContainerRemoved, HistoryEntry, VolumeInfo,
};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Bytes, MountEntry, MountSource, PoolError};
use std::io::Write;

type Out<'a> = &'a mut dyn Write;

fn io(e: std::io::Error) -> PoolError {
    PoolError::io("write output", "-", e)
}

fn kv(out: Out<'_>, k: &str, v: impl std::fmt::Display) -> Result<(), PoolError> {
    writeln!(out, " {k}: {v}").map_err(io)
}

fn list_or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn limit(b: Option<u64>) -> String {
    b.map(|b| Bytes(b).to_string())
        .unwrap_or_else(|| "none".into())
}

pub fn volume_table(out: Out<'_>, volumes: &[VolumeInfo]) -> Result<(), PoolError> {
    let w = volumes
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(0)
        .max(11);
    writeln!(
        out,
        "{:<w$}  {:>10}  {:<16}  {:<10}  USED BY",
        "VOLUME NAME", "LIMIT", "ORIGIN", "CREATED"
    )
    .map_err(io)?;
    for v in volumes {
        writeln!(
            out,
            "{:<w$}  {:>10}  {:<16}  {:<10}  {}",
            v.name,
            limit(v.limit_bytes),
            v.origin.as_deref().unwrap_or("-"),
            age(v.created),
            list_or_dash(&v.users),
        )
        .map_err(io)?;
    }
    Ok(())
}

pub fn volume_details(out: Out<'_>, v: &VolumeInfo) -> Result<(), PoolError> {
    writeln!(out, "Volume: {}", v.name).map_err(io)?;
    kv(out, "Id", v.id)?;
    kv(out, "State", v.state)?;
    kv(out, "Anonymous", v.anonymous)?;
    kv(out, "Created", age(v.created))?;
    kv(out, "Origin", v.origin.as_deref().unwrap_or("-"))?;
    let labels: Vec<String> = v
        .labels
        .iter()
        .map(|(k, val)| format!("{}={}", escape_controls(k), escape_controls(val)))
        .collect();
    kv(out, "Labels", list_or_dash(&labels))?;
    kv(out, "Size Limit", limit(v.limit_bytes))?;
    kv(out, "Size", size(v.size_bytes))?;
    if let Some(r) = v.referenced_bytes {
        kv(out, "Referenced", Bytes(r))?;
    }
    kv(out, "Used By", list_or_dash(&v.users))
}

/// A mount as Docker's `-v` would write it (`--mount`'s words for tmpfs).
pub fn mount_spec(m: &MountEntry) -> String {
    let ro = if m.readonly { ":ro" } else { "" };
    match &m.source {
        MountSource::Volume { name, nocopy, .. } => {
            let name = name.as_ref().map(|n| n.as_str()).unwrap_or("<anonymous>");
            let nocopy = match (m.readonly, nocopy) {
                (_, false) => "",
                (true, true) => ",nocopy",
                (false, true) => ":nocopy",
            };
            format!("{name}:{}{ro}{nocopy}", m.target)
        }
        MountSource::Bind { source } => format!(
            "{}:{}{ro}",
            escape_controls(&source.to_string_lossy()),
            m.target
        ),
        MountSource::Tmpfs { size, mode } => {
            let mut s = format!("tmpfs:{}", m.target);
            if let Some(b) = size {
                s.push_str(&format!(",size={b}"));
            }
            if let Some(md) = mode {
                s.push_str(&format!(",mode={md:o}"));
            }
            if m.readonly {
                s.push_str(",ro");
            }
            s
        }
    }
}

pub fn container_table(out: Out<'_>, cs: &[ContainerInfo]) -> Result<(), PoolError> {
    let w = cs.iter().map(|c| c.name.len()).max().unwrap_or(0).max(4);
    let iw = cs.iter().map(|c| c.image.len()).max().unwrap_or(0).max(5);
    writeln!(
        out,
        "{:<w$}  {:<iw$}  {:<10}  {:<10}  MOUNTS",
        "NAME", "IMAGE", "STATE", "CREATED"
    )
    .map_err(io)?;
    for c in cs {
        let mounts: Vec<String> = c.mounts.iter().map(mount_spec).collect();
        writeln!(
            out,
            "{:<w$}  {:<iw$}  {:<10}  {:<10}  {}",
            c.name,
            c.image,
            state(c),
            age(c.created),
            list_or_dash(&mounts)
        )
        .map_err(io)?;
    }
    Ok(())
}

fn state(c: &ContainerInfo) -> String {
    serde_json::to_value(c.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub fn container_details(out: Out<'_>, c: &ContainerInfo) -> Result<(), PoolError> {
    writeln!(out, "Container: {}", c.name).map_err(io)?;
    kv(out, "State", state(c))?;
    kv(
        out,
        "Image",
        format!("{} (layer id {})", c.image, c.image_id),
    )?;
    kv(out, "Writable Layer", format!("id {}", c.layer_id))?;
    kv(out, "Created", age(c.created))?;
    kv(out, "Size", size(c.size_bytes))?;
    kv(
        out,
        "Root",
        c.root
            .as_ref()
            .map(|r| escape_controls(&r.to_string_lossy()))
            .unwrap_or_else(|| "- (not mounted)".into()),
    )?;
    kv(out, "Mounts", if c.mounts.is_empty() { "-" } else { "" })?;
    for m in &c.mounts {
        writeln!(out, "   {}", mount_spec(m)).map_err(io)?;
    }
    Ok(())
}

pub fn container_mounted(out: Out<'_>, m: &ContainerMounted) -> Result<(), PoolError> {
    writeln!(
        out,
        "mounted container {} at {}",
        m.name,
        escape_controls(&m.root.to_string_lossy())
    )
    .map_err(io)?;
    for p in m.mounts.iter().filter(|p| **p != m.root) {
        writeln!(out, "  {}", escape_controls(&p.to_string_lossy())).map_err(io)?;
    }
    Ok(())
}

pub fn containers_removed(out: Out<'_>, removed: &[ContainerRemoved]) -> Result<(), PoolError> {
    for r in removed {
        writeln!(out, "{}", r.name).map_err(io)?;
        for v in &r.volumes_removed {
            writeln!(out, "  removed anonymous volume {v}").map_err(io)?;
        }
        if r.deferred {
            writeln!(
                out,
                "  removal of its writable layer deferred: the device is busy; the next blkdrv command retries it"
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

/// Docker cuts `history`'s text to 45 characters.
const COMMENT_WIDTH: usize = 45;

pub fn history_table(
    out: Out<'_>,
    entries: &[HistoryEntry],
    no_trunc: bool,
    human: bool,
) -> Result<(), PoolError> {
    let now = now();
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            let created = if human {
                human_age(now, e.created)
            } else {
                iso8601(e.created)
            };
            let sz = match (e.size_bytes, human) {
                (None, _) => "-".to_string(),
                (Some(b), true) => Bytes(b).to_string(),
                (Some(b), false) => b.to_string(),
            };
            let comment = escape_controls(e.comment.as_deref().unwrap_or(""));
            let comment = if no_trunc {
                comment
            } else {
                truncate(&comment, COMMENT_WIDTH)
            };
            [e.layer.clone(), created, sz, comment]
        })
        .collect();
    let width = |i: usize, title: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (w0, w1, w2) = (width(0, "LAYER"), width(1, "CREATED"), width(2, "SIZE"));
    writeln!(
        out,
        "{:<w0$}  {:<w1$}  {:>w2$}  COMMENT",
        "LAYER", "CREATED", "SIZE"
    )
    .map_err(io)?;
    for [layer, created, sz, comment] in &rows {
        writeln!(out, "{layer:<w0$}  {created:<w1$}  {sz:>w2$}  {comment}").map_err(io)?;
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// At most `n` characters, the last one `…` when cut.
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}

/// Docker's wording of an age: "Less than a second ago", "About a minute ago", "5 minutes
/// ago", "2 hours ago", "3 days ago", "2 weeks ago", "4 months ago", "2 years ago".
pub fn human_age(now: i64, then: i64) -> String {
    let s = (now - then).max(0);
    let (min, hour, day) = (60, 3600, 86400);
    let text = match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".to_string(),
        _ if s < hour => format!("{} minutes", s / min),
        _ if s < 2 * hour => "About an hour".to_string(),
        _ if s < 2 * day => format!("{} hours", s / hour),
        _ if s < 14 * day => format!("{} days", s / day),
        _ if s < 60 * day => format!("{} weeks", s / (7 * day)),
        _ if s < 730 * day => format!("{} months", s / (30 * day)),
        _ => format!("{} years", s / (365 * day)),
    };
    format!("{text} ago")
}

/// Unix seconds as ISO 8601 in UTC ("2026-12-01T21:06:23Z").
pub fn iso8601(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): eras of 400 years,
/// each 146097 days, with March as the first month so that the leap day comes last.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blkdrv_pool::{ContainerPath, VolumeName};
    use std::path::PathBuf;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_159_183), "2026-12-01T21:06:23Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn ages_read_like_dockers() {
        let t = 1_000_000_000;
        for (ago, want) in [
            (0, "Less than a second ago"),
            (5, "5 seconds ago"),
            (90, "About a minute ago"),
            (300, "5 minutes ago"),
            (4000, "About an hour ago"),
            (3 * 3600, "3 hours ago"),
            (3 * 86400, "3 days ago"),
            (21 * 86400, "3 weeks ago"),
            (90 * 86400, "3 months ago"),
            (800 * 86400, "2 years ago"),
        ] {
            assert_eq!(human_age(t + ago, t), want);
        }
    }

    #[test]
    fn comments_are_cut_unless_asked() {
        assert_eq!(truncate("short", 45), "short");
        let long = "x".repeat(50);
        let cut = truncate(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn mounts_read_as_docker_writes_them() {
        let t = |s| ContainerPath::new(s).unwrap();
        let vol = MountEntry {
            source: MountSource::Volume {
                name: Some(VolumeName::new("db").unwrap()),
                anonymous: false,
                nocopy: true,
            },
            target: t("/data"),
            readonly: true,
        };
        assert_eq!(mount_spec(&vol), "db:/data:ro,nocopy");
        let bind = MountEntry {
            source: MountSource::Bind {
                source: PathBuf::from("/srv/a\nb"),
            },
            target: t("/x"),
            readonly: false,
        };
        assert_eq!(mount_spec(&bind), "/srv/a\\nb:/x");
        let tmp = MountEntry {
            source: MountSource::Tmpfs {
                size: Some(Bytes::mib(64)),
                mode: Some(0o1777),
            },
            target: t("/t"),
            readonly: false,
        };
        assert_eq!(mount_spec(&tmp), "tmpfs:/t,size=64MiB,mode=1777");
    }
}
