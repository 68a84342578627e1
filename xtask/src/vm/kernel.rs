//! The guest kernels: stock Debian kernels from bookworm(-security), and
//! bullseye(-security) through an apt sources overlay, fetched with
//! `apt-get download` and cut down to vmlinuz plus the modules the guest needs
//! to reach the host over 9p.
//!
//! They are kept in the dev cache, `workspace::cache_dir()/vm-kernels/`, not in
//! the target dir: CI runs in a fresh clone and would otherwise download them
//! on every run. Clones may share the cache, even at once: an entry appears
//! by a rename of a complete extraction and is never rewritten, and the one
//! per-clone thing derived from it, the initramfs (it holds this clone's
//! /init), is written under `target/vm/initramfs/<release>/`.
//!
//! The cache is keyed by the exact release the archive currently offers, so a
//! security update brings a new directory, and a second run with the same
//! release neither downloads nor extracts anything.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};

use crate::{process, workspace};

/// A kernel line the VM tests boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLine {
    /// What `--kernel` calls it.
    pub name: &'static str,
    /// The metapackage that always depends on the newest image of this line
    /// (VM.md). Resolving through it keeps version numbers out of the code: they
    /// vanish from the archive with every security update.
    metapackage: &'static str,
    /// The prefix the resolved image package must have.
    image_prefix: &'static str,
    /// Where apt finds it: the system's sources, or another Debian release.
    archive: Archive,
}

/// The apt sources a kernel line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Archive {
    /// The host's own sources (bookworm and bookworm-security).
    System,
    /// An older Debian release and its security suite, read through a sources
    /// overlay of our own (sources list, package lists and cache under
    /// `<cache>/vm-kernels/apt-<codename>/`), so neither /etc/apt nor the host's
    /// package lists change and the host's `linux-image-amd64` is not confused
    /// with it.
    Release { codename: &'static str },
}

/// The kernel cache's directory in `workspace::cache_dir()`.
const CACHE_NAME: &str = "vm-kernels";

impl Archive {
    fn dir(codename: &str) -> PathBuf {
        super::cache_path(CACHE_NAME).join(format!("apt-{codename}"))
    }

    /// The `-o` options that point apt-get and apt-cache at this archive.
    fn apt_options(self) -> Vec<String> {
        let Archive::Release { codename } = self else {
            return Vec::new();
        };
        let dir = Archive::dir(codename);
        [
            format!(
                "Dir::Etc::sourcelist={}",
                dir.join("sources.list").display()
            ),
            "Dir::Etc::sourceparts=/nonexistent".to_string(),
            format!("Dir::State::Lists={}", dir.join("lists").display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
        ]
        .into_iter()
        .flat_map(|option| ["-o".to_string(), option])
        .collect()
    }

    /// `apt-get update` for this archive: the system's lists (needs root), or
    /// the overlay's own, written first. One run at a time among the clones
    /// sharing the cache: two `apt-get update`s of the same lists would clash
    /// on apt's lock, which apt-get does not wait for.
    fn update(self) -> Result<()> {
        let cache = super::create_cache_dir(CACHE_NAME)?;
        let _lock = lock_exclusive(&cache.join(".apt-update.lock"))?;
        let mut cmd = Command::new("apt-get");
        if let Archive::Release { codename } = self {
            let dir = Archive::dir(codename);
            for sub in ["lists/partial", "cache/archives/partial"] {
                fs::create_dir_all(dir.join(sub))
                    .with_context(|| format!("could not create {}", dir.join(sub).display()))?;
            }
            let sources = dir.join("sources.list");
            let wanted = overlay_sources(codename);
            // Replaced, not rewritten in place: another clone's apt-cache may be
            // reading it (the lock keeps out only other updates).
            if fs::read_to_string(&sources).ok().as_deref() != Some(wanted.as_str()) {
                let tmp = dir.join("sources.list.tmp");
                fs::write(&tmp, &wanted)
                    .and_then(|()| fs::rename(&tmp, &sources))
                    .context("could not write the overlay's sources.list")?;
            }
        }
        process::run(cmd.args(self.apt_options()).arg("update"))
    }
}

/// An exclusive `flock` on `path` (created if missing), held until the file is
/// dropped; waits for the holder.
fn lock_exclusive(path: &Path) -> Result<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("could not open {}", path.display()))?;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("could not lock {}", path.display()));
        }
    }
}

