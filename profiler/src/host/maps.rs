//! /proc/PID/maps, parsed in one place: the process tracker's snapshots, the
//! libc finder and the vDSO lookup all read maps lines through it.

use crate::host::safe_open::FileKey;

/// One executable mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`, in bytes.
    pub file_offset: u64,
    /// File path or a special name like "[vdso]"; deleted files end in " (deleted)".
    pub path: String,
    /// Device and inode of the mapped file; `None` for the vDSO and the like.
    pub file: Option<FileKey>,
}

impl Mapping {
    pub fn file_offset_of(&self, addr: u64) -> u64 {
        addr - self.start + self.file_offset
    }
}

/// One line of /proc/PID/maps that names something: a file or a special
/// region such as `[vdso]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    pub mapping: Mapping,
    pub executable: bool,
}

/// Parses a line of /proc/PID/maps:
/// `start-end perms offset dev inode   path`, path padded and possibly absent.
/// The path is everything after the padding, spaces and ` (deleted)` kept.
/// The one parser of maps lines: the snapshots, the libc finder and the vDSO
/// lookup all read them through it.
pub fn parse_maps_line(line: &str) -> Option<MapsLine> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    if path.is_empty() {
        return None;
    }
    let file = (inode != 0).then_some(FileKey::new(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
        inode,
    ));
    Some(MapsLine {
        mapping: Mapping {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            file_offset: u64::from_str_radix(offset, 16).ok()?,
            path: path.to_owned(),
            file,
        },
        executable: perms.contains('x'),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let line = "7f1c2a228000-7f1c2a37d000 r-xp 00028000 fe:01 1234   /tmp/my lib.so (deleted)";
        let expected = Mapping {
            start: 0x7f1c2a228000,
            end: 0x7f1c2a37d000,
            file_offset: 0x28000,
            path: "/tmp/my lib.so (deleted)".into(),
            file: Some(FileKey::new(0xfe, 1, 1234)),
        };
        let parsed = parse_maps_line(line).unwrap();
        assert_eq!(parsed.mapping, expected);
        assert!(parsed.executable);
        assert_eq!(
            parse_maps_line(
                "7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]"
            )
            .unwrap()
            .mapping
            .path,
            "[vdso]"
        );
        let data =
            parse_maps_line("55d0000-55d1000 r--p 00000000 fe:01 1234   /usr/bin/x").unwrap();
        assert!(!data.executable);
        assert_eq!(data.mapping.path, "/usr/bin/x");
        assert_eq!(
            parse_maps_line("7f00000-7f01000 rwxp 00000000 00:00 0 "),
            None
        );
    }
}
