//! Finds the files that the user-space sources put uprobes on: the libc a
//! process really maps (containers map their own), and Go executables, told
//! apart by their ELF sections.
//!
//! Each is opened once, as the very file the process maps (checked against
//! the device and inode /proc/PID/maps gives), and everything after that,
//! reading its symbols and attaching the uprobes, goes through that open
//! descriptor (`/proc/self/fd/N`): a path swapped in between, or a PID
//! reused, cannot put a breakpoint into another file.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol, ReadCache};

use crate::host::gopclntab;
use crate::host::maps::parse_maps_line;
use crate::host::safe_open::{self, FileKey, Opened};

/// An opened executable or library, and the name to show for it.
#[derive(Debug)]
pub struct Binary {
    /// The path as the process sees it, for messages and hook names.
    pub shown: PathBuf,
    pub opened: Opened,
}

impl Binary {
    pub fn key(&self) -> FileKey {
        self.opened.key
    }

    /// The path that reaches exactly this file (for aya and the kernel).
    pub fn fd_path(&self) -> PathBuf {
        self.opened.fd_path()
    }

    /// Opens `path` as the binary shown as `shown`, if it is a regular file
    /// and, when `expect` is given, that very file.
    pub fn open(path: &Path, shown: PathBuf, expect: Option<FileKey>) -> Option<Binary> {
        let opened = safe_open::open_regular(path, expect, safe_open::MAX_ELF_SIZE).ok()?;
        Some(Binary { shown, opened })
    }
}

/// Whether `path` names a glibc (`libc.so.6`, `libc-2.31.so`).
pub fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"))
}

/// The glibc that `pid` maps: the mapped file itself (map_files), else the
/// path in the process's root if it is still that file.
pub fn libc_of(pid: u32) -> Option<Binary> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mapping = maps
        .lines()
        .filter_map(parse_maps_line)
        .map(|line| line.mapping)
        .find(|mapping| mapping.file.is_some() && is_libc(&mapping.path))?;
    let key = mapping.file?;
    if safe_open::served_by_user_space(key.dev, Some(pid)) {
        return None;
    }
    let open = |path: &str| Binary::open(Path::new(path), PathBuf::from(&mapping.path), Some(key));
    let range = format!("{:x}-{:x}", mapping.start, mapping.end);
    open(&format!("/proc/{pid}/map_files/{range}")).or_else(|| {
        // A path is looked up only where no FUSE mount lies on the way.
        (!safe_open::path_crosses_user_space(&mapping.path, Some(pid)))
            .then(|| open(&format!("/proc/{pid}/root{}", mapping.path)))
            .flatten()
    })
}

/// Every numeric entry of /proc.
pub fn all_pids() -> Vec<u32> {
    procfs::process::all_processes()
        .map(|processes| {
            processes
                .filter_map(|process| u32::try_from(process.ok()?.pid).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One of each distinct file, keeping the first path seen.
pub fn distinct(binaries: impl IntoIterator<Item = Binary>) -> Vec<Binary> {
    let mut seen = HashSet::new();
    binaries
        .into_iter()
        .filter(|b| seen.insert(b.key()))
        .collect()
}

/// What a file is to the go source.
#[derive(Debug, PartialEq, Eq)]
pub enum GoBinary {
    NotGo,
    /// A Go executable whose functions can be found by name, in its symbol
    /// table or, stripped (`-ldflags=-s -w`), in its `.gopclntab`: the
    /// uprobes can be placed.
    Named,
    /// A Go executable with neither: stripped, and a function table of a Go
    /// release before 1.18 (another layout) or one that does not read.
    Unnamed,
}

/// Reads only the ELF headers and symbol table (and the function table when
/// there is no symbol table), not the whole file.
pub fn go_binary(path: &Path) -> GoBinary {
    let Ok(file) = File::open(path) else {
        return GoBinary::NotGo;
    };
    let cache = ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return GoBinary::NotGo;
    };
    let is_go = [".go.buildinfo", ".gopclntab", ".note.go.buildid"]
        .iter()
        .any(|name| elf.section_by_name(name).is_some());
    if !is_go {
        return GoBinary::NotGo;
    }
    // Every Go program has runtime.main.
    let named = elf.symbols().any(|s| s.name() == Ok("runtime.main"))
        || gopclntab::with_table(&elf, |table| table.entry_of("runtime.main")).is_some();
    if named {
        GoBinary::Named
    } else {
        GoBinary::Unnamed
    }
}

/// The executable of `pid`: /proc/PID/exe reaches the very file it runs.
pub fn exe_of(pid: u32) -> Option<Binary> {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    let shown = std::fs::read_link(&link).unwrap_or_else(|_| link.clone());
    Binary::open(&link, shown, None)
}

/// The file COMMAND names, searched in PATH as execvp does.
pub fn resolve_command(program: &OsStr) -> Option<PathBuf> {
    let program = Path::new(program);
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libc_names() {
        assert!(is_libc("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_libc("/lib/libc-2.31.so"));
        assert!(!is_libc("/usr/lib/x86_64-linux-gnu/libcrypt.so.1"));
        assert!(!is_libc("/usr/lib/libcap.so.2"));
    }

    #[test]
    fn finds_our_own_libc_and_exe() {
        let me = std::process::id();
        let libc = libc_of(me).expect("the test process maps glibc");
        assert!(
            libc.shown.to_string_lossy().contains("libc.so"),
            "{:?}",
            libc.shown
        );
        assert_eq!(go_binary(&libc.fd_path()), GoBinary::NotGo);
        let exe = exe_of(me).unwrap();
        assert_eq!(exe.shown, std::fs::read_link("/proc/self/exe").unwrap());
        assert_eq!(
            exe.key(),
            FileKey::of(&std::fs::metadata("/proc/self/exe").unwrap())
        );
        assert_eq!(go_binary(&exe.fd_path()), GoBinary::NotGo);
        let twice = distinct([libc, libc_of(me).unwrap()]);
        assert_eq!(twice.len(), 1);
    }

    #[test]
    fn resolves_commands_in_path() {
        assert!(resolve_command(OsStr::new("sh")).is_some());
        assert_eq!(
            resolve_command(OsStr::new("./x")),
            Some(PathBuf::from("./x"))
        );
        assert_eq!(resolve_command(OsStr::new("no-such-command-here")), None);
    }
}
