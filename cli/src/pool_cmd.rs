//! `blkdrv pool ...`: create, inspect, check, activate, deactivate and destroy pools.

use crate::args::PoolCmd;
use crate::{io_err, output, print_notices, Ctx};
use blkdrv_pool::pool;
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Access, InitRequest, Pool, PoolError, PoolName};
use std::io::Write;

pub(crate) fn pool_cmd(
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
            opt,
            max_size,
            no_autoextend,
            min_free,
            force,
        } => {
            let req = InitRequest {
                name: PoolName::new(name)?,
                driver: driver.clone(),
                size: *size,
                devices: device.clone(),
                options: opt.clone(),
                flags: ctx.driver_flags.clone(),
                max_size: *max_size,
                no_autoextend: *no_autoextend,
                min_free: *min_free,
                force: *force,
            };
            let bar = output::spinner(&format!("creating pool {}", req.name));
            let pool = Pool::init_request(&ctx.root, &ctx.host.pool, req);
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
