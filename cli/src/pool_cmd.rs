//! `blkdrv pool ...`: create, inspect, check, activate, deactivate and destroy pools.

use crate::args::PoolCmd;
use crate::report::Outcome;
use crate::{output, print_notices, Ctx};
use blkdrv_pool::pool;
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Access, InitRequest, Pool, PoolError, PoolName};
use std::io::Write;

pub(crate) fn pool_cmd(ctx: &Ctx, c: &PoolCmd, err: &mut dyn Write) -> Result<Outcome, PoolError> {
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
            let mut pool = pool?;
            // What `--driver auto` picked, and why.
            print_notices(&mut pool, err);
            Ok(Outcome::PoolCreated(pool.status()?))
        }
        PoolCmd::Status { name } => {
            let pool = Pool::open(&ctx.root, &PoolName::new(name)?, Access::Read)?;
            Ok(Outcome::PoolStatus(pool.status()?))
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
            Ok(Outcome::Pools(rows))
        }
        PoolCmd::Check { name, repair } => {
            let mut pool = Pool::open(&ctx.root, &PoolName::new(name)?, Access::Write)?;
            Ok(Outcome::Checked {
                name: name.clone(),
                repair: *repair,
                report: pool.check(*repair)?,
            })
        }
        PoolCmd::Activate { all: true, .. } => {
            let bar = output::spinner("activating every pool");
            let report = pool::activate_all(&ctx.root);
            bar.finish_and_clear();
            Ok(Outcome::ActivatedAll(report?))
        }
        PoolCmd::Activate { name, all: false } => {
            let mut pool = Pool::open(&ctx.root, &PoolName::new(name)?, Access::Write)?;
            for r in pool.recovered() {
                let _ = writeln!(err, "blkdrv: recovered: {}", escape_controls(r));
            }
            print_notices(&mut pool, err);
            Ok(Outcome::Activated {
                pool: name.clone(),
                layers: pool.list()?.len(),
            })
        }
        PoolCmd::Deactivate { name } => {
            Pool::open(&ctx.root, &PoolName::new(name)?, Access::Write)?.deactivate()?;
            Ok(Outcome::Deactivated { pool: name.clone() })
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
            Ok(Outcome::Destroyed { pool: name.clone() })
        }
    }
}
