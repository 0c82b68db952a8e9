//! dm device names of one pool, and the thin ids its thin devices are named after.

use crate::sys::lvm::PoolLv;
use crate::ObjectId;
use devicemapper::{DmNameBuf, ThinDevId};
use std::fmt;

/// A thin device's id in the pool's metadata: a layer's object id, or the base's 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ThinId(u32);

impl ThinId {
    /// The base device every layer descends from; object ids start at 1, so 0 is free.
    pub(super) const BASE: ThinId = ThinId(0);
    /// The bench's raw snapshot: the one id the store never allocates to a layer.
    pub(super) const RAW_BENCH: ThinId = ThinId(ObjectId::SCRATCH.get());

    /// Thin ids are the pool's object ids.
    pub(super) fn of(id: ObjectId) -> ThinId {
        ThinId(id.get())
    }

    /// The layer this thin device holds; `None` for the base.
    pub(super) fn layer(self) -> Option<ObjectId> {
        ObjectId::new(self.0).ok()
    }

    pub(super) fn dev_id(self) -> ThinDevId {
        ThinDevId::new_u64(self.0.into()).expect("object ids fit in 24 bits")
    }
}

/// The number, as dm-thin messages (`create_snap`, `delete`) and thin_ls write it.
impl fmt::Display for ThinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ThinId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<ThinId, Self::Err> {
        s.parse().map(ThinId)
    }
}

/// What a dm device of a pool is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The thin-pool target.
    Pool,
    /// The linear device over the metadata area.
    Meta,
    /// The linear device over the data area.
    Data,
    /// A thin device: the base or a layer.
    Thin(ThinId),
}

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

    /// `<prefix>-meta`, `<prefix>-data`, `<prefix>-base`, `<prefix>-<thin id>`; the pool as
    /// [`Names::new`] chose.
    pub(super) fn of(&self, role: Role) -> DmNameBuf {
        let what = match role {
            Role::Pool => return self.pool.clone(),
            Role::Meta => "meta".to_string(),
            Role::Data => "data".to_string(),
            Role::Thin(ThinId::BASE) => "base".to_string(),
            Role::Thin(id) => id.to_string(),
        };
        DmNameBuf::new(format!("{}-{what}", self.prefix)).expect("short ascii names are valid")
    }

    pub(super) fn pool(&self) -> DmNameBuf {
        self.of(Role::Pool)
    }

    pub(super) fn thin(&self, id: ThinId) -> DmNameBuf {
        self.of(Role::Thin(id))
    }

    /// The role of a device named with this pool's prefix; `None` for other names.
    pub(super) fn role_of(&self, name: &str) -> Option<Role> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix('-')?;
        Some(match rest {
            "pool" => Role::Pool,
            "meta" => Role::Meta,
            "data" => Role::Data,
            "base" => Role::Thin(ThinId::BASE),
            id => Role::Thin(id.parse().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles_round_trip() {
        let n = Names::new("blkdrv-0a1b".into(), None);
        assert_eq!(&*n.pool().to_string(), "blkdrv-0a1b-pool");
        assert_eq!(&*n.thin(ThinId::BASE).to_string(), "blkdrv-0a1b-base");
        let layer = ThinId::of(ObjectId::new(7).unwrap());
        assert_eq!(&*n.thin(layer).to_string(), "blkdrv-0a1b-7");
        for role in [
            Role::Pool,
            Role::Meta,
            Role::Data,
            Role::Thin(ThinId::BASE),
            Role::Thin(layer),
        ] {
            assert_eq!(n.role_of(&n.of(role).to_string()), Some(role));
        }
        assert_eq!(n.role_of("blkdrv-0a1b-x"), None);
        assert_eq!(n.role_of("blkdrv-ffff-7"), None);
        assert_eq!(ThinId::BASE.layer(), None);
        assert_eq!(layer.layer(), ObjectId::new(7).ok());
    }
}
