//! The kernel's clocksource, read in one place for `doctor` and the live
//! view's header: under a clocksource the vDSO cannot read, every clock read
//! becomes a system call and costs ten times as much.

pub const DIR: &str = "/sys/devices/system/clocksource/clocksource0";

/// Clocksources the x86/arm64 vDSO reads directly (VDSO_CLOCKMODE_*); any
/// other makes every clock_gettime a real system call.
pub const VDSO_CAPABLE: &[&str] = &[
    "tsc",
    "kvm-clock",
    "arch_sys_counter",
    "hyperv_clocksource_tsc_page",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clocksource {
    /// `None` when sysfs does not say.
    pub name: Option<String>,
}

impl Clocksource {
    /// The kernel's current clocksource (it can change at run time, e.g. when
    /// the TSC is found unstable).
    pub fn read() -> Clocksource {
        Clocksource {
            name: read_words("current_clocksource").into_iter().next(),
        }
    }

    pub fn vdso_capable(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(|name| VDSO_CAPABLE.contains(&name))
    }

    pub fn forces_syscalls(&self) -> bool {
        self.name.is_some() && !self.vdso_capable()
    }
}

/// The clocksources this host could switch to.
pub fn available() -> Vec<String> {
    read_words("available_clocksource")
}

fn read_words(file: &str) -> Vec<String> {
    std::fs::read_to_string(format!("{DIR}/{file}"))
        .map(|text| text.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_vdso_clocksources_force_syscalls() {
        let source = |name: Option<&str>| Clocksource {
            name: name.map(str::to_string),
        };
        assert!(!source(Some("tsc")).forces_syscalls());
        assert!(!source(Some("kvm-clock")).forces_syscalls());
        assert!(!source(Some("arch_sys_counter")).forces_syscalls());
        assert!(!source(Some("hyperv_clocksource_tsc_page")).forces_syscalls());
        assert!(source(Some("hpet")).forces_syscalls());
        assert!(source(Some("acpi_pm")).forces_syscalls());
        assert!(!source(None).forces_syscalls());
        assert!(!source(None).vdso_capable());
    }

    #[test]
    fn reads_this_hosts_clocksource() {
        let current = Clocksource::read().name.expect("sysfs names it");
        assert!(available().contains(&current));
    }
}
