//! The per-pool writer lock: one mutating process at a time. Readers never take it; the store's
//! WAL journal lets them read while a writer works.

use crate::error::{PoolError, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while a writer works on a pool; released on drop (and by the kernel if the process dies,
/// so a crash never leaves a stale lock).
pub struct PoolLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

impl PoolLock {
    /// Takes the lock, waiting up to `wait` for another writer to finish.
    pub fn acquire(pool: &str, path: &Path, wait: std::time::Duration) -> Result<PoolLock> {
        let deadline = std::time::Instant::now() + wait;
        let mut file = open(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    // The pid is only for the "busy" message of the next waiter.
                    let _ = lock.set_len(0);
                    let _ = lock.rewind();
                    let _ = write!(lock, "{}", std::process::id());
                    return Ok(PoolLock {
                        _lock: lock,
                        path: path.to_path_buf(),
                    });
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if std::time::Instant::now() >= deadline {
                        let mut holder = String::new();
                        let mut f = f;
                        let _ = f.read_to_string(&mut holder);
                        return Err(PoolError::Busy {
                            pool: pool.to_string(),
                            lock: path.to_path_buf(),
                            holder: if holder.is_empty() {
                                "?".into()
                            } else {
                                holder
                            },
                        });
                    }
                    // Waiting is a safe point: nothing is begun yet.
                    crate::signal::check()?;
                    file = f;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err((_, e)) => {
                    return Err(PoolError::io("lock", path, std::io::Error::from(e)));
                }
            }
        }
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| PoolError::io("open lock file", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn second_writer_is_refused_with_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let _held = PoolLock::acquire("t", &p, Duration::ZERO).unwrap();
        let err = PoolLock::acquire("t", &p, Duration::from_millis(100))
            .err()
            .expect("second lock must fail");
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        drop(PoolLock::acquire("t", &p, Duration::ZERO).unwrap());
        assert!(PoolLock::acquire("t", &p, Duration::ZERO).is_ok());
    }
}
