//! JSON: what was recorded how, per-process totals by source, per-stack counts.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::aggregate::Profile;
use crate::collect::LostCounts;
use crate::probes::Attachment;
use crate::source::{clock_name, Source};
use crate::symbolize::{Frame, StackState};

#[derive(Serialize)]
struct JsonProfile<'a> {
    duration_secs: f64,
    sources: &'a [Source],
    backends: Vec<String>,
    hooks: &'a [Attachment],
    total: u64,
    lost: LostCounts,
    lost_mapping_records: u64,
    processes: Vec<JsonProcess<'a>>,
    stacks: Vec<JsonStack<'a>>,
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    comm: &'a str,
    total: u64,
    by_source: &'a BTreeMap<Source, u64>,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    pid: u32,
    comm: &'a str,
    source: Source,
    call: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    clock: Option<String>,
    leaf: String,
    state: StackState,
    /// Outermost first.
    frames: &'a [Frame],
    count: u64,
}

pub fn render(profile: &Profile) -> Result<Vec<u8>> {
    let json = JsonProfile {
        duration_secs: profile.info.duration.as_secs_f64(),
        sources: &profile.info.sources,
        backends: profile.info.backends(),
        hooks: &profile.info.attachments,
        total: profile.total,
        lost: profile.info.lost,
        lost_mapping_records: profile.info.lost_mapping_records,
        processes: profile
            .processes
            .iter()
            .map(|p| JsonProcess {
                pid: p.pid,
                comm: &p.comm,
                total: p.total,
                by_source: &p.by_source,
            })
            .collect(),
        stacks: profile
            .stacks
            .iter()
            .map(|s| JsonStack {
                pid: s.pid,
                comm: &s.comm,
                source: s.read.source(),
                call: s.read.call(),
                clock: clock_name(s.read.clock_id),
                leaf: s.read.leaf(),
                state: s.state,
                frames: &s.frames,
                count: s.count,
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&json)?;
    bytes.push(b'\n');
    Ok(bytes)
}
