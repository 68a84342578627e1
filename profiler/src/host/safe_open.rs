//! Opens files that other users control, as root, without trusting them:
//! only regular files, never blocking on a FIFO, never opening a device, of a
//! bounded size, and, where the caller knows which file it expects (the
//! device and inode of an mmap record), only that very file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{mountinfo, overlay};

/// A file's identity: device and inode, as mmap records and /proc/PID/maps
/// give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    /// From a major and minor device number as the kernel reports them.
    pub fn new(major: u32, minor: u32, ino: u64) -> FileKey {
        FileKey {
            dev: libc::makedev(major, minor),
            ino,
        }
    }

    pub fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Whether files on device `dev` may be served by a user-space daemon (FUSE,
/// which any user can mount, also in a user namespace): then any access to
/// them, even a stat, may block for as long as the daemon likes, so they
/// are not touched. Such filesystems have anonymous devices (major 0); the
/// filesystem type is read from the mount table of `pid` (the process that
/// mapped the file: the mount may exist only in its namespace), else from
/// ours. A device in neither (its process gone, and the mount not ours)
/// counts as served by user space: device numbers are global, so our table
/// is right for the devices it lists, but silent on the others.
pub fn served_by_user_space(dev: u64, pid: Option<u32>) -> bool {
    if libc::major(dev) != 0 {
        return false;
    }
    let tables = pid
        .map(|pid| format!("/proc/{pid}/mountinfo"))
        .into_iter()
        .chain(["/proc/self/mountinfo".to_string()]);
    for table in tables {
        if let Some(fs_type) = std::fs::read_to_string(table)
            .ok()
            .and_then(|text| fs_type_of(&text, dev))
        {
            return is_fuse(&fs_type);
        }
    }
    true
}

fn is_fuse(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type.starts_with("fuse.") || fs_type == "fuseblk"
}

/// What the mount tables say of the mount an O_PATH descriptor lies on.
struct MountOf {
    /// FUSE, an overlay with a FUSE layer, or a mount in no table we can
    /// read: not to be asked anything, not even a stat.
    user_space: bool,
    /// The device of the overlay's own superblock, when the mount is one.
    overlay_dev: Option<u64>,
}

/// The mount of the file `handle` (an O_PATH descriptor, which asked its
/// filesystem nothing): named by the kernel in /proc/self/fdinfo, without a
/// word to the filesystem, and looked up in our mount table and in that
/// of the process `path` reaches through (/proc/PID/...). A stat of the
/// descriptor would already wait on a stopped FUSE daemon.
fn mount_of(handle: &File, path: &Path) -> MountOf {
    let unknown = MountOf {
        user_space: true,
        overlay_dev: None,
    };
    let Some(mount) = mount_id_of(handle) else {
        return unknown;
    };
    let through = path
        .strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.components().next())
        .and_then(|pid| pid.as_os_str().to_str()?.parse::<u32>().ok());
    let tables = ["/proc/self/mountinfo".to_string()]
        .into_iter()
        .chain(through.map(|pid| format!("/proc/{pid}/mountinfo")));
    for table in tables {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        let found = mountinfo::mounts(&text).find(|m| m.id == mount);
        if let Some(found) = found {
            return MountOf {
                // A stat of an overlay's file is answered by its layer: one
                // on FUSE counts as FUSE.
                user_space: is_fuse(found.fs_type)
                    || (found.fs_type == "overlay"
                        && overlay::layers(found.super_options)
                            .iter()
                            .any(|layer| fuse_mount_above(&text, layer))),
                overlay_dev: (found.fs_type == "overlay").then_some(found.dev),
            };
        }
    }
    unknown
}

/// The mount id of an open descriptor, from /proc/self/fdinfo.
fn mount_id_of(file: &File) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether looking `path` up, in the view of `pid` (else ours), would walk
/// into a FUSE mount, whose daemon could block the lookup.
pub fn path_crosses_user_space(path: &str, pid: Option<u32>) -> bool {
    let table = match pid {
        Some(pid) => format!("/proc/{pid}/mountinfo"),
        None => "/proc/self/mountinfo".to_string(),
    };
    // Unreadable: the process is gone, and its root with it, so nothing is
    // looked up through it.
    std::fs::read_to_string(table).is_ok_and(|text| fuse_mount_above(&text, path))
}

