//! Why a clock system call was one (sources::SyscallCause), decided while
//! the process's mappings are known: from the clock it read and the mapping
//! that holds the instruction that made the call, the innermost user frame.
//!
//! - A clock the vDSO never serves always costs the call, wherever it is
//!   made (glibc sends CPU-time clocks through the vDSO, which falls back).
//! - Made inside the vDSO: the vDSO's own fallback, because it cannot read
//!   the clocksource from user space.
//! - Made from a library, not the C library's own, that exports a clock
//!   function: an interposer's.
//! - Anywhere else (the program, libc's `syscall()`, another library, JIT
//!   code): a direct call that bypassed the vDSO.

use crate::proc_tracker::ProcTracker;
use crate::sources::{vdso_serves, ClockRead, SyscallCause};

use super::vdso::VDSO;
use super::UserLocation;

/// The cause of `read` if it is a clock system call, made at `innermost`
/// in the life of `pid` started at `start_time`; `None` for other reads,
/// and for a served clock whose user stack was not captured.
pub(super) fn syscall_cause(
    read: ClockRead,
    innermost: Option<&UserLocation>,
    tracker: &mut ProcTracker,
) -> Option<SyscallCause> {
    if !read.is_syscall() {
        return None;
    }
    if !vdso_serves(read.clock_id) {
        return Some(SyscallCause::UnservedClock);
    }
    Some(match innermost? {
        UserLocation::File { path, .. } if &**path == VDSO => SyscallCause::VdsoFallback,
        UserLocation::File {
            path,
            file: Some(file),
            ..
        } if tracker.is_interposer_file(*file, path) => SyscallCause::Interposer,
        _ => SyscallCause::Direct,
    })
}
