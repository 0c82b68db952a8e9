//! What each command did, as a typed outcome, and the one emitter that renders it as text or
//! JSON: the commands decide what happened, only this file decides how it reads.

use crate::output;
use crate::output_containers as oc;
use blkdrv_pool::pool::{
    Activation, CheckReport, ContainerInfo, ContainerMounted, ContainerRemoved, HistoryEntry,
    LayerInfo, PoolStatus, RemoveOutcome, VolumeInfo,
};
use blkdrv_pool::DiffStats;
use blkdrv_pool::{CreateOutcome, MountMode, PoolError};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// The result of one command.
pub enum Outcome {
    PoolCreated(PoolStatus),
    PoolStatus(PoolStatus),
    /// `pool ls`: one row per pool, a status or `{name, error}`.
    Pools(Vec<serde_json::Value>),
    /// `pool check`; `name` and `repair` decide the verdict after the report is shown.
    Checked {
        name: String,
        repair: bool,
        report: CheckReport,
    },
    Activated {
        pool: String,
        layers: usize,
    },
    /// `pool activate --all`: one entry per pool; fails (exit 1) once shown if any failed.
    ActivatedAll(Vec<Activation>),
    Deactivated {
        pool: String,
    },
    Destroyed {
        pool: String,
    },
    LayerCreated {
        name: String,
        result: CreateOutcome,
    },
    Snapshotted {
        name: String,
        parent: String,
        layer: LayerInfo,
    },
    Committed {
        name: String,
        layer: LayerInfo,
    },
    Mounted {
        layer: String,
        target: PathBuf,
        mode: MountMode,
    },
    Unmounted {
        layer: String,
        targets: Vec<PathBuf>,
    },
    Removed {
        layer: String,
        result: RemoveOutcome,
    },
    Layers {
        tree: bool,
        layers: Vec<LayerInfo>,
    },
    Inspected(LayerInfo),
    /// `layer diff`; `path` is `-` when the tar went to stdout (then text mode says nothing).
    Diffed {
        layer: String,
        path: PathBuf,
        stats: DiffStats,
    },
    VolumeCreated(VolumeInfo),
    Volumes {
        quiet: bool,
        volumes: Vec<VolumeInfo>,
    },
    /// `volume inspect NAME...`: what was found; `failed`, the last name that was not (the
    /// verdict, once the others are shown).
    VolumesInspected {
        found: Vec<VolumeInfo>,
        failed: Option<PoolError>,
    },
    VolumesRemoved {
        removed: Vec<String>,
        failed: Option<PoolError>,
    },
    VolumesPruned(Vec<String>),
    ContainerCreated(ContainerInfo),
    Containers {
        quiet: bool,
        containers: Vec<ContainerInfo>,
    },
    ContainerInspected(ContainerInfo),
    ContainerMounted(ContainerMounted),
    ContainerUnmounted {
        name: String,
        unmounted: Vec<PathBuf>,
    },
    ContainerCommitted {
        name: String,
        layer: LayerInfo,
    },
    ContainersRemoved {
        removed: Vec<ContainerRemoved>,
        failed: Option<PoolError>,
    },
    History {
        no_trunc: bool,
        human: bool,
        entries: Vec<HistoryEntry>,
    },
}

fn io(e: std::io::Error) -> PoolError {
    PoolError::io("write output", "-", e)
}

