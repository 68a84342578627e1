//! Libraries that replace the clock functions (interposers): libfaketime
//! and its kind, loaded before libc through `LD_PRELOAD` or
//! `/etc/ld.so.preload`. The dynamic linker binds a process's
//! `clock_gettime` to the first object that exports it, so any library other
//! than the C library's own that exports one of the clock functions takes
//! those calls over, and every clock read then pays for its code (issue 26:
//! under Debian's libfaketime each `clock_gettime` became two).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object::{Object, ObjectSymbol, ReadCache};
use serde::Serialize;

/// The clock functions whose export makes a library an interposer.
pub const CLOCK_FUNCTIONS: [&str; 6] = [
    "clock_gettime",
    "clock_gettime64",
    "gettimeofday",
    "time",
    "timespec_get",
    "ftime",
];

/// A library that takes a process's clock calls over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Interposer {
    /// The library's path, as the process maps it.
    pub library: String,
    /// Which of CLOCK_FUNCTIONS it exports.
    pub functions: Vec<&'static str>,
    /// How it was loaded, where that could be read: `LD_PRELOAD=...` from
    /// the process's environment, or `/etc/ld.so.preload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload: Option<String>,
}

impl Interposer {
    /// `libfaketime.so.1 (clock_gettime, time; LD_PRELOAD=...)`, made
    /// printable (the path and the environment are any user's).
    pub fn describe(&self) -> String {
        let mut text = format!("{} ({}", self.library, self.functions.join(", "));
        if let Some(preload) = &self.preload {
            text.push_str("; ");
            text.push_str(preload);
        }
        text.push(')');
        crate::host::printable::printable(&text).into_owned()
    }

    /// Each of `interposers` described, comma-separated.
    pub fn describe_all(interposers: &[Interposer]) -> String {
        interposers
            .iter()
            .map(Interposer::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `path` is one of the C library's own objects, which define the
/// clock functions without interposing: glibc's libc, librt and libpthread
/// (the last two keep compatibility symbols), the dynamic linker, musl.
pub fn is_c_library(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    [
        "libc.so",
        "libc-",
        "librt.so",
        "librt-",
        "libpthread",
        "ld-linux",
        "ld-musl",
        "libc.musl",
    ]
    .iter()
    .any(|prefix| file.starts_with(prefix))
}

/// The clock functions the ELF file at `path` defines in its dynamic
/// symbol table (what the dynamic linker binds to), in CLOCK_FUNCTIONS'
/// order; none if it is not an ELF file. Reads the headers and the dynamic
/// symbols only.
pub fn exported_clock_functions(path: &Path) -> Vec<&'static str> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return Vec::new();
    };
    let mut found: Vec<&'static str> = elf
        .dynamic_symbols()
        // Not is_definition(): glibc exports gettimeofday and time as
        // IFUNCs, which object counts as no definition, and so may an
        // interposer.
        .filter(|symbol| !symbol.is_undefined() && symbol.is_global())
        .filter_map(|symbol| {
            let name = symbol.name().ok()?;
            CLOCK_FUNCTIONS.iter().copied().find(|f| *f == name)
        })
        .collect();
    found.sort_by_key(|f| CLOCK_FUNCTIONS.iter().position(|g| g == f));
    found.dedup();
    found
}

/// How `library` came to be loaded in `pid`, where that can be read:
/// `LD_PRELOAD=VALUE` when the process's environment names it, else
/// `/etc/ld.so.preload` when the process's root lists it there.
pub fn how_preloaded(pid: u32, library: &str) -> Option<String> {
    let name = library.rsplit('/').next().unwrap_or(library);
    let names_it = |list: &str| {
        list.split([' ', ':', '\n', '\t'])
            .any(|entry| !entry.is_empty() && entry.rsplit('/').next() == Some(name))
    };
    if let Some(value) = ld_preload(pid) {
        if names_it(&value) {
            return Some(format!("LD_PRELOAD={value}"));
        }
    }
    // The process's own root: a container has its own /etc.
    let listed =
        crate::host::safe_open::read_in_root_of(pid, "/etc/ld.so.preload", 64 << 10).ok()?;
    names_it(&String::from_utf8_lossy(&listed)).then(|| "/etc/ld.so.preload".to_string())
}

/// Reading another process's environment takes its memory lock, which a
/// process stuck in a page fault (a stalled FUSE mount) can hold for ever.
/// So the read runs on a thread of its own and is waited for this long; a
/// read still stuck keeps any other from starting (one thread at most).
const ENVIRON_WAIT: Duration = Duration::from_millis(200);
static ENVIRON_READ_STUCK: AtomicBool = AtomicBool::new(false);

/// The value of `LD_PRELOAD` in `pid`'s environment as it was at exec
/// (at most 64 KiB of environment are read), if it could be read in time.
fn ld_preload(pid: u32) -> Option<String> {
    if ENVIRON_READ_STUCK.swap(true, Ordering::AcqRel) {
        return None;
    }
    let (send, receive) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("environ".into())
        .spawn(move || {
            let value = read_ld_preload(pid);
            ENVIRON_READ_STUCK.store(false, Ordering::Release);
            let _ = send.send(value);
        });
    if spawned.is_err() {
        ENVIRON_READ_STUCK.store(false, Ordering::Release);
        return None;
    }
    receive.recv_timeout(ENVIRON_WAIT).ok().flatten()
}

fn read_ld_preload(pid: u32) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut bytes = Vec::new();
    file.take(64 << 10).read_to_end(&mut bytes).ok()?;
    ld_preload_of(&bytes)
}

