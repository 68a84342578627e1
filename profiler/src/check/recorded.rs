//! A recording as `check` and `diff` judge it: folded stacks with their
//! counts, whether from the profile just recorded or read back from a folded
//! or JSON file that clockprof wrote earlier.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::aggregate::Profile;
use crate::host::printable;
use crate::host::safe_open::open_regular;
use crate::sources::Source;

/// Larger inputs are refused rather than read: a recording of the busiest
/// host stays far below it.
const MAX_INPUT_BYTES: u64 = 256 << 20;

/// One stack: the process name, the frames outermost first, and the clock
/// read as its leaf, as in the folded output.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedStack {
    pub frames: Vec<String>,
    pub count: u64,
    /// Samples of a sampling source (`vdso`), not counted events.
    pub sampled: bool,
}

impl RecordedStack {
    /// The function that read the clock: the frame just above the leaf (the
    /// process name when no frame was resolved).
    pub fn reader(&self) -> &str {
        let below_leaf = self.frames.len().saturating_sub(2);
        self.frames.get(below_leaf).map_or("", String::as_str)
    }

    pub fn folded(&self) -> String {
        self.frames.join(";")
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    pub stacks: Vec<RecordedStack>,
}

impl Recorded {
    pub fn from_profile(profile: &Profile) -> Recorded {
        Recorded {
            stacks: profile
                .stacks
                .iter()
                .map(|stack| RecordedStack {
                    frames: stack
                        .folded_stack(&profile.info.kernel_functions)
                        .split(';')
                        .map(String::from)
                        .collect(),
                    count: stack.count,
                    sampled: stack.read.source().is_sampled(),
                })
                .collect(),
        }
    }

    /// Reads a folded or JSON recording; `what` names it in errors (e.g.
    /// "the baseline").
    pub fn load(path: &Path, what: &str) -> Result<Recorded> {
        let text = read_input_file(path, what)?;
        Recorded::parse(&text).with_context(|| {
            format!(
                "{what} {} is not a folded or JSON recording written by clockprof",
                path.display()
            )
        })
    }

    pub fn parse(text: &str) -> Result<Recorded> {
        if text.trim_start().starts_with('{') {
            parse_json(text)
        } else {
            parse_folded(text)
        }
    }

    /// Folded lines (`STACK COUNT`), identical stacks merged, sorted.
    pub fn folded_lines(&self) -> Vec<String> {
        crate::aggregate::merged_folded_lines(self.stacks.iter().map(|s| (s.folded(), s.count)))
    }
}

/// Reads a file named on the command line. clockprof runs as root: a FIFO
/// or device planted at the path must not block or flood it, so only a
/// regular file of bounded size is read (safe_open's checks, on the opened
/// descriptor).
pub fn read_input_file(path: &Path, what: &str) -> Result<String> {
    let describe =
        |err: std::io::Error| anyhow::anyhow!("cannot read {what} {}: {err}", path.display());
    let mut file = open_regular(path, None, MAX_INPUT_BYTES)
        .map_err(describe)?
        .file;
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_INPUT_BYTES)
        .read_to_end(&mut bytes)
        .map_err(describe)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("cannot read {what} {}: not UTF-8 text", path.display()))
}

/// Sampled stacks end in the vdso source's leaf, `[vdso sample]`.
fn leaf_is_sampled(leaf: &str) -> bool {
    Source::ALL
        .iter()
        .filter(|s| s.is_sampled())
        .any(|s| leaf.starts_with(&format!("[{} ", s.name())))
}

fn parse_folded(text: &str) -> Result<Recorded> {
    let mut stacks = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = line
            .rsplit_once(' ')
            .and_then(|(stack, count)| Some((stack, count.trim().parse::<u64>().ok()?)))
            .filter(|(stack, _)| !stack.is_empty());
        let Some((stack, count)) = parsed else {
            bail!("line {} is not `STACK COUNT`", number + 1);
        };
        let frames: Vec<String> = stack.split(';').map(String::from).collect();
        let sampled = leaf_is_sampled(frames.last().map_or("", String::as_str));
        stacks.push(RecordedStack {
            frames,
            count,
            sampled,
        });
    }
    Ok(Recorded { stacks })
}

/// The part of export/json.rs's output that stacks are rebuilt from.
#[derive(Deserialize)]
struct JsonRecording {
    stacks: Vec<JsonStack>,
}

#[derive(Deserialize)]
struct JsonStack {
    comm: String,
    source: String,
    leaf: String,
    frames: Vec<JsonFrame>,
    count: u64,
}

#[derive(Deserialize)]
struct JsonFrame {
    function: String,
    #[serde(default)]
    kernel: bool,
}

