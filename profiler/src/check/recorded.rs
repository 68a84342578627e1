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

/// More stacks than a recording can hold (`--count-entries` allows at most
/// 2^22 counted stacks) are refused: each costs about 60 bytes however short
/// its line, so 256 MiB of `a 1` lines would otherwise take gigabytes.
pub const MAX_STACKS: usize = 1 << 22;

/// Frames of one stack, the process name and the leaf included: clockprof
/// writes at most 127 user and 127 kernel frames, each of which inlining can
/// make a few. Past this a line is refused: diff's flamegraph and judge's
/// per-frame sets would otherwise grow with a line of a million `;`.
pub const MAX_FRAMES: usize = 4096;

/// One stack: the process name, the frames outermost first, and the clock
/// read as its leaf, as in the folded output.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedStack {
    /// The frames joined by `;`, as one string: a `String` per frame would
    /// cost 24 bytes and an allocation for each, so a line of 1 MB of `;`
    /// would grow to 24 MB and more.
    folded: String,
    pub count: u64,
    /// Samples of a sampling source (`vdso`), not counted events.
    pub sampled: bool,
}

impl RecordedStack {
    /// `frames` as folded stacks write them: printable, without `;`.
    pub fn new<'a>(frames: impl IntoIterator<Item = &'a str>, count: u64, sampled: bool) -> Self {
        let mut folded = String::new();
        for (index, frame) in frames.into_iter().enumerate() {
            if index > 0 {
                folded.push(';');
            }
            folded.push_str(&printable::folded(frame));
        }
        RecordedStack {
            folded,
            count,
            sampled,
        }
    }

    /// The process name, the frames outermost first, then the leaf.
    pub fn frames(&self) -> std::str::Split<'_, char> {
        self.folded.split(';')
    }

    /// The function that read the clock: the frame just above the leaf (the
    /// process name when no frame was resolved).
    pub fn reader(&self) -> &str {
        let mut from_leaf = self.folded.rsplit(';');
        let leaf = from_leaf.next().unwrap_or("");
        from_leaf.next().unwrap_or(leaf)
    }
}

