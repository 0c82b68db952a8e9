//! The `blkdrv` command. Glue only: parses arguments, calls the pool manager, prints results.
//! Nothing here touches the kernel.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad input, 128+N stopped by
//! signal N (SIGINT 130, SIGTERM 143) at a safe point, with the operation rolled back.

mod bench;
mod output;

use blkdrv_drivers::{registry, Bytes, DriverOptions};
use blkdrv_pool::config::{self, HostConfig};
use blkdrv_pool::pool::{self, MountRequest, RemoveOutcome, Spooled};
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{
    Access, BackingSpec, InitSpec, LayerName, Pool, PoolError, PoolName, Root, Source,
};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "blkdrv",
    version,
    about = "Thin-provisioned storage pools and copy-on-write container image layers",
    long_about = "blkdrv manages storage pools (on sparse loopback files or block devices) and the \
layers of container images in them. Image layers are read-only and shared; identical content on \
the same parent is reused like a build cache; a container gets a writable layer (a snapshot) on \
top of an image.\n\nQuick start (as root):\n  blkdrv pool init --driver overlay --size 4G\n  \
blkdrv layer create base --from-tar rootfs.tar\n  blkdrv layer snapshot base c1\n  \
blkdrv layer mount c1 /mnt/c1",
    after_help = "Exit codes: 0 success, 1 operation failed, 2 bad usage or bad input, 130/143 \
interrupted by SIGINT/SIGTERM (the operation was rolled back; nothing is left mounted).\n\
Environment: BLKDRV_ROOT (state dir), BLKDRV_CONFIG (config file), BLKDRV_POOL (default pool), RUST_LOG."
)]
struct Cli {
    /// State directory holding the pools.
    #[arg(long, global = true, env = "BLKDRV_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Host config file (defaults for root and pool init).
    #[arg(long, global = true, env = "BLKDRV_CONFIG", value_name = "FILE",
          default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Log what happens (-v info, -vv debug; RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, inspect, check and destroy storage pools.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Create, snapshot, commit, mount and remove layers.
    #[command(subcommand)]
    Layer(LayerCmd),
    /// Summary of pools and drivers on this host (like `docker info`).
    Info,
    /// Compare every driver on the same workloads (table, JSON with every sample, SVG chart).
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct PoolSel {
    /// Pool to work on.
    #[arg(
        long,
        env = "BLKDRV_POOL",
        default_value = "default",
        value_name = "NAME"
    )]
    pool: String,
}

