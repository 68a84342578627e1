//! Files mapped through an overlay (overlayfs: containers, and kernel CI
//! guests that lay one over a 9p share of the host's tree).
//!
//! The mmap record and /proc/PID/maps give the *layer's* inode (its device
//! and inode number: the overlay maps the real file), while every path to the
//! file, /proc/PID/map_files included, opens the *overlay's* file, whose stat
//! gives the overlay's device (or a per-layer pseudo device). The identity
//! check of safe_open then refuses it, rightly: nothing ties the two. The same
//! file is reached through the layer's own directory instead, where its device
//! and inode are checked against the record like any other.

/// One line of a mountinfo table (proc(5)), the fields used here.
struct Mount<'a> {
    mount_point: String,
    fs_type: &'a str,
    super_options: &'a str,
}

fn parse(line: &str) -> Option<Mount<'_>> {
    let (mount_fields, fs_fields) = line.split_once(" - ")?;
    let mount_point = unescape(mount_fields.split(' ').nth(4)?);
    let mut fs_fields = fs_fields.split(' ');
    let fs_type = fs_fields.next()?;
    let _source = fs_fields.next()?;
    Some(Mount {
        mount_point,
        fs_type,
        super_options: fs_fields.next().unwrap_or(""),
    })
}

/// mountinfo writes space, tab, newline, backslash (and, in option values,
/// comma and equals) as a backslash and three octal digits.
fn unescape(field: &str) -> String {
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

/// The mount `path` lies on in `mountinfo`: the longest mount point above it,
/// the last mounted where several share it.
fn mount_of<'a>(mountinfo: &'a str, path: &str) -> Option<Mount<'a>> {
    let under = |mount_point: &str| {
        mount_point == "/"
            || path == mount_point
            || path
                .strip_prefix(mount_point)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let mut best: Option<Mount> = None;
    for mount in mountinfo.lines().filter_map(parse) {
        if under(&mount.mount_point)
            && best
                .as_ref()
                .is_none_or(|b| mount.mount_point.len() >= b.mount_point.len())
        {
            best = Some(mount);
        }
    }
    best
}

/// The directories of an overlay's layers, upper first, from its super
/// options (`upperdir=`, `lowerdir=` with `:` between layers and `\:` for
/// a colon in a name), as its mounter named them.
fn layers(super_options: &str) -> Vec<String> {
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    for option in super_options.split(',') {
        if let Some(dir) = option.strip_prefix("upperdir=") {
            upper.push(unescape(dir));
        } else if let Some(dirs) = option
            .strip_prefix("lowerdir=")
            .or_else(|| option.strip_prefix("lowerdir+="))
        {
            let dirs = unescape(dirs);
            let mut layer = String::new();
            let mut chars = dirs.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => layer.extend(chars.next()),
                    ':' => lower.push(std::mem::take(&mut layer)),
                    c => layer.push(c),
                }
            }
            lower.push(layer);
        }
    }
    upper
        .into_iter()
        .chain(lower)
        .filter(|dir| dir.starts_with('/'))
        .collect()
}

/// Where the file at `path` (on an overlay in `mountinfo`'s view) lies in
/// each layer of that overlay, upper first; empty if `path` is not on an
/// overlay. The paths are the layers' as their mounter named them: in a
/// container's table, usually the host's paths. Each is only a candidate:
/// the caller opens it expecting the record's device and inode.
pub fn layer_paths(mountinfo: &str, path: &str) -> Vec<String> {
    let Some(mount) = mount_of(mountinfo, path).filter(|m| m.fs_type == "overlay") else {
        return Vec::new();
    };
    let relative = match mount.mount_point.as_str() {
        "/" => path,
        mount_point => &path[mount_point.len()..],
    };
    layers(mount.super_options)
        .into_iter()
        .map(|layer| format!("{}{relative}", layer.trim_end_matches('/')))
        .collect()
}

/// The layer directories of the overlay mounted with id `mount` in
/// `mountinfo` (empty if it is not an overlay), for the FUSE check of the
/// layers a stat of an overlay's file reaches.
pub fn layers_of_mount(mountinfo: &str, mount: u64) -> Vec<String> {
    mountinfo
        .lines()
        .filter(|line| line.split(' ').next().and_then(|id| id.parse().ok()) == Some(mount))
        .filter_map(parse)
        .filter(|m| m.fs_type == "overlay")
        .flat_map(|m| layers(m.super_options))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
25 1 0:22 / / ro,relatime - 9p hostroot ro,loose,trans=virtio
34 25 0:27 / /tmp rw - tmpfs tmpfs rw
40 34 0:31 / /tmp/o/merged rw,relatime - overlay overlay rw,lowerdir=/work/vm:/opt/a\\:b,upperdir=/tmp/o/upper,workdir=/tmp/o/work
41 1 0:40 / / rw - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X:/var/lib/docker/overlay2/l/Y,upperdir=/var/lib/docker/overlay2/Z/diff,workdir=/var/lib/docker/overlay2/Z/work
";

    #[test]
    fn a_file_on_an_overlay_is_looked_for_in_each_layer() {
        // The guest's own table: its root is 9p, the overlay at /tmp/o/merged.
        let guest: String = TABLE.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            layer_paths(&guest, "/tmp/o/merged/bin/fixture"),
            [
                "/tmp/o/upper/bin/fixture",
                "/work/vm/bin/fixture",
                "/opt/a:b/bin/fixture"
            ]
        );
        // Not under the overlay: on tmpfs or 9p, nothing to look for.
        assert!(layer_paths(&guest, "/tmp/o/merged2/x").is_empty());
        assert!(layer_paths(&guest, "/usr/bin/x").is_empty());
        // A container's root overlay, the last mounted on `/`.
        assert_eq!(
            layer_paths(TABLE, "/usr/bin/redis-server")[..2],
            [
                "/var/lib/docker/overlay2/Z/diff/usr/bin/redis-server",
                "/var/lib/docker/overlay2/l/X/usr/bin/redis-server"
            ]
        );
        assert_eq!(layers_of_mount(TABLE, 40).len(), 3);
        assert!(layers_of_mount(TABLE, 34).is_empty());
    }

    #[test]
    fn octal_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\054c"), "/a b,c");
        assert_eq!(unescape("/a\\0"), "/a\\0");
        let spaced = "40 34 0:31 / /m\\040n rw - overlay overlay rw,lowerdir=/l\\040x,upperdir=/u,workdir=/w\n";
        assert_eq!(layer_paths(spaced, "/m n/f"), ["/u/f", "/l x/f"]);
    }
}
