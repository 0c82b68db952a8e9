//! A case's world: a fresh test pool, `blkdrv snapshotter serve` on it (kit::snapshotter), and
//! blocking helpers for each RPC, so cases read as the sequence of requests containerd sends.

use blkdrv_snapshotter::api::snapshots::v1 as pb;
use blkdrv_snapshotter::api::types::Mount;
use blkdrv_snapshotter::tonic::{Code, Request, Status};
use kit::ctrmount::ContainerMount;
use kit::pool::TestPool;
use kit::snapshotter::{Client, Server, ServerSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What containerd puts in every request (`[proxy_plugins.blkdrv]`).
pub const SNAPSHOTTER: &str = "blkdrv";

pub type Labels = HashMap<String, String>;

pub fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub struct Fx {
    // Field order: the server stops before its pool is destroyed.
    srv: Option<Server>,
    pub tp: TestPool,
    pub dir: PathBuf,
}

impl Fx {
    pub fn new(driver: &str) -> Result<Fx, String> {
        Fx::with_env(driver, &[])
    }

    /// The server started with extra environment (a stall point).
    pub fn with_env(driver: &str, env: &[(&str, &str)]) -> Result<Fx, String> {
        let tp = TestPool::new(driver)?;
        let dir = tp.path("server");
        let mut fx = Fx { srv: None, tp, dir };
        fx.start(env)?;
        Ok(fx)
    }

    pub fn spec(&self, env: &[(&str, &str)]) -> ServerSpec {
        let mut spec = ServerSpec::for_pool(&self.tp, &self.dir);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec
    }

    pub fn start(&mut self, env: &[(&str, &str)]) -> Result<(), String> {
        self.srv = Some(Server::start(self.spec(env))?);
        Ok(())
    }

    pub fn srv(&self) -> &Server {
        self.srv.as_ref().expect("server running")
    }

    /// The server, out of the fixture (to stop or kill it).
    pub fn take(&mut self) -> Server {
        self.srv.take().expect("server running")
    }

    pub fn c(&self) -> Client {
        self.srv().client()
    }

    pub fn on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.srv().block_on(f)
    }

    pub fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, Status> {
        let mut c = self.c();
        self.on(c.prepare(pb::PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
            parent: parent.into(),
            labels,
        }))
        .map(|r| r.into_inner().mounts)
    }

    pub fn view(&self, key: &str, parent: &str) -> Result<Vec<Mount>, Status> {
        let mut c = self.c();
        self.on(c.view(pb::ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
            parent: parent.into(),
            labels: Labels::new(),
        }))
        .map(|r| r.into_inner().mounts)
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, Status> {
        let mut c = self.c();
        self.on(c.mounts(pb::MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        }))
        .map(|r| r.into_inner().mounts)
    }

    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<(), Status> {
        let mut c = self.c();
        self.on(c.commit(pb::CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: name.into(),
            key: key.into(),
            labels,
        }))
        .map(|_| ())
    }

    pub fn remove(&self, key: &str) -> Result<(), Status> {
        let mut c = self.c();
        self.on(c.remove(pb::RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        }))
        .map(|_| ())
    }

    pub fn stat(&self, key: &str) -> Result<pb::Info, Status> {
        let mut c = self.c();
        self.on(c.stat(pb::StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        }))
        .map(|r| r.into_inner().info.unwrap_or_default())
    }

    pub fn update(&self, key: &str, labels: Labels, paths: &[&str]) -> Result<pb::Info, Status> {
        let mut c = self.c();
        self.on(c.update(pb::UpdateSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            info: Some(pb::Info {
                name: key.into(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|s| s.to_string()).collect(),
            }),
        }))
        .map(|r| r.into_inner().info.unwrap_or_default())
    }

    pub fn usage(&self, key: &str) -> Result<pb::UsageResponse, Status> {
        let mut c = self.c();
        self.on(c.usage(pb::UsageRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        }))
        .map(|r| r.into_inner())
    }

    pub fn cleanup(&self) -> Result<(), Status> {
        let mut c = self.c();
        self.on(c.cleanup(pb::CleanupRequest {
            snapshotter: SNAPSHOTTER.into(),
        }))
        .map(|_| ())
    }

    /// Walk with `filters`, every message of the stream.
    pub fn walk(&self, filters: &[&str]) -> Result<Vec<pb::Info>, Status> {
        let c = self.c();
        self.on(walk(c, filters.iter().map(|s| s.to_string()).collect()))
    }

    /// The names Walk lists for `filters`, sorted.
    pub fn names(&self, filters: &[&str]) -> Result<Vec<String>, String> {
        let mut v: Vec<String> = self
            .walk(filters)
            .map_err(|e| format!("walk {filters:?}: {e}"))?
            .into_iter()
            .map(|i| i.name)
            .collect();
        v.sort();
        Ok(v)
    }

    /// A committed snapshot `name` holding `files`, made as the unpacker makes one.
    pub fn committed(
        &self,
        name: &str,
        parent: &str,
        files: &[(&str, &[u8])],
    ) -> Result<(), String> {
        let key = format!("extract {name}");
        let m = self
            .prepare(&key, parent, Labels::new())
            .map_err(|e| format!("prepare {key}: {e}"))?;
        if !files.is_empty() {
            let g = Mounted::new(&m, &self.tp.path(&format!("m-{}", hash(&key))))?;
            for (f, data) in files {
                std::fs::write(g.path().join(f), data).map_err(|e| format!("write {f}: {e}"))?;
            }
        }
        self.commit(name, &key, Labels::new())
            .map_err(|e| format!("commit {key} as {name}: {e}"))
    }

    /// Opens the pool after the server stopped and checks it (no drift, nothing half-done).
    pub fn check_pool(&self) -> Result<(), String> {
        let mut pool = self.tp.open()?;
        let report = pool.check(false).map_err(|e| format!("check: {e}"))?;
        if !report.is_clean() {
            return Err(format!("pool check after the server: {report:?}"));
        }
        Ok(())
    }
}

async fn walk(mut c: Client, filters: Vec<String>) -> Result<Vec<pb::Info>, Status> {
    let mut stream = c
        .list(Request::new(pb::ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters,
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.extend(m.info);
    }
    Ok(out)
}

/// A short, path-safe stand-in for a key (keys hold slashes and spaces).
pub fn hash(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Fails unless `r` is an error with `code` (and `needle` in its message, if given).
pub fn expect_code<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, Status>,
    code: Code,
    needle: Option<&str>,
) -> Result<(), String> {
    match r {
        Ok(v) => Err(format!("{what}: expected {code:?}, got Ok({v:?})")),
        Err(s) if s.code() != code => Err(format!(
            "{what}: expected {code:?}, got {:?}: {}",
            s.code(),
            s.message()
        )),
        Err(s) if needle.is_some_and(|n| !s.message().contains(n)) => Err(format!(
            "{what}: {code:?} without {needle:?} in {:?}",
            s.message()
        )),
        Err(_) => Ok(()),
    }
}

/// The one mount of a snapshot, mounted as containerd mounts it, unmounted on drop.
pub struct Mounted(ContainerMount);

impl Mounted {
    pub fn new(mounts: &[Mount], target: &Path) -> Result<Mounted, String> {
        let [m] = mounts else {
            return Err(format!("expected one mount, got {mounts:?}"));
        };
        ContainerMount::new(&m.r#type, &m.source, &m.options, target).map(Mounted)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}