/// `LD_PRELOAD`'s value in a NUL-separated environment block, made
/// printable (any user chose it).
fn ld_preload_of(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"LD_PRELOAD="))
        .map(|value| {
            crate::host::printable::printable(&String::from_utf8_lossy(value)).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_library_objects_are_not_interposers() {
        for path in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libc-2.31.so",
            "/lib/x86_64-linux-gnu/librt.so.1",
            "/lib/x86_64-linux-gnu/libpthread.so.0",
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/ld-musl-x86_64.so.1",
        ] {
            assert!(is_c_library(path), "{path}");
        }
        for path in [
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/libcrypto.so.3",
            "/opt/app/libclock.so",
        ] {
            assert!(!is_c_library(path), "{path}");
        }
    }

    #[test]
    fn ld_preload_is_found_in_an_environment_block_and_made_printable() {
        assert_eq!(
            ld_preload_of(b"PATH=/bin\0LD_PRELOAD=/usr/lib/libfaketime.so.1\0HOME=/\0"),
            Some("/usr/lib/libfaketime.so.1".to_string())
        );
        assert_eq!(ld_preload_of(b"PATH=/bin\0HOME=/\0"), None);
        let shown = ld_preload_of(b"LD_PRELOAD=/tmp/a\x1b[2Jb\0").unwrap();
        assert!(!shown.contains('\x1b'), "{shown}");
    }

    #[test]
    fn libc_exports_the_clock_functions_and_our_own_binary_none() {
        let libc = crate::host::binaries::libc_of(std::process::id())
            .expect("this test runs linked against glibc");
        let functions = exported_clock_functions(&libc.fd_path());
        for f in ["clock_gettime", "gettimeofday", "time"] {
            assert!(functions.contains(&f), "{functions:?}");
        }
        assert!(exported_clock_functions(Path::new("/proc/self/exe")).is_empty());
        assert!(exported_clock_functions(Path::new("/etc/hostname")).is_empty());
    }

    #[test]
    fn a_preload_list_is_read_inside_the_process_root_only() {
        // A process chrooted into a directory whose /etc/ld.so.preload is an
        // absolute symlink to a file of ours: resolved inside its root it
        // names nothing there, where following it from ours would read it.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let ours = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ours.path(), "/lib/libsecret.so\n").unwrap();
        std::os::unix::fs::symlink(ours.path(), root.path().join("etc/ld.so.preload")).unwrap();
        std::fs::write(root.path().join("etc/inside"), "/lib/libinside.so\n").unwrap();
        let path = std::ffi::CString::new(root.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the child calls only async-signal-safe functions.
        let child = unsafe { libc::fork() };
        if child == 0 {
            unsafe {
                if libc::chroot(path.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    libc::_exit(1);
                }
                loop {
                    libc::pause();
                }
            }
        }
        assert!(child > 0);
        let pid = child as u32;
        // Until the child has chrooted, its root is ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/root"))
            .ok()
            .as_deref()
            != Some(root.path())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not chroot"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let escaped = crate::host::safe_open::read_in_root_of(pid, "/etc/ld.so.preload", 1 << 10);
        let inside = crate::host::safe_open::read_in_root_of(pid, "/etc/inside", 1 << 10);
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(escaped.is_err(), "{escaped:?}");
        assert_eq!(inside.unwrap(), b"/lib/libinside.so\n");
        assert_eq!(how_preloaded(std::process::id(), "/lib/libsecret.so"), None);
    }

    #[test]
    fn our_own_environment_is_read() {
        // The test runner's environment has PATH; LD_PRELOAD is unset, so
        // nothing is said of a library.
        assert_eq!(
            how_preloaded(std::process::id(), "/nonexistent/libx.so"),
            None
        );
        assert!(read_ld_preload(std::process::id()).is_none());
    }
}
