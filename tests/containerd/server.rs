//! `blkdrv snapshotter serve` on a test pool, as this target needs it: started before containerd,
//! stopped (by pid) after it. The kit's guard ([`kit::snapshotter::Server`]) does the work;
//! this is the one place in the target that names it.

use kit::pool::TestPool;
use kit::snapshotter::{Server, ServerSpec};

/// Starts the server on `tp`'s pool as snapshotter `name` (`--pool t=NAME`), its socket and
/// log in the pool's scratch space.
pub fn start(tp: &TestPool, name: &str) -> Result<Server, String> {
    let mut spec = ServerSpec::for_pool(tp, &tp.path("srv"));
    spec.pools = vec![format!("{}={name}", tp.name)];
    Server::start(spec).map_err(|e| format!("blkdrv snapshotter serve: {e}"))
}