/// A release and its security suite, signed by the keys Debian's keyring has
/// for every supported release.
fn overlay_sources(codename: &str) -> String {
    let keyring = "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg";
    format!(
        "deb [{keyring}] http://deb.debian.org/debian {codename} main\n\
         deb [{keyring}] http://deb.debian.org/debian-security {codename}-security main\n"
    )
}

pub const LINES: &[KernelLine] = &[
    KernelLine {
        name: "6.12",
        metapackage: "linux-image-6.12-amd64",
        image_prefix: "linux-image-6.12.",
        archive: Archive::System,
    },
    KernelLine {
        name: "6.1",
        metapackage: "linux-image-amd64",
        image_prefix: "linux-image-6.1.0-",
        archive: Archive::System,
    },
    // Debian 11 (LTS), the kernel floor: before bpf_get_current_task_btf (5.11)
    // and bpf_task_pt_regs (5.15).
    KernelLine {
        name: "5.10",
        metapackage: "linux-image-amd64",
        image_prefix: "linux-image-5.10.0-",
        archive: Archive::Release {
            codename: "bullseye",
        },
    },
];

/// Modules the guest loads, with their dependencies. virtio_pci is built into
/// 6.12 but a module on 6.1 and 5.10; a wanted module that the package does not ship is
/// fine as long as modules.builtin lists it. overlay: for the test of
/// binaries reached through an overlay over the 9p root.
const WANTED_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// What to extract from the image package: vmlinuz, modules.builtin and the
/// module directories the 9p stack and its dependencies live in (~13 MB of the
/// ~100 MB package). Dependencies are then resolved from the modules' own
/// `depends=` (the package has no modules.dep: depmod makes it on install).
const EXTRACT_PATTERNS: &[&str] = &[
    "./boot/vmlinuz-*",
    "./lib/modules/*/modules.builtin",
    "./lib/modules/*/kernel/drivers/virtio/*",
    "./lib/modules/*/kernel/net/9p/*",
    "./lib/modules/*/kernel/fs/9p/*",
    "./lib/modules/*/kernel/fs/netfs/*",
    "./lib/modules/*/kernel/fs/fscache/*",
    "./lib/modules/*/kernel/fs/overlayfs/*",
];

/// A kernel ready to boot.
pub struct Kernel {
    /// e.g. `6.12.117+deb12-amd64`, what `uname -r` says in the guest.
    pub release: String,
    /// This clone's directory for the kernel, `target/vm/initramfs/<release>/`,
    /// where initramfs.rs puts the initramfs: it holds this clone's /init, so
    /// it is not shared through the cache as vmlinuz and the modules are.
    pub dir: PathBuf,
    /// In the cache entry.
    pub vmlinuz: PathBuf,
    /// Decompressed modules, in load order, in the cache entry.
    pub modules: Vec<PathBuf>,
}

/// What fetch_into() makes of a package, in the cache entry's name
/// (`<release>-x<LAYOUT>`): it changes with what is extracted (2: overlay), so
/// a clone whose xtask extracts otherwise keeps entries of its own instead of
/// replacing the ones another clone is using. Entries no clone uses any more
/// are pruned (prune_superseded).
const LAYOUT: u32 = 2;
/// Marks a complete extraction; written last, before the entry is renamed into
/// place. Its mtime is the entry's last use (mark_used).
const COMPLETE: &str = ".complete";
/// The module load order, one file name of `modules/` per line.
const LOAD_ORDER: &str = "modules.load";
/// How long a superseded cache entry, or a fetch's leftover scratch directory,
/// is kept after its last use. Clones sharing the cache may disagree for a
/// while about a line's newest release (their package lists were updated at
/// different times); removing a superseded kernel at once could pull it from
/// under a run about to boot it, and have the two clones fetch it back and
/// forth.
const PRUNE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

pub fn ensure(line: KernelLine) -> Result<Kernel> {
    match ensure_with_current_lists(line) {
        Ok(kernel) => Ok(kernel),
        // Stale or missing package lists: the metapackage is unknown, or points
        // at an image that a security update has since removed from the archive.
        // (An overlay's lists are missing on its first run.)
        Err(err) if workspace::is_root() => {
            eprintln!("xtask: vm: {err:#}; updating the package lists and retrying");
            line.archive.update()?;
            ensure_with_current_lists(line)
        }
        Err(err) => Err(err.context("`sudo apt-get update` may help")),
    }
}

