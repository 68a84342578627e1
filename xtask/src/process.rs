//! Running child commands: echoed before they run, failures turned into errors that
//! name the command.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus};

use anyhow::{bail, Context, Result};

use crate::workspace;

/// `cargo ARGS` in the workspace root.
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(workspace::cargo_program());
    cmd.args(args).current_dir(workspace::root());
    cmd
}

/// Shell-like rendering for logs, with cargo shown as `cargo` rather than the
/// toolchain path rustup resolved it to.
pub fn describe(cmd: &Command) -> String {
    let program = cmd.get_program();
    let program = if program == workspace::cargo_program() {
        "cargo".into()
    } else {
        program.to_string_lossy()
    };
    std::iter::once(program)
        .chain(cmd.get_args().map(OsStr::to_string_lossy))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion and returns its status, whatever it is.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("xtask: $ {}", describe(cmd));
    cmd.status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Runs `cmd` and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// The exit code a shell would report for `status` (128+N for a signal).
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    }
}

/// Runs `cmd` as a filter: `input` on its stdin (from a thread, so a large
/// input cannot deadlock against its stdout), its stdout returned; fails
/// unless it exits 0.
pub fn filter(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not run `{}`", describe(cmd)))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child
        .wait_with_output()
        .with_context(|| format!("`{}` failed", describe(cmd)))?;
    writer
        .join()
        .expect("the writer thread does not panic")
        .with_context(|| format!("could not feed `{}`", describe(cmd)))?;
    if !output.status.success() {
        bail!("`{}` failed ({})", describe(cmd), output.status);
    }
    Ok(output.stdout)
}