impl Outcome {
    /// Writes the outcome to `out`: pretty JSON with `json`, else the text a person reads.
    pub fn emit(&self, out: &mut dyn Write, as_json: bool) -> Result<(), PoolError> {
        if as_json {
            return self.emit_json(out);
        }
        match self {
            Outcome::PoolCreated(s) => writeln!(
                out,
                "Pool {} created: driver {}, {}",
                s.name,
                s.driver,
                output::backing_summary(s)
            )
            .map_err(io),
            Outcome::PoolStatus(s) => output::pool_status(out, s),
            Outcome::Pools(rows) => output::pool_table(out, rows),
            Outcome::Checked { report, .. } => output::check_report(out, report),
            Outcome::Activated { pool, layers } => {
                writeln!(out, "Pool {pool} active ({layers} layers)").map_err(io)
            }
            Outcome::ActivatedAll(report) => output::activation_report(out, report),
            Outcome::Deactivated { pool } => writeln!(out, "Pool {pool} deactivated").map_err(io),
            Outcome::Destroyed { pool } => writeln!(out, "Pool {pool} destroyed").map_err(io),
            Outcome::LayerCreated { name, result } if result.reused => writeln!(
                out,
                "reused layer {} for {name}: same content ({}) on the same parent",
                result.layer.id,
                result.layer.digest.as_deref().unwrap_or("?")
            )
            .map_err(io),
            Outcome::LayerCreated { name, result } => writeln!(
                out,
                "created layer {name} (id {}, {}, {})",
                result.layer.id,
                output::size(result.layer.size_bytes),
                result.layer.digest.as_deref().unwrap_or("?")
            )
            .map_err(io),
            Outcome::Snapshotted {
                name,
                parent,
                layer,
            } => writeln!(
                out,
                "created active layer {name} (id {}) on {parent}",
                layer.id
            )
            .map_err(io),
            Outcome::Committed { name, layer } => writeln!(
                out,
                "committed layer {name} ({})",
                output::size(layer.size_bytes)
            )
            .map_err(io),
            Outcome::Mounted {
                layer,
                target,
                mode,
            } => writeln!(out, "mounted {layer} at {} ({mode})", target.display()).map_err(io),
            Outcome::Unmounted { layer, targets } => {
                for t in targets {
                    writeln!(out, "unmounted {layer} from {}", t.display()).map_err(io)?;
                }
                Ok(())
            }
            Outcome::Removed { layer, result } => match result {
                RemoveOutcome::Removed => writeln!(out, "removed layer {layer}"),
                RemoveOutcome::Untagged => {
                    writeln!(out, "untagged {layer} (the layer has other names)")
                }
                RemoveOutcome::Deferred => writeln!(
                    out,
                    "removal of {layer} deferred: its device is busy; the next blkdrv command retries it"
                ),
            }
            .map_err(io),
            Outcome::Layers { tree: true, layers } => output::layer_tree(out, layers),
            Outcome::Layers { tree: false, layers } => output::layer_table(out, layers),
            Outcome::Inspected(l) => output::layer_details(out, l),
            Outcome::VolumeCreated(v) => writeln!(out, "{}", v.name).map_err(io),
            Outcome::Volumes { quiet: true, volumes } => {
                for v in volumes {
                    writeln!(out, "{}", v.name).map_err(io)?;
                }
                Ok(())
            }
            Outcome::Volumes { volumes, .. } => oc::volume_table(out, volumes),
            Outcome::VolumesInspected { found, .. } => {
                for (i, v) in found.iter().enumerate() {
                    if i > 0 {
                        writeln!(out).map_err(io)?;
                    }
                    oc::volume_details(out, v)?;
                }
                Ok(())
            }
            Outcome::VolumesRemoved { removed, .. } => {
                for n in removed {
                    writeln!(out, "{n}").map_err(io)?;
                }
                Ok(())
            }
            Outcome::VolumesPruned(names) if names.is_empty() => {
                writeln!(out, "no unused volumes to remove").map_err(io)
            }
            Outcome::VolumesPruned(names) => {
                writeln!(out, "Deleted Volumes:").map_err(io)?;
                for n in names {
                    writeln!(out, "{n}").map_err(io)?;
                }
                Ok(())
            }
            Outcome::ContainerCreated(c) => writeln!(out, "{}", c.name).map_err(io),
            Outcome::Containers {
                quiet: true,
                containers,
            } => {
                for c in containers {
                    writeln!(out, "{}", c.name).map_err(io)?;
                }
                Ok(())
            }
            Outcome::Containers { containers, .. } => oc::container_table(out, containers),
            Outcome::ContainerInspected(c) => oc::container_details(out, c),
            Outcome::ContainerMounted(m) => oc::container_mounted(out, m),
            Outcome::ContainerUnmounted { name, unmounted } => {
                for t in unmounted {
                    writeln!(out, "unmounted {}", t.display()).map_err(io)?;
                }
                writeln!(out, "container {name} unmounted").map_err(io)
            }
            Outcome::ContainerCommitted { name, layer } => writeln!(
                out,
                "committed container {name} as layer {} (id {}, {})",
                layer.name,
                layer.id,
                output::size(layer.size_bytes)
            )
            .map_err(io),
            Outcome::ContainersRemoved { removed, .. } => oc::containers_removed(out, removed),
            Outcome::History {
                no_trunc,
                human,
                entries,
            } => oc::history_table(out, entries, *no_trunc, *human),
            Outcome::Diffed { path, .. } if path.as_os_str() == "-" => Ok(()),
            Outcome::Diffed { path, stats, .. } => writeln!(
                out,
                "wrote {}: {} added, {} modified, {} deleted",
                path.display(),
                stats.added,
                stats.modified,
                stats.deleted
            )
            .map_err(io),
        }
    }

