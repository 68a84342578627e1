//! The guest's initramfs: an uncompressed newc cpio (the kernel accepts it as is,
//! so no external cpio or gzip is needed) holding static busybox, the kernel's
//! 9p/virtio modules in load order, and an /init that mounts the host's root over
//! 9p, chroots into it and runs the run directory's guest.sh.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::kernel::Kernel;

/// busybox-static's binary (the `vm` setup group installs it). Only the static
/// build works here: the initramfs has no libc.
const BUSYBOX: &str = "/bin/busybox";

/// 9p mount tags, shared with qemu.rs, which exports them.
pub const HOST_ROOT_TAG: &str = "hostroot";
pub const OUT_TAG: &str = "xtaskout";
/// Where guest.sh sees the writable share (a tmpfs /run makes the mountpoint).
pub const GUEST_OUT_DIR: &str = "/run/xtask";
/// The exit status /init reports when it fails before the tests could start.
pub const INIT_FAILED: u8 = 125;

/// Writes `target/vm/initramfs/<release>/initramfs.cpio` (it holds this
/// clone's /init, so it is not kept with the shared kernels) unless it already holds exactly these bytes.
/// Building it takes milliseconds, so it is regenerated every run and compared,
/// rather than versioned: a changed /init script can never leave a stale image.
pub fn ensure(kernel: &Kernel) -> Result<std::path::PathBuf> {
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("could not read {BUSYBOX}: install busybox-static (`cargo xtask setup --with vm`)")
    })?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        cpio.dir(dir, 0o755);
    }
    // The kernel opens /dev/console for init's stdio before init runs, so the node
    // must be in the archive (devtmpfs is only mounted by /init itself).
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    // Numbered names keep the load order through /init's glob.
    for (i, module) in kernel.modules.iter().enumerate() {
        let data = fs::read(module)
            .with_context(|| format!("could not read module {}", module.display()))?;
        let name = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cpio.file(&format!("lib/modules/{i:02}-{name}"), 0o644, &data);
    }
    cpio.file("init", 0o755, init_script().as_bytes());
    let bytes = cpio.finish();

    let path = kernel.dir.join("initramfs.cpio");
    if fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
        write_atomically(&path, &bytes)?;
    }
    Ok(path)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("could not write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("could not rename to {}", path.display()))
}

/// /init. Lines starting `xtask-vm:` are read by the host (boot time, verdicts).
fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
# /init of `cargo xtask vm-test` (written by xtask/src/vm/initramfs.rs).
/bin/busybox --install -s /bin
export PATH=/bin

