//! The other files an ELF file names, which blazesym opens by name when it
//! reads the file's DWARF: `.gnu_debuglink` (a debug file's name, looked
//! for beside the file and under the debug directories), `.gnu_debugaltlink`
//! (dwz's common debug file, by path) and `.debug_sup` (DWARF 5's
//! supplementary file, by path). It opens them blocking, follows symlinks
//! and `..`, and keeps them open: a FIFO named there would hang clockprof
//! for good (seen), and a device would be opened as root.
//!
//! blazesym has no hook to open them through `safe_open`, so clockprof
//! decides before it lets blazesym read the DWARF: only when each name
//! could reach nothing but files root put there. That holds when the
//! naming file lies in directories only root can write, all the way up
//! (root installed it, so root chose the names, and nobody else can put a
//! file beside it), and every path it names is absolute or plain, under
//! directories only root can write. Otherwise the file is still named from
//! its ELF symbols, and its debug file is still found by build id, through
//! `safe_open`.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The names an ELF file gives to other files.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Links {
    /// `.gnu_debuglink`'s file name, if the section is there.
    pub debug_link: Option<Vec<u8>>,
    /// `.gnu_debugaltlink`'s path.
    pub alt_link: Option<Vec<u8>>,
    /// `.debug_sup`'s path.
    pub sup: Option<Vec<u8>>,
}

impl Links {
    pub(super) fn any(&self) -> bool {
        self.debug_link.is_some() || self.alt_link.is_some() || self.sup.is_some()
    }

    /// Reads the three sections' names from `data`'s sections; a section
    /// whose name cannot be read counts as naming something unknown.
    pub(super) fn read<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Links {
        use object::{Object, ObjectSection};
        let section = |name: &str| {
            let section = elf.section_by_name(name)?;
            Some(section.data().map(<[u8]>::to_vec).unwrap_or_default())
        };
        let until_nul = |bytes: &[u8]| bytes.split(|&b| b == 0).next().unwrap_or(&[]).to_vec();
        Links {
            debug_link: section(".gnu_debuglink").map(|data| until_nul(&data)),
            alt_link: section(".gnu_debugaltlink").map(|data| until_nul(&data)),
            // version (2 bytes), is_supplementary (1), then the name.
            sup: section(".debug_sup").map(|data| until_nul(data.get(3..).unwrap_or(&[]))),
        }
    }
}

/// Whether blazesym may read the DWARF of `file` (the descriptor path of
/// the opened file), following the names in `links` (see the module's
/// comment).
pub(super) fn may_follow(file: &Path, links: &Links) -> bool {
    if !links.any() {
        return true;
    }
    let real = std::fs::read_link(file).unwrap_or_else(|_| file.to_path_buf());
    if !real.is_absolute() || !only_root_writes_above(&real) {
        return false;
    }
    let plain_name =
        |name: &[u8]| !name.is_empty() && !name.contains(&b'/') && name != b"." && name != b"..";
    links.debug_link.as_deref().is_none_or(plain_name)
        && [&links.alt_link, &links.sup]
            .into_iter()
            .flatten()
            .all(|name| named_path_is_roots(&real, name))
}

/// Whether `file` (a descriptor path) is a file root installed: root's,
/// writable by no one else, in directories only root writes. Its contents
/// are root's choice, and trusted as such.
pub(super) fn installed_by_root(file: &Path) -> bool {
    let real = std::fs::read_link(file).unwrap_or_else(|_| file.to_path_buf());
    std::fs::metadata(file).is_ok_and(|meta| meta.uid() == 0 && meta.mode() & 0o022 == 0)
        && real.is_absolute()
        && only_root_writes_above(&real)
}

/// A path named by an altlink or sup section: relative ones are taken from
/// the naming file's directory. It must not climb (`..`), and every
/// directory on the way must be root's.
fn named_path_is_roots(naming_file: &Path, name: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if name.is_empty() {
        return false;
    }
    let name = Path::new(std::ffi::OsStr::from_bytes(name));
    if name
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return false;
    }
    let path: PathBuf = match naming_file.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name.to_path_buf(),
    };
    only_root_writes_above(&path)
}

/// Whether every directory above `path`, up to `/`, is a real directory
/// (not a symlink) that root owns and only root may write. One that does
/// not exist is fine: only who may write its parent, checked too, could
/// make it.
fn only_root_writes_above(path: &Path) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| match std::fs::symlink_metadata(dir) {
            Ok(meta) => meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0,
            Err(err) => err.kind() == std::io::ErrorKind::NotFound,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(debug_link: Option<&str>, alt_link: Option<&str>, sup: Option<&str>) -> Links {
        let bytes = |s: Option<&str>| s.map(|s| s.as_bytes().to_vec());
        Links {
            debug_link: bytes(debug_link),
            alt_link: bytes(alt_link),
            sup: bytes(sup),
        }
    }

    #[test]
    fn a_file_that_names_nothing_is_read() {
        assert!(may_follow(Path::new("/tmp/anything"), &Links::default()));
    }

    #[test]
    fn names_are_followed_only_from_roots_directories_to_roots_directories() {
        let roots_file = Path::new("/usr/bin/env");
        let dwz = "/usr/lib/debug/.dwz/x86_64-linux-gnu/libc6.debug";
        assert!(may_follow(
            roots_file,
            &links(Some("env.debug"), None, None)
        ));
        assert!(may_follow(roots_file, &links(None, Some(dwz), None)));
        assert!(may_follow(roots_file, &links(None, None, Some("env.sup"))));
        // A name that climbs, a path through a directory anyone writes,
        // or a debug link with a directory in it, is not followed.
        assert!(!may_follow(
            roots_file,
            &links(Some("../tmp/x"), None, None)
        ));
        assert!(!may_follow(
            roots_file,
            &links(None, Some("/tmp/fifo"), None)
        ));
        assert!(!may_follow(
            roots_file,
            &links(None, Some("../../tmp/f"), None)
        ));
        assert!(!may_follow(
            roots_file,
            &links(None, None, Some("/tmp/sup"))
        ));
        assert!(!may_follow(roots_file, &links(None, Some(""), None)));
        // Nothing a file in a directory anyone writes names is followed.
        let users_file = Path::new("/tmp/a.out");
        assert!(!may_follow(users_file, &links(None, Some(dwz), None)));
        assert!(!may_follow(users_file, &links(Some("a.debug"), None, None)));
    }
}
