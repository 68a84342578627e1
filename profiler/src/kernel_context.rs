//! What the kernel-source programs need to tell whose clock read they see:
//! where each CPU's preempt count lives (interrupt context), and where a
//! task's flags and mm are (kernel threads, which have no user stack).
//!
//! bpf_this_cpu_ptr needs a BTF ksym, which aya's Rust programs cannot
//! carry, so the per-CPU address is computed by hand in the program:
//! `__per_cpu_offset[cpu]` plus the variable's address from /proc/kallsyms.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};

use crate::kernel_btf::KernelBtf;

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
    pub fn find() -> KernelContext {
        let btf = KernelBtf::load().ok();
        let task_offset = |member| {
            btf.as_ref()
                .and_then(|btf| btf.member_offset("task_struct", &[member]).ok())
                .unwrap_or(0)
        };
        let (per_cpu_offsets, preempt_count) =
            preempt_count_addresses(btf.as_ref()).unwrap_or((0, 0));
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

/// Addresses of `names` in /proc/kallsyms, of any symbol type (per-CPU
/// variables are absolute `A` symbols on x86-64 up to 6.14). Needs root, else
/// every address reads as zero and none is returned.
pub fn kernel_symbols(names: &[&str]) -> Result<HashMap<String, u64>> {
    let kallsyms =
        std::fs::read_to_string("/proc/kallsyms").context("could not read /proc/kallsyms")?;
    Ok(parse_kallsyms(&kallsyms, names))
}

fn parse_kallsyms(kallsyms: &str, names: &[&str]) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    for line in kallsyms.lines() {
        let mut fields = line.split_whitespace();
        let (Some(address), Some(_kind), Some(name)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // Module symbols come last; the kernel's own one wins.
        if names.contains(&name) && !found.contains_key(name) {
            if let Ok(address) = u64::from_str_radix(address, 16) {
                if address != 0 {
                    found.insert(name.to_string(), address);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_any_symbol_kind_and_skips_hidden_addresses() {
        let text = "ffffffff81000000 T _stext\n\
                    000000000002c880 A __preempt_count\n\
                    ffffffff83a1b2c0 D __per_cpu_offset\n\
                    0000000000000000 T hidden\n\
                    ffffffffc0001000 t __per_cpu_offset\t[some_module]\n";
        let found = parse_kallsyms(text, &["__preempt_count", "__per_cpu_offset", "hidden"]);
        assert_eq!(found.get("__preempt_count"), Some(&0x2c880));
        assert_eq!(found.get("__per_cpu_offset"), Some(&0xffffffff83a1b2c0));
        assert_eq!(found.get("hidden"), None);
    }

    #[test]
    fn task_offsets_come_from_btf() {
        let context = KernelContext::find();
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            assert!(context.task_flags_offset > 0, "{context:?}");
            assert!(
                context.task_mm_offset > context.task_flags_offset,
                "{context:?}"
            );
        }
    }
}
