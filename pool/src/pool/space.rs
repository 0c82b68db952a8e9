//! Space policy: growing loopback files (autoextend) and refusing new layers when space is short.

use super::Pool;
use crate::config::Backing;
use crate::error::{PoolError, Result};
use blkdrv_drivers::sys::loopdev;
use blkdrv_drivers::Bytes;
use std::time::Duration;

impl Pool {
    /// Grows a loopback pool's file when the driver's unallocated space runs low (see
    /// [`AutoExtend`](crate::config::AutoExtend)). The file is grown first and the config
    /// last, so a crash in between leaves a larger file than recorded, which the next check
    /// simply uses.
    pub(super) fn autoextend(&mut self) -> Result<()> {
        let (Some(ax), Backing::Loopback { files }) =
            (self.config.autoextend, &self.config.backing)
        else {
            // Not ours to size: the driver may have a policy of its own (LVM's profile).
            if let Some(msg) = self
                .driver
                .autoextend()
                .map_err(|e| PoolError::backing(&self.name, e))?
            {
                tracing::info!("{msg}");
                self.notices.push(msg);
            }
            return Ok(());
        };
        let Some(unallocated) = self
            .driver
            .space()
            .map_err(|e| PoolError::backing(&self.name, e))?
            .unallocated
        else {
            return Ok(());
        };
        let Some(data) = files.first() else {
            return Ok(());
        };
        let path = self.dir.join(&data.file);
        let current = Bytes(
            std::fs::metadata(&path)
                .map_err(|e| PoolError::io("stat", &path, e))?
                .len(),
        );
        let Some(next) = ax.next_size(current, unallocated) else {
            if ax.is_low(current, unallocated) {
                tracing::warn!(pool = %self.name, "low on unallocated space ({unallocated}) and at the autoextend ceiling {}", ax.max);
            }
            return Ok(());
        };
        // The file and the loop devices on it, set to one length.
        let resize = |len: Bytes, op: &'static str| -> Result<()> {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len.0))
                .map_err(|e| PoolError::io(op, &path, e))?;
            let canon = path
                .canonicalize()
                .map_err(|e| PoolError::io("resolve", &path, e))?;
            for dev in loopdev::find_by_backing_file(&canon)
                .map_err(|e| PoolError::backing(&self.name, e))?
            {
                loopdev::refresh_capacity(&dev).map_err(|e| PoolError::backing(&self.name, e))?;
            }
            Ok(())
        };
        resize(next, "grow loopback file")?;
        if let Err(e) = self.driver.grow() {
            // The filesystem did not take up the longer device (ext4's online resize needs
            // CAP_SYS_RESOURCE, which containers often lack). Shrink the file back, or every
            // later check would grow it again, and carry on: this command did not ask for
            // growth, and the min-free policy still refuses new layers when space is short.
            let msg = match resize(current, "shrink loopback file back") {
                Ok(()) => format!(
                    "could not grow pool {} beyond {current}: {}",
                    self.name,
                    PoolError::backing(&self.name, e)
                ),
                Err(r) => format!(
                    "could not grow pool {}: {}; shrinking its file back to {current} failed too: {r}",
                    self.name,
                    PoolError::backing(&self.name, e)
                ),
            };
            // The CLI prints notices itself (as for growth below).
            tracing::info!("{msg}");
            self.notices.push(msg);
            return Ok(());
        }
        let mut config = self.config.clone();
        if let Backing::Loopback { files } = &mut config.backing {
            files[0].size = next;
        }
        let json = serde_json::to_string(&config).expect("config serializes");
        self.store
            .tx("record grown size", |t| t.set_meta("config", &json))?;
        self.config = config;
        let msg = format!(
            "grew pool {} from {current} to {next}: unallocated space was {unallocated}",
            self.name
        );
        // The CLI prints notices itself; the log has it for library users.
        tracing::info!("{msg}");
        self.notices.push(msg);
        Ok(())
    }

    pub(super) fn ensure_space(&mut self) -> Result<()> {
        // How long a new layer waits for space that removed layers freed but the driver has not
        // made reusable yet (btrfs' cleaner otherwise runs every 30 s).
        const RECLAIM_WAIT: Duration = Duration::from_secs(60);
        self.autoextend()?;
        let min_pct = self.config.min_free_pct;
        let passes =
            |available: Bytes, total: Bytes| available.percent_of(total) >= f64::from(min_pct);
        let mut s = self
            .driver
            .space()
            .map_err(|e| PoolError::backing(&self.name, e))?;
        // Space a removed layer freed may come back late (btrfs cleaner): when it would be
        // enough, wait for it rather than refuse.
        if let Some(pending) = s.pending.filter(|p| *p > Bytes(0)) {
            if !passes(s.available, s.total) && passes(s.available + pending, s.total) {
                let started = std::time::Instant::now();
                self.driver
                    .reclaim(RECLAIM_WAIT)
                    .map_err(|e| PoolError::backing(&self.name, e))?;
                let before = s.available;
                s = self
                    .driver
                    .space()
                    .map_err(|e| PoolError::backing(&self.name, e))?;
                let msg = format!(
                    "waited {:.1}s for {pending} freed by removed layers: available {before} -> {}",
                    started.elapsed().as_secs_f64(),
                    s.available
                );
                tracing::info!(pool = %self.name, "{msg}");
                self.notices.push(msg);
            }
        }
        let mut areas = vec![("data", s.available, s.pending, s.total)];
        if let Some(m) = s.metadata {
            areas.push(("metadata", m.available, None, m.total));
        }
        for (what, available, pending, total) in areas {
            if !passes(available, total) {
                return Err(PoolError::LowSpace {
                    pool: self.name.to_string(),
                    what,
                    available,
                    pending,
                    total,
                    pct: available.percent_of(total),
                    min_pct,
                });
            }
        }
        Ok(())
    }
}