fn ensure_with_current_lists(line: KernelLine) -> Result<Kernel> {
    let package = resolve(line)?
        .with_context(|| format!("apt-cache knows no image package for {}", line.metapackage))?;
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    let cache = super::create_cache_dir(CACHE_NAME)?;
    let entry = entry_name(&release);
    let dir = cache.join(&entry);
    if !dir.join(COMPLETE).exists() {
        eprintln!(
            "xtask: vm: fetching kernel {release} ({package}) into {}",
            cache.display()
        );
        fetch(line, &package, &cache, &dir)?;
    }
    mark_used(&dir);
    prune_superseded(line, &cache, &entry);

    let initramfs_dirs = workspace::target_dir().join("vm").join("initramfs");
    let own = initramfs_dirs.join(&release);
    fs::create_dir_all(&own).with_context(|| format!("could not create {}", own.display()))?;
    prune_own_superseded(line, &initramfs_dirs, &release);
    load(release, dir, own)
}

/// The cache entry of a release.
fn entry_name(release: &str) -> String {
    format!("{release}-x{LAYOUT}")
}

/// Whether a cache or initramfs directory entry belongs to this line: named
/// after one of its releases.
fn of_line(line: KernelLine, name: &str) -> bool {
    format!("linux-image-{name}").starts_with(line.image_prefix)
}

/// Records that a run uses this cache entry, by its marker's mtime, which
/// prune_superseded() reads. Best effort: a cache this user cannot write has
/// failed earlier.
fn mark_used(dir: &Path) {
    if let Ok(marker) = fs::OpenOptions::new().append(true).open(dir.join(COMPLETE)) {
        let _ = marker.set_modified(SystemTime::now());
    }
}

/// The time since `path` was last modified (zero if in the future), or None
/// when it cannot be read.
fn age(path: &Path) -> Option<Duration> {
    let modified = fs::symlink_metadata(path).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
}

/// Removes cache entries of the same line that a security update replaced (or
/// that an xtask extracting otherwise made) once no run has used them for
/// PRUNE_AFTER, so the cache stays at about one kernel per line (~15 MB each),
/// and scratch directories of fetches killed before they could clean up.
fn prune_superseded(line: KernelLine, cache: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name != current && of_line(line, &name) {
            if age(&path.join(COMPLETE)).is_some_and(|a| a > PRUNE_AFTER) {
                eprintln!("xtask: vm: removing superseded kernel {name} from the cache");
                remove_entry(cache, &path);
            }
        } else if name.starts_with(".fetch-") && age(&path).is_some_and(|a| a > PRUNE_AFTER) {
            remove_entry(cache, &path);
        } else if name.starts_with(".remove-") {
            // A removal that was interrupted (or is under way in another run:
            // both then remove what is left).
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Removes a directory from the cache: first renamed out of the way, so no run
/// ever sees it half removed.
fn remove_entry(cache: &Path, path: &Path) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Ok(aside) = unique_name(cache, &format!(".remove-{name}")) else {
        return;
    };
    if fs::rename(path, &aside).is_ok() {
        let _ = fs::remove_dir_all(&aside);
    }
}

/// This clone's initramfs directories of the line's superseded releases. Only
/// this clone uses them (and vm-test runs hold the e2e lock), so at once.
fn prune_own_superseded(line: KernelLine, dirs: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(dirs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != current && of_line(line, &name) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A path `<parent>/<prefix>-<pid>-<nanoseconds>[-n]` that does not exist yet.
/// The process id alone is not unique in a shared cache: clones in other PID
/// namespaces (containers) may use it too.
fn unique_name(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let base = format!("{prefix}-{}-{nanos}", std::process::id());
    (0..100)
        .map(|n| match n {
            0 => parent.join(&base),
            n => parent.join(format!("{base}-{n}")),
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .with_context(|| format!("no free name {base}* in {}", parent.display()))
}

/// Creates a new, empty directory `<parent>/<prefix>-...` of this run's own:
/// create_dir fails rather than share one another run has just created.
fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    for _ in 0..100 {
        let dir = unique_name(parent, prefix)?;
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("could not create {}", dir.display()))
            }
        }
    }
    bail!(
        "could not create a directory {prefix}-* in {}",
        parent.display()
    )
}

/// The image package the line's metapackage currently depends on, or None when
/// apt-cache does not know the metapackage.
fn resolve(line: KernelLine) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(line.archive.apt_options())
        .args(["depends", line.metapackage])
        .output()
        .context("could not run apt-cache")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(pick_image(&String::from_utf8_lossy(&out.stdout), line))
}

