//! An output file that appears whole or not at all, never through a link,
//! and under sudo the user's who asked for it.
//!
//! The destination is checked when the recording starts (so an unwritable or
//! refused path fails before any probe is attached): an existing one must be
//! a regular file, not a symlink, FIFO or device. Its directory is opened
//! then, and every name is made relative to that descriptor, so a directory
//! swapped for a link later cannot send the file elsewhere. The contents go
//! into an anonymous O_TMPFILE in that directory, which no exit can leave
//! behind (SIGKILL included), and are linked into place once complete:
//! straight to a new name, or through a fresh random name renamed over an old
//! file. A filesystem without O_TMPFILE gets a named temporary file created
//! only at commit time. Nothing is opened through the destination's name, so
//! a link planted there is replaced, never written through.
//!
//! Under sudo the file goes to the user who ran sudo where they could have
//! made it themselves (`owner_in` says why only there): `fchown` on the
//! descriptor before the file has a name, never a chown by path afterwards,
//! which a link swapped in could turn onto another file.

use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::say::warning;
use crate::session::credentials::{self, RunAs};

/// What may happen to a file already at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replaced atomically (`record -o`).
    Replace,
    /// Left alone: the write fails (`top`'s exports, O_EXCL-like).
    Keep,
}

/// Whom the file is given to before it is linked into place.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    uid: libc::uid_t,
    /// None: the group a setgid directory gave it stays.
    gid: Option<libc::gid_t>,
    /// For the warning if the kernel refuses.
    user: String,
}

pub struct OutputFile {
    destination: PathBuf,
    /// The destination's directory (O_PATH), where every name is made.
    dir: File,
    /// The destination's name in `dir`.
    name: CString,
    existing: Existing,
    owner: Option<Owner>,
    /// The anonymous file, where the filesystem has O_TMPFILE.
    anonymous: Option<File>,
}

