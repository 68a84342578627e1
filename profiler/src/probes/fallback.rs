//! The kernel hooks of each source, each attached through the best backend
//! the kernel accepts: backends are tried best first and every refusal is
//! kept, so the error of a source no backend reaches says why each failed.

use std::fmt;

use anyhow::{bail, Result};

use super::refusal::Refusal;
use super::{Probes, ProgramVariant};
use crate::attachment::{Attachment, Backend};
use crate::sources::{Hook, HookPoint, Source};

/// The order in which a hook's backends are tried, best first. fentry and
/// kprobe cost only the hooked syscalls. Either tracepoint puts every task
/// on the slow syscall-entry path. The raw `sys_enter` tracepoint also runs
/// its program on every other syscall but skips the record
/// `syscalls:sys_enter_*` builds, so it is cheaper per clock syscall and
/// dearer for the rest (figures: docs/costs.md, "Backends"): it goes first
/// only where clock syscalls are most of the syscalls, under a clocksource
/// the vDSO cannot read, where every clock read is one.
/// Elsewhere it is the fallback of kernels without the syscall tracepoints
/// (CONFIG_FTRACE_SYSCALLS).
pub fn backend_rank(backend: Backend, clock_syscalls_dominate: bool) -> u8 {
    match backend {
        Backend::Fentry => 0,
        Backend::Kprobe => 1,
        Backend::RawTracepoint if clock_syscalls_dominate => 2,
        Backend::Tracepoint => 3,
        Backend::RawTracepoint => 4,
        Backend::Breakpoint => 5,
        Backend::Uprobe | Backend::PerfEvent => 6,
    }
}

/// A source whose hook no backend reached: each backend tried, on which
/// place, and why it was refused.
#[derive(Debug)]
pub struct SourceRefused {
    pub source: Source,
    pub refusals: Vec<(Backend, &'static str, Refusal)>,
}

impl fmt::Display for SourceRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not attach the {} source (", self.source)?;
        if self.refusals.is_empty() {
            f.write_str("it has no hook of the chosen backend")?;
        }
        for (i, (backend, place, refusal)) in self.refusals.iter().enumerate() {
            let separator = if i == 0 { "" } else { "; " };
            write!(f, "{separator}{backend} on {place}: {refusal}")?;
        }
        f.write_str("); run `clockprof doctor` to see what this kernel allows")
    }
}

impl std::error::Error for SourceRefused {}

impl Probes {
    /// Loads and attaches one way of a hook. A program the kernel loads but
    /// will not attach is unloaded again, so a failed try leaves nothing behind.
    fn attach_point(&mut self, hook: &Hook, point: HookPoint) -> Result<()> {
        match point.backend {
            Backend::Fentry => self.attach_fentry(point.program, point.place),
            Backend::Kprobe => self.attach_kprobe(point.program, point.place),
            Backend::RawTracepoint => self.attach_raw_tracepoint(point.program, point.place),
            Backend::Tracepoint => {
                let program = match self.variant {
                    ProgramVariant::TaskPtRegs => point.program,
                    ProgramVariant::KernelStack => hook.kernel_stack_tracepoint,
                };
                self.attach_tracepoint(program, point.place)
            }
            Backend::Breakpoint | Backend::Uprobe | Backend::PerfEvent => {
                bail!("{} does not attach syscall hooks", point.backend)
            }
        }
    }

    /// Attaches every hook of every source, each through the best backend the
    /// kernel accepts (or only `forced`). On error, what was attached is
    /// detached when `self` is dropped by the caller.
    pub fn attach(&mut self, sources: &[Source], forced: Option<Backend>) -> Result<()> {
        for &source in sources {
            for hook in source.kernel_hooks() {
                let mut refusals = Vec::new();
                let mut attached = None;
                let mut candidates: Vec<HookPoint> = hook
                    .points
                    .iter()
                    .filter(|p| forced.is_none_or(|backend| p.backend == backend))
                    .copied()
                    .collect();
                candidates.sort_by_key(|p| backend_rank(p.backend, self.clock_syscalls_dominate));
                for point in candidates {
                    match self.attach_point(hook, point) {
                        Ok(()) => {
                            attached = Some(point);
                            break;
                        }
                        Err(err) => refusals.push((
                            point.backend,
                            point.place,
                            Refusal::on(point.backend, point.place, &err),
                        )),
                    }
                }
                let Some(point) = attached else {
                    return Err(SourceRefused { source, refusals }.into());
                };
                self.attachments.push(Attachment {
                    source,
                    hook: point.place.to_string(),
                    backend: point.backend,
                });
            }
        }
        Ok(())
    }

    /// Attaches `hooks` through `backend` only, for `doctor`; the error is
    /// the first refusal.
    pub fn try_backend(&mut self, hooks: &[Hook], backend: Backend) -> Result<(), Refusal> {
        for hook in hooks {
            for &point in hook.points.iter().filter(|p| p.backend == backend) {
                self.attach_point(hook, point)
                    .map_err(|err| Refusal::on(backend, point.place, &err))?;
            }
        }
        Ok(())
    }
}
