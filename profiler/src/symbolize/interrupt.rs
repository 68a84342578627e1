//! Kernel clock reads made in interrupt context (hardirq, softirq, NMI)
//! belong to no task: they go under a root of their own, `[interrupt]`,
//! with the interrupt's kernel frames only.
//!
//! The eBPF side flags them from the CPU's preempt count (INTERRUPT_TGID).
//! The kernel stack completes that here: the tail of irq_exit (tick_irq_exit,
//! which reads the clock on idle CPUs) runs after the hardirq level is
//! dropped, and a kernel without a readable preempt count flags nothing, yet
//! both stacks show the interrupt entry.

use profiler_common::INTERRUPT_TGID;

use super::frames::{Frame, StackState, SymbolizedSample};

/// The root frame (process name) of interrupt-context reads.
pub const ROOT: &str = "[interrupt]";

/// x86-64 interrupt entries: system vectors (timer, IPIs), device
/// interrupts, NMIs, and where softirqs are run (on irq exit, on
/// local_bh_enable, in ksoftirqd).
const ENTRY_PREFIXES: &[&str] = &["asm_sysvec_", "sysvec_", "__sysvec_"];
const ENTRY_FUNCTIONS: &[&str] = &[
    "asm_common_interrupt",
    "common_interrupt",
    "asm_spurious_interrupt",
    "spurious_interrupt",
    "asm_exc_nmi",
    "exc_nmi",
    "irq_exit_rcu",
    "__irq_exit_rcu",
    "irq_exit",
    "do_softirq",
    "do_softirq_own_stack",
    "__do_softirq",
    "handle_softirqs",
];

fn is_entry(frame: &Frame) -> bool {
    frame.kernel
        && (ENTRY_FUNCTIONS.contains(&frame.function.as_str())
            || ENTRY_PREFIXES
                .iter()
                .any(|prefix| frame.function.starts_with(prefix)))
}

/// Puts a kernel-source sample made in interrupt context under `[interrupt]`:
/// no user frames, and no kernel frames of the interrupted code (outside the
/// outermost interrupt entry), so one interrupt path is one stack whatever
/// it interrupted. Other samples are left as they are.
pub fn attribute(sample: &mut SymbolizedSample) {
    if sample.read.event != profiler_common::sources::kernel::FUNCTION {
        return;
    }
    let entry = sample.frames.iter().position(is_entry);
    if sample.pid != INTERRUPT_TGID && entry.is_none() {
        return;
    }
    sample.pid = INTERRUPT_TGID;
    // No task's: one root, whichever process the interrupt stopped.
    sample.start_time = 0;
    sample.comm = ROOT.to_string();
    sample.cgroup = None;
    sample.state = StackState::Complete;
    match entry {
        Some(outermost) => {
            sample.frames.drain(..outermost);
        }
        None => sample.frames.retain(|frame| frame.kernel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ClockRead;

    fn sample(pid: u32, event: u32, frames: &[(&str, bool)]) -> SymbolizedSample {
        SymbolizedSample {
            pid,
            start_time: 1234,
            comm: "task".into(),
            cgroup: Some("/system.slice/task.service".into()),
            interposers: Default::default(),
            read: ClockRead::new(event, 0),
            frames: frames
                .iter()
                .map(|&(function, kernel)| Frame {
                    function: function.into(),
                    module: None,
                    kernel,
                })
                .collect(),
            state: StackState::UserStackLost,
            exact_frames: 0,
            count: 1,
        }
    }

    fn names(sample: &SymbolizedSample) -> Vec<&str> {
        sample.frames.iter().map(|f| f.function.as_str()).collect()
    }

    #[test]
    fn a_timer_interrupt_in_a_task_goes_under_interrupt_without_the_task() {
        let mut s = sample(
            42,
            profiler_common::sources::kernel::FUNCTION,
            &[
                ("main", false),
                ("entry_SYSCALL_64", true),
                ("do_syscall_64", true),
                ("asm_sysvec_apic_timer_interrupt", true),
                ("sysvec_apic_timer_interrupt", true),
                ("hrtimer_interrupt", true),
                ("ktime_get", true),
            ],
        );
        attribute(&mut s);
        assert_eq!(s.pid, INTERRUPT_TGID);
        assert_eq!(s.start_time, 0);
        assert_eq!(s.comm, ROOT);
        assert_eq!(s.cgroup, None);
        assert_eq!(s.state, StackState::Complete);
        assert_eq!(
            names(&s),
            [
                "asm_sysvec_apic_timer_interrupt",
                "sysvec_apic_timer_interrupt",
                "hrtimer_interrupt",
                "ktime_get"
            ]
        );
    }

    #[test]
    fn softirqs_cut_at_their_runner_and_flagged_samples_drop_user_frames() {
        let mut ksoftirqd = sample(
            7,
            profiler_common::sources::kernel::FUNCTION,
            &[
                ("kthread", true),
                ("run_ksoftirqd", true),
                ("handle_softirqs", true),
                ("net_rx_action", true),
                ("ktime_get", true),
            ],
        );
        attribute(&mut ksoftirqd);
        assert_eq!(ksoftirqd.comm, ROOT);
        assert_eq!(
            names(&ksoftirqd),
            ["handle_softirqs", "net_rx_action", "ktime_get"]
        );

        // Flagged by the preempt count, with no entry frame in sight.
        let mut flagged = sample(
            INTERRUPT_TGID,
            profiler_common::sources::kernel::FUNCTION,
            &[("[unknown]", false), ("tick_sched_timer", true)],
        );
        attribute(&mut flagged);
        assert_eq!(flagged.comm, ROOT);
        assert_eq!(names(&flagged), ["tick_sched_timer"]);
    }

    #[test]
    fn task_context_and_other_sources_are_left_alone() {
        let frames = [
            ("fixture_hot", false),
            ("do_syscall_64", true),
            ("ktime_get_ts64", true),
        ];
        let mut task = sample(42, profiler_common::sources::kernel::FUNCTION, &frames);
        let before = task.clone();
        attribute(&mut task);
        assert_eq!(task, before);

        // Only kernel-source reads are moved: a vdso sample is taken from
        // the timer interrupt by design, and belongs to the sampled task.
        let mut sample_of_task = sample(
            42,
            profiler_common::sources::vdso::SAMPLE,
            &[("main", false), ("asm_sysvec_apic_timer_interrupt", true)],
        );
        let before = sample_of_task.clone();
        attribute(&mut sample_of_task);
        assert_eq!(sample_of_task, before);
    }
}
