//! Why the kernel refused a backend, classified from aya's error types and
//! the errno, with the verifier's verdict when it refused the program.

use std::io::ErrorKind;

use aya::programs::{KProbeError, ProgramError};
use aya::sys::{BpfHelper, SyscallError};

use crate::attachment::Backend;
use crate::host::kallsyms::{kernel_symbol_address, KernelLacks};
use crate::host::tracefs;

/// Why the kernel refused a backend, in a few words, from what the kernel
/// said: the verifier's last lines when it refused the program, else the
/// errno of the call that failed. The errors aya reports are long and the
/// same for every function.
pub fn refusal_reason(backend: Backend, err: &anyhow::Error) -> String {
    for cause in err.chain() {
        match cause.downcast_ref::<ProgramError>() {
            Some(ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                return match verifier_tail(&verifier_log.to_string()) {
                    Some(tail) => format!(
                        "the verifier refused the {backend} program ({}): {tail}",
                        errno_name(io_error)
                    ),
                    None => format!(
                        "the kernel refused to load the {backend} program ({}; no verifier output)",
                        errno_name(io_error)
                    ),
                }
            }
            Some(ProgramError::SyscallError(SyscallError { call, io_error })) => {
                return format!("{call} refused the {backend} ({})", errno_name(io_error))
            }
            // aya finds the kprobe PMU's type in sysfs before anything else.
            Some(ProgramError::KProbeError(KProbeError::FileError { io_error, .. }))
                if io_error.kind() == ErrorKind::NotFound =>
            {
                return "this kernel has no kprobes".to_string()
            }
            _ => {}
        }
        if cause.downcast_ref::<KernelLacks>().is_some() {
            return format!("{err:#}");
        }
    }
    let text = format!("{err:#}");
    if let Some(io_error) = err
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
    {
        let context: Vec<String> = err
            .chain()
            .filter(|cause| cause.downcast_ref::<std::io::Error>().is_none())
            .map(|cause| cause.to_string())
            .collect();
        format!("{} ({})", context.join(": "), errno_name(io_error))
    } else {
        format!("{backend} failed: {text}")
    }
}

/// The verifier's verdict: the last lines of its log, without the statistics
/// it appends (`processed N insns ...`, `verification time`, `stack depth`).
fn verifier_tail(log: &str) -> Option<String> {
    const STATISTICS: &[&str] = &["processed ", "verification time ", "stack depth "];
    const LINES: usize = 2;
    let verdict: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !STATISTICS.iter().any(|s| l.starts_with(s)))
        .collect();
    let tail = &verdict[verdict.len().saturating_sub(LINES)..];
    if tail.is_empty() {
        return None;
    }
    let mut verdict = tail.join(" / ");
    // A kernel older than a helper names it only by number.
    for (helper, name) in NEWER_HELPERS {
        if verdict.contains(&format!("invalid func unknown#{}", *helper as u32)) {
            verdict += &format!(" (#{} is {name}, which this kernel lacks)", *helper as u32);
        }
    }
    Some(verdict)
}

/// Helpers clockprof's programs call that kernels before 5.15 lack.
const NEWER_HELPERS: &[(BpfHelper, &str)] = &[
    (
        BpfHelper::BPF_FUNC_get_current_task_btf,
        "bpf_get_current_task_btf (5.11)",
    ),
    (BpfHelper::BPF_FUNC_task_pt_regs, "bpf_task_pt_regs (5.15)"),
];

/// The symbolic name of an errno, as the kernel's sources call it.
fn errno_name(err: &std::io::Error) -> String {
    const ENOTSUPP: i32 = 524;
    let name = match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::EPROTO) => "EPROTO",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::ENODEV) => "ENODEV",
        Some(ENOTSUPP) => "ENOTSUPP",
        Some(errno) => return format!("errno {errno}"),
        None => return err.to_string(),
    };
    name.to_string()
}

/// Whether ftrace may trace `function`, from tracefs: the kernel refuses
/// kprobes (without CONFIG_KPROBE_EVENTS_ON_NOTRACE) and fentry on functions
/// it does not list. None when tracefs cannot tell.
fn ftrace_lists(function: &str) -> Option<bool> {
    let list = std::fs::read_to_string(
        tracefs::events_dir()
            .parent()?
            .join("available_filter_functions"),
    )
    .ok()?;
    Some(
        list.lines()
            .any(|line| line.split_whitespace().next() == Some(function)),
    )
}