    fn emit_json(&self, out: &mut dyn Write) -> Result<(), PoolError> {
        match self {
            Outcome::PoolCreated(s) | Outcome::PoolStatus(s) => output::json(out, s),
            Outcome::Pools(rows) => output::json(out, rows),
            Outcome::Checked { report, .. } => output::json(out, report),
            Outcome::Activated { pool, layers } => {
                output::json(out, &json!({"activated": pool, "layers": layers}))
            }
            Outcome::ActivatedAll(report) => output::json(out, report),
            Outcome::Deactivated { pool } => output::json(out, &json!({"deactivated": pool})),
            Outcome::Destroyed { pool } => output::json(out, &json!({"destroyed": pool})),
            Outcome::LayerCreated { result, .. } => output::json(out, result),
            Outcome::Snapshotted { layer, .. } | Outcome::Committed { layer, .. } => {
                output::json(out, layer)
            }
            Outcome::Mounted {
                layer,
                target,
                mode,
            } => output::json(
                out,
                &json!({"layer": layer, "target": target, "mode": mode}),
            ),
            Outcome::Unmounted { layer, targets } => {
                output::json(out, &json!({"layer": layer, "unmounted": targets}))
            }
            Outcome::Removed { layer, result } => {
                output::json(out, &json!({"layer": layer, "result": result}))
            }
            Outcome::Layers { layers, .. } => output::json(out, layers),
            Outcome::Inspected(l) => output::json(out, l),
            Outcome::Diffed { layer, stats, .. } => output::json(
                out,
                &json!({"layer": layer, "added": stats.added, "modified": stats.modified, "deleted": stats.deleted}),
            ),
            Outcome::VolumeCreated(v) => output::json(out, v),
            Outcome::Volumes { volumes, .. } => output::json(out, volumes),
            Outcome::VolumesInspected { found, .. } => output::json(out, found),
            Outcome::VolumesRemoved { removed, .. } => {
                output::json(out, &json!({ "removed": removed }))
            }
            Outcome::VolumesPruned(names) => output::json(out, &json!({ "removed": names })),
            Outcome::ContainerCreated(c) | Outcome::ContainerInspected(c) => output::json(out, c),
            Outcome::Containers { containers, .. } => output::json(out, containers),
            Outcome::ContainerMounted(m) => output::json(out, m),
            Outcome::ContainerUnmounted { name, unmounted } => {
                output::json(out, &json!({"container": name, "unmounted": unmounted}))
            }
            Outcome::ContainerCommitted { layer, .. } => output::json(out, layer),
            Outcome::ContainersRemoved { removed, .. } => output::json(out, removed),
            Outcome::History { entries, .. } => output::json(out, entries),
        }
    }

    /// The command's verdict once its outcome is shown: `pool check` without `--repair` fails
    /// on drift, after printing what it found; a command on several names fails with the last
    /// name it could not do, after showing what it did.
    pub fn verdict(self) -> Result<(), PoolError> {
        match self {
            Outcome::VolumesInspected {
                failed: Some(e), ..
            }
            | Outcome::VolumesRemoved {
                failed: Some(e), ..
            }
            | Outcome::ContainersRemoved {
                failed: Some(e), ..
            } => Err(e),
            Outcome::ActivatedAll(report) => blkdrv_pool::pool::all_active(&report),
            Outcome::Checked {
                name,
                repair: false,
                report,
            } if !report.is_clean() => Err(PoolError::Invalid(format!(
                "pool {name} has drift; run `blkdrv pool check --repair {name}`"
            ))),
            _ => Ok(()),
        }
    }
}
