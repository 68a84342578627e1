//! `clockprof doctor`: what this kernel and user allow, found by really
//! loading and attaching each kind of hook (into an empty PID filter, so the
//! programs count nothing) and detaching it again, plus the clocksource and
//! whether the vDSO can serve it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::attachment::{Backend, DEBUG_REGISTERS};
use crate::host::clocksource;
use crate::probes::{
    backend_rank, free_debug_registers, kernel_context, KernelFunction, ProbeConfig, Probes,
    ProgramVariant, Refusal,
};
use crate::session::privileges;
use crate::sources::{Attach, Source};

#[derive(Serialize)]
struct Check {
    name: &'static str,
    works: bool,
    detail: String,
}

#[derive(Serialize)]
struct Clocksource {
    current: String,
    available: Vec<String>,
    /// Whether the vDSO can read this clocksource without a syscall, by
    /// its name.
    vdso_capable: bool,
    /// Whether it did, measured here: clock_gettime calls through the
    /// vDSO, watched for becoming system calls. None where it could not be
    /// measured (no tracefs, no privileges).
    vdso_works: Option<bool>,
    /// What the kernel log says of clocksource changes (the watchdog's
    /// verdicts, switches), oldest first, as dmesg shows them.
    kernel_log: Vec<String>,
    advice: Option<String>,
}

#[derive(Serialize)]
struct SourcePlan {
    source: Source,
    backend: Option<Backend>,
    /// Which program variant the source would load on this kernel.
    variant: &'static str,
    note: String,
}

/// The kernel source's cost in debug registers (x86 has four per CPU, shared
/// with gdb watchpoints and perf breakpoints).
#[derive(Serialize)]
struct DebugRegisters {
    per_cpu: usize,
    /// Taken per CPU by a recording with the default kernel functions.
    default_recording_takes: usize,
    /// Free on CPU 0 now, counted by reserving them; None where hardware
    /// breakpoints are unavailable.
    free_now: Option<usize>,
}

/// How user stacks would be walked (`--unwind auto`): each running
/// program is classified by its executable's prologues.
#[derive(Serialize)]
struct Unwinding {
    /// Programs without frame pointers, unwound with DWARF: `comm (PID)`.
    dwarf: Vec<String>,
    /// Processes walked with frame pointers in the kernel.
    frame_pointers: usize,
}

fn unwinding() -> Unwinding {
    use crate::unwind::frame_pointers::{stack_kind, StackKind};
    let mut verdicts: std::collections::HashMap<crate::host::safe_open::FileKey, StackKind> =
        std::collections::HashMap::new();
    let mut dwarf = Vec::new();
    let mut frame_pointers = 0;
    for pid in crate::host::binaries::all_pids() {
        // Kernel threads have no executable, nor user stacks.
        let Some(exe) = crate::host::binaries::exe_of(pid) else {
            continue;
        };
        let kind = *verdicts
            .entry(exe.key())
            .or_insert_with(|| stack_kind(&exe.fd_path()));
        match kind {
            StackKind::FramePointers => frame_pointers += 1,
            StackKind::Dwarf => {
                let comm = read_trimmed(&format!("/proc/{pid}/comm"));
                dwarf.push(format!("{comm} ({pid})"));
            }
            StackKind::Cgo(_) => {
                let comm = read_trimmed(&format!("/proc/{pid}/comm"));
                dwarf.push(format!("{comm} ({pid}, cgo)"));
            }
        }
    }
    Unwinding {
        dwarf,
        frame_pointers,
    }
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    btf: bool,
    privileges: Check,
    hooks: Vec<Check>,
    /// Whether kernel clock reads in interrupt context can be told apart.
    interrupt_context: Check,
    debug_registers: DebugRegisters,
    /// How the syscall tracepoint programs find user registers here.
    tracepoint_variant: Option<ProgramVariant>,
    clocksource: Clocksource,
    sources: Vec<SourcePlan>,
    /// None without the privileges to read other processes' executables.
    unwinding: Option<Unwinding>,
    /// Running processes (`comm (PID)`) that map a file through an overlay
    /// whose layers' directories do not show it: their frames in it would
    /// be unnamed. None without the privileges to look.
    unnamed_through_overlays: Option<Vec<String>>,
    /// Running processes whose clock calls a library other than the C
    /// library takes over. None without the privileges to look.
    interposers: Option<Vec<InterposedProcess>>,
}

