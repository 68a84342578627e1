//! The short text summary printed when no `-o` is given.

use std::fmt::Write;

use profiler_common::INTERRUPT_TGID;

use crate::aggregate::Profile;
use crate::attachment::{debug_registers_taken, Backend, DEBUG_REGISTERS};
use crate::host::interposer::Interposer;
use crate::host::printable::printable;
use crate::sources::{sampled_counts, Attach, SyscallCause};

const TOP_PROCESSES: usize = 10;
const TOP_STACKS: usize = 10;
/// Frames shown per stack, innermost last: enough to see the caller chain.
const FRAMES_SHOWN: usize = 6;

/// Reads in interrupt context have no PID; processes that exited during a
/// long recording are merged per name under PID 0 (the idle tasks keep it).
fn shown_pid(pid: u32, comm: &str) -> String {
    match pid {
        INTERRUPT_TGID => "-".to_string(),
        0 if comm != "swapper" => "exited".to_string(),
        pid => pid.to_string(),
    }
}

pub fn summary(profile: &Profile) -> String {
    let info = &profile.info;
    let secs = info.duration.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let sources: Vec<&str> = info.sources.iter().map(|s| s.name()).collect();
    let _ = writeln!(
        out,
        "{} clock reads in {:.1} s ({:.0}/s); sources: {}; backend: {}",
        profile.total,
        secs,
        profile.total as f64 / secs,
        sources.join(","),
        info.backends().join(",")
    );
    if info
        .attachments
        .iter()
        .any(|a| matches!(a.source.spec().attach, Attach::KernelFunctions))
    {
        let by_breakpoint: Vec<&str> = info
            .attachments
            .iter()
            .filter(|a| a.backend == Backend::Breakpoint)
            .map(|a| a.hook.as_str())
            .collect();
        let _ = writeln!(
            out,
            "kernel: {} of {DEBUG_REGISTERS} debug registers per CPU taken{}",
            debug_registers_taken(&info.attachments),
            if by_breakpoint.is_empty() {
                String::new()
            } else {
                format!(" (breakpoints on {})", by_breakpoint.join(", "))
            }
        );
    }
    if info.stack_every > 1 {
        let _ = writeln!(
            out,
            "stacks: user stacks sampled 1 in {} per CPU; counts exact per process, clock and calling function, frames above it estimated",
            info.stack_every
        );
    }
    let dwarf: Vec<String> = profile
        .processes
        .iter()
        .filter(|p| info.unwinder(p.pid, p.start_time) == "dwarf")
        .map(|p| format!("{} ({})", printable(&p.comm), shown_pid(p.pid, &p.comm)))
        .collect();
    if !dwarf.is_empty() {
        let _ = writeln!(
            out,
            "unwinder: DWARF for {}; frame pointers for the others",
            dwarf.join(", ")
        );
    }
    for (source, reason) in &info.unavailable {
        let _ = writeln!(out, "{source} source skipped: {reason}");
    }
    if info.lost.any() || info.lost_mapping_records > 0 {
        let _ = writeln!(
            out,
            "lost: {} events (count map full), {} user stacks, {} DWARF stacks (ring full), {} kernel stacks, {} followed processes, {} mapping records",
            info.lost.events,
            info.lost.user_stacks,
            info.lost.dwarf_stacks,
            info.lost.kernel_stacks,
            info.lost.followed_processes,
            info.lost_mapping_records
        );
    }
    let vdso_samples = crate::aggregate::sum_counts(
        profile
            .processes
            .iter()
            .flat_map(|p| sampled_counts(&p.by_source)),
    );
    if let Some(cpu_ms) = info.sampled_cpu_ms(vdso_samples) {
        let _ = writeln!(
            out,
            "vdso: {vdso_samples} samples at {} Hz, about {cpu_ms:.0} ms of CPU in vDSO clock reads (other sources count events)",
            info.sample_frequency.unwrap_or(0)
        );
    }
    if profile.total == 0 {
        let _ = writeln!(out, "no clock reads were recorded");
        return out;
    }
    let _ = writeln!(
        out,
        "\nTop processes:\n{:>12} {:>6} {:>8}  COMMAND",
        "READS", "SHARE", "PID"
    );
    for process in profile.processes.iter().take(TOP_PROCESSES) {
        let _ = writeln!(
            out,
            "{:>12} {:>5.1}% {:>8}  {}",
            process.total,
            100.0 * process.total as f64 / profile.total as f64,
            shown_pid(process.pid, &process.comm),
            printable(&process.comm)
        );
    }
    write_causes(&mut out, profile);
    let _ = writeln!(out, "\nTop stacks:");
    for stack in profile.stacks.iter().take(TOP_STACKS) {
        let _ = writeln!(
            out,
            "{:>12} {:>5.1}%  {} [{}] {}",
            stack.count,
            100.0 * stack.count as f64 / profile.total as f64,
            printable(&stack.comm),
            shown_pid(stack.pid, &stack.comm),
            stack.read.leaf(&profile.info.kernel_functions)
        );
        let skip = stack.frames.len().saturating_sub(FRAMES_SHOWN);
        for frame in stack.frames.iter().skip(skip).rev() {
            let _ = writeln!(out, "{:>22}{}", "", printable(&frame.folded_name()));
        }
    }
    out
}

