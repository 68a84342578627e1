//! An output file that appears whole or not at all, and never through a link.
//!
//! The destination is checked when the recording starts (so an unwritable or
//! refused path fails before any probe is attached): an existing one must be
//! a regular file, not a symlink, FIFO or device. The contents go into an
//! anonymous O_TMPFILE in the destination's directory, which no exit can
//! leave behind (SIGKILL included), and are linked into place once complete:
//! straight to a new name, or through a fresh random name renamed over an old
//! file. A filesystem without O_TMPFILE gets a named temporary file created
//! only at commit time. Nothing is opened through the destination's name, so
//! a link planted there is replaced, never written through.

use std::ffi::CString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// What may happen to a file already at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replaced atomically (`record -o`).
    Replace,
    /// Left alone: the write fails (`top`'s exports, O_EXCL-like).
    Keep,
}

pub struct OutputFile {
    destination: PathBuf,
    dir: PathBuf,
    existing: Existing,
    /// The anonymous file, where the filesystem has O_TMPFILE.
    anonymous: Option<File>,
}

/// Names what a non-regular file is, for the refusal.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Gives the anonymous file `file` the name `path`; fails if it exists.
/// By hand: tempfile makes only named files, which SIGKILL would leave behind.
fn link_anonymous(file: &File, path: &Path) -> io::Result<()> {
    let from = c_path(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    let to = c_path(path)?;
    // AT_SYMLINK_FOLLOW resolves /proc's magic link to the file itself; the
    // new name is never followed.
    let ret = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `make` with a builder of hidden temporary names beside `destination`.
fn with_temporary_name<R>(destination: &Path, make: impl FnOnce(&tempfile::Builder) -> R) -> R {
    let name = destination
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(".clockprof.tmp")
        .permissions(Permissions::from_mode(0o644));
    make(&builder)
}

impl OutputFile {
    /// Checks `destination` and prepares its anonymous file.
    pub fn create(destination: &Path, existing: Existing) -> Result<OutputFile> {
        let describe = |err: &dyn std::fmt::Display| {
            anyhow!(
                "cannot write the output file {}: {err}",
                destination.display()
            )
        };
        if destination.file_name().is_none() {
            bail!("the output path {} names no file", destination.display());
        }
        match std::fs::symlink_metadata(destination) {
            Ok(meta) if !meta.file_type().is_file() => bail!(
                "refusing to write the output file {}: it is {}, and clockprof writes only regular files (`-o -` writes to standard output)",
                destination.display(),
                kind_of(meta.file_type())
            ),
            Ok(_) if existing == Existing::Keep => {
                return Err(describe(&"it already exists"));
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(describe(&err)),
        }
        let dir = match destination.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let anonymous = match OpenOptions::new()
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir)
        {
            Ok(file) => Some(file),
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) =>
            {
                // No O_TMPFILE here: prove the directory writable now with a
                // named file that is gone again at once.
                with_temporary_name(destination, |names| names.tempfile_in(&dir))
                    .map_err(|err| describe(&err))?;
                None
            }
            Err(err) => return Err(describe(&err)),
        };
        Ok(OutputFile {
            destination: destination.to_path_buf(),
            dir,
            existing,
            anonymous,
        })
    }

    pub fn path(&self) -> &Path {
        &self.destination
    }

    /// Writes `contents` and gives the file its name.
    pub fn commit(self, contents: &[u8]) -> Result<()> {
        let context = || format!("could not write {}", self.destination.display());
        match &self.anonymous {
            Some(file) => {
                let mut file = file;
                file.write_all(contents).with_context(context)?;
                file.sync_all().ok();
                self.link(file).with_context(context)
            }
            None => {
                let mut named =
                    with_temporary_name(&self.destination, |names| names.tempfile_in(&self.dir))
                        .with_context(context)?;
                named.write_all(contents).with_context(context)?;
                named.as_file().sync_all().ok();
                match self.existing {
                    Existing::Replace => named.persist(&self.destination).map(drop),
                    Existing::Keep => named.persist_noclobber(&self.destination).map(drop),
                }
                .map_err(|err| err.error)
                .with_context(context)
            }
        }
    }

    fn link(&self, file: &File) -> io::Result<()> {
        match link_anonymous(file, &self.destination) {
            Err(err)
                if err.kind() == io::ErrorKind::AlreadyExists
                    && self.existing == Existing::Replace =>
            {
                // rename(2) replaces the old name atomically; the random
                // name it comes from lives only for that instant.
                let linked = with_temporary_name(&self.destination, |names| {
                    names.make_in(&self.dir, |path| link_anonymous(file, path))
                })?;
                linked
                    .persist(&self.destination)
                    .map(drop)
                    .map_err(|err| err.error)
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("clockprof-out-{name}-"))
            .tempdir()
            .unwrap()
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn appears_only_when_committed() {
        let dir = scratch_dir("commit");
        let path = dir.path().join("p.folded");
        let out = OutputFile::create(&path, Existing::Replace).unwrap();
        assert!(!path.exists());
        assert_eq!(entries(dir.path()), 0);
        out.commit(b"a;b 1\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a;b 1\n");
        assert_eq!(entries(dir.path()), 1);
    }

    #[test]
    fn replaces_an_existing_file_atomically() {
        let dir = scratch_dir("replace");
        let path = dir.path().join("p.folded");
        std::fs::write(&path, b"old").unwrap();
        let out = OutputFile::create(&path, Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        out.commit(b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(dir.path()), 1);
    }

    #[test]
    fn keep_never_replaces() {
        let dir = scratch_dir("keep");
        let path = dir.path().join("e.svg");
        let out = OutputFile::create(&path, Existing::Keep).unwrap();
        std::fs::write(&path, b"raced").unwrap();
        assert!(out.commit(b"ours").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"raced");
        assert!(OutputFile::create(&path, Existing::Keep).is_err());
    }

    #[test]
    fn refuses_links_and_special_files() {
        let dir = scratch_dir("links");
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("p.folded");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = OutputFile::create(&link, Existing::Replace).err().unwrap();
        assert!(err.to_string().contains("it is a symbolic link"), "{err}");
        let err = OutputFile::create(Path::new("/dev/null"), Existing::Replace)
            .err()
            .unwrap();
        assert!(err.to_string().contains("it is a device"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn leaves_nothing_when_dropped() {
        let dir = scratch_dir("drop");
        drop(OutputFile::create(&dir.path().join("p.svg"), Existing::Replace).unwrap());
        assert_eq!(entries(dir.path()), 0);
    }

    #[test]
    fn unwritable_destination_fails_at_once() {
        let err = OutputFile::create(Path::new("/nonexistent-dir/p.svg"), Existing::Replace)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("cannot write the output file"),
            "{err}"
        );
    }
}
