//! `blkdrv history` and layer comments.

use super::types::HistoryEntry;
use super::Pool;
use crate::error::{PoolError, Result};
use crate::layer::{LayerComment, LayerState};

impl Pool {
    /// `blkdrv history`: the chain from `layer` down to its base, top first. A container's
    /// name shows its writable layer's chain.
    pub fn history(&self, layer: &str) -> Result<Vec<HistoryEntry>> {
        let rec = match self.store.resolve(layer)? {
            Some(id) => self.store.layer(id)?,
            None => match self.store.container(layer)? {
                Some(c) => self.store.layer(c.layer)?,
                None => return Err(self.not_a_layer(layer)),
            },
        }
        .ok_or_else(|| PoolError::LayerNotFound(layer.to_string()))?;
        let all = self.records()?;
        let names = self.names_by_layer()?;
        let comments = self.store.comments()?;
        let owners = self.store.owners()?;
        let mut out = Vec::new();
        let mut cur = Some(&rec);
        while let Some(r) = cur {
            let size = match r.size {
                Some(s) => Some(s.bytes.0),
                None if r.state == LayerState::Active => self
                    .driver
                    .usage(&self.chain_of(r, &all))
                    .ok()
                    .map(|u| u.bytes.0),
                None => None,
            };
            let label = match names.get(&r.id).and_then(|n| n.first()) {
                Some(n) => n.clone(),
                None => self.unnamed(r.id, owners.get(&r.id).copied()),
            };
            out.push(HistoryEntry {
                layer: label,
                id: r.id.get(),
                kind: r.kind,
                state: r.state,
                created: r.created,
                size_bytes: size,
                comment: comments.get(&r.id).cloned(),
            });
            cur = r.parent.and_then(|p| all.get(&p));
        }
        Ok(out)
    }

    /// Records the comment shown by `history` (`layer create --comment`). A layer reused from
    /// the build cache keeps the comment it was first given.
    pub fn set_comment(&mut self, layer: &str, comment: &LayerComment) -> Result<()> {
        let rec = self.lookup(layer)?;
        self.store
            .tx("record comment", |t| {
                t.set_comment(rec.id, comment.as_str())
            })
            .map(drop)
    }
}
