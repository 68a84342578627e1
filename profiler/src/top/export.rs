//! Flamegraphs of what the live view counted so far, through the same
//! aggregate and export code as `clockprof record`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::model::{KeyCount, Snapshot, Stages};
use super::stacks::StackCache;
use crate::aggregate::{Profile, RecordingInfo};
use crate::export::{self, Existing, Format, OutputFile};
use crate::symbolize::SymbolizedSample;

/// What `e`/`E` write: a flamegraph to look at, folded stacks to diff.
const SVG: Format = export::svg::FORMAT;
const FOLDED: Format = export::folded::FORMAT;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Process(u32),
    All,
}

/// Where an export went.
#[derive(Debug)]
pub struct Exported {
    pub svg: PathBuf,
    pub folded: PathBuf,
    pub reads: u64,
}

/// Writes `scope`'s reads since the view started as `clockprof-SCOPE-TIME.svg`
/// and `.folded` into `dir`. `info` says how they were counted.
pub fn export(
    snapshot: &Snapshot,
    scope: Scope,
    cache: &mut StackCache,
    stages: &mut impl Stages,
    info: RecordingInfo,
    dir: &Path,
) -> Result<Exported> {
    let keys: Vec<&KeyCount> = match scope {
        Scope::Process(pid) => snapshot.keys_of(pid).iter().collect(),
        Scope::All => snapshot
            .keys
            .iter()
            .chain(snapshot.retired.iter())
            .collect(),
    };
    cache.resolve(keys.iter().map(|k| &k.key), stages);
    let samples = keys
        .iter()
        .filter_map(|count| {
            let stack = cache.get(&count.key)?;
            let pid = count.key.pid;
            let mut sample = SymbolizedSample {
                pid,
                start_time: count.key.start_time,
                comm: crate::symbolize::process_name(pid, count.key.process.comm.as_deref()),
                cgroup: count.key.process.cgroup.clone(),
                interposers: Default::default(),
                read: count.key.read,
                frames: stack.frames.clone(),
                state: stack.state,
                exact_frames: stack.exact_frames,
                count: count.total,
            };
            crate::symbolize::interrupt::attribute(&mut sample);
            Some(sample)
        })
        .collect();
    let profile = Profile::new(samples, info);

    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the export directory {}", dir.display()))?;
    let stem = match scope {
        Scope::Process(pid) => format!("clockprof-{pid}-{}", local_timestamp()),
        Scope::All => format!("clockprof-all-{}", local_timestamp()),
    };
    let (svg, svg_file, folded, folded_file) = create_pair(&dir, &stem)?;
    svg_file.commit(&SVG.render(&profile)?)?;
    folded_file.commit(&FOLDED.render(&profile)?)?;
    Ok(Exported {
        svg,
        folded,
        reads: profile.total,
    })
}

/// Claims `STEM.svg` and `STEM.folded` in `dir`, or `STEM-2.*`, `-3`, ... when
/// an export of the same second (or anything else) holds the name. Names are
/// claimed exclusively and links never followed (see OutputFile), so a name
/// planted in a shared directory is skipped, never written through. Both are
/// checked before either is written, so an unwritable directory leaves neither.
fn create_pair(dir: &Path, stem: &str) -> Result<(PathBuf, OutputFile, PathBuf, OutputFile)> {
    for attempt in 1..=100 {
        let stem = match attempt {
            1 => stem.to_string(),
            n => format!("{stem}-{n}"),
        };
        let svg = dir.join(format!("{stem}.{}", SVG.extension()));
        let folded = dir.join(format!("{stem}.{}", FOLDED.extension()));
        if svg.symlink_metadata().is_ok() || folded.symlink_metadata().is_ok() {
            continue;
        }
        let svg_file = OutputFile::create(&svg, Existing::Keep)?;
        let folded_file = OutputFile::create(&folded, Existing::Keep)?;
        return Ok((svg, svg_file, folded, folded_file));
    }
    anyhow::bail!(
        "no free export name {stem}-N.{} in {}",
        SVG.extension(),
        dir.display()
    )
}

/// `YYYYmmdd-HHMMSS` in local time, for file names that sort by time.
fn local_timestamp() -> String {
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into
    // the tm we own.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_are_claimed_never_reused_nor_followed() {
        let scratch = tempfile::Builder::new()
            .prefix("clockprof-export-names-")
            .tempdir()
            .unwrap();
        let dir = scratch.path();
        // A planted link on the first name and a file on the second.
        std::os::unix::fs::symlink("/etc/passwd", dir.join("clockprof-all-x.svg")).unwrap();
        std::fs::write(dir.join("clockprof-all-x-2.folded"), b"mine").unwrap();
        let (svg, svg_file, folded, folded_file) = create_pair(dir, "clockprof-all-x").unwrap();
        assert_eq!(svg, dir.join("clockprof-all-x-3.svg"));
        assert_eq!(folded, dir.join("clockprof-all-x-3.folded"));
        svg_file.commit(b"<svg/>").unwrap();
        folded_file.commit(b"a 1\n").unwrap();
        assert_eq!(
            std::fs::read(dir.join("clockprof-all-x-2.folded")).unwrap(),
            b"mine"
        );
        assert!(std::fs::symlink_metadata(dir.join("clockprof-all-x.svg"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&svg).unwrap(), b"<svg/>");
    }

    #[test]
    fn timestamps_sort_as_text() {
        let stamp = local_timestamp();
        assert_eq!(stamp.len(), 15, "{stamp}");
        assert_eq!(&stamp[8..9], "-");
        assert!(stamp.starts_with("20"), "{stamp}");
    }
}
