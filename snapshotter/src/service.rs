//! The generated `Snapshots` service, implemented directly rather than through the crate's
//! `Snapshotter` trait, because that trait drops each request's `snapshotter` field, which is
//! what picks the pool when one server serves several.
//!
//! Pool calls block (SQLite, mkfs, tar, ioctls): each runs in `spawn_blocking`. Each pool has
//! one writer handle for the server's life behind a mutex, so writes serialise as the pool's
//! lock would make them anyway, without re-opening (and re-reconciling) per request; reads
//! (Stat, Walk, Usage) use read-only handles of their own and never wait behind a slow write.

use crate::api::snapshots::v1 as pb;
use crate::api::snapshots::v1::snapshots_server::Snapshots;
use crate::convert;
use crate::filter::Filters;
use blkdrv_pool::text::escape_controls;
use blkdrv_pool::{Access, ExportPolicy, Pool, PoolError, PoolName, Root};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Read handles kept for reuse; more are opened when more reads run at once.
const SPARE_READERS: usize = 4;
/// Infos per Walk message (containerd's own proxy batches the same way).
const WALK_BATCH: usize = 100;

/// One served pool.
pub struct Served {
    /// The snapshotter name containerd sends (`[proxy_plugins.NAME]`).
    pub name: String,
    pub pool: PoolName,
    root: Root,
    writer: Mutex<Pool>,
    readers: Mutex<Vec<Pool>>,
}

impl Served {
    /// Opens the pool's writer (which recovers whatever a dead server left in flight).
    pub fn open(root: &Root, name: String, pool: PoolName) -> Result<Served, PoolError> {
        let writer = Pool::open(root, &pool, Access::Write)?;
        Ok(Served {
            name,
            pool,
            root: root.clone(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Unfinished operations the writer finished or undid when it opened the pool.
    pub fn recovered(&self) -> Vec<String> {
        lock(&self.writer).recovered().to_vec()
    }

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Pool) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        f(&mut lock(&self.writer))
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Pool) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        let spare = lock(&self.readers).pop();
        let reader = match spare {
            Some(r) => r,
            None => Pool::open(&self.root, &self.pool, Access::Read)?,
        };
        let out = f(&reader);
        let mut spares = lock(&self.readers);
        if spares.len() < SPARE_READERS {
            spares.push(reader);
        }
        out
    }
}

/// A poisoned mutex means a pool call panicked; the pool's state on disk is still consistent
/// (every step is a transaction), so the handle stays usable rather than failing every
/// request after it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The service: every served pool, and the mount policy.
pub struct Service {
    pools: Vec<Arc<Served>>,
    policy: ExportPolicy,
}

impl Service {
    pub fn new(pools: Vec<Served>, policy: ExportPolicy) -> Service {
        Service {
            pools: pools.into_iter().map(Arc::new).collect(),
            policy,
        }
    }

    /// The pool a request's `snapshotter` names. With one pool every name is accepted (a
    /// containerd config may call the plugin anything).
    fn pick(&self, snapshotter: &str) -> Result<Arc<Served>, Status> {
        if let [only] = self.pools.as_slice() {
            return Ok(only.clone());
        }
        self.pools
            .iter()
            .find(|p| p.name == snapshotter)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "snapshotter {snapshotter:?} is not served here (served: {})",
                    self.pools
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Runs `f` on the pool's writer, off the async threads.
    async fn write<T: Send + 'static>(
        &self,
        snapshotter: &str,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&mut Pool) -> Result<T, PoolError> + Send + 'static,
    ) -> Result<T, Status> {
        let served = self.pick(snapshotter)?;
        let pool = served.pool.clone();
        let out = tokio::task::spawn_blocking(move || served.with_writer(f)).await;
        finish(op, &pool, key, out)
    }

    /// Runs `f` on a read handle, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        snapshotter: &str,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&Pool) -> Result<T, PoolError> + Send + 'static,
    ) -> Result<T, Status> {
        let served = self.pick(snapshotter)?;
        let pool = served.pool.clone();
        let out = tokio::task::spawn_blocking(move || served.with_reader(f)).await;
        finish(op, &pool, key, out)
    }
}

