//! The command line, as ../shared/DESIGN.md fixes it (tests outside the project
//! rely on these names). Each command owns its options (`record/options.rs`,
//! ...); this file only puts them under one `clockprof` and is imported by
//! nothing but `lib.rs`.

use clap::{Parser, Subcommand};

use crate::check::diff::DiffArgs;
use crate::check::options::CheckArgs;
use crate::doctor::DoctorArgs;
use crate::record::options::RecordArgs;
use crate::serve::options::ServeArgs;
use crate::top::options::TopArgs;

#[derive(Parser, Debug)]
#[command(
    name = "clockprof",
    // `-V` and `--version` alike: the commit and date are what a bug report
    // needs.
    version = crate::version::FULL,
    long_version = crate::version::FULL,
    about = "Find which processes and call stacks read the clock most (eBPF).",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Count clock reads per process and call stack, then write them in one
    /// of the output formats (see -f) or print a summary.
    Record(RecordArgs),
    /// Live full-screen view: processes by clock reads per second, their
    /// stacks, flamegraph export.
    Top(TopArgs),
    /// What this kernel and user allow: each hook type really tried (with the
    /// kernel's reason where refused), the clocksource, and which backend and
    /// program variant each source would use.
    Doctor(DoctorArgs),
    /// Record COMMAND as `record -- COMMAND` does, then judge its clock reads
    /// against budgets: exit 0 within every budget, 3 over one; COMMAND's own
    /// failure status wins over both.
    // check judges the COMMAND it runs: -p and -a are not offered (and are
    // refused if given anyway).
    #[command(mut_arg("pids", |a| a.hide(true)), mut_arg("all", |a| a.hide(true)))]
    Check(CheckArgs),
    /// What grew and shrank between two recordings (folded or JSON), by the
    /// functions that read the clock; -o writes a differential flamegraph.
    Diff(DiffArgs),
    /// Run as a daemon for a fleet: keep the probes attached host-wide and
    /// serve Prometheus metrics and pprof clock profiles over HTTP, and
    /// optionally push profiles to Pyroscope.
    #[command(mut_arg("pids", |a| a.hide(true)), after_help = crate::serve::limits::help())]
    Serve(ServeArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::UnwindMode;
    use crate::session::options::HOST_WIDE_STACK_EVERY;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::try_parse_from(args).map_err(|e| e.to_string().lines().next().unwrap().to_string())
    }

    #[test]
    fn out_of_range_values_are_refused_in_one_line() {
        for args in [
            &["clockprof", "record", "-d", "1e20"][..],
            &["clockprof", "record", "-d", "nan"],
            &["clockprof", "record", "-d", "inf"],
            &["clockprof", "record", "-d", "0"],
            &["clockprof", "record", "-d=-1"],
            &["clockprof", "record", "-d", "soon"],
            &["clockprof", "top", "-i", "1e20"],
            &["clockprof", "top", "-i", "0"],
            &["clockprof", "top", "-i", "nan"],
            &["clockprof", "record", "-F", "0"],
            &["clockprof", "record", "-F", "1000000"],
            &["clockprof", "record", "--stack-entries", "0"],
            &["clockprof", "record", "--count-entries", "0"],
            &["clockprof", "record", "--stack-entries", "99999999"],
            &["clockprof", "record", "--count-entries", "4294967295"],
            &["clockprof", "record", "--kernel-fn", "../x"],
            &["clockprof", "record", "--user", "root"],
            &["clockprof", "record", "--stack-every", "0"],
            &["clockprof", "top", "--stack-every", "65537"],
            &["clockprof", "record", "--stack-every", "-1"],
            &["clockprof", "serve", "--listen", "localhost"],
            &["clockprof", "serve", "--push", "ftp://pyroscope:4040"],
            &["clockprof", "serve", "--push-user", "alice"],
            &["clockprof", "serve", "--push-header", "Authorization: x"],
            &["clockprof", "serve", "--listen", "unix:relative.sock"],
            &["clockprof", "serve", "--push-interval", "0"],
            &["clockprof", "serve", "--label", "host"],
            &["clockprof", "serve", "--label", "9x=1"],
            &["clockprof", "serve", "--label", "__name__=x"],
            &["clockprof", "serve", "--label", "process=x"],
            &["clockprof", "serve", "--label", "host=a\nb"],
            &["clockprof", "serve", "--label", "host="],
        ] {
            let err = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} was accepted"));
            assert!(err.starts_with("error: "), "{args:?}: {err}");
        }
    }

    #[test]
    fn sane_values_pass() {
        let cli = parse(&["clockprof", "record", "-d", "0.5", "--stack-entries", "1"]).unwrap();
        let Command::Record(args) = cli.command else {
            panic!("not record")
        };
        assert_eq!(args.duration, Some(0.5));
        assert!(parse(&["clockprof", "top", "-i", "0.1"]).is_ok());
        assert!(parse(&["clockprof", "record", "--user", "root", "--", "true"]).is_ok());
        let cli = parse(&[
            "clockprof",
            "serve",
            "--label",
            "host=web-1",
            "--label",
            "cluster=eu",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:9742");
        assert_eq!(args.push_interval, 15);
        assert_eq!(
            args.labels,
            [
                ("host".to_string(), "web-1".to_string()),
                ("cluster".to_string(), "eu".to_string())
            ]
        );
    }

    #[test]
    fn stack_every_defaults_to_every_stack_unless_host_wide() {
        let record = |args: &[&str]| -> u32 {
            let Command::Record(record) = parse(args).unwrap().command else {
                panic!("not record")
            };
            let command = !record.command.is_empty();
            record.probe.session_config(record.all, command).stack_every
        };
        assert_eq!(record(&["clockprof", "record", "--", "true"]), 1);
        assert_eq!(record(&["clockprof", "record", "-p", "1"]), 1);
        assert_eq!(record(&["clockprof", "record"]), HOST_WIDE_STACK_EVERY);
        assert_eq!(
            record(&["clockprof", "record", "-a"]),
            HOST_WIDE_STACK_EVERY
        );
        assert_eq!(
            record(&["clockprof", "record", "--stack-every", "7", "--", "true"]),
            7
        );
        assert_eq!(record(&["clockprof", "record", "--stack-every", "1"]), 1);
        let Command::Top(top) = parse(&["clockprof", "top"]).unwrap().command else {
            panic!("not top")
        };
        assert_eq!(
            top.probe.session_config(false, false).stack_every,
            HOST_WIDE_STACK_EVERY
        );
    }

    #[test]
    fn unwinding_defaults_to_auto_unless_host_wide() {
        let unwind = |args: &[&str]| -> UnwindMode {
            let Command::Record(record) = parse(args).unwrap().command else {
                panic!("not record")
            };
            let command = !record.command.is_empty();
            record.probe.session_config(record.all, command).unwind
        };
        assert_eq!(
            unwind(&["clockprof", "record", "--", "true"]),
            UnwindMode::Auto
        );
        assert_eq!(
            unwind(&["clockprof", "record", "-p", "1"]),
            UnwindMode::Auto
        );
        assert_eq!(
            unwind(&["clockprof", "record", "-a"]),
            UnwindMode::FramePointers
        );
        assert_eq!(
            unwind(&["clockprof", "record", "-a", "--unwind", "auto"]),
            UnwindMode::Auto
        );
        assert_eq!(
            unwind(&["clockprof", "record", "--unwind", "fp", "--", "true"]),
            UnwindMode::FramePointers
        );
    }
}