fn fuse_mount_above(mountinfo: &str, path: &str) -> bool {
    mountinfo::mounts(mountinfo)
        .any(|m| is_fuse(m.fs_type) && mountinfo::is_under(path, &m.mount_point))
}

/// The filesystem type of device `dev` in a mountinfo table.
fn fs_type_of(mountinfo: &str, dev: u64) -> Option<String> {
    mountinfo::mounts(mountinfo)
        .find(|m| m.dev == dev)
        .map(|m| m.fs_type.to_string())
}

/// The whole of `path` (absolute) as process `pid` sees it, if it is a
/// regular file of at most `max_size` bytes. The process's root is anyone's
/// (a container's), so the path is resolved inside it with openat2's
/// RESOLVE_IN_ROOT: an absolute symlink planted there (`/etc/ld.so.preload`
/// -> `/etc/shadow`) stays inside that root instead of reaching ours, and
/// magic links are refused. Nothing under a FUSE mount is looked up.
pub fn read_in_root_of(pid: u32, path: &str, max_size: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if path_crosses_user_space(path, Some(pid)) {
        return Err(io::Error::other(
            "on a filesystem a user-space daemon serves (FUSE)",
        ));
    }
    let root = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/root"))?;
    let relative = std::ffi::CString::new(path.trim_start_matches('/'))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; every field not set is zero.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid directory fd, a NUL-terminated path, and how with its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            relative.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = libc::c_int::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(io::Error::last_os_error)?;
    // SAFETY: openat2 just returned this fd, owned by nobody else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.len() > max_size {
        return Err(io::Error::other("not a regular file, or too large"));
    }
    if served_by_user_space(meta.dev(), Some(pid)) {
        return Err(io::Error::other(
            "on a filesystem a user-space daemon serves (FUSE)",
        ));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut (&file).take(max_size), &mut bytes)?;
    Ok(bytes)
}

/// Executables and libraries larger than this are not symbolized (blazesym
/// maps them whole).
pub const MAX_ELF_SIZE: u64 = 4 << 30;

/// An opened regular file and its identity.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub key: FileKey,
}

impl Opened {
    /// A path that names exactly this open file, for APIs that take paths
    /// (blazesym, aya, the kernel's uprobe attach): whoever opens it gets
    /// this inode, whatever happens to the original path since.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// The whole of `path`, opened by `open_regular` (a root-given file: a web
/// config, a certificate, a secret).
pub fn read_regular(path: &Path, max_size: u64) -> io::Result<Vec<u8>> {
    let mut opened = open_regular(path, None, max_size)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut opened.file, &mut bytes)?;
    Ok(bytes)
}

/// Opens `path` for reading if it is a regular file of at most `max_size`
/// bytes, not on FUSE, and, when `expect` is given, that very file. Symlinks
/// (including /proc's magic links such as map_files and exe) are followed;
/// the check is on what was reached. The first open is O_PATH, which has no
/// side effects on a device or FIFO and asks a FUSE daemon nothing; only a
/// checked regular file is then opened for reading, through the O_PATH
/// descriptor, so nothing can be swapped between the check and the open.
pub fn open_regular(path: &Path, expect: Option<FileKey>, max_size: u64) -> io::Result<Opened> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    let mount = mount_of(&handle, path);
    if mount.user_space {
        return Err(io::Error::other(
            "on a filesystem a user-space daemon serves (FUSE), or on a mount not known",
        ));
    }
    let meta = handle.metadata()?;
    // Newer kernels name a file mapped through an overlay by the overlay's
    // own device and the inode number, where a stat gives a device per
    // layer (overlays over several filesystems): that is the same file.
    let expect = match (expect, mount.overlay_dev) {
        (Some(key), Some(overlay_dev))
            if key
                == (FileKey {
                    dev: overlay_dev,
                    ino: meta.ino(),
                }) =>
        {
            Some(FileKey::of(&meta))
        }
        _ => expect,
    };
    check(&meta, expect, max_size)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    let key = FileKey::of(&file.metadata()?);
    if key != FileKey::of(&meta) {
        return Err(io::Error::other("the file changed while it was opened"));
    }
    Ok(Opened { file, key })
}