/// The sum of the stacks' counts; bad input when it passes u64 (a recording
/// of clockprof's never comes near: 2^64 reads are 580 years at a billion a
/// second).
fn checked_total(stacks: &[RecordedStack]) -> Result<u64> {
    stacks.iter().try_fold(0u64, |total, stack| {
        total.checked_add(stack.count).ok_or_else(|| {
            anyhow::anyhow!(
                "its counts add up to more than {}, which no recording holds",
                u64::MAX
            )
        })
    })
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
                    folded: stack.folded_stack(&profile.info.kernel_functions),
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
        let recorded = if text.trim_start().starts_with('{') {
            parse_json(text)?
        } else {
            parse_folded(text)?
        };
        checked_total(&recorded.stacks)?;
        Ok(recorded)
    }

    /// The sum of every stack's count; parse has checked that it fits.
    pub fn total(&self) -> u64 {
        self.stacks
            .iter()
            .fold(0u64, |total, s| total.saturating_add(s.count))
    }

    /// Folded lines (`STACK COUNT`), identical stacks merged, sorted.
    pub fn folded_lines(&self) -> Vec<String> {
        crate::aggregate::merged_folded_lines(
            self.stacks.iter().map(|s| (s.folded.clone(), s.count)),
        )
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

fn too_many_stacks() -> anyhow::Error {
    anyhow::anyhow!("it holds more than {MAX_STACKS} stacks, more than a recording can")
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
        if stacks.len() == MAX_STACKS {
            return Err(too_many_stacks());
        }
        if stack.matches(';').count() >= MAX_FRAMES {
            bail!(
                "line {} has more than {MAX_FRAMES} frames, more than clockprof writes",
                number + 1
            );
        }
        let sampled = leaf_is_sampled(stack.rsplit(';').next().unwrap_or(""));
        // clockprof's folded output is printable already; a hand-made or
        // hostile file's control characters are escaped here, once, so
        // that diff and check print no ESC or CR they read.
        stacks.push(RecordedStack {
            folded: printable::printable(stack).into_owned(),
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
    if recording.stacks.len() > MAX_STACKS {
        return Err(too_many_stacks());
    }
    if let Some(index) = recording
        .stacks
        .iter()
        .position(|s| s.frames.len() + 2 > MAX_FRAMES)
    {
        bail!(
            "stack {} has more than {MAX_FRAMES} frames, more than clockprof writes",
            index + 1
        );
    }
    let stacks = recording
        .stacks
        .into_iter()
        .map(|stack| {
            // As SymbolizedSample::folded_stack names them: printable, no `;`.
            let frames: Vec<std::borrow::Cow<str>> = stack
                .frames
                .iter()
                .map(|f| {
                    if f.kernel {
                        format!("{}_[k]", f.function).into()
                    } else {
                        f.function.as_str().into()
                    }
                })
                .collect();
            let sampled = Source::ALL
                .iter()
                .any(|s| s.name() == stack.source && s.is_sampled());
            RecordedStack::new(
                std::iter::once(stack.comm.as_str())
                    .chain(frames.iter().map(|f| f.as_ref()))
                    .chain(std::iter::once(stack.leaf.as_str())),
                stack.count,
                sampled,
            )
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
            interposers: Default::default(),
            read: ClockRead::new(event, clock_id),
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
    fn frames_cost_no_allocation_each() {
        // Empty frames are kept as the line itself, not as a String per
        // frame (24x the line).
        let line = format!("{} 1\n", ";".repeat(MAX_FRAMES - 1));
        let recorded = Recorded::parse(&line).unwrap();
        let stack = &recorded.stacks[0];
        assert_eq!(stack.frames().count(), MAX_FRAMES);
        assert_eq!(std::mem::size_of_val(stack), 40);
        assert_eq!(stack.reader(), "");
        assert_eq!(Recorded::parse("a 1\n").unwrap().stacks[0].reader(), "a");
    }

    #[test]
    fn more_frames_than_clockprof_writes_are_refused() {
        let line = format!("a 1\n{} 1\n", ";".repeat(1_000_000));
        let err = Recorded::parse(&line).unwrap_err().to_string();
        assert_eq!(
            err,
            "line 2 has more than 4096 frames, more than clockprof writes"
        );
        let frames = vec![r#"{"function": "f"}"#; MAX_FRAMES - 1].join(",");
        let json = format!(
            r#"{{"stacks": [{{"comm": "a", "source": "syscall", "leaf": "l", "frames": [{frames}], "count": 1}}]}}"#
        );
        assert!(Recorded::parse(&json)
            .unwrap_err()
            .to_string()
            .starts_with("stack 1 has more than 4096 frames"));
    }

    #[test]
    fn deep_json_is_an_error_not_a_stack_overflow() {
        let depth = 200_000;
        let json = format!("{{\"stacks\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(Recorded::parse(&json).is_err());
    }

    #[test]
    fn more_stacks_than_a_recording_holds_are_refused() {
        let text = "a 1\n".repeat(MAX_STACKS + 1);
        let err = Recorded::parse(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "it holds more than 4194304 stacks, more than a recording can"
        );
        assert_eq!(
            Recorded::parse(&"a 1\n".repeat(1000)).unwrap().stacks.len(),
            1000
        );
    }

    #[test]
    fn counts_that_overflow_are_one_sentence() {
        let text = format!("a;b 1\na;c {}\n", u64::MAX);
        let err = Recorded::parse(&text).unwrap_err().to_string();
        assert_eq!(
            err,
            "its counts add up to more than 18446744073709551615, which no recording holds"
        );
        let json = format!(
            r#"{{"stacks": [
            {{"comm": "a", "source": "syscall", "leaf": "l", "frames": [], "count": {}}},
            {{"comm": "a", "source": "syscall", "leaf": "l", "frames": [], "count": 1}}]}}"#,
            u64::MAX
        );
        assert!(Recorded::parse(&json)
            .unwrap_err()
            .to_string()
            .contains("add up"));
        let fits = Recorded::parse(&format!("a {}\n", u64::MAX)).unwrap();
        assert_eq!(fits.total(), u64::MAX);
    }

    #[test]
    fn control_characters_of_folded_input_are_escaped() {
        let recorded = Recorded::parse("fx;\x1b[2Jevil\r;[syscall time] 3\n").unwrap();
        assert_eq!(
            recorded.folded_lines(),
            ["fx;\\x1b[2Jevil\\r;[syscall time] 3"]
        );
        assert_eq!(recorded.stacks[0].reader(), "\\x1b[2Jevil\\r");
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
