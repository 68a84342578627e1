//! `Clockprof`: one way for every suite to say "run clockprof with these
//! options on this COMMAND and give me what it wrote", instead of a wrapper
//! per suite.
//!
//! ```ignore
//! let recorded = Clockprof::record()
//!     .sources("libc")
//!     .output(&dir.join("out.folded"))
//!     .run([c_fixture().as_os_str(), os("libc"), os("100")])
//!     .success();
//! let folded = recorded.folded();
//! ```

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use crate::{clockprof, parse_folded, read_json};

/// `s` as an argument of a command line.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A clockprof command line being put together.
#[must_use]
pub struct Clockprof {
    args: Vec<OsString>,
    output: Option<PathBuf>,
}

impl Clockprof {
    /// `clockprof record`.
    pub fn record() -> Clockprof {
        Clockprof::subcommand("record")
    }

    /// `clockprof check`.
    pub fn check() -> Clockprof {
        Clockprof::subcommand("check")
    }

    /// `clockprof NAME`.
    pub fn subcommand(name: &str) -> Clockprof {
        Clockprof {
            args: vec![name.into()],
            output: None,
        }
    }

    /// `-s SOURCES`.
    pub fn sources(self, sources: &str) -> Clockprof {
        self.args(["-s", sources])
    }

    /// `--stack-every N`.
    pub fn stack_every(self, every: u32) -> Clockprof {
        self.args(["--stack-every", &every.to_string()])
    }

    /// `-o PATH`; the result reads it back (`text`, `json`, `folded`).
    pub fn output(mut self, path: &Path) -> Clockprof {
        self = self.args([os("-o"), path.as_os_str()]);
        self.output = Some(path.to_path_buf());
        self
    }

    /// More options, as given.
    pub fn args<I, S>(mut self, args: I) -> Clockprof
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// The whole command line for `-- COMMAND...`.
    pub fn argv<I, S>(self, command: I) -> Vec<OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = self.args;
        argv.push("--".into());
        argv.extend(command.into_iter().map(|a| a.as_ref().to_os_string()));
        argv
    }

    /// Runs `clockprof ARGS -- COMMAND...` to its end.
    pub fn run<I, S>(self, command: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = self.output.clone();
        let argv = self.argv(command);
        Run::of(Command::new(clockprof()).args(&argv).output(), output)
    }
}

/// What a finished clockprof run left: its status, what it said, and the
/// file it wrote (if it was given `-o`).
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub output: Option<PathBuf>,
}

impl Run {
    fn of(output: std::io::Result<Output>, path: Option<PathBuf>) -> Run {
        let output = output.expect("clockprof runs");
        Run {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).to_string(),
            output: path,
        }
    }

    /// The run, once it is asserted to have succeeded.
    #[track_caller]
    pub fn success(self) -> Run {
        assert!(self.status.success(), "clockprof failed: {}", self.stderr);
        self
    }

    fn output_path(&self) -> &Path {
        self.output
            .as_deref()
            .expect("the run was given an output file (Clockprof::output)")
    }

    /// The output file's text, empty when it was not written.
    pub fn text(&self) -> String {
        std::fs::read_to_string(self.output_path()).unwrap_or_default()
    }

    /// The output file as JSON.
    pub fn json(&self) -> serde_json::Value {
        read_json(self.output_path())
    }

    /// The output file's folded lines as (stack, count).
    pub fn folded(&self) -> Vec<(String, u64)> {
        parse_folded(&std::fs::read_to_string(self.output_path()).unwrap())
    }
}
