//! The `libc` source: entries of glibc's `__clock_gettime` (uprobe).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use profiler_common::sources::libc as event;

use crate::callers::uprobe_entry;

#[uprobe]
pub fn uprobe_libc_clock_gettime(ctx: ProbeContext) -> u32 {
    uprobe_entry(&ctx, event::CLOCK_GETTIME, Some(0));
    0
}
