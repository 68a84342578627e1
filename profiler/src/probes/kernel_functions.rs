//! The kernel source's functions: which are watched, and each attached
//! through fentry, kprobe or a hardware breakpoint, whichever the kernel
//! accepts first.

use anyhow::{bail, Result};

use super::refusal::Refusal;
use super::Probes;
use crate::attachment::{Attachment, Backend, DEBUG_REGISTERS};
use crate::sources::Source;

/// Kernel clock functions watched by default: the NMI-safe monotonic clock
/// (notrace on distro kernels, so only a breakpoint reaches it) and the
/// traceable clocks behind clock_gettime and most in-kernel timestamps.
pub const DEFAULT_KERNEL_FUNCTIONS: &[&str] = &[
    "ktime_get_mono_fast_ns",
    "ktime_get",
    "ktime_get_ts64",
    "ktime_get_real_ts64",
];

/// The default functions that may take a debug register: the notrace ones.
/// The traceable ones use fentry or kprobe or nothing, so a default recording
/// takes at most one of the four, leaving gdb watchpoints and perf
/// breakpoints the rest.
pub const DEFAULT_BREAKPOINT_FUNCTIONS: &[&str] = &["ktime_get_mono_fast_ns"];

/// A kernel function for the kernel source, and whether it may take a
/// debug register (a hardware breakpoint on every CPU) when fentry and
/// kprobe cannot reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFunction {
    pub name: String,
    pub breakpoint: bool,
}

impl KernelFunction {
    /// The default list, or the functions the user named (each of which may
    /// take a breakpoint).
    pub fn chosen(named: &[String]) -> Vec<KernelFunction> {
        if named.is_empty() {
            DEFAULT_KERNEL_FUNCTIONS
                .iter()
                .map(|&name| KernelFunction {
                    name: name.to_string(),
                    breakpoint: DEFAULT_BREAKPOINT_FUNCTIONS.contains(&name),
                })
                .collect()
        } else {
            named
                .iter()
                .map(|name| KernelFunction {
                    name: name.clone(),
                    breakpoint: true,
                })
                .collect()
        }
    }
}

impl Probes {
    /// Watches each kernel clock function through the best backend the kernel
    /// accepts for it (fentry, kprobe, then, where the function may take one,
    /// a hardware execute breakpoint while debug registers remain), or only
    /// `forced`. Returns, per function, the backend used or why none could
    /// be (each backend's refusal, once); the slot of a function is its index
    /// in `functions`.
    pub fn attach_kernel_functions(
        &mut self,
        functions: &[KernelFunction],
        forced: Option<Backend>,
    ) -> Result<Vec<Result<Backend, Vec<Refusal>>>> {
        if functions.len() > profiler_common::MAX_KERNEL_FNS as usize {
            bail!(
                "at most {} kernel functions can be watched at once, not {}",
                profiler_common::MAX_KERNEL_FNS,
                functions.len()
            );
        }
        let mut outcomes = Vec::new();
        for (slot, function) in functions.iter().enumerate() {
            let name = function.name.as_str();
            let mut refusals = Vec::new();
            let mut used = None;
            for backend in [Backend::Fentry, Backend::Kprobe, Backend::Breakpoint] {
                if forced.is_some_and(|f| f != backend) {
                    continue;
                }
                let result = match backend {
                    Backend::Fentry => {
                        self.attach_fentry(&format!("fentry_kernel_fn_{slot}"), name)
                    }
                    Backend::Kprobe => {
                        self.attach_kprobe(&format!("kprobe_kernel_fn_{slot}"), name)
                    }
                    _ if !function.breakpoint => {
                        // Only said when it is the one backend asked for:
                        // otherwise the refusals above tell why.
                        if forced.is_some() {
                            refusals.push(Refusal::BreakpointOnlyForNamed);
                        }
                        continue;
                    }
                    _ if self.breakpoints_taken() >= DEBUG_REGISTERS => {
                        refusals.push(Refusal::DebugRegistersTaken);
                        continue;
                    }
                    _ => self.attach_breakpoint(slot, name),
                };
                match result {
                    Ok(()) => {
                        used = Some(backend);
                        break;
                    }
                    Err(err) => {
                        let reason = Refusal::on(backend, &function.name, &err);
                        if !refusals.contains(&reason) {
                            refusals.push(reason);
                        }
                    }
                }
            }
            match used {
                Some(backend) => {
                    self.attachments.push(Attachment {
                        source: Source::of(&profiler_common::sources::kernel::SPEC),
                        hook: name.to_string(),
                        backend,
                    });
                    outcomes.push(Ok(backend));
                }
                None if refusals.is_empty() => outcomes.push(Err(vec![Refusal::NoHookOfBackend])),
                None => outcomes.push(Err(refusals)),
            }
        }
        Ok(outcomes)
    }

    /// Functions watched by breakpoint now: each takes one debug register
    /// on every CPU.
    pub fn breakpoints_taken(&self) -> usize {
        self.breakpoint_functions
    }
}
