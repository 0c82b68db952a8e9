//! `blkdrv container ...`: containers' storage (a writable layer on an image plus its volumes,
//! binds and tmpfs mounts), with Docker's `-v` and `--mount` syntax.

use crate::args::{parse_size, PoolSel};
use crate::layer_cmd::{open_read, open_write};
use crate::report::Outcome;
use crate::volume_cmd::report_earlier;
use crate::Ctx;
use blkdrv_pool::pool::ContainerSpec;
use blkdrv_pool::{Bytes, ContainerName, LayerComment, LayerName, MountEntry, PoolError};
use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Create a container's storage: a writable layer on an image, and its mounts.
    #[command(
        long_about = "Create a container: a writable layer on the committed layer \
--image, and the mounts it records, written as Docker writes them (`docker create -v ... \
--mount ...`). Nothing is mounted yet: `container mount` assembles the root filesystem.\n\n\
-v SPEC (repeatable):\n  \
NAME:/path[:OPTS]      a named volume (created when it does not exist)\n  \
/host/dir:/path[:OPTS] a bind mount of a host directory or file (absolute path; it must exist)\n  \
/path                  an anonymous volume (a random name; `container rm --volumes` removes it)\n  \
OPTS: ro, rw, nocopy, comma-separated. A relative source (./x, x/y) is refused: give a host \
directory as an absolute path. Docker's z/Z (SELinux) and propagation words are refused, \
never ignored.\n\n\
--mount SPEC (repeatable), comma-separated KEY=VALUE:\n  \
type=volume|bind|tmpfs (default volume), source|src=..., target|dst|destination=/path,\n  \
readonly|ro[=true|false], volume-nocopy[=true|false] (volume), tmpfs-size=SIZE, \
tmpfs-mode=OCTAL (tmpfs; no source).\n\n\
A new, empty volume mounted over a non-empty image directory is first filled with that \
directory's content, as Docker does; nocopy / volume-nocopy turns that off. Mount targets are \
paths inside the container: absolute, without `..`, one mount per target; at mount time they \
are resolved inside the root, following symlinks in the image as the container would, never \
out of it.",
        after_help = "Examples:\n  \
blkdrv container create web --image app -v pgdata:/var/lib/postgresql/data\n  \
blkdrv container create web --image app -v /srv/site:/usr/share/nginx/html:ro\n  \
blkdrv container create web --image app --mount type=tmpfs,target=/run/cache,tmpfs-size=64m\n  \
blkdrv container create web --image app --mount type=volume,src=logs,dst=/var/log,volume-nocopy"
    )]
    Create {
        /// Container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+).
        name: String,
        /// The committed layer (image) the writable layer goes on.
        #[arg(long, value_name = "LAYER")]
        image: String,
        /// A volume or bind mount, Docker's -v syntax (repeatable).
        #[arg(short = 'v', long = "volume", value_name = "SPEC")]
        volumes: Vec<String>,
        /// A volume, bind or tmpfs mount, Docker's --mount syntax (repeatable).
        #[arg(long = "mount", value_name = "SPEC")]
        mounts: Vec<String>,
        /// Size limit of the writable layer (drivers with per-layer limits).
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        size: Option<Bytes>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// List containers.
    #[command(visible_alias = "list")]
    Ls {
        /// Only the names, one a line.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Everything known about one container, its writable layer's usage measured.
    Inspect {
        name: String,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Assemble the container's root filesystem at TARGET.
    #[command(
        long_about = "Assemble the container's root filesystem at TARGET: its writable \
layer, then every volume, bind and tmpfs at its path, parents first. Missing mount points are \
made inside the writable layer; a symlink in the image at a mount path is followed inside the \
root, never out of it. `container umount` takes it all down.",
        after_help = "Example:\n  blkdrv container mount web /run/web/rootfs\n  \
chroot /run/web/rootfs /bin/sh"
    )]
    Mount {
        name: String,
        target: PathBuf,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Take the container's root filesystem down, in reverse order.
    Umount {
        name: String,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Make the writable layer a committed image layer (like `docker commit`).
    #[command(
        long_about = "Make a committed image layer LAYER, on the container's image, \
holding what the writable layer holds now. Volumes, binds and tmpfs are not part of it (as in \
`docker commit`). The container goes on as it was.",
        after_help = "Example:\n  blkdrv container commit web web-v2 --comment \"apt-get install curl\""
    )]
    Commit {
        name: String,
        layer: String,
        /// Shown by `blkdrv history` (like `docker commit --message`).
        #[arg(long, short = 'm', visible_alias = "message", value_name = "TEXT")]
        comment: Option<String>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Remove containers and their writable layers; named volumes stay.
    #[command(
        long_about = "Remove containers: each one's writable layer goes with it; named \
volumes stay (they outlive containers), anonymous ones go too with --volumes (like `docker rm \
-v`). A mounted container is refused unless --force, which unmounts it first."
    )]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove the container's anonymous volumes too.
        #[arg(short = 'v', long)]
        volumes: bool,
        /// Unmount a mounted container first.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
}