#[derive(Serialize)]
struct InterposedProcess {
    pid: u32,
    comm: String,
    interposers: Vec<crate::host::interposer::Interposer>,
}

/// The processes whose frames a recording would leave unnamed because a
/// file they map came through an overlay and no layer's directory has it:
/// clockprof names a file only once it has checked that it opened the very
/// file mapped (proc_tracker::address_space), as a recording would.
fn unnamed_through_overlays(tracker: &crate::proc_tracker::ProcTracker) -> Vec<String> {
    tracker
        .processes_mapping_files_not_in_overlay_layers()
        .into_iter()
        .map(|(pid, comm)| format!("{comm} ({pid})"))
        .collect()
}

/// The running processes whose clock calls an interposer takes over, as a
/// recording would name them.
fn interposed(tracker: &crate::proc_tracker::ProcTracker) -> Vec<InterposedProcess> {
    tracker
        .processes_with_interposers()
        .into_iter()
        .map(|(pid, comm, interposers)| InterposedProcess {
            pid,
            comm,
            interposers: interposers.to_vec(),
        })
        .collect()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn clocksource() -> Clocksource {
    let base = clocksource::DIR;
    let facts = clocksource::ClockFacts::gather();
    let current = facts.clocksource;
    let available = clocksource::available();
    let vdso_capable = current.vdso_capable();
    let vdso_works = facts.vdso_reads;
    let kernel_log: Vec<String> = facts.changes.iter().map(|line| line.quoted()).collect();
    let falls_back_anyway = vdso_capable && vdso_works == Some(false);
    let advice = current.name.as_ref().filter(|_| !vdso_capable || falls_back_anyway).map(|current| {
        if falls_back_anyway {
            return format!(
                "every clock read through the vDSO here became a system call, although the clocksource {current} is one the vDSO reads: on a VM, kvm-clock without its stable bit (check the hypervisor's invariant TSC and kvmclock stable flag); see the kernel log lines below"
            );
        }
        let better = available
            .iter()
            .find(|c| clocksource::VDSO_CAPABLE.contains(&c.as_str()));
        match better {
            Some(better) => format!(
                "every clock read on this host is a system call because the clocksource is {current}; switch with `echo {better} > {base}/current_clocksource` and check dmesg for why the kernel left it (e.g. an unstable TSC)"
            ),
            None => format!(
                "every clock read on this host is a system call because the clocksource is {current} and no vDSO-capable one is available; on a VM, enable an invariant TSC or kvm-clock"
            ),
        }
    });
    Clocksource {
        current: current.name.unwrap_or_default(),
        available,
        vdso_capable,
        vdso_works,
        kernel_log,
        advice,
    }
}

fn check(name: &'static str, backend: Backend, result: Result<()>) -> Check {
    match result {
        Ok(()) => Check {
            name,
            works: true,
            detail: "loads and attaches".to_string(),
        },
        Err(err) => Check {
            name,
            works: false,
            detail: Refusal::of(backend, &err).to_string(),
        },
    }
}

/// The syscall source's backends, each tried on its own.
const SYSCALL_CHECKS: [(&str, Backend); 4] = [
    ("fentry (syscall)", Backend::Fentry),
    ("kprobe (syscall)", Backend::Kprobe),
    ("raw tracepoint (syscall)", Backend::RawTracepoint),
    ("tracepoint (syscall)", Backend::Tracepoint),
];

/// The kernel clock functions' backends, each tried on its own (name,
/// function, backend): a traceable clock, then the notrace one the `kernel`
/// source needs a breakpoint for.
const KERNEL_FN_CHECKS: [(&str, &str, Backend); 5] = [
    (
        "fentry on ktime_get_ts64",
        "ktime_get_ts64",
        Backend::Fentry,
    ),
    (
        "kprobe on ktime_get_ts64",
        "ktime_get_ts64",
        Backend::Kprobe,
    ),
    (
        "fentry on ktime_get_mono_fast_ns",
        "ktime_get_mono_fast_ns",
        Backend::Fentry,
    ),
    (
        "kprobe on ktime_get_mono_fast_ns",
        "ktime_get_mono_fast_ns",
        Backend::Kprobe,
    ),
    (
        "hardware breakpoint on ktime_get_mono_fast_ns",
        "ktime_get_mono_fast_ns",
        Backend::Breakpoint,
    ),
];

/// Tries each kind of hook in turn on one set of probes; everything is
/// detached when the probes are dropped at the end. Also returns the
/// tracepoint variant the probes chose.
fn hook_checks() -> Result<(Vec<Check>, ProgramVariant)> {
    let mut probes = Probes::load(&ProbeConfig {
        // An empty filter: whatever attaches counts nothing.
        filter_by_pid: true,
        follow_children: false,
        count_entries: 16,
        stack_entries: 16,
        stack_every: 1,
        unwind: crate::probes::UnwindMode::Auto,
        vdso: Path::new("/sys/kernel/btf/vmlinux").exists(),
        kernel: true,
    })?;
    let mut checks = Vec::new();
    for (name, backend) in SYSCALL_CHECKS {
        let result = probes.try_backend(
            Source::of(&profiler_common::sources::syscall::SPEC).kernel_hooks(),
            backend,
        );
        let variant = if backend == Backend::Tracepoint {
            format!(" ({} variant)", probes.variant())
        } else {
            String::new()
        };
        checks.push(Check {
            name,
            works: result.is_ok(),
            detail: match result {
                Ok(()) => "loads and attaches".to_string(),
                Err(refusal) => refusal.to_string(),
            } + &variant,
        });
    }
    // The checks of one backend go in one call, so each function takes its
    // own slot as in a recording: an fentry program is loaded for its one
    // function, and a slot's program still attached to ktime_get_ts64 would
    // refuse ktime_get_mono_fast_ns as already loaded.
    let mut backends: Vec<Backend> = KERNEL_FN_CHECKS.iter().map(|check| check.2).collect();
    backends.sort();
    backends.dedup();
    let mut kernel_checks = Vec::new();
    for backend in backends {
        let group: Vec<(usize, &(&str, &str, Backend))> = KERNEL_FN_CHECKS
            .iter()
            .enumerate()
            .filter(|(_, check)| check.2 == backend)
            .collect();
        let watched: Vec<KernelFunction> = group
            .iter()
            .map(|(_, check)| KernelFunction {
                name: check.1.to_string(),
                breakpoint: true,
            })
            .collect();
        let outcomes = probes.attach_kernel_functions(&watched, Some(backend))?;
        for ((index, &(name, _, _)), outcome) in group.into_iter().zip(outcomes) {
            let (works, detail) = match outcome {
                Ok(_) => (true, "loads and attaches".to_string()),
                Err(refusals) => (false, Refusal::all_said(&refusals)),
            };
            kernel_checks.push((
                index,
                Check {
                    name,
                    works,
                    detail,
                },
            ));
        }
    }
    // Listed in the table's order, as doctor always listed them.
    kernel_checks.sort_by_key(|&(index, _)| index);
    checks.extend(kernel_checks.into_iter().map(|(_, check)| check));
    let uprobe = crate::host::binaries::libc_of(std::process::id())
        .ok_or_else(|| anyhow::anyhow!("no glibc mapped"))
        .and_then(|libc| {
            probes
                .attach_uprobes(
                    Source::of(&profiler_common::sources::libc::SPEC),
                    &libc,
                    Some(std::process::id()),
                )
                .map(|_| ())
        });
    checks.push(check(
        "uprobe (libc __clock_gettime)",
        Backend::Uprobe,
        uprobe,
    ));
    let sampling = probes.attach_vdso_sampling(1);
    checks.push(check(
        "perf_event cpu-clock sampling",
        Backend::PerfEvent,
        sampling,
    ));
    let variant = probes.variant();
    Ok((checks, variant))
}

/// The program variant of the syscall source for a backend: fentry and
/// kprobe read the user registers from the syscall wrapper's argument, the
/// raw tracepoint from its own, on any kernel; the tracepoint programs need
/// one of ProgramVariant.
fn syscall_variant(backend: Option<Backend>, tracepoint: Option<ProgramVariant>) -> &'static str {
    match (backend, tracepoint) {
        (Some(Backend::Fentry | Backend::Kprobe), _) => "wrapper-argument",
        (Some(Backend::RawTracepoint), _) => "tracepoint-argument",
        (_, Some(ProgramVariant::TaskPtRegs)) => "task-pt-regs",
        (_, Some(ProgramVariant::KernelStack)) => "kernel-stack",
        _ => "unknown",
    }
}

