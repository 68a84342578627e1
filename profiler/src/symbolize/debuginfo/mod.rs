//! Names for the frames a mapped file's own symbols (`.symtab`, `.dynsym`,
//! DWARF and the `.gnu_debuglink` blazesym follows) leave unnamed: from a
//! separate debug file found by build id under the debug directories, else
//! fetched by build id from the debuginfod servers of `DEBUGINFOD_URLS` into
//! a private cache; and, where no debug information names the frame,
//! `FILE+0xADDR` with ADDR the ELF virtual address, so that two unnamed
//! functions of a stripped binary stay apart.
//!
//! The virtual address, not the file offset: it is what `addr2line -e FILE`,
//! `gdb`, `objdump --start-address` and `nm` speak, and what perf prints
//! for an unresolved address in a DSO, so the name can be looked up later
//! once the debug file is at hand.

mod cache;
mod debuginfod;
mod depth;
mod links;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source as BlazeSource};
use blazesym::symbolize::{Input, Symbolizer};

use crate::host::safe_open::{self, FileKey, Opened};
use crate::symbolize::lookup::names_of;

use debuginfod::{Background, Debuginfod, Lookup};

/// Where distributions install separate debug files (Debian's `-dbgsym`
/// packages: `.build-id/xx/rest.debug`), as gdb and blazesym look.
const DEFAULT_DEBUG_DIRS: &[&str] = &["/usr/lib/debug"];

/// Replaces the debug directories, `:`-separated (for tests, and for hosts
/// that keep debug files elsewhere).
const DEBUG_DIRS_VARIABLE: &str = "CLOCKPROF_DEBUG_DIRS";