/// Names what a non-regular file is, from its `st_mode`, for the refusal.
fn kind_of(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        libc::S_IFDIR => "a directory",
        libc::S_IFSOCK => "a socket",
        _ => "not a regular file",
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    match ret {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `name` in `dir` as lstat sees it: a link is not followed.
fn stat_at(dir: &File, name: &CStr) -> io::Result<libc::stat> {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(stat)
}

/// A file of no name in `dir`, mode 0644 (less the umask).
fn open_anonymous(dir: &File) -> io::Result<File> {
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A new file `name` in `dir`; fails if anything, a link too, is there.
fn create_named(dir: &File, name: &CStr) -> io::Result<File> {
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Gives the anonymous file `file` the name `name` in `dir`; fails if it
/// exists. By hand: tempfile makes only named files, which SIGKILL would
/// leave behind.
fn link_anonymous(file: &File, dir: &File, name: &CStr) -> io::Result<()> {
    let from = c_path(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    // AT_SYMLINK_FOLLOW resolves /proc's magic link to the file itself; the
    // new name is never followed.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

/// Renames `from` to `to` in `dir`, over whatever `to` is (never through it).
fn rename_over(dir: &File, from: &CStr, to: &CStr) -> io::Result<()> {
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
}

/// Renames `from` to `to` in `dir`, failing if `to` exists.
fn rename_to_new(dir: &File, from: &CStr, to: &CStr) -> io::Result<()> {
    let fd = dir.as_raw_fd();
    // The system call, not glibc's renameat2 (2.28): the shipped binary needs
    // only glibc 2.26 (docs/packaging.md).
    let renamed = check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            fd,
            from.as_ptr(),
            fd,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        ) as libc::c_int
    });
    match renamed {
        // A filesystem without RENAME_NOREPLACE: link(2) never replaces.
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            check(unsafe { libc::linkat(fd, from.as_ptr(), fd, to.as_ptr(), 0) })?;
            let _ = unlink_at(dir, from);
            Ok(())
        }
        result => result,
    }
}

fn unlink_at(dir: &File, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
}

/// `.NAME.RANDOM.clockprof.tmp`: hidden, beside the destination.
fn temporary_name(name: &CStr) -> CString {
    let mut random = [0u8; 6];
    let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if got != random.len() as isize {
        // Only unlikely names are needed (a taken one is retried), not secret ones.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = nanos ^ (u64::from(std::process::id()) << 32);
        random.copy_from_slice(&mixed.to_le_bytes()[..6]);
    }
    let mut bytes = b".".to_vec();
    bytes.extend_from_slice(name.to_bytes());
    bytes.push(b'.');
    for byte in random {
        bytes.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    bytes.extend_from_slice(b".clockprof.tmp");
    CString::new(bytes).expect("a file name has no NUL byte")
}

/// Runs `make` with fresh temporary names beside `name` until one is free.
fn with_free_name<T>(
    name: &CStr,
    mut make: impl FnMut(&CStr) -> io::Result<T>,
) -> io::Result<(CString, T)> {
    for _ in 0..100 {
        let temporary = temporary_name(name);
        match make(&temporary) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            result => return result.map(|made| (temporary, made)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

/// Whom a file made in a directory of owner `dir_uid`, group `dir_gid` and
/// mode `dir_mode` goes to, under sudo run by `user`: to that user if they
/// could have made it there themselves (write and search permission on the
/// directory by its mode, as the kernel checks it, ACLs aside), else nobody:
/// it stays root's.
///
/// The file is what the user asked for, so it is theirs, as it would be had
/// they written it without sudo: in their home, a directory of their group,
/// and /tmp too, where a file of root's is one they could neither rewrite
/// nor (sticky bit) remove. Not in a directory they cannot write: under a
/// sudo rule that allows them clockprof alone, `-f folded -o
/// /etc/ld.so.preload` would hand them a file root's programs trust, and
/// with it root. There it stays root's, as if root had asked for it, which
/// through sudo is what happened. The directory is the one the file is
/// linked into (its descriptor), so a swap cannot make the check lie.
fn owner_in(
    user: &RunAs,
    dir_uid: libc::uid_t,
    dir_gid: libc::gid_t,
    dir_mode: u32,
) -> Option<Owner> {
    if user.uid == 0 {
        return None;
    }
    let permissions = if dir_uid == user.uid {
        dir_mode >> 6
    } else if user.gid == dir_gid || user.groups.contains(&dir_gid) {
        dir_mode >> 3
    } else {
        dir_mode
    };
    const WRITE_AND_SEARCH: u32 = 0o3;
    (permissions & WRITE_AND_SEARCH == WRITE_AND_SEARCH).then(|| Owner {
        uid: user.uid,
        // In a setgid directory the file has the directory's group, as the
        // user's own file there would.
        gid: (dir_mode & libc::S_ISGID == 0).then_some(user.gid),
        user: user.to_string(),
    })
}

impl OutputFile {
    /// Checks `destination` and prepares its anonymous file, to be given to
    /// the user who ran sudo (if any) when it is committed.
    pub fn create(destination: &Path, existing: Existing) -> Result<OutputFile> {
        let invoker = credentials::sudo_invoker().map_err(|err| {
            anyhow!(
                "cannot tell whose the output file {} is: {err}",
                destination.display()
            )
        })?;
        OutputFile::open(
            destination,
            existing,
            invoker.as_ref(),
            Temporary::Anonymous,
        )
    }

    fn open(
        destination: &Path,
        existing: Existing,
        invoker: Option<&RunAs>,
        temporary: Temporary,
    ) -> Result<OutputFile> {
        let describe = |err: &dyn std::fmt::Display| {
            anyhow!(
                "cannot write the output file {}: {err}",
                destination.display()
            )
        };
        let Some(name) = destination.file_name() else {
            bail!("the output path {} names no file", destination.display());
        };
        let name =
            CString::new(name.as_bytes()).map_err(|_| describe(&"a NUL byte in its name"))?;
        let dir_path = match destination.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir_path)
            .map_err(|err| describe(&err))?;
        match stat_at(&dir, &name) {
            Ok(stat) if stat.st_mode & libc::S_IFMT != libc::S_IFREG => bail!(
                "refusing to write the output file {}: it is {}, and clockprof writes only regular files (`-o -` writes to standard output)",
                destination.display(),
                kind_of(stat.st_mode)
            ),
            Ok(_) if existing == Existing::Keep => {
                return Err(describe(&"it already exists"));
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(describe(&err)),
        }
        let owner = match invoker {
            Some(user) => {
                let meta = dir.metadata().map_err(|err| describe(&err))?;
                owner_in(user, meta.uid(), meta.gid(), meta.mode())
            }
            None => None,
        };
        let anonymous = match temporary {
            Temporary::Anonymous => match open_anonymous(&dir) {
                Ok(file) => Some(file),
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                    ) =>
                {
                    None
                }
                Err(err) => return Err(describe(&err)),
            },
            #[cfg(test)]
            Temporary::Named => None,
        };
        if anonymous.is_none() {
            // No O_TMPFILE here: prove the directory writable now with a
            // named file that is gone again at once.
            let (probe, _) = with_free_name(&name, |probe| create_named(&dir, probe))
                .map_err(|err| describe(&err))?;
            let _ = unlink_at(&dir, &probe);
        }
        Ok(OutputFile {
            destination: destination.to_path_buf(),
            dir,
            name,
            existing,
            owner,
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
                self.give(file);
                self.link(file).with_context(context)
            }
            None => self.commit_named(contents).with_context(context),
        }
    }

    /// Gives the file, still without a name, to its owner. A refusal (a
    /// filesystem without owners, root squashed on NFS) costs the user the
    /// ownership, not the profile.
    fn give(&self, file: &File) {
        let Some(owner) = &self.owner else {
            return;
        };
        let gid = owner.gid.unwrap_or(libc::gid_t::MAX);
        if let Err(err) = check(unsafe { libc::fchown(file.as_raw_fd(), owner.uid, gid) }) {
            warning!(
                "{} stays root's: it could not be given to {} ({err})",
                self.destination.display(),
                owner.user
            );
        }
    }

    fn link(&self, file: &File) -> io::Result<()> {
        match link_anonymous(file, &self.dir, &self.name) {
            Err(err)
                if err.kind() == io::ErrorKind::AlreadyExists
                    && self.existing == Existing::Replace =>
            {
                // rename(2) replaces the old name atomically; the random
                // name it comes from lives only for that instant.
                let (temporary, ()) = with_free_name(&self.name, |temporary| {
                    link_anonymous(file, &self.dir, temporary)
                })?;
                rename_over(&self.dir, &temporary, &self.name).inspect_err(|_| {
                    let _ = unlink_at(&self.dir, &temporary);
                })
            }
            result => result,
        }
    }

    /// Without O_TMPFILE: a named temporary file, renamed into place.
    fn commit_named(&self, contents: &[u8]) -> io::Result<()> {
        let (temporary, mut file) =
            with_free_name(&self.name, |temporary| create_named(&self.dir, temporary))?;
        let written = file.write_all(contents).and_then(|()| {
            file.sync_all().ok();
            self.give(&file);
            match self.existing {
                Existing::Replace => rename_over(&self.dir, &temporary, &self.name),
                Existing::Keep => rename_to_new(&self.dir, &temporary, &self.name),
            }
        });
        if written.is_err() {
            let _ = unlink_at(&self.dir, &temporary);
        }
        written
    }
}

/// Where the contents wait until they are complete.
#[derive(Clone, Copy)]
enum Temporary {
    /// O_TMPFILE where the filesystem has it, else a named file.
    Anonymous,
    /// A named file (the fallback, tested on filesystems that have
    /// O_TMPFILE).
    #[cfg(test)]
    Named,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{chown, PermissionsExt};

    use super::*;

    const NOBODY: libc::uid_t = 65534;
    const BOTH: [Temporary; 2] = [Temporary::Anonymous, Temporary::Named];

    fn scratch_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("clockprof-out-{name}-"))
            .tempdir()
            .unwrap()
    }

    /// A scratch directory of `uid:gid` with `mode`.
    fn scratch_dir_of(name: &str, uid: u32, gid: u32, mode: u32) -> tempfile::TempDir {
        let dir = scratch_dir(name);
        chown(dir.path(), Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    fn owner_of(path: &Path) -> (u32, u32) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid())
    }

    fn nobody() -> RunAs {
        RunAs {
            name: "nobody".to_string(),
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![NOBODY],
            home: "/".into(),
        }
    }

    /// Opens as `create` does, as if sudo had been run by `invoker`.
    fn open(
        path: &Path,
        existing: Existing,
        invoker: Option<&RunAs>,
        temporary: Temporary,
    ) -> Result<OutputFile> {
        OutputFile::open(path, existing, invoker, temporary)
    }

    #[test]
    fn appears_only_when_committed() {
        for temporary in BOTH {
            let dir = scratch_dir("commit");
            let path = dir.path().join("p.folded");
            let out = open(&path, Existing::Replace, None, temporary).unwrap();
            assert!(!path.exists());
            assert_eq!(entries(dir.path()), 0);
            out.commit(b"a;b 1\n").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"a;b 1\n");
            assert_eq!(entries(dir.path()), 1);
        }
    }

    #[test]
    fn replaces_an_existing_file_atomically() {
        for temporary in BOTH {
            let dir = scratch_dir("replace");
            let path = dir.path().join("p.folded");
            std::fs::write(&path, b"old").unwrap();
            let out = open(&path, Existing::Replace, None, temporary).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"old");
            out.commit(b"new").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            assert_eq!(entries(dir.path()), 1);
        }
    }

    #[test]
    fn keep_never_replaces() {
        for temporary in BOTH {
            let dir = scratch_dir("keep");
            let path = dir.path().join("e.svg");
            let out = open(&path, Existing::Keep, None, temporary).unwrap();
            std::fs::write(&path, b"raced").unwrap();
            assert!(out.commit(b"ours").is_err());
            assert_eq!(std::fs::read(&path).unwrap(), b"raced");
            assert_eq!(entries(dir.path()), 1);
            assert!(OutputFile::create(&path, Existing::Keep).is_err());
        }
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
        for temporary in BOTH {
            let dir = scratch_dir("drop");
            drop(
                open(
                    &dir.path().join("p.svg"),
                    Existing::Replace,
                    None,
                    temporary,
                )
                .unwrap(),
            );
            assert_eq!(entries(dir.path()), 0);
        }
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

    /// Under sudo, in a directory of the user's: a new file, a file of
    /// root's replaced, an export claimed: all the user's, nothing else left.
    #[test]
    fn under_sudo_the_file_is_the_users_in_their_directory() {
        for temporary in BOTH {
            let dir = scratch_dir_of("sudo", NOBODY, NOBODY, 0o755);
            let user = nobody();
            let new = dir.path().join("p.svg");
            open(&new, Existing::Replace, Some(&user), temporary)
                .unwrap()
                .commit(b"new")
                .unwrap();
            assert_eq!(owner_of(&new), (NOBODY, NOBODY));

            let old = dir.path().join("p.json");
            std::fs::write(&old, b"root's").unwrap();
            assert_eq!(owner_of(&old), (0, 0));
            open(&old, Existing::Replace, Some(&user), temporary)
                .unwrap()
                .commit(b"replaced")
                .unwrap();
            assert_eq!(owner_of(&old), (NOBODY, NOBODY));
            assert_eq!(std::fs::read(&old).unwrap(), b"replaced");

            let export = dir.path().join("e.folded");
            open(&export, Existing::Keep, Some(&user), temporary)
                .unwrap()
                .commit(b"a 1\n")
                .unwrap();
            assert_eq!(owner_of(&export), (NOBODY, NOBODY));
            assert_eq!(entries(dir.path()), 3);
        }
    }

    /// Where the user could not have written (a root directory), and
    /// without sudo, the file stays root's.
    #[test]
    fn stays_roots_without_sudo_or_where_the_user_cannot_write() {
        for temporary in BOTH {
            let roots = scratch_dir_of("roots", 0, 0, 0o755);
            let path = roots.path().join("p.svg");
            open(&path, Existing::Replace, Some(&nobody()), temporary)
                .unwrap()
                .commit(b"x")
                .unwrap();
            assert_eq!(owner_of(&path), (0, 0));

            let users = scratch_dir_of("no-sudo", NOBODY, NOBODY, 0o755);
            let path = users.path().join("p.svg");
            open(&path, Existing::Replace, None, temporary)
                .unwrap()
                .commit(b"x")
                .unwrap();
            assert_eq!(owner_of(&path), (0, 0));
        }
    }

    /// In a setgid directory anyone may write, the file keeps the
    /// directory's group, as the user's own file there would.
    #[test]
    fn a_setgid_directory_keeps_its_group() {
        let dir = scratch_dir_of("setgid", 0, 4321, 0o2777);
        let path = dir.path().join("p.svg");
        open(
            &path,
            Existing::Replace,
            Some(&nobody()),
            Temporary::Anonymous,
        )
        .unwrap()
        .commit(b"x")
        .unwrap();
        assert_eq!(owner_of(&path), (NOBODY, 4321));
    }

    /// A link or FIFO planted in the user's own directory is refused under
    /// sudo too, and what it points to stays as it was, root's.
    #[test]
    fn a_planted_link_or_fifo_is_refused_under_sudo() {
        let dir = scratch_dir_of("sudo-links", NOBODY, NOBODY, 0o755);
        let target = scratch_dir("sudo-target");
        let precious = target.path().join("precious");
        std::fs::write(&precious, b"root's").unwrap();
        let link = dir.path().join("p.svg");
        std::os::unix::fs::symlink(&precious, &link).unwrap();
        let fifo = dir.path().join("p.folded");
        let c_fifo = c_path(&fifo).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o666) }, 0);
        for (path, kind) in [(&link, "a symbolic link"), (&fifo, "a FIFO")] {
            let err = open(
                path,
                Existing::Replace,
                Some(&nobody()),
                Temporary::Anonymous,
            )
            .err()
            .unwrap();
            assert!(err.to_string().contains(&format!("it is {kind}")), "{err}");
        }
        assert_eq!(std::fs::read(&precious).unwrap(), b"root's");
        assert_eq!(owner_of(&precious), (0, 0));
        assert_eq!(entries(dir.path()), 2);
    }

    #[test]
    fn the_owner_follows_the_directory_permissions() {
        let user = RunAs {
            groups: vec![NOBODY, 1234],
            ..nobody()
        };
        let owner = |uid, gid, mode| owner_in(&user, uid, gid, mode).map(|o| (o.uid, o.gid));
        let users = Some((NOBODY, Some(NOBODY)));
        // Their home; theirs but read-only; the owner's bits alone count
        // for the owner.
        assert_eq!(owner(NOBODY, NOBODY, 0o40755), users);
        assert_eq!(owner(NOBODY, NOBODY, 0o40555), None);
        assert_eq!(owner(NOBODY, 1234, 0o40577), None);
        // A directory of one of their groups, writable or not; setgid.
        assert_eq!(owner(0, 1234, 0o40775), users);
        assert_eq!(owner(0, 1234, 0o40755), None);
        assert_eq!(owner(0, 1234, 0o42775), Some((NOBODY, None)));
        // /tmp; /etc; write without search.
        assert_eq!(owner(0, 0, 0o41777), users);
        assert_eq!(owner(0, 0, 0o40755), None);
        assert_eq!(owner(0, 0, 0o40772), None);
        // Root's own sudo changes nothing.
        let root = RunAs {
            uid: 0,
            gid: 0,
            ..nobody()
        };
        assert_eq!(owner_in(&root, 0, 0, 0o40777), None);
    }
}