/// Processes shown per cause.
const PROCESSES_PER_CAUSE: usize = 3;

/// Why the clock system calls were system calls, each cause with the
/// processes that paid most for it and what to do; then the interposers.
fn write_causes(out: &mut String, profile: &Profile) {
    let mut any = false;
    for cause in SyscallCause::ALL {
        let mut paying: Vec<(u64, &crate::aggregate::ProcessTotal)> = profile
            .processes
            .iter()
            .filter_map(|p| Some((*p.syscalls_by_cause.get(&cause)?, p)))
            .collect();
        if paying.is_empty() {
            continue;
        }
        if !any {
            let _ = writeln!(out, "\nClock system calls by cause:");
            any = true;
        }
        paying.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        let total = crate::aggregate::sum_counts(paying.iter().map(|(n, _)| *n));
        let shown: Vec<String> = paying
            .iter()
            .take(PROCESSES_PER_CAUSE)
            .map(|(n, p)| format!("{} ({}) {n}", printable(&p.comm), shown_pid(p.pid, &p.comm)))
            .collect();
        let more = paying.len().saturating_sub(PROCESSES_PER_CAUSE);
        let _ = writeln!(
            out,
            "{total:>12}  {cause}: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        let fix = match (cause, &profile.info.clock) {
            (SyscallCause::VdsoFallback, Some(clock)) => {
                format!("{} ({})", cause.fix(), clock.why())
            }
            (SyscallCause::Direct, _) => {
                format!("made in {}: {}", calling_sites(profile, cause), cause.fix())
            }
            _ => cause.fix().to_string(),
        };
        let _ = writeln!(out, "{:>14}{fix}", "");
    }
    let interposed: Vec<&crate::aggregate::ProcessTotal> = profile
        .processes
        .iter()
        .filter(|p| !p.interposers.is_empty())
        .collect();
    for process in &interposed {
        let _ = writeln!(
            out,
            "interposer: {} ({}) makes its clock calls through {}",
            printable(&process.comm),
            shown_pid(process.pid, &process.comm),
            Interposer::describe_all(&process.interposers)
        );
    }
    if !interposed.is_empty() {
        let _ = writeln!(out, "{:>14}{}", "", SyscallCause::Interposer.fix());
    }
}

/// The functions that made the most system calls of `cause` (each stack's
/// innermost user frame, with its process), most first.
fn calling_sites(profile: &Profile, cause: SyscallCause) -> String {
    let mut sites: Vec<(String, u64)> = Vec::new();
    for stack in profile
        .stacks
        .iter()
        .filter(|s| s.read.cause == Some(cause))
    {
        let Some(frame) = stack.frames.iter().rev().find(|f| !f.kernel) else {
            continue;
        };
        let site = format!(
            "{} ({})",
            printable(&frame.function),
            printable(&stack.comm)
        );
        match sites.iter_mut().find(|(s, _)| *s == site) {
            Some((_, n)) => *n = n.saturating_add(stack.count),
            None => sites.push((site, stack.count)),
        }
    }
    sites.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let shown: Vec<String> = sites
        .iter()
        .take(PROCESSES_PER_CAUSE)
        .map(|(s, _)| s.clone())
        .collect();
    if shown.is_empty() {
        "frames not captured".to_string()
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_processes_merged_under_pid_0_are_shown_as_exited() {
        assert_eq!(shown_pid(0, "churnfx"), "exited");
        assert_eq!(shown_pid(0, "swapper"), "0");
        assert_eq!(shown_pid(42, "churnfx"), "42");
        assert_eq!(shown_pid(INTERRUPT_TGID, "[interrupt]"), "-");
    }

    #[test]
    fn names_the_processes_unwound_with_dwarf() {
        let text = summary(&crate::aggregate::test_profile::profile());
        assert!(
            text.contains("unwinder: DWARF for server (101); frame pointers for the others"),
            "{text}"
        );
    }

    #[test]
    fn a_newline_in_a_name_is_escaped() {
        use crate::aggregate::{test_profile::symbolized as sample, RecordingInfo};
        let samples = vec![sample(
            1,
            "a\nb x 99",
            &["evil\r\nfn 7", "k:do_syscall_64"],
            profiler_common::sources::syscall::TIME,
            profiler_common::CLOCK_ID_NONE,
            2,
        )];
        let text = summary(&Profile::new(samples, RecordingInfo::default()));
        assert!(!text.contains('\r'), "{text}");
        assert!(text.contains("a\\nb x 99 [1]"), "{text}");
    }
}
