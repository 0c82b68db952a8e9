//! `blkdrv layer ...`: import, snapshot, commit, mount, unmount, remove, list, inspect and diff
//! layers.

use crate::args::{LayerCmd, PoolSel};
use crate::report::Outcome;
use crate::{io_err, output, print_notices, Ctx};
use blkdrv_pool::pool::{MountRequest, Spooled};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Access, LayerComment, LayerName, Pool, PoolError, PoolName, Source};
use std::io::Write;

pub(crate) fn open_write(ctx: &Ctx, sel: &PoolSel, err: &mut dyn Write) -> Result<Pool, PoolError> {
    let mut pool = Pool::open(&ctx.root, &PoolName::new(&sel.pool)?, Access::Write)?;
    for r in pool.recovered() {
        let _ = writeln!(err, "blkdrv: recovered: {}", escape_controls(r));
    }
    print_notices(&mut pool, err);
    Ok(pool)
}

pub(crate) fn open_read(ctx: &Ctx, sel: &PoolSel) -> Result<Pool, PoolError> {
    Pool::open(&ctx.root, &PoolName::new(&sel.pool)?, Access::Read)
}

pub(crate) fn layer_cmd(
    ctx: &Ctx,
    c: &LayerCmd,
    err: &mut dyn Write,
) -> Result<Outcome, PoolError> {
    match c {
        LayerCmd::Create {
            name,
            parent,
            from_tar,
            from_dir,
            size,
            comment,
            allow_devices,
            sel,
        } => {
            let name = LayerName::new(name)?;
            let comment = comment.as_deref().map(LayerComment::new).transpose()?;
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
            let result = res?;
            if let Some(c) = &comment {
                pool.set_comment(name.as_str(), c)
                    .map_err(|e| comment_failed(&name, e))?;
            }
            Ok(Outcome::LayerCreated {
                name: name.to_string(),
                result,
            })
        }
        LayerCmd::Snapshot {
            parent,
            name,
            size,
            comment,
            sel,
        } => {
            let name = LayerName::new(name)?;
            let comment = comment.as_deref().map(LayerComment::new).transpose()?;
            let mut pool = open_write(ctx, sel, err)?;
            let info = pool.snapshot(parent, &name, *size);
            print_notices(&mut pool, err);
            let layer = info?;
            if let Some(c) = &comment {
                pool.set_comment(name.as_str(), c)
                    .map_err(|e| comment_failed(&name, e))?;
            }
            Ok(Outcome::Snapshotted {
                name: name.to_string(),
                parent: parent.clone(),
                layer,
            })
        }
        LayerCmd::Commit { name, sel } => Ok(Outcome::Committed {
            name: name.clone(),
            layer: open_write(ctx, sel, err)?.commit(name)?,
        }),
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
            Ok(Outcome::Mounted {
                layer: name.clone(),
                target: target.clone(),
                mode,
            })
        }
        LayerCmd::Umount { name, target, sel } => Ok(Outcome::Unmounted {
            layer: name.clone(),
            targets: open_write(ctx, sel, err)?.umount(name, target.as_deref())?,
        }),
        LayerCmd::Rm { name, force, sel } => {
            let mut pool = open_write(ctx, sel, err)?;
            let outcome = pool.remove(name, *force);
            print_notices(&mut pool, err);
            Ok(Outcome::Removed {
                layer: name.clone(),
                result: outcome?,
            })
        }
        LayerCmd::Ls { tree, sel } => Ok(Outcome::Layers {
            tree: *tree,
            layers: open_read(ctx, sel)?.list()?,
        }),
        LayerCmd::Inspect { name, sel } => {
            Ok(Outcome::Inspected(open_read(ctx, sel)?.inspect(name)?))
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
            Ok(Outcome::Diffed {
                layer: name.clone(),
                path: path.clone(),
                stats,
            })
        }
    }
}

/// The layer is made but its comment could not be recorded: the message says the layer
/// exists (exit 1), so that a retry does not look for a failed create.
fn comment_failed(name: &LayerName, e: PoolError) -> PoolError {
    PoolError::io(
        "record the comment of new layer",
        name.as_str(),
        std::io::Error::other(e.to_string()),
    )
}
