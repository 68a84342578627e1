//! Host facts the live view's header shows next to the rates.

const CURRENT_CLOCKSOURCE: &str =
    "/sys/devices/system/clocksource/clocksource0/current_clocksource";

/// Clocksources the vDSO can read from user space (doctor's list). Under any
/// other, every clock read becomes a syscall, and costs ten times as much.
use crate::doctor::VDSO_CLOCKSOURCES as VDSO_CAPABLE;

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
            name: std::fs::read_to_string(CURRENT_CLOCKSOURCE)
                .ok()
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty()),
        }
    }

    pub fn forces_syscalls(&self) -> bool {
        self.name
            .as_deref()
            .is_some_and(|name| !VDSO_CAPABLE.contains(&name))
    }
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
    }

    #[test]
    fn reads_this_hosts_clocksource() {
        assert!(Clocksource::read().name.is_some());
    }
}
