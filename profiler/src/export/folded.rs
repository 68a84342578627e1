//! Folded stacks, one `ROOT;FRAME;...;LEAF COUNT` line per stack (DESIGN.md).

use anyhow::Result;

use super::Format;
use crate::aggregate::Profile;

pub const FORMAT: Format = Format {
    name: "folded",
    extension: "folded",
    help:
        "folded stacks, `ROOT;FRAME;...;LEAF COUNT` per line (flamegraph.pl, inferno, speedscope)",
    render,
};

fn render(profile: &Profile) -> Result<Vec<u8>> {
    let mut text = profile.folded_lines().join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_fixed_profile_exactly() {
        let folded = FORMAT
            .render(&crate::aggregate::test_profile::profile())
            .unwrap();
        // Sorted by stack; pids 100 and 101 share a name, so their vDSO
        // stack is one line (12 + 3).
        assert_eq!(
            String::from_utf8(folded).unwrap(),
            "[interrupt];asm_sysvec_apic_timer_interrupt_[k];hrtimer_interrupt_[k];[kernel ktime_get] 4\n\
             cron;[lost stack];do_syscall_64_[k];[syscall time] 5\n\
             cron;main;poll;[libc clock_gettime REALTIME] 7\n\
             server;main;handle;do_syscall_64_[k];[syscall clock_gettime MONOTONIC] 30\n\
             server;main;tick;[vdso sample] 15\n"
        );
    }
}
