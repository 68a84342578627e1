//! What the kernel-source programs need to tell whose clock read they see:
//! where each CPU's preempt count lives (interrupt context), and where a
//! task's flags and mm are (kernel threads, which have no user stack).
//!
//! bpf_this_cpu_ptr needs a BTF ksym, which aya's Rust programs cannot
//! carry, so the per-CPU address is computed by hand in the program:
//! `__per_cpu_offset[cpu]` plus the variable's address from /proc/kallsyms.

use anyhow::{anyhow, Result};

use super::btf::KernelBtf;
use crate::host::kallsyms::kernel_symbols;

/// Addresses and offsets for the programs' globals; 0 where not found, which
/// the programs read as "do not check".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelContext {
    /// Address of the `__per_cpu_offset` array.
    pub per_cpu_offsets: u64,
    /// Per-CPU address of the preempt count.
    pub preempt_count: u64,
    pub task_flags_offset: u32,
    pub task_mm_offset: u32,
}

impl KernelContext {
    /// Finds what this kernel offers; each part is independent.
    pub fn find(btf: Option<&KernelBtf>) -> KernelContext {
        let task_offset = |member| {
            btf.and_then(|btf| btf.member_offset("task_struct", &[member]).ok())
                .unwrap_or(0)
        };
        let (per_cpu_offsets, preempt_count) = preempt_count_addresses(btf).unwrap_or((0, 0));
        KernelContext {
            per_cpu_offsets,
            preempt_count,
            task_flags_offset: task_offset("flags"),
            task_mm_offset: task_offset("mm"),
        }
    }
}

/// Where the programs read the preempt count: `__per_cpu_offset` and the
/// count's per-CPU address, or why they cannot (for doctor).
pub fn preempt_count() -> Result<(u64, u64)> {
    preempt_count_addresses(KernelBtf::load().ok().as_ref())
}

/// The preempt count is its own per-CPU variable (`__preempt_count`) on most
/// kernels, and a member of `pcpu_hot` on 6.2 to 6.14.
fn preempt_count_addresses(btf: Option<&KernelBtf>) -> Result<(u64, u64)> {
    let symbols = kernel_symbols(&["__per_cpu_offset", "__preempt_count", "pcpu_hot"])?;
    let offsets = *symbols.get("__per_cpu_offset").ok_or_else(|| {
        anyhow!("/proc/kallsyms has no __per_cpu_offset (CONFIG_KALLSYMS_ALL off?)")
    })?;
    let count = match (symbols.get("__preempt_count"), symbols.get("pcpu_hot")) {
        (Some(&address), _) => address,
        (None, Some(&hot)) => {
            let btf = btf.ok_or_else(|| anyhow!("no BTF to find pcpu_hot.preempt_count"))?;
            hot + u64::from(btf.member_offset("pcpu_hot", &["preempt_count"])?)
        }
        (None, None) => return Err(anyhow!("/proc/kallsyms names no preempt count")),
    };
    Ok((offsets, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_offsets_come_from_btf() {
        let context = KernelContext::find(KernelBtf::load().ok().as_ref());
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            assert!(context.task_flags_offset > 0, "{context:?}");
            assert!(
                context.task_mm_offset > context.task_flags_offset,
                "{context:?}"
            );
        }
    }
}
