//! The systemd readiness protocol (sd_notify(3)): `READY=1` once the socket listens, so a
//! `Type=notify` unit orders containerd after a server that can answer. One datagram to
//! `$NOTIFY_SOCKET`: twenty lines, so no crate for it.

use std::os::unix::net::UnixDatagram;

/// Where the message goes: a path, or (leading `@`) a Linux abstract socket name.
fn target() -> Option<std::ffi::OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())
}

/// Sends `state` to the service manager; without `NOTIFY_SOCKET` (not under systemd, or not
/// `Type=notify`) it does nothing. Errors are the caller's to log: readiness is a courtesy to
/// the unit's ordering, never a reason to stop serving.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(addr) = target() else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = addr.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &a)?;
    } else {
        sock.send_to(state.as_bytes(), &addr)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches NOTIFY_SOCKET: the variable is process-wide.
    #[test]
    fn sends_to_the_notify_socket_and_nothing_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap());
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
    }
}