/// From `apt-cache depends` output, the signed image of this line (the
/// metapackage depends on exactly one; -dbg and -unsigned are never wanted).
fn pick_image(depends: &str, line: KernelLine) -> Option<String> {
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|name| name.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|name| {
            name.starts_with(line.image_prefix)
                && name.ends_with("-amd64")
                && !name.ends_with("-dbg")
                && !name.contains("-unsigned")
        })
        .map(str::to_string)
}

/// Downloads the package, extracts what the guest needs into a scratch dir of
/// this run's own in the cache (the same filesystem as `dir`), decompresses and
/// orders the modules, then renames the scratch dir into place, so an
/// interrupted run never leaves a half-filled cache entry.
fn fetch(line: KernelLine, package: &str, cache: &Path, dir: &Path) -> Result<()> {
    let entry = dir.file_name().unwrap_or_default().to_string_lossy();
    let scratch = unique_dir(cache, &format!(".fetch-{entry}"))?;
    let result = fetch_into(line, package, &scratch).and_then(|()| install(cache, &scratch, dir));
    if result.is_err() {
        let _ = fs::remove_dir_all(&scratch);
    }
    result
}

/// Renames a complete scratch dir to `dir`. When another run (a clone sharing
/// the cache) got there first, its entry is as good as this one, which is
/// dropped: an entry in use is never replaced. A `dir` without its marker
/// cannot come from fetch(); it is moved aside and replaced.
fn install(cache: &Path, scratch: &Path, dir: &Path) -> Result<()> {
    for _ in 0..3 {
        // rename(2) replaces only an empty directory; a full one fails it.
        let err = match fs::rename(scratch, dir) {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if dir.join(COMPLETE).exists() {
            eprintln!(
                "xtask: vm: another run cached {} first; using its copy",
                dir.display()
            );
            let _ = fs::remove_dir_all(scratch);
            return Ok(());
        }
        if fs::symlink_metadata(dir).is_err() {
            return Err(err)
                .with_context(|| format!("could not move {} into place", dir.display()));
        }
        remove_entry(cache, dir);
    }
    bail!("could not move {} into place", dir.display())
}

fn fetch_into(line: KernelLine, package: &str, scratch: &Path) -> Result<()> {
    process::run(
        Command::new("apt-get")
            .args(line.archive.apt_options())
            // As root apt downloads as the `_apt` user, which cannot write to a
            // root-owned target dir; it would fall back with a warning anyway.
            .args(["-o", "APT::Sandbox::User=root", "download", package])
            .current_dir(scratch),
    )?;
    let deb = fs::read_dir(scratch)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb for {package}"))?;

    // `dpkg-deb --fsys-tarfile | tar -x` with patterns: one pass over the data,
    // writing only the few files the guest needs.
    let tree = scratch.join("tree");
    fs::create_dir_all(&tree)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not run dpkg-deb")?;
    let tar_input = dpkg.stdout.take().context("dpkg-deb has no stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&tree)
        .arg("--wildcards")
        .args(EXTRACT_PATTERNS)
        .stdin(tar_input)
        .stderr(Stdio::piped())
        .output()
        .context("could not run tar")?;
    let dpkg_status = dpkg.wait()?;
    let tar_errors = String::from_utf8_lossy(&tar.stderr);
    ensure!(
        dpkg_status.success() && (tar.status.success() || only_unmatched_patterns(&tar_errors)),
        "extracting {} failed (dpkg-deb: {dpkg_status}, tar: {}):\n{tar_errors}",
        deb.display(),
        tar.status
    );

    let vmlinuz = single_match(&tree.join("boot"), "vmlinuz-")?;
    fs::rename(&vmlinuz, scratch.join("vmlinuz"))?;
    let modules_root = single_match(&tree.join("lib/modules"), "")?;
    let builtin = fs::read_to_string(modules_root.join("modules.builtin")).unwrap_or_default();
    let available = index_modules(&modules_root.join("kernel"))?;

    let out_dir = scratch.join("modules");
    fs::create_dir_all(&out_dir)?;
    let mut decompressed = HashMap::new();
    for (name, path) in &available {
        decompressed.insert(name.clone(), decompress(path, &out_dir, name)?);
    }
    let order = load_order(&decompressed, &builtin)?;
    // Keep only what is loaded; the directories held a few unrelated modules.
    let keep: BTreeSet<&String> = order.iter().collect();
    for (name, path) in &decompressed {
        if !keep.contains(name) {
            let _ = fs::remove_file(path);
        }
    }
    let order_file: String = order.iter().map(|n| format!("{n}.ko\n")).collect();
    fs::write(scratch.join(LOAD_ORDER), order_file)?;
    fs::remove_dir_all(&tree)?;
    fs::remove_file(&deb)?;
    fs::write(scratch.join(COMPLETE), package)?;
    Ok(())
}

/// tar fails when a pattern matches nothing, and not every line has every
/// directory (6.12 has no fs/fscache: netfs absorbed it). That alone is fine:
/// load_order() then checks that every needed module is there.
fn only_unmatched_patterns(tar_errors: &str) -> bool {
    tar_errors.lines().all(|l| {
        l.ends_with(": Not found in archive")
            || l == "tar: Exiting with failure status due to previous errors"
    })
}

/// The one entry of `dir` whose name starts with `prefix`.
fn single_match(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let matches: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("the package has no {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {prefix}* in {}, found {}",
            dir.display(),
            matches.len()
        ),
    }
}

/// Module name (dashes as underscores, as the kernel spells them) to file, for
/// every `.ko` or `.ko.xz` under `dir`.
fn index_modules(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut found = HashMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("could not list {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(name) = module_name(&path) {
                found.insert(name, path);
            }
        }
    }
    Ok(found)
}

fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".ko.xz")
        .or_else(|| file.strip_suffix(".ko"))?;
    Some(stem.replace('-', "_"))
}

/// Writes `<out_dir>/<name>.ko`, decompressing with xz: busybox's insmod in the
/// guest only takes plain modules.
fn decompress(path: &Path, out_dir: &Path, name: &str) -> Result<PathBuf> {
    let out = out_dir.join(format!("{name}.ko"));
    if path.extension().is_some_and(|e| e == "ko") {
        fs::copy(path, &out)?;
        return Ok(out);
    }
    let file = fs::File::create(&out)?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(path)
        .stdout(file)
        .status()
        .context("could not run xz (package xz-utils)")?;
    ensure!(status.success(), "xz -dc {} failed", path.display());
    Ok(out)
}

/// WANTED_MODULES and their dependencies, every module after the ones it needs.
fn load_order(modules: &HashMap<String, PathBuf>, builtin: &str) -> Result<Vec<String>> {
    let builtin: BTreeSet<String> = builtin
        .lines()
        .filter_map(|l| module_name(Path::new(l)))
        .collect();
    let mut order = Vec::new();
    let mut visiting = BTreeSet::new();
    for wanted in WANTED_MODULES {
        if !modules.contains_key(*wanted) {
            ensure!(
                builtin.contains(*wanted),
                "module {wanted} is neither in the extracted directories nor built in"
            );
            continue;
        }
        visit(wanted, modules, &mut visiting, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    modules: &HashMap<String, PathBuf>,
    visiting: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    ensure!(
        visiting.insert(name.to_string()),
        "module dependency cycle at {name}"
    );
    let path = modules.get(name).with_context(|| {
        format!("module {name} is needed but not extracted: add its directory to EXTRACT_PATTERNS")
    })?;
    let bytes = fs::read(path)?;
    for dep in module_depends(&bytes)
        .with_context(|| format!("could not read the .modinfo of {}", path.display()))?
    {
        visit(&dep, modules, visiting, order)?;
    }
    order.push(name.to_string());
    Ok(())
}

/// The `depends=` list of a kernel module, from its ELF `.modinfo` section (a
/// run of NUL-terminated `key=value` strings).
fn module_depends(elf: &[u8]) -> Result<Vec<String>> {
    let modinfo = elf_section(elf, ".modinfo")?.context("no .modinfo section")?;
    Ok(modinfo
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|deps| deps.split(|b| *b == b','))
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).replace('-', "_"))
        .collect())
}

