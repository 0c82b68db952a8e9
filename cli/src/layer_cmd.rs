//! `blkdrv layer ...`: import, snapshot, commit, mount, unmount, remove, list, inspect and diff
//! layers.

use crate::args::{LayerCmd, PoolSel};
use crate::{io_err, output, print_notices, Ctx};
use blkdrv_pool::pool::{MountRequest, RemoveOutcome, Spooled};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Access, LayerName, Pool, PoolError, PoolName, Source};
use std::io::Write;

fn open_write(ctx: &Ctx, sel: &PoolSel, err: &mut dyn Write) -> Result<Pool, PoolError> {
    let mut pool = Pool::open(&ctx.root, &PoolName::new(&sel.pool)?, Access::Write)?;
    for r in pool.recovered() {
        let _ = writeln!(err, "blkdrv: recovered: {}", escape_controls(r));
    }
    print_notices(&mut pool, err);
    Ok(pool)
}

fn open_read(ctx: &Ctx, sel: &PoolSel) -> Result<Pool, PoolError> {
    Pool::open(&ctx.root, &PoolName::new(&sel.pool)?, Access::Read)
}

pub(crate) fn layer_cmd(
    ctx: &Ctx,
    c: &LayerCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), PoolError> {
    match c {
        LayerCmd::Create {
            name,
            parent,
            from_tar,
            from_dir,
            size,
            allow_devices,
            sel,
        } => {
            let name = LayerName::new(name)?;
            let pool_name = PoolName::new(&sel.pool)?;
            let stdin;
            let file;
            let source = match (from_tar, from_dir) {
                (Some(p), _) if p.as_os_str() == "-" => {
                    stdin = std::io::stdin();
                    Source::Tar(Box::new(stdin.lock()))
                }
                (Some(p), _) => {
                    file = std::fs::File::open(p).map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => {
                            PoolError::Invalid(format!("tar file {} does not exist", p.display()))
                        }
                        _ => PoolError::user_path("open tar", p, e),
                    })?;
                    Source::Tar(Box::new(std::io::BufReader::new(file)))
                }
                (None, Some(d)) => Source::Dir(d),
                (None, None) => unreachable!("clap requires a source"),
            };
            // Spool and validate before taking the writer lock: a slow producer on stdin
            // must not block every other writer.
            let spooled = Spooled::for_pool(&ctx.root, &pool_name, source, *allow_devices)?;
            let mut pool = open_write(ctx, sel, err)?;
            let bar = output::byte_bar(&format!("importing {name}"));
            let res = pool.create_from(&name, parent.as_deref(), spooled, *size, &mut |b| {
                bar.set_position(b)
            });
            print_notices(&mut pool, err);
            bar.finish_and_clear();
            let res = res?;
            if ctx.json {
                output::json(out, &res)
            } else if res.reused {
                writeln!(
                    out,
                    "reused layer {} for {name}: same content ({}) on the same parent",
                    res.layer.id,
                    res.layer.digest.as_deref().unwrap_or("?")
                )
                .map_err(io_err)
            } else {
                writeln!(
                    out,
                    "created layer {name} (id {}, {}, {})",
                    res.layer.id,
                    output::size(res.layer.size_bytes),
                    res.layer.digest.as_deref().unwrap_or("?")
                )
                .map_err(io_err)
            }
        }
        LayerCmd::Snapshot {
            parent,
            name,
            size,
            sel,
        } => {
            let name = LayerName::new(name)?;
            let mut pool = open_write(ctx, sel, err)?;
            let info = pool.snapshot(parent, &name, *size);
            print_notices(&mut pool, err);
            let info = info?;
            if ctx.json {
                output::json(out, &info)
            } else {
                writeln!(
                    out,
                    "created active layer {name} (id {}) on {parent}",
                    info.id
                )
                .map_err(io_err)
            }
        }
        LayerCmd::Commit { name, sel } => {
            let info = open_write(ctx, sel, err)?.commit(name)?;
            if ctx.json {
                output::json(out, &info)
            } else {
                writeln!(
                    out,
                    "committed layer {name} ({})",
                    output::size(info.size_bytes)
                )
                .map_err(io_err)
            }
        }
        LayerCmd::Mount {
            name,
            target,
            ro,
            dev,
            sel,
        } => {
            let req = MountRequest {
                read_only: *ro,
                dev: *dev,
            };
            let mode = open_write(ctx, sel, err)?.mount_with(name, target, req)?;
            if ctx.json {
                output::json(
                    out,
                    &serde_json::json!({"layer": name, "target": target, "mode": mode}),
                )
            } else {
                writeln!(out, "mounted {name} at {} ({mode})", target.display()).map_err(io_err)
            }
        }
        LayerCmd::Umount { name, target, sel } => {
            let done = open_write(ctx, sel, err)?.umount(name, target.as_deref())?;
            if ctx.json {
                output::json(out, &serde_json::json!({"layer": name, "unmounted": done}))
            } else {
                for t in done {
                    writeln!(out, "unmounted {name} from {}", t.display()).map_err(io_err)?;
                }
                Ok(())
            }
        }
        LayerCmd::Rm { name, force, sel } => {
            let mut pool = open_write(ctx, sel, err)?;
            let outcome = pool.remove(name, *force);
            print_notices(&mut pool, err);
            let outcome = outcome?;
            if ctx.json {
                output::json(out, &serde_json::json!({"layer": name, "result": outcome}))
            } else {
                match outcome {
                    RemoveOutcome::Removed => writeln!(out, "removed layer {name}"),
                    RemoveOutcome::Untagged => {
                        writeln!(out, "untagged {name} (the layer has other names)")
                    }
                    RemoveOutcome::Deferred => writeln!(
                        out,
                        "removal of {name} deferred: its device is busy; the next blkdrv command retries it"
                    ),
                }
                .map_err(io_err)
            }
        }
        LayerCmd::Ls { tree, sel } => {
            let layers = open_read(ctx, sel)?.list()?;
            if ctx.json {
                output::json(out, &layers)
            } else if *tree {
                output::layer_tree(out, &layers)
            } else {
                output::layer_table(out, &layers)
            }
        }
        LayerCmd::Inspect { name, sel } => {
            let info = open_read(ctx, sel)?.inspect(name)?;
            if ctx.json {
                output::json(out, &info)
            } else {
                output::layer_details(out, &info)
            }
        }
        LayerCmd::Diff {
            name,
            output: path,
            sel,
        } => {
            let mut pool = open_write(ctx, sel, err)?;
            let stats = if path.as_os_str() == "-" {
                let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                let s = pool.diff(name, &mut w)?;
                w.flush().map_err(io_err)?;
                s
            } else {
                // Write to a temp file and rename: a failed diff leaves no half-written tar.
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                let mut tmp = tempfile::NamedTempFile::new_in(dir)
                    .map_err(|e| PoolError::io("create output", path, e))?;
                let s = {
                    let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                    let s = pool.diff(name, &mut w)?;
                    w.flush().map_err(|e| PoolError::io("write", path, e))?;
                    s
                };
                tmp.persist(path)
                    .map_err(|e| PoolError::io("write output", path, e.error))?;
                s
            };
            if ctx.json {
                output::json(
                    out,
                    &serde_json::json!({"layer": name, "added": stats.added, "modified": stats.modified, "deleted": stats.deleted}),
                )
            } else if path.as_os_str() != "-" {
                writeln!(
                    out,
                    "wrote {}: {} added, {} modified, {} deleted",
                    path.display(),
                    stats.added,
                    stats.modified,
                    stats.deleted
                )
                .map_err(io_err)
            } else {
                Ok(())
            }
        }
    }
}
