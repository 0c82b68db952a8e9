//! Bench hooks: a raw thin snapshot to compare blkdrv's layer create against.

use super::names::ThinId;
use super::{dm_err, DmThin};
use crate::error::Result;
use crate::{BenchHooks, Driver, LayerChain};
use devicemapper::{DevId, DmDevice};
use std::time::{Duration, Instant};

impl Driver for DmThin {
    fn bench(&self) -> Option<&dyn BenchHooks> {
        Some(self)
    }
}

impl BenchHooks for DmThin {
    // `dmsetup message <pool> 0 "create_snap N origin"` + activation, without the origin
    // suspend, transaction id or store: what blkdrv adds on top shows as the ratio.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Duration> {
        let raw = ThinId::RAW_BENCH;
        let g = self.lock();
        let pool_name = self.names.pool();
        let pool = DevId::Name(&pool_name);
        // A leftover from an interrupted run.
        let _ = g.dm.target_msg(&pool, None, &format!("delete {raw}"));
        let t = Instant::now();
        g.dm.target_msg(
            &pool,
            None,
            &format!("create_snap {raw} {}", ThinId::of(parent.id)),
        )
        .map_err(|e| dm_err("create raw snapshot in", &*pool_name, e))?;
        let dev = self.activate(&g, raw);
        let took = t.elapsed();
        let torn = dev.and_then(|mut d| {
            d.teardown(&g.dm)
                .map_err(|e| dm_err("deactivate", &*self.names.thin(raw), e))
        });
        let deleted =
            g.dm.target_msg(&pool, None, &format!("delete {raw}"))
                .map_err(|e| dm_err("delete raw snapshot from", &*pool_name, e));
        torn?;
        deleted?;
        Ok(took)
    }
}
