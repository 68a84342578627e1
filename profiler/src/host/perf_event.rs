//! perf_event_open: the one place that builds a perf_event_attr and opens it,
//! for the hardware breakpoints (probes) and the side-band (proc_tracker).
//! By hand, not through aya: aya's perf events cannot express an execute
//! breakpoint (bp_type, bp_addr, bp_len) nor the side-band's mmap/comm/task
//! records with their clock.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub use perf_event_open_sys::bindings as sys;

/// An attribute of `type_` and `config`, every other field zero (the
/// kernel's defaults), its size the one these bindings know.
pub fn attr(type_: u32, config: u64) -> sys::perf_event_attr {
    sys::perf_event_attr {
        size: std::mem::size_of::<sys::perf_event_attr>() as u32,
        type_,
        config,
        ..Default::default()
    }
}

/// Opens `attr` for every task on `cpu`, close-on-exec, so that COMMAND
/// never inherits it.
pub fn open_on_cpu(attr: &mut sys::perf_event_attr, cpu: u32) -> io::Result<OwnedFd> {
    let cpu = i32::try_from(cpu).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: attr is a valid perf_event_attr whose size field matches it.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(attr, -1, cpu, -1, sys::PERF_FLAG_FD_CLOEXEC.into())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open just returned this fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
