//! The pool's metadata store: SQLite in WAL mode, one file per pool.
//!
//! Why SQLite: ACID with synchronous=FULL (a committed transaction survives kill -9 and power
//! loss), and WAL lets any number of reader processes (`layer ls`, `pool status`) read while
//! a writer works, which an embedded store that locks the whole file per process cannot.

mod containers;
mod layers;
mod mounts;
mod snapshots;
#[cfg(test)]
mod tests;
mod volumes;

pub use containers::ContainerRecord;
pub use volumes::VolumeRecord;

use crate::error::{PoolError, Result};
use blkdrv_drivers::sys::mount::MountNs;
use blkdrv_drivers::{MountMode, ObjectId};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};

/// 2: mounts carry the mount namespace they live in (`mntns`), keyed by (target, mntns).
/// 3: containerd's snapshots (`snapshots`) and the owner of a layer (`layers.owner`).
/// 4: layer comments (`layers.comment`), volumes and containers.
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES layers(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    digest TEXT,
    -- parent id (0 for none) + digest of committed image layers: the build-cache key.
    content_key TEXT UNIQUE,
    pending_name TEXT,
    created INTEGER NOT NULL,
    -- Usage recorded at commit; NULL where the driver cannot tell.
    size_bytes INTEGER,
    size_inodes INTEGER,
    size_referenced INTEGER,
    -- Per-layer size limit given at create/snapshot; then the owner: NULL for the CLI's
    -- layers, 'containerd' for snapshots' layers (no comment between: DROP COLUMN chokes).
    size_limit INTEGER,
    owner TEXT,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    layer INTEGER NOT NULL REFERENCES layers(id)
);
CREATE INDEX IF NOT EXISTS names_layer ON names(layer);
CREATE TABLE IF NOT EXISTS mounts (
    target TEXT NOT NULL,
    -- Inode of the mount namespace the mount lives in; 0 for records of schema 1 (unknown).
    mntns INTEGER NOT NULL DEFAULT 0,
    layer INTEGER NOT NULL REFERENCES layers(id),
    mode TEXT NOT NULL,
    -- 'mounting' is the intent; 'mounted' once mount(2) returned.
    state TEXT NOT NULL,
    PRIMARY KEY (target, mntns)
);
";

/// containerd's snapshots (schema 3), in their own table: their keys are not layer names.
const SNAPSHOTS: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    -- containerd's key (or committed name): any text but NUL, up to 4096 bytes.
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- The snapshot's layer; a view points at its parent's layer.
    layer INTEGER NOT NULL REFERENCES layers(id),
    parent TEXT REFERENCES snapshots(key),
    -- JSON object of string labels.
    labels TEXT NOT NULL,
    -- Nanoseconds since the epoch.
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    -- Usage measured at commit (committed snapshots).
    usage_bytes INTEGER,
    usage_inodes INTEGER
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE INDEX IF NOT EXISTS snapshots_layer ON snapshots(layer);
";

/// Volumes and containers (schema 4). Each one's object is a row of `layers` (owned by
/// `volume` or `container`), so ids stay unique and the drivers' drift check sees them.
const VOLUMES_CONTAINERS: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    layer INTEGER NOT NULL UNIQUE REFERENCES layers(id),
    -- 1: made by `-v /path` for one container.
    anonymous INTEGER NOT NULL,
    -- The volume it was cloned from (`--from`), by name.
    origin TEXT,
    -- JSON object of string labels.
    labels TEXT NOT NULL,
    created INTEGER NOT NULL,
    -- The container whose unfinished create made it: undone with that create.
    made_by TEXT
);
CREATE TABLE IF NOT EXISTS containers (
    name TEXT PRIMARY KEY,
    -- Its writable layer.
    layer INTEGER NOT NULL UNIQUE REFERENCES layers(id),
    image INTEGER NOT NULL REFERENCES layers(id),
    -- JSON list of MountEntry, anonymous volumes named.
    mounts TEXT NOT NULL,
    state TEXT NOT NULL,
    created INTEGER NOT NULL,
    -- Where `container mount` assembles its root, and in which mount namespace (inode).
    root TEXT,
    mntns INTEGER
);
";