/// The debug directories in force.
pub fn debug_dirs() -> Vec<PathBuf> {
    match std::env::var_os(DEBUG_DIRS_VARIABLE) {
        Some(dirs) => std::env::split_paths(&dirs)
            .filter(|dir| !dir.as_os_str().is_empty())
            .collect(),
        None => DEFAULT_DEBUG_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// What naming needs from an ELF file's headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct ElfFacts {
    build_id: Option<Vec<u8>>,
    /// The other files it names (debug link, altlink, sup).
    links: links::Links,
    /// PT_LOAD segments: file offset, size in the file, virtual address.
    loads: Vec<(u64, u64, u64)>,
}

impl ElfFacts {
    fn read(path: &Path) -> Option<ElfFacts> {
        let data = object::ReadCache::new(std::fs::File::open(path).ok()?);
        ElfFacts::parse(&data)
    }

    /// The facts of an ELF image, from a file's cache or (fuzzing) memory.
    fn parse<'data, R: object::ReadRef<'data>>(data: R) -> Option<ElfFacts> {
        use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
        use object::Object;
        let elf = ElfFile64::<object::Endianness, R>::parse(data).ok()?;
        let endian = elf.endian();
        let loads = elf
            .elf_header()
            .program_headers(endian, data)
            .ok()?
            .iter()
            .filter(|header| header.p_type(endian) == object::elf::PT_LOAD)
            .map(|header| {
                (
                    header.p_offset(endian),
                    header.p_filesz(endian),
                    header.p_vaddr(endian),
                )
            })
            .collect();
        let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
        let links = links::Links::read(&object::File::parse(data).ok()?);
        Some(ElfFacts {
            build_id,
            links,
            loads,
        })
    }

    /// The virtual address a file offset is loaded at, if it is loaded.
    fn virtual_address(&self, offset: u64) -> Option<u64> {
        self.loads.iter().find_map(|&(start, size, vaddr)| {
            let within = offset.checked_sub(start).filter(|&delta| delta < size)?;
            vaddr.checked_add(within)
        })
    }
}

/// The fuzz target of ElfFacts (fuzz/targets.rs): any bytes, as a file a
/// user mapped would hold.
#[cfg(test)]
pub(crate) fn fuzz_elf_facts(data: &[u8]) -> bool {
    let Some(facts) = ElfFacts::parse(data) else {
        return false;
    };
    for offset in [0, 0x1000, u64::MAX] {
        let _ = facts.virtual_address(offset);
    }
    true
}

/// Whether blazesym may read `file`'s DWARF (`file` being the descriptor
/// path of the opened file): reading it makes blazesym open the files
/// `file` names (see `links`), and recurse as deep as its inlined
/// functions nest (see `depth`; measured for files root did not install).
/// A file that is not ELF names nothing.
pub fn may_read_dwarf(file: &Path) -> bool {
    ElfFacts::read(file).is_none_or(|facts| links::may_follow(file, &facts.links))
        && (links::installed_by_root(file) || depth::nesting_is_bounded(file))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How debug files are fetched from debuginfod.
enum Fetching {
    /// Where they are needed, waiting (a recording names its stacks once).
    Inline(Debuginfod),
    /// On a worker (a daemon's read loop must not wait).
    Background(Background),
}

/// Separate debug files by build id, opened once per run (or until
/// `release_debug_files`), and the debuginfod client.
pub struct DebugInfo {
    dirs: Vec<PathBuf>,
    debuginfod: Option<Fetching>,
    /// Per build id: the debug file in use, or `None` when none was found.
    debug_files: HashMap<Vec<u8>, Option<Opened>>,
    /// Per mapped file: whether blazesym may read its DWARF (`may_read_dwarf`).
    dwarf_readable: HashMap<FileKey, bool>,
}

impl DebugInfo {
    /// For a recording: debuginfod's fetches are waited for.
    pub fn from_env() -> DebugInfo {
        DebugInfo {
            dirs: debug_dirs(),
            debuginfod: Debuginfod::from_env().map(Fetching::Inline),
            debug_files: HashMap::new(),
            dwarf_readable: HashMap::new(),
        }
    }

    /// For a daemon: debuginfod fetches on a worker thread, and frames are
    /// named from a fetched file from the read after it arrives.
    pub fn from_env_in_background() -> DebugInfo {
        DebugInfo {
            dirs: debug_dirs(),
            debuginfod: Debuginfod::from_env()
                .and_then(Debuginfod::in_background)
                .map(Fetching::Background),
            debug_files: HashMap::new(),
            dwarf_readable: HashMap::new(),
        }
    }

    /// Closes the debug files opened so far; they are found again when
    /// needed.
    pub fn release_debug_files(&mut self) {
        self.debug_files.clear();
        self.dwarf_readable.clear();
    }

    /// `may_read_dwarf` of the mapped file `key`, opened as `file`, once
    /// per file until `release_debug_files`.
    pub fn may_read_dwarf(&mut self, key: FileKey, file: &Path) -> bool {
        *self
            .dwarf_readable
            .entry(key)
            .or_insert_with(|| may_read_dwarf(file))
    }

    /// Names for `offsets` of `file` (the descriptor path of the mapped file
    /// itself) that its own symbols did not name. Every offset the file
    /// loads gets a name; the rest (not ELF, not loaded) stay unnamed.
    pub fn name_unnamed(
        &mut self,
        symbolizer: &Symbolizer,
        file: &Path,
        module: &str,
        offsets: &[u64],
    ) -> HashMap<u64, Vec<String>> {
        let Some(facts) = ElfFacts::read(file) else {
            return HashMap::new();
        };
        let located: Vec<(u64, u64)> = offsets
            .iter()
            .filter_map(|&offset| Some((offset, facts.virtual_address(offset)?)))
            .collect();
        let mut names = HashMap::new();
        if let Some(debug_file) = facts
            .build_id
            .as_deref()
            .and_then(|id| self.debug_file(id, module))
        {
            let addresses: Vec<u64> = located.iter().map(|&(_, address)| address).collect();
            let mut elf = Elf::new(&debug_file);
            // dwz's common file, named by the debug file: read only where
            // root put it.
            elf.debug_syms = may_read_dwarf(&debug_file);
            let source = BlazeSource::Elf(elf);
            if let Ok(results) = symbolizer.symbolize(&source, Input::VirtOffset(&addresses)) {
                for (&(offset, _), result) in located.iter().zip(results.iter()) {
                    if let Some(found) = names_of(result) {
                        names.insert(offset, found);
                    }
                }
            }
        }
        let base = module.rsplit('/').next().unwrap_or(module);
        for (offset, address) in located {
            names
                .entry(offset)
                .or_insert_with(|| vec![format!("{base}+{address:#x}")]);
        }
        names
    }

    /// The descriptor path of the debug file of build id `id`: found under
    /// the debug directories, else cached or fetched from debuginfod.
    fn debug_file(&mut self, id: &[u8], module: &str) -> Option<PathBuf> {
        if !self.debug_files.contains_key(id) {
            let found = match (self.installed_debug_file(id), &mut self.debuginfod) {
                (Some(installed), _) => Some(installed),
                (None, Some(Fetching::Inline(client))) => client.debug_file(id, module),
                (None, Some(Fetching::Background(worker))) => {
                    match worker.debug_file(id, module) {
                        Lookup::Found(fetched) => Some(fetched),
                        Lookup::Missing => None,
                        // Not remembered as missing: looked for again at
                        // the next read.
                        Lookup::Pending => return None,
                    }
                }
                (None, None) => None,
            };
            self.debug_files.insert(id.to_vec(), found);
        }
        Some(self.debug_files.get(id)?.as_ref()?.fd_path())
    }

    /// `DIR/.build-id/xx/rest.debug`, as gdb names it (distributions link it
    /// to the debug file or install it there). The debug directories belong
    /// to root: links there are followed; only a regular file of the same
    /// build id is used.
    fn installed_debug_file(&self, id: &[u8]) -> Option<Opened> {
        let (first, rest) = id.split_first().filter(|(_, rest)| !rest.is_empty())?;
        let relative = format!(".build-id/{first:02x}/{}.debug", hex(rest));
        self.dirs.iter().find_map(|dir| {
            let opened =
                safe_open::open_regular(&dir.join(&relative), None, safe_open::MAX_ELF_SIZE)
                    .ok()?;
            has_build_id(&opened, id).then_some(opened)
        })
    }
}

/// Whether an opened debug file carries build id `id`: a debug file of
/// another build names other addresses.
fn has_build_id(opened: &Opened, id: &[u8]) -> bool {
    ElfFacts::read(&opened.fd_path()).is_some_and(|facts| facts.build_id.as_deref() == Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_offsets_map_to_virtual_addresses_within_loaded_segments() {
        let facts = ElfFacts {
            build_id: None,
            links: Default::default(),
            loads: vec![(0, 0x600, 0), (0x1000, 0x200, 0x401000)],
        };
        assert_eq!(facts.virtual_address(0x10), Some(0x10));
        assert_eq!(facts.virtual_address(0x1010), Some(0x401010));
        assert_eq!(facts.virtual_address(0x11ff), Some(0x4011ff));
        assert_eq!(facts.virtual_address(0x1200), None);
        assert_eq!(facts.virtual_address(0x800), None);
    }

    #[test]
    fn own_executable_has_facts() {
        let facts = ElfFacts::read(Path::new("/proc/self/exe")).unwrap();
        assert!(!facts.loads.is_empty());
        assert!(ElfFacts::read(Path::new("/proc/self/status")).is_none());
    }
}
