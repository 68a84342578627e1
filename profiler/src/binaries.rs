//! Finds the files that the user-space sources put uprobes on: the libc a
//! process really maps (containers map their own, so it is reached through
//! /proc/PID/root), and Go executables, told apart by their ELF sections.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol, ReadCache};

/// A file reached through a process's view of the filesystem, identified by
/// its inode so each file is instrumented once.
#[derive(Clone, Debug)]
pub struct Binary {
    pub path: PathBuf,
    pub inode: (u64, u64),
}

impl Binary {
    fn at(path: PathBuf) -> Option<Binary> {
        let meta = std::fs::metadata(&path).ok()?;
        Some(Binary {
            inode: (meta.dev(), meta.ino()),
            path,
        })
    }
}

fn is_libc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"))
}

/// The glibc that `pid` maps, as a path this process can open.
pub fn libc_of(pid: u32) -> Option<Binary> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let path = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| is_libc(path))?;
    Binary::at(PathBuf::from(format!("/proc/{pid}/root{path}")))
}

/// Every numeric entry of /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One of each distinct file, keeping the first path seen.
pub fn distinct(binaries: impl IntoIterator<Item = Binary>) -> Vec<Binary> {
    let mut seen = HashSet::new();
    binaries
        .into_iter()
        .filter(|b| seen.insert(b.inode))
        .collect()
}

/// What a file is to the go source.
#[derive(Debug, PartialEq, Eq)]
pub enum GoBinary {
    NotGo,
    /// A Go executable with its symbol table: the uprobes can be placed.
    WithSymbols,
    /// A Go executable stripped of its symbols (`-ldflags=-s`).
    Stripped,
}

/// Reads only the ELF headers and symbol table, not the whole file.
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
    // Every Go program has runtime.main; without it the symbol table is gone.
    if elf.symbols().any(|s| s.name() == Ok("runtime.main")) {
        GoBinary::WithSymbols
    } else {
        GoBinary::Stripped
    }
}

/// The executable of `pid`, through the process's own view.
pub fn exe_of(pid: u32) -> Option<Binary> {
    Binary::at(PathBuf::from(format!("/proc/{pid}/exe")))
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
            libc.path.to_string_lossy().contains("libc.so"),
            "{:?}",
            libc.path
        );
        assert_eq!(go_binary(&libc.path), GoBinary::NotGo);
        assert!(exe_of(me).is_some());
        assert_eq!(go_binary(&exe_of(me).unwrap().path), GoBinary::NotGo);
        let twice = distinct([libc.clone(), libc]);
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
