//! Man pages and shell completions for clockprof, rendered from the same clap
//! definitions as `clockprof --help` (src/cli.rs), so they cannot drift from
//! it. `cargo xtask dist` runs it:
//!
//!     cargo run --release -p profiler --example generate_docs -- OUT_DIR YYYY-MM-DD
//!
//! writes OUT_DIR/man/clockprof.1 and one page per command
//! (clockprof-record.1 ...), dated YYYY-MM-DD, and
//! OUT_DIR/completions/{clockprof.bash,_clockprof,clockprof.fish}.

use std::fs;
use std::path::{Path, PathBuf};

use clap_complete::Shell;
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, date] = args.as_slice() else {
        eprintln!("usage: generate_docs OUT_DIR YYYY-MM-DD");
        std::process::exit(2);
    };
    if let Err(err) = generate(Path::new(out), date) {
        eprintln!("generate_docs: {err}");
        std::process::exit(1);
    }
}

fn generate(out: &Path, date: &str) -> std::io::Result<()> {
    let man_dir = out.join("man");
    let completion_dir = out.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&completion_dir)?;

    // clap's own `help` command has no page of its own; built, every
    // command's display name is `clockprof-record` and so on.
    let mut command = clockprof::command().disable_help_subcommand(true);
    command.build();
    let pages: Vec<String> = commands(&command)
        .iter()
        .map(|cmd| page_name(cmd).to_string())
        .collect();
    // The footer names the release on every page (clap_mangen would put
    // the command's own name and no version on a command's page).
    let version = command.get_version().unwrap_or_default();
    let source = format!(
        "clockprof {}",
        version.split(' ').next().unwrap_or_default()
    );
    for cmd in commands(&command) {
        let see_also: Vec<&str> = if cmd.get_name() == command.get_name() {
            pages[1..].iter().map(String::as_str).collect()
        } else {
            vec![command.get_name()]
        };
        write_page(&man_dir, cmd, date, &source, &see_also)?;
    }

    for (shell, file) in [
        (Shell::Bash, "clockprof.bash"),
        (Shell::Zsh, "_clockprof"),
        (Shell::Fish, "clockprof.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), "clockprof", &mut text);
        fs::write(completion_dir.join(file), text)?;
    }
    Ok(())
}

/// clockprof and its commands, not hidden ones, clockprof first.
fn commands(root: &clap::Command) -> Vec<&clap::Command> {
    std::iter::once(root)
        .chain(root.get_subcommands().filter(|cmd| !cmd.is_hide_set()))
        .collect()
}

fn page_name(cmd: &clap::Command) -> &str {
    cmd.get_display_name().unwrap_or(cmd.get_name())
}

/// PAGE.1: clap_mangen's page with its help tables made lists, then SEE
/// ALSO naming the other pages and the documentation the package installs.
fn write_page(
    dir: &Path,
    cmd: &clap::Command,
    date: &str,
    source: &str,
    see_also: &[&str],
) -> std::io::Result<PathBuf> {
    let man = Man::new(cmd.clone())
        .date(date)
        .source(source)
        .manual("clockprof manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    let mut page = tables_as_lists(&String::from_utf8_lossy(&page));
    let mut refs: Vec<String> = see_also.iter().map(|name| format!("{name}(1), ")).collect();
    refs.push("and /usr/share/doc/clockprof/ (README.md.gz, docs/, examples/)".to_string());
    page.push_str(
        &Roff::new()
            .control("SH", ["SEE ALSO"])
            .text([roman(refs.concat())])
            .to_roff(),
    );
    fs::write(&path, page)?;
    Ok(path)
}

/// --help lays some help out as a table for an 80-column terminal: an entry
/// per line indented by two spaces, its name, two or more spaces, its text,
/// continued on lines indented to that text (the sources of -s, serve's
/// endpoints). Copied into a man page, groff fills those lines into a ragged
/// mess at any other width, so each table becomes a list (`.RS`, a `.TP` per
/// entry with its text joined, `.RE`) that man lays out for the reader's
/// terminal.
fn tables_as_lists(page: &str) -> String {
    let mut out = String::new();
    let mut in_table = false;
    for line in page.lines() {
        let entry = line.strip_prefix("  ").and_then(|rest| {
            let (name, text) = rest.split_once("  ")?;
            let text = text.trim_start();
            (!name.is_empty() && !name.starts_with(' ') && !text.is_empty()).then_some((name, text))
        });
        match entry {
            Some((name, text)) => {
                if !in_table {
                    out.push_str(".RS\n");
                    in_table = true;
                }
                out.push_str(&format!(
                    ".TP 10\n{}\n{}\n",
                    text_line(name),
                    text_line(text)
                ));
            }
            None if in_table && line.starts_with("   ") => {
                out.push_str(&text_line(line.trim_start()));
                out.push('\n');
            }
            None => {
                if in_table {
                    out.push_str(".RE\n");
                    in_table = false;
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if in_table {
        out.push_str(".RE\n");
    }
    out
}

/// A line of text that stays text once its indentation is gone: roff takes
/// a line starting with `.` or `'` for a request.
fn text_line(text: &str) -> String {
    match text.starts_with(['.', '\'']) {
        true => format!("\\&{text}"),
        false => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_tables_become_lists_and_the_rest_is_kept() {
        let page = ".TP\nSources:\n  syscall  system calls (fentry,\n           kprobe)\n  \
                    go       uprobes\n.TP\n.SH EXTRA\nEndpoints:\n  /metrics  text\n  \
                    /debug/pprof/clock?seconds=N  pprof\n\nRequest limits:  none\n";
        assert_eq!(
            tables_as_lists(page),
            ".TP\nSources:\n.RS\n.TP 10\nsyscall\nsystem calls (fentry,\nkprobe)\n\
             .TP 10\ngo\nuprobes\n.RE\n.TP\n.SH EXTRA\nEndpoints:\n.RS\n.TP 10\n/metrics\n\
             text\n.TP 10\n/debug/pprof/clock?seconds=N\npprof\n.RE\n\nRequest limits:  none\n"
        );
    }
}
