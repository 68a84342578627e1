//! Hardware execute breakpoints on kernel functions, for the kernel source
//! where kprobes and fentry are refused.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, Context, Result};
use aya::programs::PerfEvent;
use profiler_common::names;

use super::{Probes, DEFAULT_BREAKPOINT_FUNCTIONS};
use crate::attachment::DEBUG_REGISTERS;
use crate::host::facts;
use crate::host::kallsyms::kernel_symbol_address;
use crate::host::perf_event;

/// A disabled hardware execute breakpoint at `address` on `cpu`, all tasks.
/// It takes one of the CPU's debug registers from the moment it exists.
fn open_breakpoint_event(address: u64, cpu: u32) -> Result<OwnedFd> {
    use perf_event::sys;
    let mut attr = perf_event::attr(sys::PERF_TYPE_BREAKPOINT, 0);
    attr.bp_type = sys::HW_BREAKPOINT_X;
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_3.bp_addr = address;
    attr.__bindgen_anon_4.bp_len = std::mem::size_of::<libc::c_long>() as u64;
    attr.set_disabled(1);
    perf_event::open_on_cpu(&mut attr, cpu)
        .context("perf_event_open of an execute breakpoint failed")
}

/// A hardware execute breakpoint at `address` on `cpu`, all tasks, firing
/// the BPF program `program_fd` on every hit. Closing the fd detaches it.
fn open_breakpoint(address: u64, cpu: u32, program_fd: RawFd) -> Result<OwnedFd> {
    let event = open_breakpoint_event(address, cpu)?;
    let fd = event.as_raw_fd();
    // SAFETY: plain ioctls on the event we own.
    unsafe {
        if perf_event_open_sys::ioctls::SET_BPF(fd, program_fd as u32) < 0
            || perf_event_open_sys::ioctls::ENABLE(fd, 0) < 0
        {
            return Err(anyhow!(
                "attaching to the breakpoint failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(event)
}

/// Debug registers free on `cpu` now, counted by reserving them with
/// disabled breakpoints (never enabled, closed again before returning).
/// An error when the kernel gives no hardware breakpoints at all.
pub fn free_debug_registers(cpu: u32) -> Result<usize> {
    let address = kernel_symbol_address(DEFAULT_BREAKPOINT_FUNCTIONS[0])?;
    let mut reserved = Vec::new();
    let first = open_breakpoint_event(address, cpu);
    match first {
        Ok(event) => reserved.push(event),
        // ENOSPC: the kernel has breakpoints and all of them are taken.
        Err(err)
            if err
                .chain()
                .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
                .any(|io| io.raw_os_error() == Some(libc::ENOSPC)) =>
        {
            return Ok(0)
        }
        Err(err) => return Err(err),
    }
    while reserved.len() < DEBUG_REGISTERS {
        match open_breakpoint_event(address, cpu) {
            Ok(event) => reserved.push(event),
            Err(_) => break,
        }
    }
    Ok(reserved.len())
}

impl Probes {
    /// One execute breakpoint per CPU at the function's first instruction
    /// (x86 has four debug registers per CPU, so at most four functions).
    /// A breakpoint lives as long as `self`: doctor's tries add up too.
    /// The events are opened here rather than through aya, which asks for
    /// `precise_ip` on breakpoints: the kernel then refuses (EPROTO) programs
    /// that take stacks unless the event samples callchains itself.
    pub(super) fn attach_breakpoint(&mut self, slot: usize, function: &str) -> Result<()> {
        let address = kernel_symbol_address(function)?;
        let first_use = self.loaded.insert("breakpoint_kernel_fn");
        let program: &mut PerfEvent = self.program("breakpoint_kernel_fn")?.try_into()?;
        if first_use {
            program.load()?;
        }
        let program_fd = program.fd()?.as_fd().as_raw_fd();
        // All CPUs or none: a function watched on some CPUs only would give
        // counts that look exact and are not. Dropping `events` closes them.
        let mut events = Vec::new();
        for cpu in facts::online_cpus()? {
            events.push(
                open_breakpoint(address, cpu, program_fd)
                    .with_context(|| format!("breakpoint on CPU {cpu}"))?,
            );
        }
        self.hash_map::<u64, u32>(names::KERNEL_FN_INDEX)?
            .insert(address, slot as u32, 0)?;
        self.breakpoints.extend(events);
        self.breakpoint_functions += 1;
        Ok(())
    }
}