/// refusal_reason for a hook on `function`, with the fact behind an EINVAL
/// from a kprobe or fentry attach where tracefs has it.
pub(super) fn refusal_reason_on(backend: Backend, function: &str, err: &anyhow::Error) -> String {
    let reason = refusal_reason(backend, err);
    // A kprobe on a function ftrace cannot trace is refused with EINVAL; an
    // fentry trampoline, which patches the call to __fentry__ such a
    // function lacks, with EBUSY (6.12) or EINVAL.
    let errno = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<ProgramError>())
        .find_map(|cause| match cause {
            ProgramError::SyscallError(SyscallError { io_error, .. }) => io_error.raw_os_error(),
            _ => None,
        });
    let may_be_notrace = match backend {
        Backend::Kprobe => errno == Some(libc::EINVAL),
        Backend::Fentry => matches!(errno, Some(libc::EINVAL | libc::EBUSY)),
        _ => false,
    };
    if may_be_notrace {
        // Only a function the kernel has can be notrace.
        if ftrace_lists(function) == Some(false) && kernel_symbol_address(function).is_ok() {
            return format!("{reason}: {function} is notrace (not in available_filter_functions)");
        }
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verifier log ending as Debian 11's 5.10 ended its refusal of the
    /// helper variant in the VM (the last two lines as captured), with the
    /// statistics aya's log level adds.
    const REFUSAL_5_10: &str = "func#0 @0\n\
        0: R1=ctx(id=0,off=0,imm=0) R10=fp0\n\
        0: (bf) r6 = r1\n\
        13: (85) call unknown#158\n\
        invalid func unknown#158\n\
        processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";

    #[test]
    fn the_verifiers_verdict_is_its_last_lines_without_statistics() {
        assert_eq!(
            verifier_tail(REFUSAL_5_10).as_deref(),
            Some(
                "13: (85) call unknown#158 / invalid func unknown#158 \
                 (#158 is bpf_get_current_task_btf (5.11), which this kernel lacks)"
            )
        );
        assert_eq!(verifier_tail("processed 0 insns\n\n"), None);
        assert_eq!(verifier_tail(""), None);
    }

    #[test]
    fn refusals_are_classified_by_error_type_and_errno() {
        let attach = |errno| {
            anyhow::Error::from(ProgramError::SyscallError(SyscallError {
                call: "perf_event_open",
                io_error: std::io::Error::from_raw_os_error(errno),
            }))
        };
        assert_eq!(
            refusal_reason(Backend::Kprobe, &attach(libc::EINVAL)),
            "perf_event_open refused the kprobe (EINVAL)"
        );
        assert_eq!(
            refusal_reason(Backend::Fentry, &attach(libc::EPERM).context("attaching")),
            "perf_event_open refused the fentry (EPERM)"
        );
        let breakpoint = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENODEV))
            .context("perf_event_open of an execute breakpoint failed")
            .context("breakpoint on CPU 0");
        assert_eq!(
            refusal_reason(Backend::Breakpoint, &breakpoint),
            "breakpoint on CPU 0: perf_event_open of an execute breakpoint failed (ENODEV)"
        );
        let no_kprobe_pmu =
            anyhow::Error::from(ProgramError::KProbeError(KProbeError::FileError {
                filename: "/sys/bus/event_source/devices/kprobe/type".into(),
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }));
        assert_eq!(
            refusal_reason(Backend::Kprobe, &no_kprobe_pmu),
            "this kernel has no kprobes"
        );
        let lacks = anyhow::Error::new(KernelLacks("the kernel has no usable BTF (x)".into()))
            .context("fentry on ktime_get");
        assert_eq!(
            refusal_reason(Backend::Fentry, &lacks),
            "fentry on ktime_get: the kernel has no usable BTF (x)"
        );
        // A function the kernel does not have is not called notrace.
        assert_eq!(
            refusal_reason_on(
                Backend::Kprobe,
                "no_such_function_here",
                &attach(libc::EINVAL)
            ),
            "perf_event_open refused the kprobe (EINVAL)"
        );
    }
}
