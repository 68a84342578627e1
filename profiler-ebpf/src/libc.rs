//! The `libc` source: entries of glibc's `__clock_gettime` (uprobe).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use profiler_common::event;

use crate::callers::return_address;
use crate::count::count_clock_read;

#[uprobe]
pub fn uprobe_libc_clock_gettime(ctx: ProbeContext) -> u32 {
    let clock_id = ctx.arg::<u64>(0).unwrap_or(0) as i32;
    count_clock_read(
        &ctx,
        event::LIBC_CLOCK_GETTIME,
        clock_id,
        return_address(&ctx),
    );
    0
}
