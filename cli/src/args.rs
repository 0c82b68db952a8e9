//! The command line: clap definitions, plus the `pool init` flags every driver publishes in its
//! option table, added at run time so a new driver brings its flags without CLI code.

use crate::bench;
use blkdrv_pool::config;
use blkdrv_pool::init::driver_flags;
use blkdrv_pool::{Bytes, OptionKind};
use clap::{Arg, ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "blkdrv",
    version,
    about = "Thin-provisioned storage pools and copy-on-write container image layers",
    long_about = "blkdrv manages storage pools (on sparse loopback files or block devices) and the \
layers of container images in them. Image layers are read-only and shared; identical content on \
the same parent is reused like a build cache; a container gets a writable layer (a snapshot) on \
top of an image, with volumes that outlive it.\n\nQuick start (as root):\n  \
blkdrv pool init --size 4G        # --driver auto: picks one for this host, says why\n  \
blkdrv layer create base --from-tar rootfs.tar --comment \"FROM scratch\"\n  \
blkdrv container create c1 --image base -v data:/var/lib/data\n  \
blkdrv container mount c1 /mnt/c1",
    after_help = "Exit codes: 0 success, 1 operation failed, 2 bad usage or bad input, 130/143 \
interrupted by SIGINT/SIGTERM (the operation was rolled back; nothing is left mounted).\n\
Environment: BLKDRV_ROOT (state dir), BLKDRV_CONFIG (config file), BLKDRV_POOL (default pool), RUST_LOG."
)]
pub struct Cli {
    /// State directory holding the pools.
    #[arg(long, global = true, env = "BLKDRV_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Host config file (blkdrv.toml: defaults for root and pool init). After `storage-setup`:
    /// that command's container-storage-setup file instead.
    #[arg(long, global = true, env = "BLKDRV_CONFIG", value_name = "FILE",
          default_value = config::DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log what happens (-v info, -vv debug; RUST_LOG overrides). Before the command only:
    /// after it, `-v` is `container`'s volume flag, as in Docker.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose_short: u8,

    /// Log what happens, anywhere on the line (--verbose --verbose for debug).
    #[arg(long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose_long: u8,

    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create, inspect, check and destroy storage pools.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Create, snapshot, commit, mount and remove layers.
    #[command(subcommand)]
    Layer(LayerCmd),
    /// Volumes: named data outside images that outlives containers (like `docker volume`).
    #[command(subcommand)]
    Volume(crate::volume_cmd::VolumeCmd),
    /// Containers' storage: a writable layer on an image, with volumes, binds and tmpfs.
    #[command(subcommand)]
    Container(crate::container_cmd::ContainerCmd),
    /// A layer's chain down to its base, each layer's own size (like `docker history`).
    History(HistoryArgs),
    /// Summary of pools and drivers on this host (like `docker info`).
    Info,
    /// Compare every driver on the same workloads (table, JSON with every sample, SVG chart).
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Serve pools to containerd as a proxy snapshotter.
    #[command(subcommand)]
    Snapshotter(crate::snapshotter_cmd::SnapshotterCmd),
    /// Set up a devicemapper pool on LVM from a container-storage-setup style file.
    #[command(name = "storage-setup", long_about = crate::storage_setup_cmd::LONG_ABOUT,
              after_help = crate::storage_setup_cmd::AFTER_HELP)]
    StorageSetup(crate::storage_setup_cmd::StorageSetupArgs),
    /// Shell completions for bash, zsh or fish on stdout.
    Completion(crate::assets_cmd::CompletionArgs),
    /// Man pages (blkdrv(8) and one per subcommand) into a directory: for packagers.
    #[command(hide = true)]
    Manpages(crate::assets_cmd::ManpagesArgs),
}

impl Cli {
    /// `-v` before the command and `--verbose` anywhere, counted together.
    pub fn verbose(&self) -> u8 {
        self.verbose_short.saturating_add(self.verbose_long)
    }
}