/// Which backend each source would use, from the checks.
fn plan(
    hooks: &[Check],
    tracepoint: Option<ProgramVariant>,
    clock_syscalls_dominate: bool,
) -> Vec<SourcePlan> {
    let works = |name: &str| hooks.iter().any(|c| c.name == name && c.works);
    let first = |options: &[(&str, Backend)]| {
        options
            .iter()
            .find(|(name, _)| works(name))
            .map(|&(_, backend)| backend)
    };
    let mut syscall_backends = SYSCALL_CHECKS.to_vec();
    syscall_backends.sort_by_key(|&(_, backend)| backend_rank(backend, clock_syscalls_dominate));
    let syscall = first(&syscall_backends);
    let kernel = first(&[
        ("fentry on ktime_get_ts64", Backend::Fentry),
        ("kprobe on ktime_get_ts64", Backend::Kprobe),
        (
            "hardware breakpoint on ktime_get_mono_fast_ns",
            Backend::Breakpoint,
        ),
    ]);
    let mono_fast = if works("fentry on ktime_get_mono_fast_ns") {
        "ktime_get_mono_fast_ns by fentry"
    } else if works("kprobe on ktime_get_mono_fast_ns") {
        "ktime_get_mono_fast_ns by kprobe"
    } else if works("hardware breakpoint on ktime_get_mono_fast_ns") {
        "ktime_get_mono_fast_ns by hardware breakpoint"
    } else {
        "ktime_get_mono_fast_ns unavailable (notrace, and no hardware breakpoints)"
    };
    let uprobe = first(&[("uprobe (libc __clock_gettime)", Backend::Uprobe)]);
    let sampling = first(&[("perf_event cpu-clock sampling", Backend::PerfEvent)]);
    // Each kind of attaching was tried once, on one source's hooks (the
    // syscall catalogue, ktime_get_ts64, glibc, cpu-clock): a source plans
    // what its kind got. Only kernel hooks have program variants; the other
    // kinds have one program each: they call no helper newer than 5.5
    // (bpf_probe_read_user/kernel).
    Source::ALL
        .iter()
        .map(|&source| {
            let (backend, variant, note) = match source.spec().attach {
                Attach::KernelHooks(_) => (
                    syscall,
                    syscall_variant(syscall, tracepoint),
                    source.spec().doctor_note,
                ),
                Attach::KernelFunctions => (kernel, "base", mono_fast),
                Attach::Uprobes { .. } => (uprobe, "base", source.spec().doctor_note),
                Attach::Sampling => (sampling, "base", source.spec().doctor_note),
            };
            SourcePlan {
                source,
                backend,
                variant,
                note: note.into(),
            }
        })
        .collect()
}

