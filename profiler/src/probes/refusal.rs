//! Why the kernel refused a backend, as data: one `Refusal` built here from
//! aya's error types and the errno, with the verifier's verdict when it
//! refused the program, and said in words only by its `Display` (doctor,
//! the summary, the JSON output and the errors of a source no backend
//! reaches).

use std::fmt;
use std::io::ErrorKind;

use aya::programs::{KProbeError, ProgramError};
use aya::sys::{BpfHelper, SyscallError};

use crate::attachment::{Backend, DEBUG_REGISTERS};
use crate::host::kallsyms::{kernel_symbol_address, KernelLacks};
use crate::host::tracefs;

/// An errno, shown by its name in the kernel's sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn of(err: &std::io::Error) -> Option<Errno> {
        err.raw_os_error().map(Errno)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ENOTSUPP: i32 = 524;
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::E2BIG => "E2BIG",
            libc::EPROTO => "EPROTO",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ESRCH => "ESRCH",
            libc::ENODEV => "ENODEV",
            ENOTSUPP => "ENOTSUPP",
            errno => return write!(f, "errno {errno}"),
        };
        f.write_str(name)
    }
}

/// Why a backend was not used for a hook: what the kernel said (the
/// verifier's last lines when it refused the program, else the errno of the
/// call that failed), or why it was not tried. The errors aya reports are
/// long and the same for every function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The verifier refused the program; `verdict` is its last lines.
    VerifierRejected {
        backend: Backend,
        errno: Errno,
        verdict: String,
    },
    /// The kernel refused to load the program and the verifier said nothing.
    KernelRefused { backend: Backend, errno: Errno },
    /// A system call attaching the program refused it.
    SyscallRefused {
        call: &'static str,
        backend: Backend,
        errno: Errno,
    },
    /// No kprobe PMU in sysfs: the kernel was built without kprobes.
    NoKprobes,
    /// `refusal`, because ftrace cannot trace `function`.
    Notrace {
        function: String,
        refusal: Box<Refusal>,
    },
    /// What the backend needs and this kernel has not (BTF, the function),
    /// with the steps that needed it.
    KernelLacks(String),
    /// A step that failed with an errno (a hardware breakpoint the CPU
    /// would not give, say), in the words of the steps that led to it.
    Failed { steps: String, errno: Errno },
    /// Any other failure of the backend, in its own words.
    Other { backend: Backend, text: String },
    /// Only a function named with --kernel-fn may take a breakpoint.
    BreakpointOnlyForNamed,
    /// The functions before this one took every debug register.
    DebugRegistersTaken,
    /// The hook has no way through the backend asked for.
    NoHookOfBackend,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VerifierRejected {
                backend,
                errno,
                verdict,
            } => write!(
                f,
                "the verifier refused the {backend} program ({errno}): {verdict}"
            ),
            Refusal::KernelRefused { backend, errno } => write!(
                f,
                "the kernel refused to load the {backend} program ({errno}; no verifier output)"
            ),
            Refusal::SyscallRefused {
                call,
                backend,
                errno,
            } => write!(f, "{call} refused the {backend} ({errno})"),
            Refusal::NoKprobes => f.write_str("this kernel has no kprobes"),
            Refusal::Notrace { function, refusal } => write!(
                f,
                "{refusal}: {function} is notrace (not in available_filter_functions)"
            ),
            Refusal::KernelLacks(what) => f.write_str(what),
            Refusal::Failed { steps, errno } => write!(f, "{steps} ({errno})"),
            Refusal::Other { backend, text } => write!(f, "{backend} failed: {text}"),
            Refusal::BreakpointOnlyForNamed => {
                f.write_str("a breakpoint only for a function named with --kernel-fn")
            }
            Refusal::DebugRegistersTaken => write!(
                f,
                "all {DEBUG_REGISTERS} debug registers are taken by the functions before it"
            ),
            Refusal::NoHookOfBackend => f.write_str("no hook of the chosen backend"),
        }
    }
}