#[derive(Args, Debug)]
#[command(
    long_about = "Show the chain from LAYER down to its base, top first, like `docker history`: \
each layer's own size (bytes not shared with its parent), when it was made, and the comment \
given at create time (`layer create --comment`, `container commit --comment`).",
    after_help = "Examples:\n  blkdrv history app\n  blkdrv history app --no-trunc --human=false\n  \
blkdrv history app --json"
)]
pub struct HistoryArgs {
    pub layer: String,
    /// Show comments whole (they are cut to 45 characters otherwise).
    #[arg(long)]
    pub no_trunc: bool,
    /// Ages ("5 minutes ago") and sizes in units; --human=false prints ISO 8601 times and
    /// sizes in bytes.
    #[arg(short = 'H', long, default_value_t = true, action = ArgAction::Set,
          value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
          require_equals = true)]
    pub human: bool,
    #[command(flatten)]
    pub sel: PoolSel,
}

#[derive(Args, Debug, Clone)]
pub struct PoolSel {
    /// Pool to work on.
    #[arg(
        long,
        env = "BLKDRV_POOL",
        default_value = "default",
        value_name = "NAME"
    )]
    pub pool: String,
}

// Parsed once per process; boxing the big variant would only cost readability.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Create a pool: on a sparse loopback file (default) or on block devices (--device).
    #[command(
        long_about = "Create a pool. Without --device the pool lives in a sparse loopback \
file under the state dir (only the space actually written is used on the host). With --device \
the pool formats the given block device; a device that carries a filesystem, partition table or \
LVM signature is refused unless --force."
    )]
    Init {
        /// Pool name.
        #[arg(default_value = "default")]
        name: String,
        /// Storage driver: auto (the default, unless the config file names one) picks per host
        /// and says why: the filesystem's own driver when the state directory is on btrfs or
        /// ZFS, else devicemapper when the kernel has dm-thin, else overlay. `blkdrv info`
        /// shows what auto would pick.
        #[arg(long, value_name = "DRIVER")]
        driver: Option<String>,
        /// Size of the sparse loopback file, e.g. 20G, 512M.
        #[arg(long, value_parser = parse_size, conflicts_with = "device")]
        size: Option<Bytes>,
        /// Block device to use instead of a loopback file.
        #[arg(long, value_name = "DEV")]
        device: Vec<PathBuf>,
        /// Driver option KEY=VALUE (repeatable); each driver rejects keys it does not know.
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", value_parser = parse_opt)]
        opt: Vec<(String, String)>,
        /// Loopback pools: never grow the file beyond this size (default 4x --size). Every
        /// driver's loopback pool grows: btrfs, devicemapper and zfs when unallocated space runs
        /// low, overlay and vfs (xfs_growfs, resize2fs online) when their filesystem does.
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        max_size: Option<Bytes>,
        /// Loopback pools (any driver): never grow the file automatically.
        #[arg(long, conflicts_with = "max_size")]
        no_autoextend: bool,
        /// Refuse new layers when less than this percentage of the pool is free.
        #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=99))]
        min_free: Option<u8>,
        /// Overwrite a device that carries a signature.
        #[arg(long)]
        force: bool,
    },
    /// Space, layers and mounts of a pool.
    Status {
        #[arg(default_value = "default")]
        name: String,
    },
    /// List pools.
    Ls,
    /// Compare the store with what is on disk; --repair fixes drift.
    Check {
        #[arg(default_value = "default")]
        name: String,
        /// Remove orphan objects, forget stale mounts and layers whose data is gone.
        #[arg(long)]
        repair: bool,
    },
    /// Bring the pool's devices up (after a reboot); every command also does this on its own.
    Activate {
        #[arg(default_value = "default")]
        name: String,
        /// Every pool under the state dir (what blkdrv-activate.service runs at boot): each
        /// pool's state is reported, and one that cannot come up does not stop the others.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Take the pool's devices down (dm tables, mounts, loop devices), keeping its data.
    Deactivate {
        #[arg(default_value = "default")]
        name: String,
    },
    /// Unmount everything, deactivate the backing and delete the pool.
    #[command(
        long_about = "Unmount everything, deactivate the backing and delete the pool. Refused \
(exit 1, pool left intact) while another process holds one of the pool's loop devices or \
mounts it elsewhere; the error names the holders (\"pid 1234 (sleep)\"). With --force the pool \
is deleted anyway, every mount that uses it is detached (found in the mount table, so a corrupt \
store does not hide any), and a loop device that stays attached because someone still holds it \
is reported with its holder: exit 1, it detaches when that holder closes it."
    )]
    Destroy {
        #[arg(default_value = "default")]
        name: String,
        /// Unmount mounted layers and other users first, delete the pool even if its loop
        /// device is held (reported, exit 1); also removes a pool whose store is unreadable.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LayerCmd {
    /// Import a tar stream or a directory as a committed image layer.
    #[command(
        long_about = "Import a tar stream (plain or gzip; OCI whiteouts honoured) or a \
directory as a committed, read-only image layer on --parent. The layer's identity is its parent \
plus the digest of its content: importing the same content on the same parent again, under any \
name, reuses the existing layer and prints \"reused\"."
    )]
    Create {
        name: String,
        /// Committed layer to build on.
        #[arg(long)]
        parent: Option<String>,
        /// Tar file to import, or - for stdin.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "from_dir",
            conflicts_with = "from_dir"
        )]
        from_tar: Option<PathBuf>,
        /// Directory to import.
        #[arg(long, value_name = "DIR")]
        from_dir: Option<PathBuf>,
        /// Size limit for the layer (drivers with per-layer limits, e.g. btrfs qgroups).
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        size: Option<Bytes>,
        /// Shown by `blkdrv history` (what made the layer, e.g. "RUN pip install flask"). A
        /// layer reused from the cache keeps its first comment.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Import device nodes (character and block devices) from the tar. Without it a tar
        /// holding one is refused: container runtimes supply /dev, and a device node in a layer
        /// gives whoever can reach a mount of it access to that device.
        #[arg(long)]
        allow_devices: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Create a writable (active) layer on a committed parent, e.g. for a container.
    ///
    /// With --json the new layer's size_bytes is null: it has nothing of its own yet, and
    /// measuring would cost more than the snapshot (`layer inspect` measures).
    Snapshot {
        parent: String,
        name: String,
        /// Size limit for the layer (drivers with per-layer limits, e.g. btrfs qgroups).
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        size: Option<Bytes>,
        /// Shown by `blkdrv history` once the layer is committed.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Freeze an active layer: it becomes read-only and can be a parent.
    Commit {
        name: String,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Mount a layer: active layers read-write (or --ro), committed layers read-only.
    #[command(
        long_about = "Mount a layer at TARGET: an active layer read-write (or read-only with \
--ro), a committed layer read-only (a view; any number of them). TARGET and any missing parent \
directories are created, mode 0700 (root only), like the pool's own state directories.\n\n\
Security: every mount is nodev (device nodes in the layer cannot be opened through it) unless \
--dev; read-only mounts are also nosuid (setuid/setgid bits and file capabilities do not apply: \
a view is for inspection, not for running programs). A read-write mount keeps setuid, as a \
container's root filesystem needs."
    )]
    Mount {
        name: String,
        target: PathBuf,
        /// Mount read-only.
        #[arg(long)]
        ro: bool,
        /// Let device nodes in the layer be opened through this mount (no nodev).
        #[arg(long)]
        dev: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Unmount a layer (at TARGET, or everywhere).
    Umount {
        name: String,
        target: Option<PathBuf>,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Remove a layer (refused while it has children or is mounted).
    Rm {
        name: String,
        /// Unmount the layer first.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// List layers with their own sizes.
    Ls {
        /// Show parent/child structure.
        #[arg(long)]
        tree: bool,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Everything known about one layer.
    Inspect {
        name: String,
        #[command(flatten)]
        sel: PoolSel,
    },
    /// Export a layer's changes against its parent as an OCI layer tar.
    Diff {
        name: String,
        /// Output file (- for stdout).
        #[arg(short, long, value_name = "FILE.tar")]
        output: PathBuf,
        #[command(flatten)]
        sel: PoolSel,
    },
}

pub fn parse_opt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub fn parse_size(s: &str) -> Result<Bytes, String> {
    s.parse::<Bytes>().map_err(|e| e.to_string())
}

/// Values of the drivers' `pool init` flags, by flag name (see [`blkdrv_pool::InitRequest`]).
pub type DriverFlagValues = Vec<(String, Vec<String>)>;

/// The whole command line, driver flags included.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("pool", |p| {
        p.mut_subcommand("init", |i| {
            let about = init_long_about(i.get_long_about().map(|a| a.to_string()));
            i.args(driver_args())
                .long_about(about)
                .after_long_help(option_keys_help())
        })
    })
}