/// A default recording watches only ktime_get_mono_fast_ns by breakpoint,
/// and only where neither fentry nor kprobe reaches it.
fn debug_registers(hooks: &[Check]) -> DebugRegisters {
    let works = |name: &str| hooks.iter().any(|c| c.name == name && c.works);
    let by_breakpoint = !works("fentry on ktime_get_mono_fast_ns")
        && !works("kprobe on ktime_get_mono_fast_ns")
        && works("hardware breakpoint on ktime_get_mono_fast_ns");
    DebugRegisters {
        per_cpu: DEBUG_REGISTERS,
        default_recording_takes: usize::from(by_breakpoint),
        free_now: free_debug_registers(0).ok(),
    }
}

fn interrupt_context() -> Check {
    match kernel_context::preempt_count() {
        Ok(_) => Check {
            name: "interrupt context",
            works: true,
            detail: "told by the preempt count: kernel clock reads in hardirq, softirq or NMI go under [interrupt]".to_string(),
        },
        Err(err) => Check {
            name: "interrupt context",
            works: false,
            detail: format!("{err:#}: only reads whose kernel stack shows an interrupt entry go under [interrupt]"),
        },
    }
}

fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let mark = |works: bool| if works { "yes" } else { "no " };
    let _ = writeln!(out, "kernel       {}", report.kernel);
    let _ = writeln!(out, "BTF          {}", mark(report.btf));
    let _ = writeln!(
        out,
        "privileges   {}  {}",
        mark(report.privileges.works),
        report.privileges.detail
    );
    let cs = &report.clocksource;
    let _ = writeln!(
        out,
        "clocksource  {}  (vDSO can read it: {}; available: {})",
        cs.current,
        mark(cs.vdso_capable).trim(),
        cs.available.join(" ")
    );
    let _ = writeln!(
        out,
        "  measured     {}",
        match cs.vdso_works {
            Some(true) => "clock_gettime through the vDSO made no system call: the vDSO reads the clock here",
            Some(false) => "clock_gettime through the vDSO became a system call: every clock read here falls back (vdso-fallback)",
            None => "could not be measured (needs tracefs and the privileges to count this thread's system calls)",
        }
    );
    for line in &cs.kernel_log {
        let _ = writeln!(out, "  kernel log   {line}");
    }
    if let Some(advice) = &cs.advice {
        let _ = writeln!(out, "  WARNING: {advice}");
    }
    let _ = writeln!(out, "\nhooks (loaded, attached and detached here):");
    for hook in &report.hooks {
        let _ = writeln!(
            out,
            "  {}  {:<46} {}",
            mark(hook.works),
            hook.name,
            hook.detail
        );
    }
    let _ = writeln!(
        out,
        "\ninterrupt context  {}  {}",
        mark(report.interrupt_context.works),
        report.interrupt_context.detail
    );
    let registers = &report.debug_registers;
    let _ = writeln!(
        out,
        "debug registers    a default recording takes {} of {} per CPU{}; {}",
        registers.default_recording_takes,
        registers.per_cpu,
        if registers.default_recording_takes > 0 {
            " (ktime_get_mono_fast_ns); each --kernel-fn function fentry and kprobe cannot reach takes one more"
        } else {
            ""
        },
        match registers.free_now {
            Some(free) => format!("{free} free now on CPU 0"),
            None => "hardware breakpoints are unavailable".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "\nsources would use (source, backend, program variant):"
    );
    for plan in &report.sources {
        let backend = plan
            .backend
            .map(|b| b.to_string())
            .unwrap_or_else(|| "unavailable".into());
        let _ = writeln!(
            out,
            "  {:<8} {:<12} {:<18} {}",
            plan.source.name(),
            backend,
            plan.variant,
            plan.note
        );
    }
    if let Some(unwinding) = &report.unwinding {
        let _ = writeln!(
            out,
            "\nuser stacks (--unwind auto): frame pointers in the kernel for {} processes; DWARF (stack copied, unwound by clockprof) for {}",
            unwinding.frame_pointers,
            if unwinding.dwarf.is_empty() {
                "none".to_string()
            } else {
                unwinding.dwarf.join(", ")
            }
        );
    }
    match report.unnamed_through_overlays.as_deref() {
        Some([]) => {
            let _ = writeln!(
                out,
                "overlays     no file mapped through an overlay would be unnamed"
            );
        }
        Some(unnamed) => {
            let _ = writeln!(
                out,
                "overlays     {} process(es) map files through an overlay that none of its layers' \
                 directories shows (not visible from here, or renamed within the overlay): \
                 their frames will be unnamed: {}",
                unnamed.len(),
                unnamed.join(", ")
            );
        }
        None => {}
    }
    match report.interposers.as_deref() {
        Some([]) => {
            let _ = writeln!(
                out,
                "interposers  no process's clock calls go through a library other than libc"
            );
        }
        Some(processes) => {
            for process in processes {
                let _ = writeln!(
                    out,
                    "interposers  {} ({}) makes its clock calls through {}",
                    crate::host::printable::printable(&process.comm),
                    process.pid,
                    crate::host::interposer::Interposer::describe_all(&process.interposers)
                );
            }
        }
        None => {}
    }
    out
}

