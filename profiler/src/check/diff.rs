//! `clockprof diff BASE NEW`: what grew and shrank between two recordings.
//!
//! Functions are ranked by the clock reads they make directly (as the frame
//! just above the clock read): ranked by reads under them instead, `main` and
//! the process name would top every list, as they hold every stack. The
//! whole stacks go to `-o`: a differential flamegraph (inferno's) or the
//! two-column folded form it is drawn from.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use inferno::{differential, flamegraph};

use crate::check::recorded::Recorded;
use crate::export::{self, Existing, Format, OutputFile};
use crate::host::printable::printable;
use crate::say::say;

/// What `diff -o` writes: the differential counterpart of `record`'s svg or
/// folded output, named by that format's extension (export::FORMATS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DiffFormat {
    Svg,
    Folded,
}

impl DiffFormat {
    const ALL: [DiffFormat; 2] = [DiffFormat::Svg, DiffFormat::Folded];

    /// The export format whose extension this one's files take.
    fn format(self) -> Format {
        match self {
            DiffFormat::Svg => export::svg::FORMAT,
            DiffFormat::Folded => export::folded::FORMAT,
        }
    }

    /// Short, for the refusal.
    fn about(self) -> &'static str {
        match self {
            DiffFormat::Svg => "differential flamegraph",
            DiffFormat::Folded => "STACK BASE NEW",
        }
    }

    /// What it is, and what to know of it, for `--help`.
    fn help(self) -> (&'static str, &'static str) {
        match self {
            DiffFormat::Svg => (
                "a differential flamegraph",
                "widths from NEW, red where reads grew, blue where they shrank",
            ),
            DiffFormat::Folded => ("the two-column folded form", "`STACK BASE_COUNT NEW_COUNT`"),
        }
    }

    fn of(path: &Path) -> Result<DiffFormat> {
        let format = Format::of_path(path);
        match DiffFormat::ALL
            .into_iter()
            .find(|d| Some(d.format()) == format)
        {
            Some(diff_format) => Ok(diff_format),
            None => bail!(
                "cannot tell the diff output format of `{}`: name it {}",
                path.display(),
                DiffFormat::ALL
                    .map(|d| format!(".{} ({})", d.format().extension(), d.about()))
                    .join(" or ")
            ),
        }
    }
}

/// `clockprof diff BASE NEW`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The earlier recording: folded stacks or JSON written by clockprof.
    #[arg(value_name = "BASE")]
    pub base: PathBuf,

    /// The later recording.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,

    #[arg(short = 'o', long = "output", value_name = "FILE", help = output_help())]
    pub output: Option<PathBuf>,

    /// How many functions to list in each direction.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top: u64,
}

/// `diff -o`'s help, its extensions from the table of formats.
pub fn output_help() -> String {
    let kinds = DiffFormat::ALL.map(|d| {
        let (what, detail) = d.help();
        format!("{what} (.{}: {detail})", d.format().extension())
    });
    format!("Write {}", kinds.join(" or "))
}

pub fn diff(args: DiffArgs) -> Result<i32> {
    let output = match &args.output {
        Some(path) => Some((
            DiffFormat::of(path)?,
            OutputFile::create(path, Existing::Replace)?,
        )),
        None => None,
    };
    let base = Recorded::load(&args.base, "BASE")?;
    let new = Recorded::load(&args.new, "NEW")?;
    print!(
        "{}",
        report(
            &base,
            &new,
            (
                &args.base.display().to_string(),
                &args.new.display().to_string()
            ),
            args.top as usize
        )
    );
    if let Some((format, file)) = output {
        let folded = two_column_folded(&base, &new)?;
        let contents = match format {
            DiffFormat::Folded => folded.into_bytes(),
            DiffFormat::Svg => svg(&folded, &args.base, &args.new)?,
        };
        let path = file.path().display().to_string();
        file.commit(&contents)?;
        say!("wrote {path}");
    }
    Ok(0)
}

#[derive(Clone, Debug, PartialEq)]
struct Change {
    function: String,
    base: u64,
    new: u64,
}

impl Change {
    fn delta(&self) -> i128 {
        self.new as i128 - self.base as i128
    }

