//! dm device names of one pool.

use super::BASE_ID;
use crate::sys::lvm::PoolLv;
use devicemapper::DmNameBuf;

/// dm names of one pool's devices. The prefix is random per pool (kept in the identity), so
/// pools of the same name under different roots never collide.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub(super) prefix: String,
    /// The thin-pool device: `<prefix>-pool`, or the LVM pool LV's dm name.
    pub(super) pool: DmNameBuf,
}

impl Names {
    pub(super) fn new(prefix: String, lvm: Option<&PoolLv>) -> Names {
        let pool = match lvm {
            Some(p) => p.dm_name(""),
            None => format!("{prefix}-pool"),
        };
        Names {
            pool: DmNameBuf::new(pool).expect("LVM and blkdrv names are valid dm names"),
            prefix,
        }
    }
    pub(super) fn name(&self, what: &str) -> DmNameBuf {
        DmNameBuf::new(format!("{}-{what}", self.prefix)).expect("short ascii names are valid")
    }
    pub(super) fn pool(&self) -> DmNameBuf {
        self.pool.clone()
    }
    pub(super) fn thin(&self, id: u32) -> DmNameBuf {
        if id == BASE_ID {
            self.name("base")
        } else {
            self.name(&id.to_string())
        }
    }
}
