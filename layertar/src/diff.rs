//! The difference between a layer and its parent as an OCI layer tar: added and modified
//! entries (by metadata and xattrs; file content is judged by size and mtime, not read), the
//! directories above them, and a `.wh.NAME` whiteout for each deleted path. Written by the
//! same writer as [`crate::tar_dir`], so it is as deterministic.

use crate::entry::WH_PREFIX;
use crate::error::{Error, Result};
use crate::write::{
    emit_tar, join_rel, kept_xattrs, rel_path, split_last, tar_dir_inner, walk_tree, Emit, Tree,
};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What a diff holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
}

fn differs(
    layer_abs: &Path,
    parent_abs: &Path,
    l: &fs::Metadata,
    p: &fs::Metadata,
) -> Result<bool> {
    if l.mode() != p.mode()
        || l.uid() != p.uid()
        || l.gid() != p.gid()
        || l.mtime() != p.mtime()
        || l.mtime_nsec() != p.mtime_nsec()
    {
        return Ok(true);
    }
    let ft = l.file_type();
    // Directory sizes are filesystem bookkeeping; their content changes show in the mtime.
    if !ft.is_dir() && l.size() != p.size() {
        return Ok(true);
    }
    if (ft.is_char_device() || ft.is_block_device()) && l.rdev() != p.rdev() {
        return Ok(true);
    }
    if ft.is_symlink() {
        let a = fs::read_link(layer_abs).map_err(|e| Error::io("readlink", layer_abs, e))?;
        let b = fs::read_link(parent_abs).map_err(|e| Error::io("readlink", parent_abs, e))?;
        if a != b {
            return Ok(true);
        }
    }
    // A change of xattrs alone (setcap, setfacl) changes only the ctime.
    Ok(kept_xattrs(layer_abs)? != kept_xattrs(parent_abs)?)
}

/// Writes the changes of `layer` against `parent` (None: everything in `layer`) as an OCI layer
/// tar: added and modified entries (by metadata), their parent directories, and `.wh.NAME`
/// whiteouts for deleted paths. `deleted` counts whiteouts (a deleted directory is one).
pub fn write_diff(layer: &Path, parent: Option<&Path>, out: impl Write) -> Result<DiffStats> {
    write_diff_inner(layer, parent, out).map_err(Error::escaped)
}

fn write_diff_inner(layer: &Path, parent: Option<&Path>, out: impl Write) -> Result<DiffStats> {
    // A base layer's diff is the whole layer, root metadata included.
    if parent.is_none() {
        let added = tar_dir_inner(layer, out)?;
        return Ok(DiffStats {
            added,
            ..Default::default()
        });
    }
    let ltree = walk_tree(layer)?;
    let ptree = match parent {
        Some(p) => walk_tree(p)?,
        None => Tree::new(),
    };
    let parent_base = parent.unwrap_or(layer);
    let mut stats = DiffStats::default();
    let mut emit: BTreeMap<Vec<u8>, Emit> = BTreeMap::new();
    let mut unchanged_links: HashMap<u64, Vec<u8>> = HashMap::new();

    for (rel, lm) in &ltree {
        match ptree.get(rel) {
            None => {
                stats.added += 1;
                emit.insert(rel.clone(), Emit::Node);
            }
            Some(pm) => {
                let la = layer.join(rel_path(rel));
                let pa = parent_base.join(rel_path(rel));
                if differs(&la, &pa, lm, pm)? {
                    stats.modified += 1;
                    emit.insert(rel.clone(), Emit::Node);
                } else if !lm.is_dir() && lm.nlink() > 1 {
                    unchanged_links
                        .entry(lm.ino())
                        .or_insert_with(|| rel.clone());
                }
            }
        }
    }

    for rel in ptree.keys() {
        if ltree.contains_key(rel) {
            continue;
        }
        let (dir, name) = split_last(rel);
        // Only where the parent is still a directory in the layer: otherwise an ancestor's
        // whiteout or replacement already removes it.
        if !dir.is_empty() && !ltree.get(dir).is_some_and(|m| m.is_dir()) {
            continue;
        }
        let mut wh_name = WH_PREFIX.to_vec();
        wh_name.extend_from_slice(name);
        stats.deleted += 1;
        emit.insert(join_rel(dir, &wh_name), Emit::Whiteout);
    }

    // Parents precede children: every ancestor of an emitted path is emitted too.
    let mut ancestors: Vec<Vec<u8>> = Vec::new();
    for rel in emit.keys() {
        let mut cur: &[u8] = rel;
        loop {
            let (dir, _) = split_last(cur);
            if dir.is_empty() {
                break;
            }
            if !emit.contains_key(dir) {
                ancestors.push(dir.to_vec());
            }
            cur = dir;
        }
    }
    for a in ancestors {
        if ltree.contains_key(&a) {
            emit.entry(a).or_insert(Emit::Node);
        }
    }

    emit_tar(layer, &ltree, &emit, &unchanged_links, out)?;
    Ok(stats)
}