/// `clockprof doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn doctor(args: DoctorArgs) -> Result<i32> {
    let missing = privileges::missing_capabilities(privileges::effective_capabilities());
    let privileges = Check {
        name: "privileges",
        works: missing.is_empty(),
        detail: if missing.is_empty() {
            "may load eBPF and open perf events".to_string()
        } else {
            format!("missing {}: run with sudo", missing.join(" and "))
        },
    };
    let (hooks, tracepoint_variant) = if privileges.works {
        let (hooks, variant) = hook_checks()?;
        (hooks, Some(variant))
    } else {
        (Vec::new(), None)
    };
    // One /proc snapshot, as a recording starts with, for what it would
    // say of the processes running now.
    let tracker = if privileges.works {
        let mut tracker = crate::proc_tracker::ProcTracker::start_with_ring_pages(1)?;
        tracker.snapshot_all();
        Some(tracker)
    } else {
        None
    };
    let report = Report {
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        sources: plan(
            &hooks,
            tracepoint_variant,
            clocksource::Clocksource::read().forces_syscalls(),
        ),
        interrupt_context: interrupt_context(),
        debug_registers: debug_registers(&hooks),
        unwinding: privileges.works.then(unwinding),
        unnamed_through_overlays: tracker.as_ref().map(unnamed_through_overlays),
        interposers: tracker.as_ref().map(interposed),
        privileges,
        hooks,
        tracepoint_variant,
        clocksource: clocksource(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_prefers_the_cheapest_working_backend() {
        let hook = |name: &'static str, works| Check {
            name,
            works,
            detail: String::new(),
        };
        let hooks = vec![
            hook("fentry (syscall)", false),
            hook("kprobe (syscall)", true),
            hook("tracepoint (syscall)", true),
            hook("hardware breakpoint on ktime_get_mono_fast_ns", true),
        ];
        let plan = plan(&hooks, Some(ProgramVariant::KernelStack), false);
        assert_eq!(plan[0].backend, Some(Backend::Kprobe));
        assert_eq!(plan[0].variant, "wrapper-argument");
        assert_eq!(plan[1].backend, Some(Backend::Breakpoint));
        assert!(plan[1].note.contains("hardware breakpoint"));
        assert_eq!(plan[4].backend, None);
    }

    #[test]
    fn the_tracepoint_variant_shows_only_where_tracepoints_serve() {
        let tracepoint_only = [Check {
            name: "tracepoint (syscall)",
            works: true,
            detail: String::new(),
        }];
        let plan_with = |variant| plan(&tracepoint_only, Some(variant), false)[0].variant;
        assert_eq!(plan_with(ProgramVariant::KernelStack), "kernel-stack");
        assert_eq!(plan_with(ProgramVariant::TaskPtRegs), "task-pt-regs");
        assert_eq!(plan(&[], None, false)[0].variant, "unknown");
    }

    #[test]
    fn the_raw_tracepoint_goes_first_only_where_every_clock_read_is_a_syscall() {
        let hook = |name: &'static str| Check {
            name,
            works: true,
            detail: String::new(),
        };
        let both = [
            hook("raw tracepoint (syscall)"),
            hook("tracepoint (syscall)"),
        ];
        let syscall = |dominate| {
            let plan = plan(&both, Some(ProgramVariant::TaskPtRegs), dominate);
            (plan[0].backend, plan[0].variant)
        };
        assert_eq!(syscall(false), (Some(Backend::Tracepoint), "task-pt-regs"));
        assert_eq!(
            syscall(true),
            (Some(Backend::RawTracepoint), "tracepoint-argument")
        );
        // Without the syscall tracepoints, the raw one serves anyway.
        let raw_only = [hook("raw tracepoint (syscall)")];
        assert_eq!(
            plan(&raw_only, None, false)[0].backend,
            Some(Backend::RawTracepoint)
        );
    }
}
