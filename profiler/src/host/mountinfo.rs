//! The one parser of a mount table (`/proc/PID/mountinfo`, proc(5)).

/// One line of a mount table, the fields clockprof uses.
pub struct Mount<'a> {
    pub id: u64,
    /// The superblock's device (`major:minor`).
    pub dev: u64,
    pub mount_point: String,
    pub fs_type: &'a str,
    pub super_options: &'a str,
}

/// The mounts of a table, in its order (later mounts shadow earlier ones
/// on the same mount point).
pub fn mounts(table: &str) -> impl Iterator<Item = Mount<'_>> {
    table.lines().filter_map(parse)
}

fn parse(line: &str) -> Option<Mount<'_>> {
    let (mount_fields, fs_fields) = line.split_once(" - ")?;
    let mut mount_fields = mount_fields.split(' ');
    let id = mount_fields.next()?.parse().ok()?;
    let (major, minor) = mount_fields.nth(1)?.split_once(':')?;
    let dev = libc::makedev(major.parse().ok()?, minor.parse().ok()?);
    let mount_point = unescape(mount_fields.nth(1)?);
    let mut fs_fields = fs_fields.split(' ');
    let fs_type = fs_fields.next()?;
    let _source = fs_fields.next()?;
    Some(Mount {
        id,
        dev,
        mount_point,
        fs_type,
        super_options: fs_fields.next().unwrap_or(""),
    })
}

/// Whether `path` is `mount_point` or lies below it.
pub fn is_under(path: &str, mount_point: &str) -> bool {
    mount_point == "/"
        || path == mount_point
        || path
            .strip_prefix(mount_point)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// mountinfo writes space, tab, newline, backslash (and, in option values,
/// comma and equals) as a backslash and three octal digits.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_escapes() {
        let table = "40 22 0:45 / /a\\040b rw,nosuid - fuse.x u@h:/ rw,user_id=0\nnonsense\n";
        let all: Vec<Mount> = mounts(table).collect();
        assert_eq!(all.len(), 1);
        let m = &all[0];
        assert_eq!((m.id, m.dev), (40, libc::makedev(0, 45)));
        assert_eq!(m.mount_point, "/a b");
        assert_eq!((m.fs_type, m.super_options), ("fuse.x", "rw,user_id=0"));
        assert_eq!(unescape("/a\\040b\\054c"), "/a b,c");
        assert_eq!(unescape("/a\\0"), "/a\\0");
        assert!(is_under("/a b/c", "/a b") && is_under("/x", "/") && !is_under("/a bc", "/a b"));
    }
}
