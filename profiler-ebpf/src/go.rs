//! The `go` source: entries of Go's clock functions (uprobes).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use profiler_common::{event, CLOCK_ID_NONE};

use crate::callers::return_address;
use crate::count::count_clock_read;

#[uprobe]
pub fn uprobe_go_time_now(ctx: ProbeContext) -> u32 {
    count_clock_read(
        &ctx,
        event::GO_TIME_NOW,
        CLOCK_ID_NONE,
        return_address(&ctx),
    );
    0
}

#[uprobe]
pub fn uprobe_go_nanotime1(ctx: ProbeContext) -> u32 {
    count_clock_read(
        &ctx,
        event::GO_NANOTIME1,
        CLOCK_ID_NONE,
        return_address(&ctx),
    );
    0
}

#[uprobe]
pub fn uprobe_go_walltime(ctx: ProbeContext) -> u32 {
    count_clock_read(
        &ctx,
        event::GO_WALLTIME,
        CLOCK_ID_NONE,
        return_address(&ctx),
    );
    0
}