/// The bytes of section `wanted` of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>> {
    let u16_at = |o: usize| -> Option<usize> {
        Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize)
    };
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)).ok()
    };
    ensure!(
        elf.get(..6) == Some(b"\x7fELF\x02\x01".as_slice()),
        "not a little-endian ELF64 file"
    );
    let parse = || -> Option<Option<&'a [u8]>> {
        let (shoff, shentsize, shnum, shstrndx) =
            (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
        let section = |i: usize| -> Option<(usize, &'a [u8])> {
            let h = shoff + i * shentsize;
            let (offset, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
            Some((u32_at(h)?, elf.get(offset..offset + size)?))
        };
        let (_, names) = section(shstrndx)?;
        for i in 0..shnum {
            let (name_off, data) = section(i)?;
            let name = names.get(name_off..)?.split(|b| *b == 0).next()?;
            if name == wanted.as_bytes() {
                return Some(Some(data));
            }
        }
        Some(None)
    };
    parse().context("truncated or malformed ELF section headers")
}

/// A cache entry made by fetch(), with this clone's directory for the kernel.
fn load(release: String, entry: PathBuf, own: PathBuf) -> Result<Kernel> {
    let order = fs::read_to_string(entry.join(LOAD_ORDER))
        .with_context(|| format!("{} is incomplete: delete it", entry.display()))?;
    let modules = order
        .lines()
        .map(|name| entry.join("modules").join(name))
        .collect();
    Ok(Kernel {
        release,
        vmlinuz: entry.join("vmlinuz"),
        dir: own,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_signed_image_of_the_line() {
        let out = "linux-image-6.12-amd64\n  Depends: linux-image-6.12.117+deb12-amd64\n";
        assert_eq!(
            pick_image(out, LINES[0]).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64-unsigned\n  \
                   Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            pick_image(out, LINES[1]).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(pick_image("linux-image-6.12-amd64\n", LINES[0]), None);
        // A 6.12 image never satisfies the 6.1 line.
        let out = "  Depends: linux-image-6.12.117+deb12-amd64\n";
        assert_eq!(pick_image(out, LINES[1]), None);
        // bullseye's metapackage has the same name; only its overlay sees 5.10.
        let out = "linux-image-amd64\n  Depends: linux-image-5.10.0-46-amd64\n";
        assert_eq!(
            pick_image(out, LINES[2]).as_deref(),
            Some("linux-image-5.10.0-46-amd64")
        );
        assert_eq!(pick_image(out, LINES[1]), None);
    }

    #[test]
    fn an_older_release_is_read_through_its_own_overlay() {
        assert!(Archive::System.apt_options().is_empty());
        let options = Archive::Release {
            codename: "bullseye",
        }
        .apt_options();
        let joined = options.join(" ");
        assert!(
            joined.contains("Dir::Etc::sourceparts=/nonexistent"),
            "{joined}"
        );
        for own in ["sources.list", "lists", "cache"] {
            assert!(joined.contains(&format!("apt-bullseye/{own}")), "{joined}");
        }
        assert_eq!(options.iter().filter(|o| *o == "-o").count(), 4);
        let sources = overlay_sources("bullseye");
        assert!(sources.contains("/debian bullseye main\n"), "{sources}");
        assert!(
            sources.contains("/debian-security bullseye-security main\n"),
            "{sources}"
        );
    }

    #[test]
    fn tolerates_only_unmatched_patterns() {
        assert!(only_unmatched_patterns(
            "tar: ./lib/modules/*/kernel/fs/fscache/*: Not found in archive\n\
             tar: Exiting with failure status due to previous errors\n"
        ));
        assert!(!only_unmatched_patterns(
            "tar: ./boot/vmlinuz-6.1: Cannot open: No space left on device\n"
        ));
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(
            module_name(Path::new("a/virtio-pci.ko.xz")).as_deref(),
            Some("virtio_pci")
        );
        assert_eq!(module_name(Path::new("9p.ko")).as_deref(), Some("9p"));
        assert_eq!(module_name(Path::new("modules.builtin")), None);
    }

    /// A minimal ELF64 with a .shstrtab and a .modinfo section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        let mut header = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, strtab_off, shstrtab.len());
        header(11, modinfo_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_depends_from_modinfo() {
        let elf = fake_module(b"license=GPL\0depends=netfs,9pnet\0name=9p\0");
        assert_eq!(module_depends(&elf).unwrap(), ["netfs", "9pnet"]);
        let elf = fake_module(b"depends=\0name=netfs\0");
        assert!(module_depends(&elf).unwrap().is_empty());
        assert!(module_depends(b"not an elf").is_err());
        assert!(module_depends(&fake_module(b"")[..70]).is_err());
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A complete fetch() result holding `tag`.
    fn complete_entry(cache: &Path, tag: &str) -> PathBuf {
        let dir = unique_dir(cache, ".fetch-test").unwrap();
        fs::write(dir.join("vmlinuz"), tag).unwrap();
        fs::write(dir.join(COMPLETE), "linux-image-test").unwrap();
        dir
    }

    #[test]
    fn the_first_complete_entry_stays_and_a_later_one_is_dropped() {
        let cache = scratch_dir("kernel-install");
        let dir = cache.join(entry_name("6.12.118+deb12-amd64"));
        let (first, second) = (
            complete_entry(&cache, "first"),
            complete_entry(&cache, "second"),
        );
        assert_ne!(first, second);
        install(&cache, &first, &dir).unwrap();
        install(&cache, &second, &dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("vmlinuz")).unwrap(), "first");
        assert!(!first.exists() && !second.exists());
        // An entry without its marker is replaced.
        fs::remove_file(dir.join(COMPLETE)).unwrap();
        install(&cache, &complete_entry(&cache, "third"), &dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("vmlinuz")).unwrap(), "third");
        let left: Vec<_> = fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn prunes_superseded_entries_only_when_unused_for_a_while() {
        let cache = scratch_dir("kernel-prune");
        let long_ago = SystemTime::now() - PRUNE_AFTER - Duration::from_secs(60);
        let entry = |release: &str, last_use: Option<SystemTime>| {
            let dir = cache.join(entry_name(release));
            fs::create_dir(&dir).unwrap();
            let marker = fs::File::create(dir.join(COMPLETE)).unwrap();
            if let Some(t) = last_use {
                marker.set_modified(t).unwrap();
            }
            dir
        };
        let current = entry("6.12.118+deb12-amd64", Some(long_ago));
        let stale = entry("6.12.117+deb12-amd64", Some(long_ago));
        let recent = entry("6.12.119+deb12-amd64", None);
        let other_line = entry("6.1.0-56-amd64", Some(long_ago));
        let older_layout = cache.join("6.12.118+deb12-amd64-x1");
        fs::rename(entry("older layout", Some(long_ago)), &older_layout).unwrap();
        let interrupted = cache.join(".remove-6.12.100+deb12-amd64-x2-1-2");
        fs::create_dir(&interrupted).unwrap();
        let fetching = unique_dir(&cache, ".fetch-6.12.119+deb12-amd64-x2").unwrap();
        let apt = cache.join("apt-bullseye");
        fs::create_dir(&apt).unwrap();

        mark_used(&current);
        assert!(age(&current.join(COMPLETE)).unwrap() < PRUNE_AFTER);
        prune_superseded(LINES[0], &cache, &entry_name("6.12.118+deb12-amd64"));
        for kept in [&current, &recent, &other_line, &fetching, &apt] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        for gone in [&stale, &older_layout, &interrupted] {
            assert!(!gone.exists(), "{} was kept", gone.display());
        }
        let names: Vec<String> = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".remove-")),
            "{names:?}"
        );
        fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        // Removed on drop, a failed assertion included.
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let mut modules = HashMap::new();
        for (name, info) in [
            ("9p", &b"depends=netfs,9pnet\0"[..]),
            ("9pnet_virtio", b"depends=9pnet\0"),
            ("9pnet", b"depends=\0"),
            ("netfs", b"depends=\0"),
            ("overlay", b"depends=\0"),
        ] {
            let path = dir.join(format!("{name}.ko"));
            fs::write(&path, fake_module(info)).unwrap();
            modules.insert(name.to_string(), path);
        }
        let order = load_order(&modules, "kernel/drivers/virtio/virtio_pci.ko\n").unwrap();
        assert_eq!(order, ["9pnet", "9pnet_virtio", "netfs", "9p", "overlay"]);
        // virtio_pci neither shipped nor built in: a clear error, not a guest hang.
        assert!(load_order(&modules, "").is_err());
    }
}
