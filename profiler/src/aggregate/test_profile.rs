//! A fixed in-memory profile every format's expected-output test renders:
//! two processes of one name (merged in folded output), a container cgroup,
//! four sources (one sampled, one by hardware breakpoint), a read in
//! interrupt context (no PID), a lost user stack, losses and a skipped
//! source, so each field of each format has something to show.

use std::time::Duration;

use profiler_common::{CLOCK_ID_NONE, INTERRUPT_TGID};

use crate::aggregate::{Profile, RecordingInfo};
use crate::attachment::{Attachment, Backend};
use crate::collect::LostCounts;
use crate::session::Unavailable;
use crate::sources::{ClockRead, Source};
use crate::symbolize::{Frame, StackState, SymbolizedSample, LOST_STACK};

pub const CONTAINER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn user(function: &str, module: &str) -> Frame {
    Frame {
        function: function.to_string(),
        module: Some(module.to_string()),
        kernel: false,
    }
}

fn kernel(function: &str) -> Frame {
    Frame {
        function: function.to_string(),
        module: Some("kernel".to_string()),
        kernel: true,
    }
}

/// A sample of `comm` (PID `pid`) reading the clock `read` (event, clock
/// id) `count` times under `frames`.
pub fn sample(
    pid: u32,
    comm: &str,
    read: (u32, i32),
    frames: Vec<Frame>,
    count: u64,
) -> SymbolizedSample {
    SymbolizedSample {
        pid,
        start_time: 0,
        comm: comm.to_string(),
        cgroup: None,
        interposers: Default::default(),
        read: ClockRead::new(read.0, read.1),
        frames,
        state: StackState::Complete,
        exact_frames: 0,
        count,
    }
}

pub fn profile() -> Profile {
    const SERVER: &str = "/usr/bin/server";
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    let cgroup = format!("/system.slice/docker-{CONTAINER_ID}.scope");
    let samples = vec![
        SymbolizedSample {
            cgroup: Some(cgroup.clone()),
            interposers: Default::default(),
            ..sample(
                100,
                "server",
                (
                    profiler_common::sources::syscall::CLOCK_GETTIME,
                    libc::CLOCK_MONOTONIC,
                ),
                vec![
                    user("main", SERVER),
                    user("handle", SERVER),
                    kernel("do_syscall_64"),
                ],
                30,
            )
        },
        SymbolizedSample {
            cgroup: Some(cgroup),
            interposers: Default::default(),
            ..sample(
                100,
                "server",
                (profiler_common::sources::vdso::SAMPLE, CLOCK_ID_NONE),
                vec![user("main", SERVER), user("tick", SERVER)],
                12,
            )
        },
        sample(
            101,
            "server",
            (profiler_common::sources::vdso::SAMPLE, CLOCK_ID_NONE),
            vec![user("main", SERVER), user("tick", SERVER)],
            3,
        ),
        sample(
            200,
            "cron",
            (
                profiler_common::sources::libc::CLOCK_GETTIME,
                libc::CLOCK_REALTIME,
            ),
            vec![user("main", "/usr/sbin/cron"), user("poll", LIBC)],
            7,
        ),
        SymbolizedSample {
            state: StackState::UserStackLost,
            exact_frames: 0,
            ..sample(
                200,
                "cron",
                (profiler_common::sources::syscall::TIME, CLOCK_ID_NONE),
                vec![
                    Frame {
                        function: LOST_STACK.to_string(),
                        module: None,
                        kernel: false,
                    },
                    kernel("do_syscall_64"),
                ],
                5,
            )
        },
        sample(
            INTERRUPT_TGID,
            crate::symbolize::interrupt::ROOT,
            (profiler_common::sources::kernel::FUNCTION, 0),
            vec![
                kernel("asm_sysvec_apic_timer_interrupt"),
                kernel("hrtimer_interrupt"),
            ],
            4,
        ),
    ];
    let attachment = |source, hook: &str, backend| Attachment {
        source,
        hook: hook.to_string(),
        backend,
    };
    let info = RecordingInfo {
        stack_every: 1,
        clock: None,
        // The second server's stacks were unwound with DWARF.
        dwarf_processes: [(101, 0)].into(),
        sources: vec![
            Source::of(&profiler_common::sources::syscall::SPEC),
            Source::of(&profiler_common::sources::kernel::SPEC),
            Source::of(&profiler_common::sources::libc::SPEC),
            Source::of(&profiler_common::sources::vdso::SPEC),
        ],
        attachments: vec![
            attachment(
                Source::of(&profiler_common::sources::syscall::SPEC),
                "syscalls:sys_enter_clock_gettime",
                Backend::Tracepoint,
            ),
            attachment(
                Source::of(&profiler_common::sources::kernel::SPEC),
                "ktime_get",
                Backend::Breakpoint,
            ),
            attachment(
                Source::of(&profiler_common::sources::libc::SPEC),
                &format!("{LIBC}:__clock_gettime"),
                Backend::Uprobe,
            ),
            attachment(
                Source::of(&profiler_common::sources::vdso::SPEC),
                "cpu-clock",
                Backend::PerfEvent,
            ),
        ],
        duration: Duration::from_millis(2500),
        lost: LostCounts {
            events: 1,
            user_stacks: 2,
            kernel_stacks: 0,
            followed_processes: 0,
            dwarf_stacks: 0,
        },
        lost_mapping_records: 3,
        sample_frequency: Some(1000),
        unavailable: vec![(
            Source::of(&profiler_common::sources::go::SPEC),
            Unavailable::NothingToProbe("no Go binary is running".to_string()),
        )],
        // The kernel read names slot 0.
        kernel_functions: vec!["ktime_get".to_string(), "ktime_get_ts64".to_string()],
    };
    Profile::new(samples, info)
}

fn frame_named(name: &str, kernel: bool) -> Frame {
    Frame {
        function: name.into(),
        module: None,
        kernel,
    }
}

/// One symbolized sample; a frame named `k:...` is a kernel frame.
pub fn symbolized(
    pid: u32,
    comm: &str,
    frames: &[&str],
    event: u32,
    clock_id: i32,
    count: u64,
) -> SymbolizedSample {
    SymbolizedSample {
        pid,
        start_time: 0,
        comm: comm.into(),
        cgroup: None,
        interposers: Default::default(),
        read: ClockRead::new(event, clock_id),
        frames: frames
            .iter()
            .map(|f| frame_named(f, f.starts_with("k:")))
            .collect(),
        state: StackState::Complete,
        exact_frames: 0,
        count,
    }
}