/// Every `-v`, then every `--mount`, parsed; two on one target refused.
fn parse_mounts(volumes: &[String], mounts: &[String]) -> Result<Vec<MountEntry>, PoolError> {
    let mut all = Vec::new();
    for v in volumes {
        all.push(MountEntry::from_volume_flag(v)?);
    }
    for m in mounts {
        all.push(MountEntry::from_mount_flag(m)?);
    }
    MountEntry::check_distinct_targets(&all)?;
    Ok(all)
}

pub(crate) fn container_cmd(
    ctx: &Ctx,
    c: &ContainerCmd,
    err: &mut dyn Write,
) -> Result<Outcome, PoolError> {
    match c {
        ContainerCmd::Create {
            name,
            image,
            volumes,
            mounts,
            size,
            sel,
        } => {
            // All input checked before the pool is opened for writing.
            let name = ContainerName::new(name)?;
            let spec = ContainerSpec {
                image: image.clone(),
                mounts: parse_mounts(volumes, mounts)?,
                limit: *size,
            };
            let mut pool = open_write(ctx, sel, err)?;
            let info = pool.container_create(&name, &spec);
            crate::print_notices(&mut pool, err);
            Ok(Outcome::ContainerCreated(info?))
        }
        ContainerCmd::Ls { quiet, sel } => Ok(Outcome::Containers {
            quiet: *quiet,
            containers: open_read(ctx, sel)?.container_list()?,
        }),
        ContainerCmd::Inspect { name, sel } => Ok(Outcome::ContainerInspected(
            open_read(ctx, sel)?.container_inspect(name)?,
        )),
        ContainerCmd::Mount { name, target, sel } => Ok(Outcome::ContainerMounted(
            open_write(ctx, sel, err)?.container_mount(name, target)?,
        )),
        ContainerCmd::Umount { name, sel } => Ok(Outcome::ContainerUnmounted {
            name: name.clone(),
            unmounted: open_write(ctx, sel, err)?.container_umount(name)?,
        }),
        ContainerCmd::Commit {
            name,
            layer,
            comment,
            sel,
        } => {
            let layer = LayerName::new(layer)?;
            let comment = comment.as_deref().map(LayerComment::new).transpose()?;
            let mut pool = open_write(ctx, sel, err)?;
            let info = pool.container_commit(name, &layer, comment.as_ref());
            crate::print_notices(&mut pool, err);
            Ok(Outcome::ContainerCommitted {
                name: name.clone(),
                layer: info?,
            })
        }
        ContainerCmd::Rm {
            names,
            volumes,
            force,
            sel,
        } => {
            let mut pool = open_write(ctx, sel, err)?;
            let mut removed = Vec::new();
            let mut failed = None;
            for n in names {
                match pool.container_remove(n, *volumes, *force) {
                    Ok(r) => removed.push(r),
                    Err(e) => report_earlier(&mut failed, e, err),
                }
            }
            crate::print_notices(&mut pool, err);
            Ok(Outcome::ContainersRemoved { removed, failed })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ContainerCmd {
        let argv = std::iter::once("blkdrv").chain(args.iter().copied());
        let (cli, _) = crate::args::parse(argv.map(Into::into).collect()).unwrap();
        match cli.cmd {
            crate::args::Cmd::Container(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_v_is_dockers_after_the_command() {
        match parse(&["-v", "container", "rm", "-v", "-f", "a", "b"]) {
            ContainerCmd::Rm {
                names,
                volumes,
                force,
                ..
            } => assert!(volumes && force && names == ["a", "b"]),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "container",
            "create",
            "c1",
            "--image",
            "i",
            "-v",
            "db:/d",
            "-v",
            "/x",
        ]) {
            ContainerCmd::Create { volumes, .. } => assert_eq!(volumes, ["db:/d", "/x"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mounts_keep_flag_order_and_refuse_shared_targets() {
        let all = parse_mounts(
            &["db:/data".into(), "/anon".into()],
            &["type=tmpfs,target=/t".into()],
        )
        .unwrap();
        let targets: Vec<&str> = all.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/data", "/anon", "/t"]);
        let e =
            parse_mounts(&["db:/data".into()], &["type=tmpfs,target=/data".into()]).unwrap_err();
        assert!(e.to_string().contains("duplicate mount point"), "{e}");
        assert!(e.is_user_error());
    }
}