// Parsed once per process; boxing the big variant would only cost readability.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Create a pool: on a sparse loopback file (default) or on block devices (--device).
    #[command(
        long_about = "Create a pool. Without --device the pool lives in a sparse loopback \
file under the state dir (only the space actually written is used on the host). With --device \
the pool formats the given block device; a device that carries a filesystem, partition table or \
LVM signature is refused unless --force.\n\nvfs and overlay format the backing with --fs (xfs \
by default) and mount it under the state dir.\n\ndevicemapper makes a thin pool on two loopback \
files, on --device DATA [--metadata-device META], on an LVM volume group it creates (--lvm \
--device DEV [--vg NAME]) or on an existing empty LVM thin pool (--thinpool VG/LV). Examples:\n  \
blkdrv pool init --driver devicemapper --size 20G\n  \
blkdrv pool init --driver devicemapper --lvm --device /dev/sdb\n  \
blkdrv pool init --driver devicemapper --thinpool docker/thinpool\n\nzfs makes a zpool on the \
loopback file or --device (named blkdrv-<pool>-<random>, or --zpool NAME), uses an existing zpool \
(--zpool NAME alone: blkdrv makes the dataset NAME/blkdrv-<pool> in it) or an existing empty \
dataset (--dataset NAME). Examples:\n  \
blkdrv pool init --driver zfs --size 20G --compression lz4\n  \
blkdrv pool init --driver zfs --zpool tank"
    )]
    Init {
        /// Pool name.
        #[arg(default_value = "default")]
        name: String,
        /// Storage driver (see `blkdrv info`). Default from the config file, else overlay.
        #[arg(long)]
        driver: Option<String>,
        /// Size of the sparse loopback file, e.g. 20G, 512M.
        #[arg(long, value_parser = parse_size, conflicts_with = "device")]
        size: Option<Bytes>,
        /// Block device to use instead of a loopback file.
        #[arg(long, value_name = "DEV")]
        device: Vec<PathBuf>,
        /// devicemapper: a separate device for thin-pool metadata (with one --device for data).
        #[arg(long, value_name = "DEV", requires = "device", conflicts_with = "lvm")]
        metadata_device: Option<PathBuf>,
        /// devicemapper: make an LVM volume group on the --device(s) and a thin-pool LV in it
        /// (40% of the VG; the rest is room for LVM's autoextend profile), like
        /// container-storage-setup on Red Hat/Fedora hosts.
        #[arg(long, requires = "device")]
        lvm: bool,
        /// devicemapper --lvm: name of the volume group (default blkdrv-<pool>).
        #[arg(long, value_name = "NAME", requires = "lvm")]
        vg: Option<String>,
        /// devicemapper: an extra argument for mkfs of the base filesystem (repeatable, one word
        /// each), e.g. --mkfs-arg=-i --mkfs-arg=size=512 for xfs.
        #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
        mkfs_arg: Vec<String>,
        /// devicemapper: use this existing, empty LVM thin-pool LV instead of devices.
        #[arg(long, value_name = "VG/LV", conflicts_with_all = ["device", "size", "lvm"])]
        thinpool: Option<String>,
        /// Filesystem for file-level drivers (vfs, overlay): xfs or ext4.
        #[arg(long)]
        fs: Option<String>,
        /// zfs: name of the zpool. With --device or --size blkdrv creates it; alone it uses this
        /// existing, imported zpool.
        #[arg(long, value_name = "NAME")]
        zpool: Option<String>,
        /// zfs: use this existing, empty dataset (-o adopt=on: one with other children too).
        #[arg(
            long,
            value_name = "POOL/DATASET",
            conflicts_with_all = ["device", "size", "zpool"]
        )]
        dataset: Option<String>,
        /// zfs: compression of the layers (default off): lz4, zstd, zstd-N, gzip-N, ...
        #[arg(long, value_name = "ALGO")]
        compression: Option<String>,
        /// Driver option KEY=VALUE (repeatable); each driver rejects keys it does not know.
        #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", value_parser = parse_opt)]
        opt: Vec<(String, String)>,
        /// btrfs: do not enable quotas (no per-layer sizes or limits, slightly faster writes).
        #[arg(long)]
        no_quota: bool,
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
enum LayerCmd {
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

fn parse_opt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_size(s: &str) -> Result<Bytes, String> {
    s.parse::<Bytes>().map_err(|e| e.to_string())
}

/// Runs the command line and returns the process exit code.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = bench::rewrite_json_file(args.into_iter().map(Into::into).collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            // Colours only for a terminal; scripts and logs get plain text.
            let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let _ = if e.use_stderr() {
                write!(err, "{text}")
            } else {
                write!(out, "{text}")
            };
            return code;
        }
    };
    init_tracing(cli.verbose);
    // The bench needs no state dir or host config: it makes and destroys its own pools.
    if let Cmd::Bench(b) = &cli.cmd {
        return match bench::bench(b, cli.json, out, err) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                let _ = writeln!(err, "blkdrv: error: {e}");
                if e.is_usage() {
                    EXIT_USAGE
                } else {
                    EXIT_FAILED
                }
            }
        };
    }
    // Commands that change a pool stop at their next safe point on SIGINT/SIGTERM.
    if matches!(cli.cmd, Cmd::Pool(_) | Cmd::Layer(_)) {
        if let Err(e) = blkdrv_pool::signal::install() {
            let _ = writeln!(err, "blkdrv: warning: {}", escape_controls(&e.to_string()));
        }
    }
    match dispatch(&cli, out, err) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            // One line, whatever the error carries (tar header bytes, paths, tool output).
            let _ = writeln!(err, "blkdrv: error: {}", escape_controls(&e.to_string()));
            if let Some(n) = e.interrupted_by() {
                128 + n
            } else if e.is_user_error() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            }
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Tests call run() many times in one process; only the first subscriber sticks.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

struct Ctx {
    root: Root,
    host: HostConfig,
    json: bool,
}