/// Schema 1 -> 2: the mounts table gains its namespace column and key. Old records keep
/// namespace 0 (unknown): they are judged in every namespace.
const MIGRATE_1_2: &str = "
CREATE TABLE mounts_v2 (
    target TEXT NOT NULL,
    mntns INTEGER NOT NULL DEFAULT 0,
    layer INTEGER NOT NULL REFERENCES layers(id),
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (target, mntns)
);
INSERT INTO mounts_v2(target, mntns, layer, mode, state)
    SELECT target, 0, layer, mode, state FROM mounts;
DROP TABLE mounts;
ALTER TABLE mounts_v2 RENAME TO mounts;
UPDATE meta SET value='2' WHERE key='schema';
";

/// Schema 2 -> 3: the snapshot table and layer owners. Every existing layer is the CLI's.
const MIGRATE_2_3: &[&str] = &[
    "ALTER TABLE layers ADD COLUMN owner TEXT;",
    SNAPSHOTS,
    "UPDATE meta SET value='3' WHERE key='schema';",
];

/// Each upgrade, by the version it reads: applied in order until [`SCHEMA_VERSION`], each in
/// a transaction of its own (a crash between two leaves a store of the version in between).
const MIGRATIONS: &[(i64, &[&str])] = &[(1, &[MIGRATE_1_2]), (2, MIGRATE_2_3), (3, MIGRATE_3_4)];

/// Schema 3 -> 4: layer comments, volumes and containers. Existing layers have no comment.
const MIGRATE_3_4: &[&str] = &[
    "ALTER TABLE layers ADD COLUMN comment TEXT;",
    VOLUMES_CONTAINERS,
    "UPDATE meta SET value='4' WHERE key='schema';",
];

/// A recorded mount of a layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountRecord {
    pub target: PathBuf,
    /// The mount namespace the mount was made in (`None`: recorded by an older blkdrv).
    #[serde(rename = "mntns", serialize_with = "ser_ns")]
    pub ns: Option<MountNs>,
    pub layer: ObjectId,
    pub mode: MountMode,
    pub settled: bool,
}

fn ser_ns<S: serde::Serializer>(
    ns: &Option<MountNs>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match ns {
        Some(n) => s.serialize_u64(n.0),
        None => s.serialize_none(),
    }
}

