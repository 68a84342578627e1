//! Which syscall tracepoint programs this kernel loads, and the globals the
//! kernel-stack variant needs.

use std::fmt;
use std::path::Path;

use aya::programs::ProgramType;
use aya::sys::{is_helper_supported, BpfHelper};
use serde::Serialize;

use super::btf;
use crate::host::kallsyms::kernel_symbol_address;

/// How the syscall tracepoint programs find the user registers (to recover
/// the callers a frameless clock path hides), chosen at load time by probing
/// the kernel's helpers. fentry and kprobe get the registers as the syscall
/// wrapper's argument, so they have one program for every kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgramVariant {
    /// bpf_task_pt_regs(bpf_get_current_task_btf()): kernels 5.15 and later.
    TaskPtRegs,
    /// The registers at the top of the task's kernel stack, found through
    /// bpf_get_current_task and task_struct.stack's offset from BTF: for
    /// kernels before 5.15 (Debian 11's 5.10 has neither helper).
    KernelStack,
}

impl fmt::Display for ProgramVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgramVariant::TaskPtRegs => "task-pt-regs",
            ProgramVariant::KernelStack => "kernel-stack",
        })
    }
}

impl ProgramVariant {
    /// The variant this kernel can load: the helper one when the verifier
    /// knows both helpers (aya's probe loads a one-call program and reads
    /// the verifier's verdict) and the kernel has BTF for the task pointer.
    /// A probe that cannot run at all (no privileges) picks the helper
    /// variant, whose load then reports the real error.
    pub fn probe() -> ProgramVariant {
        match std::env::var(VARIANT_ENV).as_deref() {
            Ok("task-pt-regs") => return ProgramVariant::TaskPtRegs,
            Ok("kernel-stack") => return ProgramVariant::KernelStack,
            _ => {}
        }
        let supported =
            |helper| is_helper_supported(ProgramType::TracePoint, helper).unwrap_or(true);
        if Path::new(VMLINUX_BTF).exists()
            && supported(BpfHelper::BPF_FUNC_get_current_task_btf)
            && supported(BpfHelper::BPF_FUNC_task_pt_regs)
        {
            ProgramVariant::TaskPtRegs
        } else {
            ProgramVariant::KernelStack
        }
    }
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Forces a ProgramVariant (`task-pt-regs` or `kernel-stack`) instead of
/// probing: for tests, which run each variant where the kernel allows it and
/// check the verifier's refusal where it does not.
pub const VARIANT_ENV: &str = "CLOCKPROF_PROGRAM_VARIANT";

/// The kernel stack size on x86_64: 16 KiB, doubled under KASAN
/// (THREAD_SIZE_ORDER = 2 + KASAN_STACK_ORDER).
fn thread_size() -> u32 {
    if kernel_symbol_address("kasan_report").is_ok() {
        32 * 1024
    } else {
        16 * 1024
    }
}

/// Globals of the kernel-stack variant: task_struct.stack's offset and the
/// stack size. Without BTF the offset stays 0 and the programs count syscalls
/// without recovering skipped callers.
pub(super) fn kernel_stack_globals(btf: Option<&btf::KernelBtf>) -> (u32, u32) {
    let offset = btf
        .and_then(|btf| btf.member_offset("task_struct", &["stack"]).ok())
        .unwrap_or(0);
    (offset, thread_size())
}