    fn percent(&self) -> String {
        if self.base == 0 {
            "new".to_string()
        } else {
            format!("{:+.1}%", self.delta() as f64 * 100.0 / self.base as f64)
        }
    }
}

fn reads_by_reader(recorded: &Recorded) -> BTreeMap<&str, u64> {
    let mut reads = BTreeMap::new();
    for stack in &recorded.stacks {
        let reads: &mut u64 = reads.entry(stack.reader()).or_default();
        *reads = reads.saturating_add(stack.count);
    }
    reads
}

/// Functions whose direct reads changed: grown ones most first, then shrunk
/// ones most first.
fn changes(base: &Recorded, new: &Recorded) -> (Vec<Change>, Vec<Change>) {
    let base_reads = reads_by_reader(base);
    let new_reads = reads_by_reader(new);
    let mut all: Vec<Change> = base_reads
        .keys()
        .chain(new_reads.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|&function| Change {
            function: function.to_string(),
            base: base_reads.get(function).copied().unwrap_or(0),
            new: new_reads.get(function).copied().unwrap_or(0),
        })
        .filter(|c| c.delta() != 0)
        .collect();
    all.sort_by(|a, b| b.delta().cmp(&a.delta()).then(a.function.cmp(&b.function)));
    let (grew, mut shrank): (Vec<Change>, Vec<Change>) =
        all.into_iter().partition(|c| c.delta() > 0);
    shrank.sort_by(|a, b| a.delta().cmp(&b.delta()).then(a.function.cmp(&b.function)));
    (grew, shrank)
}