/// Logs the outcome (keys are untrusted: escaped) and turns an error into its gRPC status.
fn finish<T>(
    op: &'static str,
    pool: &PoolName,
    key: &str,
    out: Result<Result<T, PoolError>, tokio::task::JoinError>,
) -> Result<T, Status> {
    let key = escape_controls(key);
    match out {
        Ok(Ok(v)) => {
            tracing::debug!(op, pool = %pool, key = %key, "done");
            Ok(v)
        }
        Ok(Err(e)) => {
            let status = convert::status(&e);
            let msg = escape_controls(status.message());
            if status.code() == tonic::Code::Internal {
                tracing::error!(op, pool = %pool, key = %key, code = ?status.code(), "{msg}");
            } else {
                tracing::info!(op, pool = %pool, key = %key, code = ?status.code(), "{msg}");
            }
            Err(status)
        }
        Err(join) => {
            tracing::error!(op, pool = %pool, key = %key, "pool call panicked: {join}");
            Err(Status::internal(format!(
                "{op} {key}: the pool call failed: {join}"
            )))
        }
    }
}

fn parent(p: String) -> Option<String> {
    (!p.is_empty()).then_some(p)
}

type WalkStream = Pin<Box<dyn Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        let (key, policy) = (r.key.clone(), self.policy);
        let labels = convert::labels(r.labels);
        let parent = parent(r.parent);
        let mounts = self
            .write(&r.snapshotter, "prepare", &r.key, move |p| {
                p.snapshot_prepare(&key, parent.as_deref(), labels, policy)
            })
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: convert::mounts(mounts),
        }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        let (key, policy) = (r.key.clone(), self.policy);
        let labels = convert::labels(r.labels);
        let parent = r.parent;
        let mounts = self
            .write(&r.snapshotter, "view", &r.key, move |p| {
                p.snapshot_view(&key, &parent, labels, policy)
            })
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: convert::mounts(mounts),
        }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let r = request.into_inner();
        let (key, policy) = (r.key.clone(), self.policy);
        // A writer call: handing out mounts may activate the layer (a device to map).
        let mounts = self
            .write(&r.snapshotter, "mounts", &r.key, move |p| {
                p.snapshot_mounts(&key, policy)
            })
            .await?;
        Ok(Response::new(pb::MountsResponse {
            mounts: convert::mounts(mounts),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let (name, key) = (r.name.clone(), r.key.clone());
        let labels = convert::labels(r.labels);
        let what = format!("{} -> {}", r.key, r.name);
        self.write(&r.snapshotter, "commit", &what, move |p| {
            p.snapshot_commit(&name, &key, labels)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        self.write(&r.snapshotter, "remove", &r.key, move |p| {
            p.snapshot_remove(&key)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        let info = self
            .read(&r.snapshotter, "stat", &r.key, move |p| {
                p.snapshot_stat(&key)
            })
            .await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(convert::info(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("update without a snapshot info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = convert::label_update(&paths)?;
        let key = info.name.clone();
        let labels = convert::labels(info.labels);
        let info = self
            .write(&r.snapshotter, "update", &info.name, move |p| {
                p.snapshot_update(&key, labels, update)
            })
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(convert::info(info)),
        }))
    }

    type ListStream = WalkStream;

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = request.into_inner();
        let filters =
            Filters::parse_all(&r.filters).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let all = self
            .read(&r.snapshotter, "walk", "", |p| p.snapshot_list())
            .await?;
        let infos: Vec<pb::Info> = all
            .into_iter()
            .filter(|i| filters.matches(i))
            .map(convert::info)
            .collect();
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
            .chunks(WALK_BATCH)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let r = request.into_inner();
        let key = r.key.clone();
        let usage = self
            .read(&r.snapshotter, "usage", &r.key, move |p| {
                p.snapshot_usage(&key)
            })
            .await?;
        Ok(Response::new(convert::usage(usage)))
    }

    async fn cleanup(&self, request: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.write(&r.snapshotter, "cleanup", "", |p| p.snapshot_cleanup())
            .await?;
        Ok(Response::new(()))
    }
}
