//! Loading and attaching one program of the eBPF object through aya, by
//! kind of hook. A program the kernel loads but will not attach is unloaded
//! again, so a failed try leaves nothing behind.

use anyhow::{anyhow, Result};
use aya::programs::kprobe::KProbeError;
use aya::programs::{FEntry, KProbe, ProgramError, RawTracePoint, TracePoint};
use aya::Btf;

use super::Probes;
use crate::host::kallsyms::KernelLacks;

/// Where aya reads the kprobe PMU's perf type; absent without kprobes.
const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

impl Probes {
    pub(super) fn attach_tracepoint(&mut self, program: &str, tracepoint: &str) -> Result<()> {
        let (category, name) = tracepoint
            .split_once(':')
            .expect("tracepoints are named category:name");
        let tracepoint: &mut TracePoint = self.program(program)?.try_into()?;
        tracepoint.load()?;
        if let Err(err) = tracepoint.attach(category, name) {
            let _ = tracepoint.unload();
            return Err(err.into());
        }
        Ok(())
    }

    /// Attaches a raw tracepoint program once: several hooks may share it.
    pub(super) fn attach_raw_tracepoint(
        &mut self,
        program: &'static str,
        tracepoint: &str,
    ) -> Result<()> {
        if self.loaded.contains(program) {
            return Ok(());
        }
        let (_, name) = tracepoint
            .split_once(':')
            .expect("tracepoints are named category:name");
        let raw: &mut RawTracePoint = self.program(program)?.try_into()?;
        raw.load()?;
        if let Err(err) = raw.attach(name) {
            let _ = raw.unload();
            return Err(err.into());
        }
        self.loaded.insert(program);
        Ok(())
    }

    pub(super) fn attach_kprobe(&mut self, program: &str, function: &str) -> Result<()> {
        // aya's attach reads the kprobe PMU's type before anything else. Read
        // it first here: without kprobes, loading the program would have the
        // verifier walk it for nothing (40-80 ms of start-up per hook, on a
        // kernel that refuses kprobes), and the refusal is the same.
        let pmu_type = std::path::Path::new(KPROBE_PMU_TYPE);
        if let Err(io_error) = std::fs::metadata(pmu_type) {
            return Err(ProgramError::KProbeError(KProbeError::FileError {
                filename: pmu_type.to_path_buf(),
                io_error,
            })
            .into());
        }
        let kprobe: &mut KProbe = self.program(program)?.try_into()?;
        kprobe.load()?;
        if let Err(err) = kprobe.attach(function, 0) {
            let _ = kprobe.unload();
            return Err(err.into());
        }
        Ok(())
    }

    pub(super) fn attach_fentry(&mut self, program: &str, function: &str) -> Result<()> {
        let btf = self
            .btf
            .get_or_insert_with(|| {
                Btf::from_sys_fs().map_err(|err| format!("the kernel has no usable BTF ({err})"))
            })
            .clone()
            .map_err(KernelLacks)?;
        let fentry: &mut FEntry = self.program(program)?.try_into()?;
        fentry.load(function, &btf)?;
        if let Err(err) = fentry.attach() {
            let _ = fentry.unload();
            return Err(err.into());
        }
        Ok(())
    }

    pub(super) fn program(&mut self, name: &str) -> Result<&mut aya::programs::Program> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
    }
}
