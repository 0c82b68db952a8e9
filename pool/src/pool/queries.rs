//! Read-only views: layers as users see them, pool status.

use super::types::{LayerInfo, PoolStatus};
use super::Pool;
use crate::error::{PoolError, Result};
use crate::layer::{LayerOwner, LayerRecord, LayerState};
use crate::store::MountRecord;
use blkdrv_drivers::{LayerChain, ObjectId, Usage};
use std::collections::{BTreeMap, HashMap};

impl Pool {
    /// How a layer without a name is shown: containerd's keys are its own business (and
    /// hundreds of bytes long), so its layers show as `<containerd ID>`; a volume's or
    /// container's object as `<volume NAME>`, `<container NAME>`.
    pub(super) fn unnamed(&self, id: ObjectId, owner: Option<LayerOwner>) -> String {
        match owner {
            Some(o @ (LayerOwner::Volume | LayerOwner::Container)) => {
                match self.store.object_owner_name(id).ok().flatten() {
                    Some(n) => format!("<{o} {n}>"),
                    None => format!("<{o} {id}>"),
                }
            }
            Some(o) => format!("<{o} {id}>"),
            None => format!("<layer {id}>"),
        }
    }

    /// Live usage of the active layers among `recs` (their size changes, so it is measured now
    /// rather than recorded), in one driver call; a failure shows as an unknown size.
    fn live_usage(
        &self,
        recs: &[&LayerRecord],
        all: &HashMap<ObjectId, LayerRecord>,
    ) -> HashMap<ObjectId, Usage> {
        let chains: Vec<LayerChain> = recs
            .iter()
            .filter(|r| r.size.is_none() && r.state == LayerState::Active)
            .map(|r| self.chain_of(r, all))
            .collect();
        let usage = self.driver.usage_many(&chains);
        chains
            .iter()
            .zip(usage)
            .filter_map(|(c, u)| u.ok().map(|u| (c.id, u)))
            .collect()
    }

    fn info_of(
        &self,
        rec: &LayerRecord,
        all: &HashMap<ObjectId, LayerRecord>,
        names: &BTreeMap<ObjectId, Vec<String>>,
        mounts: &[MountRecord],
        live: &HashMap<ObjectId, Usage>,
        owners: &HashMap<ObjectId, LayerOwner>,
    ) -> LayerInfo {
        let owner = owners.get(&rec.id).copied();
        let chain = self.chain_of(rec, all);
        let size = match rec.size {
            Some(s) => Some(s),
            None => live.get(&rec.id).copied(),
        };
        let name = names
            .get(&rec.id)
            .and_then(|n| n.first().cloned())
            .or_else(|| rec.pending_name.clone())
            .unwrap_or_else(|| self.unnamed(rec.id, owner));
        LayerInfo {
            name,
            names: names.get(&rec.id).cloned().unwrap_or_default(),
            id: rec.id.get(),
            parent: rec
                .parent
                .map(|p| match names.get(&p).and_then(|n| n.first()) {
                    Some(n) => n.clone(),
                    None => self.unnamed(p, owners.get(&p).copied()),
                }),
            parent_id: rec.parent.map(ObjectId::get),
            kind: rec.kind,
            state: rec.state,
            digest: rec.digest.clone(),
            created: rec.created,
            size_bytes: size.map(|s| s.bytes.0),
            inodes: size.and_then(|s| s.inodes),
            referenced_bytes: size.and_then(|s| s.referenced).map(|b| b.0),
            limit_bytes: rec.limit.map(|b| b.0),
            depth: chain.ancestors.len(),
            mounts: mounts
                .iter()
                .filter(|m| m.layer == rec.id)
                .cloned()
                .collect(),
            owner,
        }
    }

    /// Every layer, parents before children.
    pub fn list(&self) -> Result<Vec<LayerInfo>> {
        let all = self.records()?;
        let names = self.names_by_layer()?;
        let mounts = self.store.mounts()?;
        let mut recs: Vec<&LayerRecord> = all.values().collect();
        // Ids grow over time and a parent always exists before its child.
        recs.sort_by_key(|r| r.id);
        let live = self.live_usage(&recs, &all);
        let owners = self.store.owners()?;
        Ok(recs
            .into_iter()
            .map(|r| self.info_of(r, &all, &names, &mounts, &live, &owners))
            .collect())
    }

    pub fn inspect(&self, name: &str) -> Result<LayerInfo> {
        let rec = self.lookup(name)?;
        let all = self.records()?;
        let live = self.live_usage(&[&rec], &all);
        Ok(self.info_of(
            &rec,
            &all,
            &self.names_by_layer()?,
            &self.store.mounts()?,
            &live,
            &self.store.owners()?,
        ))
    }

    pub(super) fn info(&self, id: ObjectId) -> Result<LayerInfo> {
        self.info_measured(id, true)
    }

    /// `measure: false` leaves an active layer's size unknown instead of asking the driver:
    /// for a layer just made, whose measurement (a metadata snapshot and `thin_ls` on
    /// device-mapper, a `zfs get` on ZFS) would cost more than making it.
    pub(super) fn info_measured(&self, id: ObjectId, measure: bool) -> Result<LayerInfo> {
        let all = self.records()?;
        let rec = all
            .get(&id)
            .ok_or_else(|| PoolError::LayerNotFound(id.to_string()))?;
        let live = if measure {
            self.live_usage(&[rec], &all)
        } else {
            HashMap::new()
        };
        Ok(self.info_of(
            rec,
            &all,
            &self.names_by_layer()?,
            &self.store.mounts()?,
            &live,
            &self.store.owners()?,
        ))
    }

    pub fn status(&self) -> Result<PoolStatus> {
        let layers = self.store.layers()?;
        let count = |s: LayerState| layers.iter().filter(|l| l.state == s).count();
        Ok(PoolStatus {
            name: self.name.to_string(),
            driver: self.config.driver.clone(),
            dir: self.dir.clone(),
            backing: self.config.backing.clone(),
            options: self.config.options.clone(),
            identity: self.config.identity.clone(),
            capabilities: self.driver.capabilities(),
            space: self
                .driver
                .space()
                .map_err(|e| PoolError::backing(&self.name, e))?,
            min_free_pct: self.config.min_free_pct,
            layers: layers.len(),
            committed: count(LayerState::Committed),
            active: count(LayerState::Active),
            in_flight: layers.iter().filter(|l| !l.state.is_settled()).count(),
            mounts: self.store.mounts()?,
        })
    }
}