/// `pool init`'s long help: the generic part, then each driver's own paragraph.
fn init_long_about(generic: Option<String>) -> String {
    let mut text = generic.unwrap_or_default();
    for (_, help) in blkdrv_pool::init::drivers_init_help() {
        text.push_str("\n\n");
        text.push_str(help);
    }
    text
}

/// The `-o KEY=VALUE` keys of every driver, from their option tables.
fn option_keys_help() -> String {
    let mut text = String::from("Driver options for -o KEY=VALUE:");
    for d in blkdrv_pool::init::drivers_options() {
        text.push_str(&format!("\n  {}:", d.0));
        for o in d.1.iter().filter(|o| o.is_stored()) {
            let help = match o.flag {
                Some(flag) => format!("see --{flag}"),
                None => o.help.to_string(),
            };
            text.push_str(&format!("\n    {:<22} {help}", o.key));
        }
    }
    text
}

fn driver_args() -> Vec<Arg> {
    driver_flags()
        .into_iter()
        .map(|d| {
            let flag = d.spec.flag.expect("driver_flags lists flags only");
            let arg = Arg::new(flag)
                .long(flag)
                .help(format!("{}: {}", d.drivers.join(", "), d.spec.help))
                .help_heading("Driver options");
            match d.spec.kind {
                OptionKind::Switch { .. } => arg.action(ArgAction::SetTrue),
                OptionKind::Value => arg.value_name(d.spec.value_name).action(ArgAction::Set),
                OptionKind::Words => arg
                    .value_name(d.spec.value_name)
                    .action(ArgAction::Append)
                    .allow_hyphen_values(true),
                OptionKind::Device => arg.value_name(d.spec.value_name).action(ArgAction::Append),
            }
        })
        .collect()
}

fn driver_flag_values(m: &ArgMatches) -> DriverFlagValues {
    let Some(init) = m
        .subcommand_matches("pool")
        .and_then(|p| p.subcommand_matches("init"))
    else {
        return Vec::new();
    };
    driver_flags()
        .into_iter()
        .filter_map(|d| {
            let flag = d.spec.flag?;
            let values: Vec<String> = match d.spec.kind {
                OptionKind::Switch { .. } => {
                    if init.get_flag(flag) {
                        vec![String::new()]
                    } else {
                        Vec::new()
                    }
                }
                _ => init
                    .get_many::<String>(flag)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
            };
            Some((flag.to_string(), values))
        })
        .collect()
}

/// Parses `args` into the derived command and the driver flags' values.
pub fn parse(args: Vec<OsString>) -> Result<(Cli, DriverFlagValues), clap::Error> {
    let mut cmd = command();
    let mut m = cmd.try_get_matches_from_mut(args)?;
    let flags = driver_flag_values(&m);
    let cli = Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd))?;
    Ok((cli, flags))
}
