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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{clockprof, parse_folded, read_json, start_until_ready};

/// `s` as an argument of a command line.
pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A clockprof command line being put together.
#[must_use]
pub struct Clockprof {
    args: Vec<OsString>,
    output: Option<PathBuf>,
    /// Variables to set (Some) or remove (None) for clockprof.
    env: Vec<(OsString, Option<OsString>)>,
    /// How long `run` lets clockprof take before killing it.
    deadline: Option<Duration>,
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
            env: Vec::new(),
            deadline: None,
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

    /// `name=value` in clockprof's environment.
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Clockprof {
        self.env
            .push((name.into(), Some(value.as_ref().to_os_string())));
        self
    }

    /// `name` removed from clockprof's environment.
    pub fn env_remove(mut self, name: &str) -> Clockprof {
        self.env.push((name.into(), None));
        self
    }

    /// `run` kills clockprof after `deadline` (its status then is a failure):
    /// a hang fails the test, not the whole run.
    pub fn deadline(mut self, deadline: Duration) -> Clockprof {
        self.deadline = Some(deadline);
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

    /// clockprof's `Command`: these options, then `-- COMMAND...` if given.
    fn into_command(self, command: Option<Vec<OsString>>) -> Command {
        let mut argv = self.args;
        if let Some(command) = command {
            argv.push("--".into());
            argv.extend(command);
        }
        let mut clockprof = Command::new(clockprof());
        clockprof.args(argv);
        for (name, value) in self.env {
            match value {
                Some(value) => clockprof.env(name, value),
                None => clockprof.env_remove(name),
            };
        }
        clockprof
    }

    /// Runs `clockprof ARGS -- COMMAND...` to its end (or its deadline).
    pub fn run<I, S>(self, command: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (output, deadline) = (self.output.clone(), self.deadline);
        let command = command
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let mut child = self
            .into_command(Some(command))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("clockprof runs");
        let stdout = read_all(child.stdout.take().unwrap());
        let stderr = read_all(child.stderr.take().unwrap());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if deadline.is_some_and(|deadline| started.elapsed() > deadline) {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Run {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
            output,
        }
    }

    /// Starts `clockprof ARGS` without a COMMAND (`-p PID`, `-a`) and
    /// returns once it said READY=1, with the thread collecting its stderr.
    pub fn start(self) -> (Child, JoinHandle<String>) {
        start_until_ready(self.into_command(None).stdout(Stdio::null()))
    }
}

/// A thread reading `pipe` to its end, so the child never blocks on it.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).to_string()
    })
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