fn parse_json(text: &str) -> Result<Recorded> {
    let recording: JsonRecording = serde_json::from_str(text)
        .map_err(|err| anyhow::anyhow!("its JSON does not hold clockprof's stacks ({err})"))?;
    let stacks = recording
        .stacks
        .into_iter()
        .map(|stack| {
            // As SymbolizedSample::folded_stack names them: printable, no `;`.
            let mut frames = Vec::with_capacity(stack.frames.len() + 2);
            frames.push(stack.comm);
            frames.extend(stack.frames.into_iter().map(|f| {
                if f.kernel {
                    format!("{}_[k]", f.function)
                } else {
                    f.function
                }
            }));
            frames.push(stack.leaf);
            let frames = frames.iter().map(|f| printable::folded(f)).collect();
            let sampled = Source::ALL
                .iter()
                .any(|s| s.name() == stack.source && s.is_sampled());
            RecordedStack {
                frames,
                count: stack.count,
                sampled,
            }
        })
        .collect();
    Ok(Recorded { stacks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_and_json_give_the_same_stacks() {
        let folded = "fx;main;hot;[syscall clock_gettime MONOTONIC] 20\n\
                      fx;main;[vdso] __vdso_clock_gettime;[vdso sample] 3\n\
                      fx;main;do_x_[k];[kernel ktime_get] 2\n";
        let json = r#"{"duration_secs": 1.0, "stacks": [
            {"pid": 1, "comm": "fx", "source": "syscall", "leaf": "[syscall clock_gettime MONOTONIC]",
             "frames": [{"function": "main", "kernel": false}, {"function": "hot", "kernel": false}], "count": 20},
            {"pid": 1, "comm": "fx", "source": "vdso", "leaf": "[vdso sample]",
             "frames": [{"function": "main", "kernel": false}, {"function": "[vdso] __vdso_clock_gettime", "kernel": false}], "count": 3},
            {"pid": 1, "comm": "fx", "source": "kernel", "leaf": "[kernel ktime_get]",
             "frames": [{"function": "main", "kernel": false}, {"function": "do_x", "kernel": true}], "count": 2}
        ]}"#;
        let from_folded = Recorded::parse(folded).unwrap();
        let from_json = Recorded::parse(json).unwrap();
        assert_eq!(from_folded, from_json);
        assert_eq!(
            from_folded
                .stacks
                .iter()
                .map(|s| s.sampled)
                .collect::<Vec<_>>(),
            vec![false, true, false]
        );
        assert_eq!(from_folded.stacks[0].reader(), "hot");
        assert_eq!(from_folded.stacks[2].reader(), "do_x_[k]");
    }

    /// What check judges of a live profile is what it reads back from the
    /// profile's JSON and folded exports.
    #[test]
    fn exports_read_back_as_the_profile_they_came_from() {
        use crate::aggregate::{Profile, RecordingInfo};
        use crate::export;
        use crate::sources::ClockRead;
        use crate::symbolize::{Frame, StackState, SymbolizedSample};
        use profiler_common::CLOCK_ID_NONE;

        let frame = |function: &str, kernel: bool| Frame {
            function: function.into(),
            module: None,
            kernel,
        };
        let sample = |comm: &str, frames: Vec<Frame>, event, clock_id, count| SymbolizedSample {
            pid: 7,
            start_time: 0,
            comm: comm.into(),
            cgroup: None,
            read: ClockRead { event, clock_id },
            frames,
            state: StackState::Complete,
            exact_frames: 0,
            count,
        };
        let profile = Profile::new(
            vec![
                sample(
                    "fx",
                    vec![
                        frame("main", false),
                        frame("a;b\nforged 9", false),
                        frame("do_x", true),
                    ],
                    profiler_common::sources::syscall::CLOCK_GETTIME,
                    1,
                    30,
                ),
                sample(
                    "fx",
                    vec![frame("main", false)],
                    profiler_common::sources::syscall::TIME,
                    CLOCK_ID_NONE,
                    4,
                ),
                sample(
                    "fx",
                    vec![frame("spin", false)],
                    profiler_common::sources::vdso::SAMPLE,
                    CLOCK_ID_NONE,
                    9,
                ),
            ],
            RecordingInfo::default(),
        );
        let live = Recorded::from_profile(&profile);
        assert_eq!(
            live.stacks.iter().map(|s| s.sampled).collect::<Vec<_>>(),
            vec![false, true, false]
        );
        let json = export::json::FORMAT.render(&profile).unwrap();
        let from_json = Recorded::parse(std::str::from_utf8(&json).unwrap()).unwrap();
        assert_eq!(from_json, live);
        let folded = export::folded::FORMAT.render(&profile).unwrap();
        let from_folded = Recorded::parse(std::str::from_utf8(&folded).unwrap()).unwrap();
        assert_eq!(from_folded.folded_lines(), live.folded_lines());
        assert_eq!(from_folded.folded_lines(), profile.folded_lines());
    }

    #[test]
    fn bad_folded_line_is_named_by_number() {
        let err = Recorded::parse("a;b 1\n\na;c x\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3 is not `STACK COUNT`");
        assert!(Recorded::parse("{\"stacks\": 3}").is_err());
    }

    #[test]
    fn fifo_and_directory_are_refused_without_blocking() {
        let scratch = tempfile::Builder::new()
            .prefix("clockprof-input-")
            .tempdir()
            .unwrap();
        let dir = scratch.path();
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = read_input_file(&fifo, "the baseline").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_input_file(dir, "the baseline").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