fn dispatch(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), PoolError> {
    let host = HostConfig::load(&cli.config)?;
    let root = cli
        .root
        .clone()
        .or_else(|| host.root.clone())
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_ROOT));
    let ctx = Ctx {
        root: Root::new(root),
        host,
        json: cli.json,
    };
    match &cli.cmd {
        Cmd::Pool(c) => pool_cmd(&ctx, c, out, err),
        Cmd::Layer(c) => layer_cmd(&ctx, c, out, err),
        Cmd::Info => output::info(&ctx.root, &cli.config, ctx.json, out),
        Cmd::Bench(_) => unreachable!("handled before the state dir is read"),
    }
}

fn io_err(e: std::io::Error) -> PoolError {
    PoolError::io("write output", "-", e)
}

fn pool_cmd(
    ctx: &Ctx,
    c: &PoolCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), PoolError> {
    match c {
        PoolCmd::Init {
            name,
            driver,
            size,
            device,
            metadata_device,
            lvm,
            vg,
            thinpool,
            mkfs_arg,
            fs,
            zpool,
            dataset,
            compression,
            opt,
            no_quota,
            max_size,
            no_autoextend,
            min_free,
            force,
        } => {
            let name = PoolName::new(name)?;
            let d = &ctx.host.pool;
            let driver = driver
                .clone()
                .or_else(|| d.driver.clone())
                .unwrap_or_else(|| config::DEFAULT_DRIVER.to_string());
            let mut options: DriverOptions = opt.iter().cloned().collect();
            if *no_quota {
                options.insert("quota".into(), "off".into());
            }
            match (fs, &d.fs) {
                (Some(fs), _) => {
                    options.insert("fs".into(), fs.clone());
                }
                // A host default applies only where it means something.
                (None, Some(fs)) if pool::driver_takes_option(&driver, "fs", fs) => {
                    options.insert("fs".into(), fs.clone());
                }
                _ => {}
            }
            if *lvm {
                options.insert("lvm".into(), "on".into());
            }
            if let Some(vg) = vg {
                options.insert("vg".into(), vg.clone());
            }
            if let Some(t) = thinpool {
                options.insert("thinpool".into(), t.clone());
            }
            if let Some(bad) = mkfs_arg.iter().find(|a| a.contains(char::is_whitespace)) {
                return Err(PoolError::Invalid(format!(
                    "--mkfs-arg '{bad}': one word per --mkfs-arg"
                )));
            }
            if !mkfs_arg.is_empty() {
                options.insert("mkfs_args".into(), mkfs_arg.join(" "));
            }
            for (key, value) in [
                ("zpool", zpool),
                ("dataset", dataset),
                ("compression", compression),
            ] {
                if let Some(v) = value {
                    options.insert(key.into(), v.clone());
                }
            }
            // zfs: an existing dataset, or an existing zpool when nothing is given to make one on.
            let zfs_existing = options.contains_key("dataset")
                || (options.contains_key("zpool") && device.is_empty() && size.is_none());
            // From the options, not the flags: `-o thinpool=VG/LV` means the same as --thinpool.
            let backing = if options.contains_key("thinpool") || zfs_existing {
                BackingSpec::Existing
            } else if device.is_empty() {
                let size = match size {
                    Some(s) => *s,
                    None => match &d.size {
                        Some(s) => s.parse().map_err(|e: blkdrv_drivers::ParseSizeError| {
                            PoolError::Invalid(e.to_string())
                        })?,
                        None => config::DEFAULT_SIZE,
                    },
                };
                BackingSpec::Loopback { size }
            } else {
                if max_size.is_some() {
                    return Err(PoolError::Invalid(
                        "--max-size applies to loopback pools only, not --device".into(),
                    ));
                }
                let mut devices = device.clone();
                devices.extend(metadata_device.iter().cloned());
                BackingSpec::Devices(devices)
            };
            let spec = InitSpec {
                name,
                driver,
                backing: backing.clone(),
                options,
                min_free_pct: min_free
                    .or(d.min_free)
                    .unwrap_or(config::DEFAULT_MIN_FREE_PCT),
                force: *force,
                autoextend: match (&backing, *no_autoextend) {
                    (BackingSpec::Loopback { size }, false) => {
                        if max_size.is_some_and(|m| m < *size) {
                            return Err(PoolError::Invalid(format!(
                                "--max-size must be at least --size ({size})"
                            )));
                        }
                        Some(config::AutoExtend::for_size(*size, *max_size))
                    }
                    _ => None,
                },
            };
            let bar = output::spinner(&format!("creating pool {}", spec.name));
            let pool = Pool::init(&ctx.root, spec);
            bar.finish_and_clear();
            let pool = pool?;
            let status = pool.status()?;
            if ctx.json {
                output::json(out, &status)
            } else {
                writeln!(
                    out,
                    "Pool {} created: driver {}, {}",
                    status.name,
                    status.driver,
                    output::backing_summary(&status)
                )
                .map_err(io_err)
            }
        }
        PoolCmd::Status { name } => {
            let pool = Pool::open(&ctx.root, &PoolName::new(name)?, Access::Read)?;
            let status = pool.status()?;
            if ctx.json {
                output::json(out, &status)
            } else {
                output::pool_status(out, &status)
            }
        }
        PoolCmd::Ls => {
            let mut rows = Vec::new();
            for name in ctx.root.pools()? {
                let row = match Pool::open(&ctx.root, &name, Access::Read) {
                    Ok(p) => serde_json::to_value(p.status()?).unwrap_or_default(),
                    Err(e) => serde_json::json!({"name": name.as_str(), "error": e.to_string()}),
                };
                rows.push(row);
            }
            if ctx.json {
                output::json(out, &rows)
            } else {
                output::pool_table(out, &rows)
            }
        }
        PoolCmd::Check { name, repair } => {
            let mut pool = Pool::open(&ctx.root, &PoolName::new(name)?, Access::Write)?;
            let report = pool.check(*repair)?;
            if ctx.json {
                output::json(out, &report)?;
            } else {
                output::check_report(out, &report)?;
            }
            if !report.is_clean() && !*repair {
                return Err(PoolError::Invalid(format!(
                    "pool {name} has drift; run `blkdrv pool check --repair {name}`"
                )));
            }
            Ok(())
        }
        PoolCmd::Activate { name } => {
            let mut pool = Pool::open(&ctx.root, &PoolName::new(name)?, Access::Write)?;
            for r in pool.recovered() {
                let _ = writeln!(err, "blkdrv: recovered: {}", escape_controls(r));
            }
            print_notices(&mut pool, err);
            let n = pool.list()?.len();
            if ctx.json {
                output::json(out, &serde_json::json!({"activated": name, "layers": n}))
            } else {
                writeln!(out, "Pool {name} active ({n} layers)").map_err(io_err)
            }
        }
        PoolCmd::Deactivate { name } => {
            Pool::open(&ctx.root, &PoolName::new(name)?, Access::Write)?.deactivate()?;
            if ctx.json {
                output::json(out, &serde_json::json!({"deactivated": name}))
            } else {
                writeln!(out, "Pool {name} deactivated").map_err(io_err)
            }
        }
        PoolCmd::Destroy { name, force } => {
            let pname = PoolName::new(name)?;
            match Pool::open(&ctx.root, &pname, Access::Write) {
                Ok(p) => p.destroy(*force)?,
                Err(e @ PoolError::PoolNotFound { .. }) => return Err(e),
                Err(e) if *force => {
                    let _ = writeln!(
                        err,
                        "blkdrv: warning: {e}; removing the pool directory anyway"
                    );
                    pool::force_destroy(&ctx.root, &pname)?;
                }
                Err(e) => return Err(e),
            }
            if ctx.json {
                output::json(out, &serde_json::json!({"destroyed": name}))
            } else {
                writeln!(out, "Pool {name} destroyed").map_err(io_err)
            }
        }
    }
}

fn open_write(ctx: &Ctx, sel: &PoolSel, err: &mut dyn Write) -> Result<Pool, PoolError> {
    let mut pool = Pool::open(&ctx.root, &PoolName::new(&sel.pool)?, Access::Write)?;
    for r in pool.recovered() {
        let _ = writeln!(err, "blkdrv: recovered: {}", escape_controls(r));
    }
    print_notices(&mut pool, err);
    Ok(pool)
}

/// Says what a writer did on its own (growing the pool).
fn print_notices(pool: &mut Pool, err: &mut dyn Write) {
    for n in pool.take_notices() {
        let _ = writeln!(err, "blkdrv: note: {}", escape_controls(&n));
    }
}

fn open_read(ctx: &Ctx, sel: &PoolSel) -> Result<Pool, PoolError> {
    Pool::open(&ctx.root, &PoolName::new(&sel.pool)?, Access::Read)
}

fn layer_cmd(
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

/// Names of every compiled-in driver (for help and `info`).
pub fn driver_names() -> Vec<&'static str> {
    registry::names()
}