fn ns_col(ns: Option<MountNs>) -> i64 {
    ns.map_or(0, |n| n.0 as i64)
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn content_key(parent: Option<ObjectId>, digest: &str) -> String {
    format!("{}/{}", parent.map_or(0, ObjectId::get), digest)
}

impl Store {
    /// Creates a new store file. Fails if one exists.
    pub fn create(path: &Path) -> Result<Store> {
        if path.exists() {
            return Err(PoolError::Invalid(format!(
                "store {} already exists",
                path.display()
            )));
        }
        let s = Self::connect(path)?;
        s.conn
            .execute_batch(SCHEMA)
            .and_then(|()| s.conn.execute_batch(SNAPSHOTS))
            .and_then(|()| s.conn.execute_batch(VOLUMES_CONTAINERS))
            .map_err(|e| s.err("create schema", e))?;
        s.set_meta("schema", &SCHEMA_VERSION.to_string())?;
        s.set_meta("next_id", "1")?;
        Ok(s)
    }

    /// Opens an existing store, checking it is a readable blkdrv store.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(PoolError::io(
                "open store",
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let s = Self::connect(path)?;
        let corrupt = |op, e| PoolError::CorruptStore {
            path: path.to_path_buf(),
            op,
            source: e,
        };
        let check: String = s
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt("integrity check", e))?;
        if check != "ok" {
            return Err(corrupt(
                "integrity check",
                rusqlite::Error::InvalidParameterName(check),
            ));
        }
        let v: Option<String> = s
            .conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| corrupt("read schema version", e))?;
        let mut version = v.as_deref().and_then(|v| v.parse::<i64>().ok());
        let mut s = s;
        while let Some(from) = version.filter(|v| *v < SCHEMA_VERSION) {
            let Some((_, steps)) = MIGRATIONS.iter().find(|(v, _)| *v == from) else {
                break;
            };
            s.migrate(from, steps)?;
            version = Some(from + 1);
        }
        match version {
            Some(SCHEMA_VERSION) => Ok(s),
            other => Err(corrupt(
                "read schema version",
                rusqlite::Error::InvalidParameterName(format!(
                    "schema version {other:?}, this blkdrv reads {SCHEMA_VERSION}"
                )),
            )),
        }
    }

    /// Upgrades the store from schema `from` to `from + 1` by `steps`, in one transaction.
    fn migrate(&mut self, from: i64, steps: &[&str]) -> Result<()> {
        let path = self.path.clone();
        let corrupt = |e| PoolError::CorruptStore {
            path: path.clone(),
            op: "upgrade schema",
            source: e,
        };
        let t = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(corrupt)?;
        // Another process may have upgraded it between our read and the lock.
        let again: String = t
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .map_err(corrupt)?;
        if again == from.to_string() {
            for sql in steps {
                t.execute_batch(sql).map_err(corrupt)?;
            }
        }
        t.commit().map_err(corrupt)?;
        tracing::info!(store = %self.path.display(), "upgraded schema {from} to {}", from + 1);
        Ok(())
    }

    fn connect(path: &Path) -> Result<Store> {
        let corrupt = |op, e| PoolError::CorruptStore {
            path: path.to_path_buf(),
            op,
            source: e,
        };
        let conn = Connection::open(path).map_err(|e| corrupt("open", e))?;
        // WAL: readers are never blocked by the writer. FULL: a commit is on disk when it returns.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(|e| corrupt("configure", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| corrupt("configure", e))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, op: &'static str, source: rusqlite::Error) -> PoolError {
        PoolError::Store {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Runs `f` in one transaction: all of its changes land, or none.
    pub fn tx<T>(&mut self, op: &'static str, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let t = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| PoolError::Store {
                path: path.clone(),
                op,
                source: e,
            })?;
        let tx = Tx { t, path, op };
        let out = f(&tx)?;
        tx.t.commit().map_err(|e| PoolError::Store {
            path: tx.path.clone(),
            op,
            source: e,
        })?;
        Ok(out)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("read meta", e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key,value) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET value=?2",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err("write meta", e))
    }
}

/// A write transaction.
pub struct Tx<'c> {
    t: Transaction<'c>,
    path: PathBuf,
    op: &'static str,
}

impl Tx<'_> {
    fn err(&self, source: rusqlite::Error) -> PoolError {
        PoolError::Store {
            path: self.path.clone(),
            op: self.op,
            source,
        }
    }

    /// Allocates the next object id. Ids are never reused, so a stale on-disk object can never
    /// be mistaken for a new layer's.
    pub fn allocate_id(&self) -> Result<ObjectId> {
        let next: String = self
            .t
            .query_row("SELECT value FROM meta WHERE key='next_id'", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))?;
        let n: u32 = next
            .parse()
            .map_err(|_| PoolError::Invalid(format!("corrupt next_id {next:?} in store")))?;
        let id =
            ObjectId::new(n).map_err(|e| PoolError::Invalid(format!("id space exhausted: {e}")))?;
        // The last id is the bench's scratch object (ObjectId::SCRATCH), never a layer's.
        if !id.is_allocatable() {
            return Err(PoolError::Invalid(format!(
                "id space exhausted: object id {id} is reserved for scratch objects"
            )));
        }
        self.t
            .execute(
                "UPDATE meta SET value=?1 WHERE key='next_id'",
                [(n + 1).to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO meta(key,value) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET value=?2",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

fn id_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<ObjectId> {
    let v: u32 = r.get(i)?;
    ObjectId::new(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Integer, Box::new(e))
    })
}