fn check(meta: &std::fs::Metadata, expect: Option<FileKey>, max_size: u64) -> io::Result<()> {
    if !meta.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if expect.is_some_and(|key| key != FileKey::of(meta)) {
        return Err(io::Error::other(
            "not the file that was mapped (device or inode differ)",
        ));
    }
    if meta.len() > max_size {
        return Err(io::Error::other(format!(
            "larger than {} MiB",
            max_size >> 20
        )));
    }
    Ok(())
}

/// Why a perf map was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum PerfMapRefusal {
    /// No such file, or it cannot be opened (a symlink: O_NOFOLLOW).
    Absent,
    NotRegular,
    /// Owned by someone other than root and the process's owner: anyone can
    /// write /tmp, so such a file could name another user's code.
    ForeignOwner(u32),
    TooLarge(u64),
}

/// Perf maps larger than this are ignored: JIT runtimes write a few MiB.
pub const MAX_PERF_MAP_SIZE: u64 = 64 << 20;

/// What tells two versions of a perf map apart: the file (device, inode)
/// and its size and modification time. Hard links of one file under many
/// PIDs are one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PerfMapVersion {
    pub file: FileKey,
    pub size: u64,
    pub mtime: (i64, i64),
}

/// Opens a JIT perf map (`/tmp/perf-PID.map`) under perf's rule: a regular
/// file owned by root or by `owner` (the process's user). Opened with
/// O_NOFOLLOW and O_NONBLOCK, so a planted symlink or FIFO is refused
/// without blocking, and checked on the opened descriptor. The reader
/// reads at most `max_size` bytes: the file may grow while it is read.
pub fn open_perf_map(
    path: &Path,
    owner: Option<u32>,
    max_size: u64,
) -> Result<(impl Read, PerfMapVersion), PerfMapRefusal> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|_| PerfMapRefusal::Absent)?;
    let meta = file.metadata().map_err(|_| PerfMapRefusal::Absent)?;
    if !meta.file_type().is_file() {
        return Err(PerfMapRefusal::NotRegular);
    }
    if meta.uid() != 0 && Some(meta.uid()) != owner {
        return Err(PerfMapRefusal::ForeignOwner(meta.uid()));
    }
    if meta.len() > max_size {
        return Err(PerfMapRefusal::TooLarge(meta.len()));
    }
    let version = PerfMapVersion {
        file: FileKey::of(&meta),
        size: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
    };
    Ok((file.take(max_size), version))
}

