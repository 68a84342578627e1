//! The debuginfod cache: one directory private to clockprof's user (0700,
//! created by us, never reached through a link we did not create), holding
//! `BUILDID.debug` files that appear whole or not at all (written anonymous
//! with O_TMPFILE and linked in once checked), capped in total size.

use std::ffi::CString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::host::safe_open::{self, Opened};

/// The cache's total size; the files fetched longest ago go first.
pub const MAX_CACHE_SIZE: u64 = 2 << 30;
/// One debug file (a browser's is about 1 GiB).
pub const MAX_DEBUG_FILE_SIZE: u64 = 1 << 30;

/// Why a debug file was not cached.
#[derive(Debug)]
pub enum PutError {
    /// Reading the body failed (the server stalled or broke off).
    Download(io::Error),
    /// The file, or the cache, cannot be used.
    Refused(String),
}

pub struct Cache {
    /// The directory, opened O_NOFOLLOW and checked: every access goes
    /// through this descriptor, never through the path again.
    dir: File,
    /// For messages only.
    pub path: PathBuf,
}

fn c_name(name: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Opens (creating it 0700 if missing) the directory `name` in `parent`,
/// without following a link, and checks that it is ours alone.
fn private_dir(parent: &File, name: &std::ffi::OsStr) -> io::Result<File> {
    let name = c_name(name)?;
    // SAFETY: a valid descriptor and NUL-terminated name.
    let made = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) };
    if made != 0 && io::Error::last_os_error().kind() != io::ErrorKind::AlreadyExists {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; the flags are known to openat.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                io::Error::other("it is not a directory (a link or a file is in its place)")
            }
            _ => err,
        });
    }
    // SAFETY: openat just returned this descriptor, owned by nobody else.
    let dir = unsafe { File::from_raw_fd(fd) };
    let meta = dir.metadata()?;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "it belongs to uid {} with mode {:o}; clockprof uses only a directory of uid {uid} that no one else can open (0700)",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(dir)
}

impl Cache {
    /// The cache at `base/components...`: `base` must exist (a system or
    /// the user's directory); each component is created or checked private.
    pub fn open(base: &Path, components: &[&str]) -> io::Result<Cache> {
        let mut dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(base)?;
        let mut path = base.to_path_buf();
        for component in components {
            dir = private_dir(&dir, std::ffi::OsStr::new(component))?;
            path.push(component);
        }
        Ok(Cache { dir, path })
    }

    /// Another handle on the same directory (for the fetching worker).
    pub fn try_clone(&self) -> io::Result<Cache> {
        Ok(Cache {
            dir: self.dir.try_clone()?,
            path: self.path.clone(),
        })
    }

    fn dir_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }

    fn file_name(id_hex: &str) -> String {
        format!("{id_hex}.debug")
    }

    /// The cached debug file of build id `id_hex`, if there is one.
    pub fn get(&self, id_hex: &str) -> Option<Opened> {
        let path = self.dir_path().join(Self::file_name(id_hex));
        safe_open::open_regular(&path, None, MAX_DEBUG_FILE_SIZE).ok()
    }

    /// Writes `body` as the debug file of `id_hex` if it is at most
    /// MAX_DEBUG_FILE_SIZE and `accept` takes it (given the file's path),
    /// then trims the cache to MAX_CACHE_SIZE.
    pub fn put(
        &self,
        id_hex: &str,
        body: &mut dyn Read,
        accept: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<Opened, PutError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(self.dir_path())
            .map_err(|err| self.unwritable(err))?;
        let written = io::copy(&mut body.take(MAX_DEBUG_FILE_SIZE + 1), &mut file)
            .map_err(PutError::Download)?;
        if written > MAX_DEBUG_FILE_SIZE {
            return Err(PutError::Refused(format!(
                "it is over the {} MiB limit",
                MAX_DEBUG_FILE_SIZE >> 20
            )));
        }
        file.flush().map_err(|err| self.unwritable(err))?;
        let anonymous = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        accept(&anonymous).map_err(PutError::Refused)?;
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|err| self.unwritable(err))?;
        let from = c_name(anonymous.as_os_str()).map_err(|err| self.unwritable(err))?;
        let to = c_name(std::ffi::OsStr::new(&Self::file_name(id_hex)))
            .map_err(|err| self.unwritable(err))?;
        // SAFETY: valid descriptors and NUL-terminated names. AT_SYMLINK_FOLLOW
        // resolves /proc's magic link to the anonymous file itself.
        let linked = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                self.dir.as_raw_fd(),
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        // Another clockprof may have cached the same build id meanwhile.
        if linked != 0 && io::Error::last_os_error().kind() != io::ErrorKind::AlreadyExists {
            return Err(self.unwritable(io::Error::last_os_error()));
        }
        drop(file);
        self.trim(&Self::file_name(id_hex));
        self.get(id_hex)
            .ok_or_else(|| self.unwritable(io::Error::other("the cached file vanished")))
    }

    fn unwritable(&self, err: io::Error) -> PutError {
        PutError::Refused(format!("cannot write into {}: {err}", self.path.display()))
    }

    /// Removes the files fetched longest ago until the cache fits, sparing
    /// `keep` (just written).
    fn trim(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(self.dir_path()) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, std::ffi::OsString)> = entries
            .flatten()
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                let name = entry.file_name();
                (meta.is_file() && name.as_bytes().ends_with(b".debug"))
                    .then(|| Some((meta.modified().ok()?, meta.len(), name)))?
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
        files.sort();
        for (_, size, name) in files {
            if total <= MAX_CACHE_SIZE {
                break;
            }
            if name == keep {
                continue;
            }
            if let Ok(name) = c_name(&name) {
                // SAFETY: a valid descriptor and NUL-terminated name.
                if unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
                    total -= size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_directory_and_keeps_whole_files() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = Cache::open(scratch.path(), &["clockprof", "debuginfod"]).unwrap();
        let dir = scratch.path().join("clockprof/debuginfod");
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(cache.get("abcd").is_none());
        let refused = cache.put("abcd", &mut &b"not this"[..], |_| Err("no".into()));
        assert!(matches!(refused, Err(PutError::Refused(why)) if why == "no"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let opened = cache
            .put("abcd", &mut &b"debug"[..], |path| {
                assert_eq!(std::fs::read(path).unwrap(), b"debug");
                Ok(())
            })
            .unwrap();
        assert_eq!(std::fs::read(opened.fd_path()).unwrap(), b"debug");
        let meta = std::fs::metadata(dir.join("abcd.debug")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(cache.get("abcd").is_some());
        // Opened again, the same directory is accepted.
        assert!(Cache::open(scratch.path(), &["clockprof", "debuginfod"]).is_ok());
    }

    #[test]
    fn refuses_a_link_or_a_shared_directory_in_its_place() {
        let scratch = tempfile::tempdir().unwrap();
        let elsewhere = scratch.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, scratch.path().join("linked")).unwrap();
        let err = Cache::open(scratch.path(), &["linked"]).err().unwrap();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let shared = scratch.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o777)).unwrap();
        let err = Cache::open(scratch.path(), &["shared"]).err().unwrap();
        assert!(err.to_string().contains("0700"), "{err}");
    }
}
