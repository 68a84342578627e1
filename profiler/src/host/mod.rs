//! Facts of the host that every stage stands on: /proc, tracefs, the
//! clocksource, containers, the binaries processes map, perf events, and the
//! one safe way to open a file another user controls. Nothing here knows about
//! probes, sessions or profiles.

pub mod binaries;
pub mod clocksource;
pub mod container;
pub mod elf_section;
pub mod facts;
pub mod gopclntab;
pub mod interposer;
pub mod kallsyms;
pub mod kernel_log;
pub mod maps;
pub mod mountinfo;
pub mod notify;
pub mod overlay;
pub mod peer;
pub mod perf_event;
pub mod printable;
pub mod safe_open;
pub mod tracefs;
