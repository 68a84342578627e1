//! Kernel symbol addresses from /proc/kallsyms: the functions a breakpoint
//! goes on, and the per-CPU variables the kernel source reads.

use std::collections::HashMap;
use std::fmt;

use anyhow::{Context, Result};

/// What a backend needs and this kernel has not (BTF, the function):
/// refusal_reason says it as it is, without an errno.
#[derive(Debug)]
pub struct KernelLacks(pub String);

impl fmt::Display for KernelLacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelLacks {}

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

/// The address of a kernel function from /proc/kallsyms (needs root, else
/// the addresses read as zero).
pub fn kernel_symbol_address(function: &str) -> Result<u64> {
    kernel_symbols(&[function])?
        .remove(function)
        .ok_or_else(|| KernelLacks(format!("the kernel has no function {function}")).into())
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
}
