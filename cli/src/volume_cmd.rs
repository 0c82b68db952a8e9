//! `blkdrv volume ...`: create, list, inspect, remove and prune volumes, as `docker volume`.

use crate::args::{parse_opt, parse_size, PoolSel};
use crate::layer_cmd::{open_read, open_write};
use crate::report::Outcome;
use crate::Ctx;
use blkdrv_pool::pool::VolumeSpec;
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Bytes, PoolError, VolumeName};
use clap::Subcommand;
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume (like `docker volume create`); prints its name.
    #[command(
        long_about = "Create a volume: named data that lives outside every image and \
outlives the containers that mount it, stored as the pool driver's own object: a thin device \
with the pool's filesystem (devicemapper), a dataset (zfs), a subvolume (btrfs), a plain \
directory (overlay, vfs). Without NAME it gets a random 64-hex-digit name, as Docker's.\n\n\
--size is a real limit where the driver has one: the thin device's size (devicemapper), \
refquota (zfs), a qgroup limit (btrfs, needs quotas on the pool). overlay and vfs have no \
per-directory limit and refuse --size.\n\n\
--from VOL makes the new volume a copy-on-write clone of VOL in constant time where the driver \
has snapshots (a thin snapshot, a zfs clone, a btrfs snapshot): a copy of a database's data \
before a risky migration, which Docker has no way to do.",
        after_help = "Examples:\n  blkdrv volume create pgdata --size 10G\n  \
blkdrv volume create pgdata-test --from pgdata\n  \
blkdrv volume create --label team=db cache"
    )]
    Create {
        /// Volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+); a random one without.
        name: Option<String>,
        /// The most data the volume may hold, e.g. 10G (devicemapper, zfs, btrfs).
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        size: Option<Bytes>,
        /// Clone this volume natively (copy-on-write) instead of starting empty.
        #[arg(long, value_name = "VOL")]
        from: Option<String>,
        /// Label KEY=VALUE (repeatable), shown by `volume inspect`.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_opt)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// List volumes (like `docker volume ls`).
    #[command(visible_alias = "list")]
    Ls {
        /// Only the names, one a line.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Everything known about volumes, usage measured (like `docker volume inspect`; with
    /// --json a JSON array, one object per name).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Remove volumes (refused while a container uses one; remove the container first).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Remove unused anonymous volumes; with --all unused named ones too.
    #[command(
        long_about = "Remove volumes no container uses: anonymous ones (made by `-v \
/path`), and with --all named ones too (Docker 23's rule). Prints what it removed.\n\n\
Unlike `docker volume prune` there is no confirmation prompt: blkdrv never asks questions, so \
scripts behave the same with and without a terminal. --force is accepted for the same command \
line as Docker's and changes nothing."
    )]
    Prune {
        /// Named volumes too, not only anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Accepted for Docker's command line; blkdrv does not prompt.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
}

/// `--label` pairs as a map; a key given twice is refused (which one was meant?).
fn labels(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, PoolError> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(PoolError::Invalid(format!(
                "label {:?} given twice",
                escape_controls(k)
            )));
        }
    }
    Ok(map)
}

pub(crate) fn volume_cmd(
    ctx: &Ctx,
    c: &VolumeCmd,
    err: &mut dyn Write,
) -> Result<Outcome, PoolError> {
    match c {
        VolumeCmd::Create {
            name,
            size,
            from,
            labels: pairs,
            sel,
        } => {
            let name = name.as_deref().map(VolumeName::new).transpose()?;
            let spec = VolumeSpec {
                limit: *size,
                from: from.clone(),
                labels: labels(pairs)?,
            };
            let mut pool = open_write(ctx, sel, err)?;
            let info = pool.volume_create(name.as_ref(), &spec);
            crate::print_notices(&mut pool, err);
            Ok(Outcome::VolumeCreated(info?))
        }
        VolumeCmd::Ls { quiet, sel } => Ok(Outcome::Volumes {
            quiet: *quiet,
            volumes: open_read(ctx, sel)?.volume_list()?,
        }),
        VolumeCmd::Inspect { names, sel } => {
            let pool = open_read(ctx, sel)?;
            let mut found = Vec::new();
            let mut failed = None;
            for n in names {
                match pool.volume_inspect(n) {
                    Ok(v) => found.push(v),
                    Err(e) => report_earlier(&mut failed, e, err),
                }
            }
            Ok(Outcome::VolumesInspected { found, failed })
        }
        VolumeCmd::Rm { names, sel } => {
            let mut pool = open_write(ctx, sel, err)?;
            let mut removed = Vec::new();
            let mut failed = None;
            for n in names {
                match pool.volume_remove(n) {
                    Ok(()) => removed.push(n.clone()),
                    Err(e) => report_earlier(&mut failed, e, err),
                }
            }
            crate::print_notices(&mut pool, err);
            Ok(Outcome::VolumesRemoved { removed, failed })
        }
        VolumeCmd::Prune { all, sel, .. } => {
            let mut pool = open_write(ctx, sel, err)?;
            let removed = pool.volume_prune(*all);
            crate::print_notices(&mut pool, err);
            Ok(Outcome::VolumesPruned(removed?))
        }
    }
}

/// Commands on several names go on past one that fails (as Docker's): every failure but the
/// last is said at once, the last is the command's verdict.
pub(crate) fn report_earlier(failed: &mut Option<PoolError>, e: PoolError, err: &mut dyn Write) {
    if let Some(prev) = failed.replace(e) {
        let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&prev.to_string()));
    }
}
