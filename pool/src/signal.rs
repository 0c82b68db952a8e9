//! SIGINT and SIGTERM end a command at its next safe point instead of wherever it is.
//!
//! A front end calls [`install`] for the commands that change a pool. The handler only records
//! the signal; long work checks [`check`] between steps (tar blocks applied, output written,
//! lock waits), fails with [`PoolError::Interrupted`], and the operation's normal rollback
//! undoes what it made (the import mount, the half-made layer). Nothing is done in the handler.

use crate::error::{PoolError, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: nix::libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the flag. SA_RESTART: system calls in progress finish; the
/// work notices at its next check.
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(record),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| PoolError::io("install signal handler", "-", e.into()))?;
    }
    Ok(())
}

/// The signal received since [`install`], if any.
pub fn pending() -> Option<Signal> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// Fails with [`PoolError::Interrupted`] once a signal was received.
pub fn check() -> Result<()> {
    match pending() {
        Some(sig) => Err(PoolError::Interrupted {
            signal: sig.as_str(),
        }),
        None => Ok(()),
    }
}

/// `e`, or [`PoolError::Interrupted`] if a signal is pending: an error that a [`Checked`]
/// reader or [`CheckedWrite`] writer caused is reported as the interruption it is.
pub fn or_interrupted(e: PoolError) -> PoolError {
    match pending() {
        Some(sig) => PoolError::Interrupted {
            signal: sig.as_str(),
        },
        None => e,
    }
}

/// A reader that stops with an error at the first read after a signal.
pub struct Checked<R>(pub R);

impl<R: std::io::Read> std::io::Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(sig) = pending() {
            return Err(std::io::Error::other(format!(
                "interrupted by {}",
                sig.as_str()
            )));
        }
        self.0.read(buf)
    }
}

/// A writer that stops with an error at the first write after a signal.
pub struct CheckedWrite<W>(pub W);

impl<W: std::io::Write> std::io::Write for CheckedWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(sig) = pending() {
            return Err(std::io::Error::other(format!(
                "interrupted by {}",
                sig.as_str()
            )));
        }
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only the no-signal case: raising one would end every other test in this binary early.
    #[test]
    fn without_a_signal_the_error_is_kept() {
        let e = or_interrupted(PoolError::Invalid("bad".into()));
        assert!(matches!(e, PoolError::Invalid(m) if m == "bad"));
        assert!(check().is_ok());
    }
}
