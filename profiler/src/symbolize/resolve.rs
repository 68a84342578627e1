//! Names for a batch of locations: user files (and the vDSO, perf maps,
//! separate debug files) and kernel addresses, each distinct one looked up once.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source as BlazeSource};
use blazesym::symbolize::{Input, Symbolizer};

use super::debuginfo::DebugInfo;
use super::frames::UserLocation;
use super::go_table;
use super::lookup::{names_of, NameTable};
use super::vdso::{VdsoImage, VDSO};
use crate::host::safe_open::FileKey;
use crate::proc_tracker::ProcTracker;

pub(super) fn symbolize_files(
    symbolizer: &Symbolizer,
    vdso: &OnceCell<Option<VdsoImage>>,
    debuginfo: &RefCell<DebugInfo>,
    tracker: &mut ProcTracker,
    locations: &BTreeSet<UserLocation>,
) -> NameTable<UserLocation> {
    let mut by_file: HashMap<(&Arc<str>, Option<FileKey>), Vec<u64>> = HashMap::new();
    for location in locations {
        if let UserLocation::File { path, file, offset } = location {
            by_file.entry((path, *file)).or_default().push(*offset);
        }
    }
    let mut table = HashMap::new();
    let vdso = by_file
        .keys()
        .any(|&(path, key)| &**path == VDSO && key.is_none())
        .then(|| vdso.get_or_init(VdsoImage::dump).as_ref())
        .flatten();
    for ((path, key), offsets) in by_file {
        let path_arc = path;
        let path: &str = path;
        // Only the very file that was mapped, as opened by the tracker; a file
        // that cannot be had leaves its frames `[unknown]`, with the module named.
        let file = match (vdso, path, key) {
            (Some(image), VDSO, None) => image.path(),
            (_, _, Some(key)) => match tracker.elf_path(key, path) {
                Some(file) => file,
                None => continue,
            },
            _ => continue,
        };
        // DWARF first, for inlined functions; where blazesym cannot read a
        // file's debug information (seen with Debian's libc and its debug
        // link), its ELF symbols still name the functions. A file that is
        // not ELF leaves its frames `[unknown]`, with the module named.
        let debug_syms = match key {
            Some(key) => debuginfo.borrow_mut().may_read_dwarf(key, &file),
            None => path == VDSO,
        };
        let symbolize = |debug_syms: bool| {
            let mut elf = Elf::new(&file);
            elf.debug_syms = debug_syms;
            symbolizer.symbolize(&BlazeSource::Elf(elf), Input::FileOffset(&offsets))
        };
        // A file blazesym cannot read at all (a stripped Go executable has
        // no symbol table for it) still goes to the fallbacks below.
        let results = symbolize(debug_syms)
            .or_else(|_| symbolize(false))
            .unwrap_or_default();
        let unnamed: Vec<u64> = offsets
            .iter()
            .enumerate()
            .filter(|&(index, _)| results.get(index).and_then(names_of).is_none())
            .map(|(_, offset)| *offset)
            .collect();
        if path != VDSO && !unnamed.is_empty() {
            // A stripped Go executable: its runtime's own function table
            // names its functions (no debug file is looked for then); what
            // is left goes to the debug files, and else is FILE+0xADDR.
            let mut named = go_table::name_offsets(&file, &unnamed);
            let still_unnamed: Vec<u64> = unnamed
                .iter()
                .copied()
                .filter(|offset| !named.contains_key(offset))
                .collect();
            if !still_unnamed.is_empty() {
                named.extend(debuginfo.borrow_mut().name_unnamed(
                    symbolizer,
                    &file,
                    path,
                    &still_unnamed,
                ));
            }
            for (offset, names) in named {
                let location = UserLocation::File {
                    path: Arc::clone(path_arc),
                    file: key,
                    offset,
                };
                table.insert(location, names);
            }
        }
        for (offset, result) in offsets.iter().zip(results.iter()) {
            if let Some(mut names) = names_of(result) {
                if path == VDSO {
                    // The vDSO exports each function twice (clock_gettime and
                    // __vdso_clock_gettime); the prefixed name tells it apart
                    // from glibc's clock_gettime in the same stack.
                    for name in names.iter_mut().filter(|n| !n.starts_with("__vdso_")) {
                        name.insert_str(0, "__vdso_");
                    }
                }
                let location = UserLocation::File {
                    path: Arc::clone(path_arc),
                    file: key,
                    offset: *offset,
                };
                table.insert(location, names);
            }
        }
    }
    table
}

pub(super) fn symbolize_kernel(
    symbolizer: &Symbolizer,
    addresses: &BTreeSet<u64>,
) -> NameTable<u64> {
    let addresses: Vec<u64> = addresses.iter().copied().collect();
    let source = BlazeSource::Kernel(Kernel::default());
    let Ok(results) = symbolizer.symbolize(&source, Input::AbsAddr(&addresses)) else {
        return HashMap::new();
    };
    addresses
        .iter()
        .zip(results.iter())
        .filter_map(|(addr, result)| Some((*addr, names_of(result)?)))
        .collect()
}