/// The whole text of a perf map opened as `open_perf_map` does.
#[cfg(test)]
fn read_perf_map(path: &Path, owner: Option<u32>, max_size: u64) -> Result<String, PerfMapRefusal> {
    let (mut reader, _) = open_perf_map(path, owner, max_size)?;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|_| PerfMapRefusal::Absent)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch directory others may read, as perf maps' directory is.
    fn scratch_dir(name: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    fn is_root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn perf_map_rules() {
        let dir = scratch_dir("clockprof-perf-map-rules");
        let map = dir.path().join("perf-1.map");
        std::fs::write(&map, "1000 10 hot\n").unwrap();
        let me = std::fs::metadata(&map).unwrap().uid();
        assert_eq!(
            read_perf_map(&map, Some(me), MAX_PERF_MAP_SIZE).as_deref(),
            Ok("1000 10 hot\n")
        );
        // Too large: refused whole, not read in part.
        assert_eq!(
            read_perf_map(&map, Some(me), 4),
            Err(PerfMapRefusal::TooLarge(12))
        );
        // A symlink is not followed, even to a good map.
        let link = dir.path().join("perf-2.map");
        std::os::unix::fs::symlink(&map, &link).unwrap();
        assert_eq!(
            read_perf_map(&link, Some(me), MAX_PERF_MAP_SIZE),
            Err(PerfMapRefusal::Absent)
        );
        // A FIFO with no writer would block a plain open forever.
        let fifo = dir.path().join("perf-3.map");
        mkfifo(&fifo);
        assert_eq!(
            read_perf_map(&fifo, Some(me), MAX_PERF_MAP_SIZE),
            Err(PerfMapRefusal::NotRegular)
        );
        assert_eq!(
            read_perf_map(&dir.path().join("none.map"), Some(me), MAX_PERF_MAP_SIZE),
            Err(PerfMapRefusal::Absent)
        );
        if is_root() {
            // Another user's map is a forgery for a root process and for a
            // process of a third user; root's map is fine for anyone.
            chown(&map, 65534);
            assert_eq!(
                read_perf_map(&map, Some(0), MAX_PERF_MAP_SIZE),
                Err(PerfMapRefusal::ForeignOwner(65534))
            );
            assert_eq!(
                read_perf_map(&map, Some(1000), MAX_PERF_MAP_SIZE),
                Err(PerfMapRefusal::ForeignOwner(65534))
            );
            assert_eq!(
                read_perf_map(&map, None, MAX_PERF_MAP_SIZE),
                Err(PerfMapRefusal::ForeignOwner(65534))
            );
            assert!(read_perf_map(&map, Some(65534), MAX_PERF_MAP_SIZE).is_ok());
            chown(&map, 0);
            assert!(read_perf_map(&map, Some(1000), MAX_PERF_MAP_SIZE).is_ok());
        }
    }

    #[test]
    fn fuse_devices_are_recognised_from_mountinfo() {
        let table = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                     40 22 0:45 / /home/u/mnt rw,nosuid,nodev - fuse.sshfs u@h:/ rw\n\
                     41 22 0:46 / /mnt/x rw - tmpfs none rw\n";
        assert_eq!(
            fs_type_of(table, libc::makedev(0, 45)).as_deref(),
            Some("fuse.sshfs")
        );
        assert_eq!(
            fs_type_of(table, libc::makedev(0, 46)).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(fs_type_of(table, libc::makedev(0, 47)), None);
        // A device no table lists (a FUSE mount in a user namespace whose
        // process is gone) is not touched.
        assert!(served_by_user_space(libc::makedev(0, 4095), None));
        assert!(fuse_mount_above(table, "/home/u/mnt/lib/libx.so"));
        assert!(fuse_mount_above(table, "/home/u/mnt"));
        assert!(!fuse_mount_above(table, "/home/u/mnt2/libx.so"));
        assert!(!fuse_mount_above(table, "/mnt/x/libx.so"));
        let spaced = "40 22 0:45 / /a\\040b rw - fuse.x x rw\n";
        assert!(fuse_mount_above(spaced, "/a b/c"));
        assert!(!path_crosses_user_space("/usr/lib", None));
        // Our own executable is on a real disk or a tmpfs, never FUSE here.
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert!(!served_by_user_space(exe.dev(), Some(std::process::id())));
        let handle = File::open("/proc/self/exe").unwrap();
        assert!(!mount_of(&handle, Path::new("/proc/self/exe")).user_space);
    }

    #[test]
    fn regular_files_only_and_only_the_expected_one() {
        let dir = scratch_dir("clockprof-open-regular");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "aaaa").unwrap();
        std::fs::write(&b, "bbbb").unwrap();
        let key_a = FileKey::of(&std::fs::metadata(&a).unwrap());
        let opened = open_regular(&a, Some(key_a), 100).unwrap();
        assert_eq!(opened.key, key_a);
        assert_eq!(std::fs::read(opened.fd_path()).unwrap(), b"aaaa");
        // b swapped in for a: refused.
        assert!(open_regular(&b, Some(key_a), 100).is_err());
        assert!(open_regular(&a, None, 3).is_err());
        assert!(open_regular(dir.path(), None, 1 << 20).is_err());
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        // Returns at once, refused.
        assert!(open_regular(&fifo, None, 1 << 20).is_err());
        assert!(open_regular(Path::new("/dev/null"), None, 1 << 20).is_err());
        // A symlink to a regular file is followed and checked.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert_eq!(open_regular(&link, Some(key_a), 100).unwrap().key, key_a);
    }
}