# isa-debug-exit (qemu.rs): QEMU exits with (byte << 1) | 1 when it is written.
exit_vm() {{
    sync
    printf "\\$(printf %o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    echo "xtask-vm: isa-debug-exit failed, powering off"
    poweroff -f
}}
fail() {{
    echo "xtask-vm: init failed: $*"
    exit_vm {INIT_FAILED}
}}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "xtask-vm: init started, uptime $(cut -d' ' -f1 /proc/uptime) s"
for m in /lib/modules/*.ko; do
    insmod "$m" || fail "insmod $m"
done

R=/newroot
# The host's root, read-only: test executables and clockprof run at the paths
# cargo gave them. multidevs=remap on the host side keeps inodes unique.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose {HOST_ROOT_TAG} $R \
    || fail "mount the host root over 9p"
mount -t proc proc $R/proc || fail "mount proc"
mount -t sysfs sysfs $R/sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs $R/dev || fail "mount devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "mount tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug || fail "mount debugfs"
mount -t bpf bpf $R/sys/fs/bpf || fail "mount bpffs"
# Everything the tests may write goes to tmpfs: the host root stays read-only.
# (vm/mod.rs GUEST_TMPFS_DIRS: a build under these is refused up front.)
for d in tmp run root; do
    mount -t tmpfs tmpfs $R/$d || fail "mount tmpfs on /$d"
done
mkdir -p $R{GUEST_OUT_DIR}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {OUT_TAG} $R{GUEST_OUT_DIR} \
    || fail "mount the run directory over 9p"

echo "xtask-vm: guest ready, uptime $(cut -d' ' -f1 /proc/uptime) s"
(chroot $R /bin/sh {GUEST_OUT_DIR}/guest.sh; echo $? > $R{GUEST_OUT_DIR}/rc) 2>&1 \
    | tee $R{GUEST_OUT_DIR}/guest.log
rc=$(cat $R{GUEST_OUT_DIR}/rc 2>/dev/null)
echo "xtask-vm: guest.sh exited ${{rc:-?}}, uptime $(cut -d' ' -f1 /proc/uptime) s"
umount $R{GUEST_OUT_DIR}
exit_vm "${{rc:-{INIT_FAILED}}}"
"#
    )
}

/// A newc ("070701") cpio archive builder. mtime, uid and gid are 0 so the same
/// inputs give the same bytes (ensure() relies on that to skip rewrites).
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const TRAILER: &str = "TRAILER!!!";

impl Cpio {
    pub fn dir(&mut self, path: &str, perm: u32) {
        self.entry(path, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | perm, 1, (0, 0), data);
    }

    #[allow(dead_code)] // Part of a complete writer; the tests use it.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.next_ino = 0;
        self.header(TRAILER, 0, 1, (0, 0), 0, 0);
        self.buf
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = self.next_ino;
        self.header(path, mode, nlink, rdev, data.len(), ino);
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        (rmajor, rminor): (u32, u32),
        size: usize,
        ino: u32,
    ) {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(size).expect("initramfs members are far below 4 GiB"),
            0, // devmajor
            0, // devminor
            rmajor,
            rminor,
            name.len() as u32 + 1, // with its NUL
            0,                     // check (only for "070702")
        ];
        self.buf.extend_from_slice(b"070701");
        for field in fields {
            self.buf
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// newc aligns both the header+name and the data to 4 bytes.
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Member {
        name: String,
        mode: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// An independent newc reader, strict about magic and alignment.
    fn parse(mut bytes: &[u8]) -> Vec<Member> {
        let mut members = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&bytes[..6], b"070701", "bad magic at offset {offset}");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap() as usize
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let rdev = (field(9) as u32, field(10) as u32);
            let name_end = 110 + namesize;
            assert_eq!(bytes[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_string();
            let data_start = name_end.next_multiple_of(4);
            let data_end = data_start + size;
            let data = bytes[data_start..data_end].to_vec();
            let next = data_end.next_multiple_of(4);
            offset += next;
            bytes = &bytes[next..];
            if name == TRAILER {
                assert!(bytes.is_empty(), "bytes after the trailer");
                return members;
            }
            members.push(Member {
                name,
                mode: mode as u32,
                rdev,
                data,
            });
        }
    }

    fn sample() -> Vec<u8> {
        let mut cpio = Cpio::default();
        cpio.dir("bin", 0o755);
        cpio.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        cpio.file("empty", 0o644, b"");
        cpio.file("odd", 0o644, b"x");
        cpio.symlink("bin/sh", "busybox");
        cpio.char_dev("dev/console", 0o600, 5, 1);
        cpio.finish()
    }

    #[test]
    fn round_trips_through_its_own_parser() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        let members = parse(&bytes);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/hello", "empty", "odd", "bin/sh", "dev/console"]
        );
        assert_eq!(members[0].mode, S_IFDIR | 0o755);
        assert_eq!(members[1].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(members[3].data, b"x");
        assert_eq!(members[4].mode, S_IFLNK | 0o777);
        assert_eq!(members[4].data, b"busybox");
        assert_eq!(members[5].mode, S_IFCHR | 0o600);
        assert_eq!(members[5].rdev, (5, 1));
        assert_eq!(sample(), bytes, "output is not deterministic");
    }

    /// Cross-checks with a real cpio (GNU cpio, or busybox's applet) when one is
    /// installed; the own parser above always runs.
    #[test]
    fn real_cpio_lists_the_members() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let candidates: [(&str, &[&str]); 2] = [("cpio", &["-t"]), (BUSYBOX, &["cpio", "-t"])];
        let Some((program, args)) = candidates
            .into_iter()
            .find(|(p, _)| Command::new(p).arg("--help").output().is_ok())
        else {
            eprintln!("no cpio installed: only the own parser checked the format");
            return;
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program} -t rejected the archive");
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            listed,
            ["bin", "bin/hello", "empty", "odd", "bin/sh", "dev/console"]
        );
    }

    #[test]
    fn init_script_reports_and_exits_through_the_debug_port() {
        let init = init_script();
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("seek=244")); // 0xf4, qemu.rs's iobase
        assert!(init.contains(&format!("{OUT_TAG} $R{GUEST_OUT_DIR}")));
    }
}
