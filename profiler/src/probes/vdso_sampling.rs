//! The vdso source: cpu-clock sampling on every CPU, kept by the program
//! only inside the vDSO, which it finds through kernel offsets.

use anyhow::{Context, Result};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::PerfEvent;

use super::{btf, Probes};
use crate::attachment::{Attachment, Backend};
use crate::host::facts;
use crate::sources::Source;

/// Where the current task's vDSO lives, for the sampling program: offsets of
/// task_struct.mm and mm_struct.context.vdso from BTF, and the vDSO's text
/// size (the same for every process of this kernel: read from our own).
pub(super) fn vdso_globals(btf: &Result<btf::KernelBtf>) -> Result<(u32, u32, u64)> {
    let btf = btf.as_ref().map_err(|err| anyhow::anyhow!("{err:#}"))?;
    let mm = btf.member_offset("task_struct", &["mm"])?;
    let vdso = btf.member_offset("mm_struct", &["context", "vdso"])?;
    let own = facts::own_vdso().context("the kernel has no vDSO to sample")?;
    Ok((mm, vdso, own.end - own.start))
}

impl Probes {
    /// cpu-clock sampling on every online CPU at `frequency` Hz; the program
    /// keeps only samples inside the vDSO.
    pub fn attach_vdso_sampling(&mut self, frequency: u64) -> Result<()> {
        let sampler: &mut PerfEvent = self.program("vdso_sample")?.try_into()?;
        sampler.load()?;
        for cpu in facts::online_cpus()? {
            sampler
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency),
                    false,
                )
                .with_context(|| format!("could not start cpu-clock sampling on CPU {cpu}"))?;
        }
        self.attachments.push(Attachment {
            source: Source::of(&profiler_common::sources::vdso::SPEC),
            hook: format!("cpu-clock@{frequency}Hz"),
            backend: Backend::PerfEvent,
        });
        Ok(())
    }
}
