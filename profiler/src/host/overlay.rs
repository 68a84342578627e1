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

use super::mountinfo::{self, Mount};

/// The mount `path` lies on in `mountinfo`: the longest mount point above it,
/// the last mounted where several share it.
fn mount_of<'a>(table: &'a str, path: &str) -> Option<Mount<'a>> {
    let mut best: Option<Mount> = None;
    for mount in mountinfo::mounts(table) {
        if mountinfo::is_under(path, &mount.mount_point)
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
pub fn layers(super_options: &str) -> Vec<String> {
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    for option in super_options.split(',') {
        if let Some(dir) = option.strip_prefix("upperdir=") {
            upper.push(mountinfo::unescape(dir));
        } else if let Some(dirs) = option
            .strip_prefix("lowerdir=")
            .or_else(|| option.strip_prefix("lowerdir+="))
        {
            let dirs = mountinfo::unescape(dirs);
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
pub fn layer_paths(table: &str, path: &str) -> Vec<String> {
    let Some(mount) = mount_of(table, path).filter(|m| m.fs_type == "overlay") else {
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
    }

    #[test]
    fn octal_escapes_are_undone() {
        let spaced = "40 34 0:31 / /m\\040n rw - overlay overlay rw,lowerdir=/l\\040x,upperdir=/u,workdir=/w\n";
        assert_eq!(layer_paths(spaced, "/m n/f"), ["/u/f", "/l x/f"]);
    }
}
