//! The `go` source: entries of Go's clock functions (uprobes).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use profiler_common::sources::go as event;

use crate::callers::uprobe_entry;

#[uprobe]
pub fn uprobe_go_time_now(ctx: ProbeContext) -> u32 {
    uprobe_entry(&ctx, event::TIME_NOW, None);
    0
}

#[uprobe]
pub fn uprobe_go_nanotime1(ctx: ProbeContext) -> u32 {
    uprobe_entry(&ctx, event::NANOTIME1, None);
    0
}

#[uprobe]
pub fn uprobe_go_walltime(ctx: ProbeContext) -> u32 {
    uprobe_entry(&ctx, event::WALLTIME, None);
    0
}