impl Refusal {
    /// Every refusal a hook met (one per backend tried), in one line.
    pub fn all_said(refusals: &[Refusal]) -> String {
        refusals
            .iter()
            .map(Refusal::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Classifies why `backend` failed from the error it returned.
    pub fn of(backend: Backend, err: &anyhow::Error) -> Refusal {
        for cause in err.chain() {
            match cause.downcast_ref::<ProgramError>() {
                Some(ProgramError::LoadError {
                    io_error,
                    verifier_log,
                }) => {
                    if let Some(errno) = Errno::of(io_error) {
                        return match verifier_tail(&verifier_log.to_string()) {
                            Some(verdict) => Refusal::VerifierRejected {
                                backend,
                                errno,
                                verdict,
                            },
                            None => Refusal::KernelRefused { backend, errno },
                        };
                    }
                }
                Some(ProgramError::SyscallError(SyscallError { call, io_error })) => {
                    if let Some(errno) = Errno::of(io_error) {
                        return Refusal::SyscallRefused {
                            call,
                            backend,
                            errno,
                        };
                    }
                }
                // aya finds the kprobe PMU's type in sysfs before anything else.
                Some(ProgramError::KProbeError(KProbeError::FileError { io_error, .. }))
                    if io_error.kind() == ErrorKind::NotFound =>
                {
                    return Refusal::NoKprobes
                }
                _ => {}
            }
            if cause.downcast_ref::<KernelLacks>().is_some() {
                return Refusal::KernelLacks(format!("{err:#}"));
            }
        }
        let errno = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .and_then(Errno::of);
        match errno {
            Some(errno) => Refusal::Failed {
                steps: err
                    .chain()
                    .filter(|cause| cause.downcast_ref::<std::io::Error>().is_none())
                    .map(|cause| cause.to_string())
                    .collect::<Vec<_>>()
                    .join(": "),
                errno,
            },
            None => Refusal::Other {
                backend,
                text: format!("{err:#}"),
            },
        }
    }

    /// `Refusal::of` for a hook on `function`, with the fact behind an
    /// EINVAL from a kprobe or fentry attach where tracefs has it.
    pub fn on(backend: Backend, function: &str, err: &anyhow::Error) -> Refusal {
        let refusal = Refusal::of(backend, err);
        // A kprobe on a function ftrace cannot trace is refused with EINVAL;
        // an fentry trampoline, which patches the call to __fentry__ such a
        // function lacks, with EBUSY (6.12) or EINVAL.
        let may_be_notrace = match (&refusal, backend) {
            (Refusal::SyscallRefused { errno, .. }, Backend::Kprobe) => errno.0 == libc::EINVAL,
            (Refusal::SyscallRefused { errno, .. }, Backend::Fentry) => {
                matches!(errno.0, libc::EINVAL | libc::EBUSY)
            }
            _ => false,
        };
        // Only a function the kernel has can be notrace.
        if may_be_notrace
            && ftrace_lists(function) == Some(false)
            && kernel_symbol_address(function).is_ok()
        {
            return Refusal::Notrace {
                function: function.to_string(),
                refusal: Box::new(refusal),
            };
        }
        refusal
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

    /// The words a refusal is said in.
    fn refusal_reason(backend: Backend, err: &anyhow::Error) -> String {
        Refusal::of(backend, err).to_string()
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
        assert_eq!(
            Refusal::of(Backend::Kprobe, &no_kprobe_pmu),
            Refusal::NoKprobes
        );
        let lacks = anyhow::Error::new(KernelLacks("the kernel has no usable BTF (x)".into()))
            .context("fentry on ktime_get");
        assert_eq!(
            refusal_reason(Backend::Fentry, &lacks),
            "fentry on ktime_get: the kernel has no usable BTF (x)"
        );
        // A function the kernel does not have is not called notrace.
        assert_eq!(
            Refusal::on(
                Backend::Kprobe,
                "no_such_function_here",
                &attach(libc::EINVAL)
            )
            .to_string(),
            "perf_event_open refused the kprobe (EINVAL)"
        );
    }
}
