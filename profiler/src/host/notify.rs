//! The service manager's readiness protocol (sd_notify(3)): when NOTIFY_SOCKET
//! names a socket, `READY=1` is sent to it once every probe is attached. A
//! systemd unit of Type=notify starts its dependents then, and the tests wait
//! for it instead of matching a sentence written for people.

use sd_notify::NotifyState;

use crate::say::warning;

/// Says READY=1, with `status` as the STATUS= line; nothing without
/// NOTIFY_SOCKET. A socket that cannot be reached is a warning, not a failure:
/// the recording itself is fine.
pub fn ready(status: &str) {
    if let Err(err) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        warning!("could not send READY=1 to NOTIFY_SOCKET: {err}");
    }
}

/// The variable COMMAND must not inherit: its readiness is not clockprof's.
pub const SOCKET_VARIABLE: &str = "NOTIFY_SOCKET";
