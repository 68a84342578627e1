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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// What a recording says of the clock: the clocksource, whether the vDSO
/// was seen reading it, and what the kernel log said of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClockFacts {
    pub clocksource: Clocksource,
    /// Measured (measure_vdso_reads); `None` where it could not be.
    pub vdso_reads: Option<bool>,
    /// The kernel log's clocksource changes (the watchdog's verdicts, the
    /// switches), oldest first.
    pub changes: Vec<crate::host::kernel_log::ClocksourceLine>,
}

impl ClockFacts {
    pub fn gather() -> ClockFacts {
        ClockFacts {
            clocksource: Clocksource::read(),
            vdso_reads: measure_vdso_reads().ok(),
            changes: crate::host::kernel_log::clocksource_changes(),
        }
    }

    /// `hpet; kernel log: [0.317433] clocksource: Switched to clocksource hpet`.
    pub fn why(&self) -> String {
        let mut why = format!(
            "clocksource {}",
            self.clocksource.name.as_deref().unwrap_or("unknown")
        );
        if self.vdso_reads == Some(false) {
            why.push_str(", which the vDSO was measured unable to read");
        }
        if let Some(line) = self.changes.last() {
            why.push_str("; kernel log: ");
            why.push_str(&line.quoted());
        }
        why
    }
}

/// Whether the vDSO reads the clocksource in user space on this host now,
/// measured rather than told from the clocksource's name: a few
/// `clock_gettime(CLOCK_MONOTONIC)` calls through the vDSO's own entry point
/// are made while a perf counter on the `sys_enter_clock_gettime`
/// tracepoint counts this thread's system calls. None become one when the
/// vDSO reads the clock; each does when it falls back (a `kvm-clock`
/// without its stable bit, a `tsc` the kernel marked unstable: names the
/// fixed list calls capable). Needs tracefs (`tracefs::prepare`) and
/// CAP_PERFMON.
pub fn measure_vdso_reads() -> anyhow::Result<bool> {
    VdsoProbe::new()?.vdso_reads()
}

/// What measuring needs, found once: the tracepoint's id (read from
/// tracefs, which only the thread that mounted it privately may see) and
/// the vDSO's entry point.
#[derive(Debug)]
pub struct VdsoProbe {
    tracepoint: u64,
    clock_gettime: ClockGettime,
}

impl VdsoProbe {
    pub fn new() -> anyhow::Result<VdsoProbe> {
        use anyhow::Context;
        let id_path =
            crate::host::tracefs::events_dir().join("syscalls/sys_enter_clock_gettime/id");
        let tracepoint = std::fs::read_to_string(&id_path)
            .with_context(|| format!("could not read {}", id_path.display()))?
            .trim()
            .parse()
            .context("the tracepoint id is not a number")?;
        let clock_gettime =
            vdso_clock_gettime().context("this process's vDSO has no clock_gettime")?;
        Ok(VdsoProbe {
            tracepoint,
            clock_gettime,
        })
    }

    /// Measures, on the calling thread (see measure_vdso_reads).
    pub fn vdso_reads(&self) -> anyhow::Result<bool> {
        use anyhow::Context;
        use std::io::Read;
        use std::os::fd::{FromRawFd, OwnedFd};

        const CALLS: u64 = 8;
        let mut attr = crate::host::perf_event::attr(
            crate::host::perf_event::sys::PERF_TYPE_TRACEPOINT,
            self.tracepoint,
        );
        // SAFETY: attr is a valid perf_event_attr whose size field matches
        // it; pid 0 and cpu -1 count this thread wherever it runs.
        let fd = unsafe {
            perf_event_open_sys::perf_event_open(
                &mut attr,
                0,
                -1,
                -1,
                crate::host::perf_event::sys::PERF_FLAG_FD_CLOEXEC.into(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("could not count this thread's clock_gettime system calls");
        }
        // SAFETY: perf_event_open just returned this fd, owned by nobody else.
        let counter = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        for _ in 0..CALLS {
            // SAFETY: the vDSO's clock_gettime has this signature; ts is valid.
            unsafe { (self.clock_gettime)(libc::CLOCK_MONOTONIC, &mut ts) };
        }
        let mut count = [0u8; 8];
        (&counter)
            .read_exact(&mut count)
            .context("could not read the system call counter")?;
        Ok(u64::from_ne_bytes(count) < CALLS)
    }
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// The vDSO's own `clock_gettime`, found in the image the kernel mapped
/// into this process (its dynamic symbols name it `__vdso_clock_gettime`).
fn vdso_clock_gettime() -> Option<ClockGettime> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let range = crate::host::facts::own_vdso().ok()?;
    let image = crate::host::facts::own_vdso_image()?;
    let elf = object::File::parse(&*image).ok()?;
    let symbol = elf
        .dynamic_symbols()
        .find(|s| s.name() == Ok("__vdso_clock_gettime") && s.is_definition())?;
    // The image's addresses are relative to where it was linked: its first
    // segment, mapped at the start of [vdso].
    let linked_at = elf.segments().map(|s| s.address()).min()?;
    let address = range
        .start
        .checked_add(symbol.address().checked_sub(linked_at)?)?;
    if address >= range.end {
        return None;
    }
    // SAFETY: the address is the vDSO's exported clock_gettime, mapped
    // executable in this process for its whole life.
    Some(unsafe { std::mem::transmute::<usize, ClockGettime>(usize::try_from(address).ok()?) })
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
    fn the_vdso_entry_point_is_found_and_tells_the_time() {
        let clock_gettime = vdso_clock_gettime().expect("every x86-64 process maps a vDSO");
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the vDSO's clock_gettime; ts is valid.
        assert_eq!(unsafe { clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
        assert!(ts.tv_sec > 0 || ts.tv_nsec > 0);
    }

    #[test]
    fn reads_this_hosts_clocksource() {
        let current = Clocksource::read().name.expect("sysfs names it");
        assert!(available().contains(&current));
    }
}