fn report(base: &Recorded, new: &Recorded, names: (&str, &str), top: usize) -> String {
    let totals = Change {
        function: String::new(),
        base: base.total(),
        new: new.total(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BASE {}: {} clock reads; NEW {}: {} clock reads ({:+}, {})",
        printable(names.0),
        totals.base,
        printable(names.1),
        totals.new,
        totals.delta(),
        totals.percent()
    );
    let (grew, shrank) = changes(base, new);
    for (title, list) in [
        ("Grew most (clock reads each function makes directly)", grew),
        ("Shrank most", shrank),
    ] {
        let _ = writeln!(
            out,
            "\n{title}:\n{:>12} {:>12} {:>12} {:>9}  FUNCTION",
            "BASE", "NEW", "CHANGE", "CHANGE%"
        );
        if list.is_empty() {
            let _ = writeln!(out, "{:>12}", "(none)");
        }
        for change in list.iter().take(top) {
            let _ = writeln!(
                out,
                "{:>12} {:>12} {:>+12} {:>9}  {}",
                change.base,
                change.new,
                change.delta(),
                change.percent(),
                change.function
            );
        }
        if list.len() > top {
            let _ = writeln!(out, "{:>12} ... and {} more", "", list.len() - top);
        }
    }
    out
}

/// `STACK BASE_COUNT NEW_COUNT` lines, sorted, as inferno's differential
/// module makes them (its own order is a hash map's).
fn two_column_folded(base: &Recorded, new: &Recorded) -> Result<String> {
    let lines = |r: &Recorded| {
        let mut text = r.folded_lines().join("\n");
        text.push('\n');
        text
    };
    let mut out = Vec::new();
    // Counts are exact events: no normalization between the two runs.
    differential::from_readers(
        differential::Options::default(),
        lines(base).as_bytes(),
        lines(new).as_bytes(),
        &mut out,
    )
    .context("inferno could not pair the two recordings' stacks")?;
    let text = String::from_utf8(out).context("inferno wrote non-UTF-8 stacks")?;
    let mut sorted: Vec<&str> = text.lines().collect();
    sorted.sort_unstable();
    let mut folded = sorted.join("\n");
    if !folded.is_empty() {
        folded.push('\n');
    }
    Ok(folded)
}

fn svg(two_column: &str, base: &Path, new: &Path) -> Result<Vec<u8>> {
    if two_column.is_empty() {
        bail!("BASE and NEW hold no stacks, so there is no flamegraph to draw");
    }
    let mut options = flamegraph::Options::default();
    options.title = format!(
        "clockprof diff: {} -> {} (widths: NEW; red: grew, blue: shrank)",
        base.display(),
        new.display()
    );
    options.count_name = "reads".to_string();
    options.name_type = "Function:".to_string();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, two_column.lines(), &mut svg)
        .context("inferno could not draw the differential flamegraph")?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(text: &str) -> Recorded {
        Recorded::parse(text).unwrap()
    }

    fn base() -> Recorded {
        recorded(
            "fx;main;hot;[syscall clock_gettime MONOTONIC] 100\n\
             fx;main;warm;[syscall clock_gettime REALTIME] 50\n\
             fx;main;gone;[syscall time] 7\n\
             fx;main;same;[syscall time] 3\n",
        )
    }

    fn new() -> Recorded {
        recorded(
            "fx;main;hot;[syscall clock_gettime MONOTONIC] 1000\n\
             fx;main;warm;[syscall clock_gettime REALTIME] 40\n\
             fx;main;fresh;[syscall time] 5\n\
             fx;main;same;[syscall time] 3\n",
        )
    }

    #[test]
    fn ranks_functions_by_their_direct_reads_both_ways() {
        let (grew, shrank) = changes(&base(), &new());
        let names = |list: &[Change]| list.iter().map(|c| c.function.clone()).collect::<Vec<_>>();
        assert_eq!(names(&grew), ["hot", "fresh"]);
        assert_eq!(names(&shrank), ["warm", "gone"]);
        assert_eq!(grew[0].percent(), "+900.0%");
        assert_eq!(grew[1].percent(), "new");
        assert_eq!(shrank[1].percent(), "-100.0%");
    }

    #[test]
    fn report_lists_the_grown_function_first() {
        let text = report(&base(), &new(), ("a.folded", "b.json"), 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "BASE a.folded: 160 clock reads; NEW b.json: 1048 clock reads (+888, +555.0%)"
        );
        assert!(lines[1].is_empty());
        assert!(lines[2].starts_with("Grew most"));
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["100", "1000", "+900", "+900.0%", "hot"]
        );
        assert!(lines[5].contains("... and 1 more"), "{text}");
        assert_eq!(
            lines[9].split_whitespace().collect::<Vec<_>>(),
            ["50", "40", "-10", "-20.0%", "warm"]
        );
    }

    #[test]
    fn report_prints_no_control_character_it_read() {
        let evil = recorded("fx;\x1b]0;pwned\x07;[syscall time] 5\n");
        let text = report(&base(), &evil, ("a\x1b[2J.folded", "b"), 10);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\x1b[2J.folded"), "{text}");
        assert!(text.contains("\\x07"), "{text}");
    }

    #[test]
    fn two_column_folded_pairs_every_stack() {
        let folded = two_column_folded(&base(), &new()).unwrap();
        assert_eq!(
            folded,
            "fx;main;fresh;[syscall time] 0 5\n\
             fx;main;gone;[syscall time] 7 0\n\
             fx;main;hot;[syscall clock_gettime MONOTONIC] 100 1000\n\
             fx;main;same;[syscall time] 3 3\n\
             fx;main;warm;[syscall clock_gettime REALTIME] 50 40\n"
        );
        let svg = String::from_utf8(svg(&folded, Path::new("a"), Path::new("b")).unwrap()).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("hot"));
        assert!(svg.contains("clockprof diff: a -&gt; b"), "{svg}");
    }

    #[test]
    fn output_format_from_extension() {
        assert_eq!(DiffFormat::of(Path::new("d.svg")).unwrap(), DiffFormat::Svg);
        assert_eq!(
            DiffFormat::of(Path::new("d.folded")).unwrap(),
            DiffFormat::Folded
        );
        let err = DiffFormat::of(Path::new("d.json")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot tell the diff output format of `d.json`: name it .svg (differential flamegraph) or .folded (STACK BASE NEW)"
        );
        assert_eq!(
            output_help(),
            "Write a differential flamegraph (.svg: widths from NEW, red where reads grew, blue where they shrank) or the two-column folded form (.folded: `STACK BASE_COUNT NEW_COUNT`)"
        );
    }
}
