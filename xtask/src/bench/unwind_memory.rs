//! What DWARF unwinding costs the daemon in memory, for real programs without
//! frame pointers: Debian's python3 (a `time.time()` loop, recorded as
//! `-- COMMAND`) and redis-server (under redis-benchmark, recorded with `-p`),
//! each recorded with `--unwind dwarf` against the same recording with
//! `--unwind fp`, rounds interleaved. The difference is the stack ring (32
//! MiB, allocated only when some process may be unwound with DWARF) plus the
//! unwind tables read from every file the program maps and framehop's state
//! over them. The ring's resident pages are read from the daemon's smaps and
//! its heap (RssAnon, where the tables are kept) polled from /proc, so the
//! parts can be told apart; the tables' own size is that of the sections
//! clockprof copies (`.eh_frame`, `.eh_frame_hdr`, `.debug_frame`) of each file
//! the program maps executable, read with readelf.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::report::median;
use super::scenario::Clockprof;

const PYTHON: &str = "/usr/bin/python3";
const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_BENCHMARK: &str = "/usr/bin/redis-benchmark";
const LOOP_SECONDS: u32 = 2;
const POLL: Duration = Duration::from_millis(20);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One recording: the daemon's peak resident set and its parts.
struct Run {
    peak_rss_kib: u64,
    /// The largest resident size seen of the daemon's mmapped BPF maps (the
    /// stack ring is one, its data pages mapped twice).
    bpf_maps_rss_kib: u64,
    /// The largest RssAnon seen: the heap, where the unwind tables are kept.
    anon_rss_kib: u64,
    /// What the profile says the program was unwound with.
    unwinder: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Program {
    Python,
    Redis,
}

impl Program {
    fn comm(self) -> &'static str {
        match self {
            Program::Python => "python3",
            Program::Redis => "redis-server",
        }
    }

    fn describe(self) -> String {
        match self {
            Program::Python => {
                format!("python3 (a {LOOP_SECONDS} s time.time() loop), record -s vdso -- python3")
            }
            Program::Redis => "redis-server (redis-benchmark -n 100000 -c 8 -t set,get), \
                               record -p PID -F 10000"
                .to_string(),
        }
    }
}

/// One program's recordings.
pub struct ProgramMemory {
    program: Program,
    fp: Vec<Run>,
    dwarf: Vec<Run>,
    /// Bytes of unwind sections in the files it mapped executable.
    table_bytes: u64,
    files: usize,
}

pub struct UnwindMemory {
    programs: Vec<ProgramMemory>,
}

pub fn measure(bin: &Clockprof, rounds: u32) -> Result<UnwindMemory> {
    ensure!(
        bin.lists("--unwind"),
        "`{} record --help` lists no --unwind",
        bin.label
    );
    for needed in [PYTHON, REDIS_SERVER, REDIS_BENCHMARK] {
        ensure!(
            Path::new(needed).exists(),
            "{needed} is missing (cargo xtask setup installs it)"
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("clockprof-bench-")
        .tempdir()
        .context("could not create a temporary directory")?;
    let mut programs = Vec::new();
    for program in [Program::Python, Program::Redis] {
        let mut memory = ProgramMemory {
            program,
            fp: Vec::new(),
            dwarf: Vec::new(),
            table_bytes: 0,
            files: 0,
        };
        let mut maps = String::new();
        for round in 0..rounds {
            // Every other round the other way round, as the cost rows do.
            let modes = if round % 2 == 0 {
                ["fp", "dwarf"]
            } else {
                ["dwarf", "fp"]
            };
            for mode in modes {
                let (run, program_maps) = record(&bin.path, mode, program, dir.path())?;
                maps = program_maps;
                eprintln!(
                    "xtask: bench unwind memory {}/{rounds}: {} --unwind {mode:<5} peak {:.1} MiB, \
                     BPF maps {:.1} MiB, heap {:.1} MiB resident, unwound with {}",
                    round + 1,
                    program.comm(),
                    run.peak_rss_kib as f64 / 1024.0,
                    run.bpf_maps_rss_kib as f64 / 1024.0,
                    run.anon_rss_kib as f64 / 1024.0,
                    run.unwinder
                );
                match mode {
                    "fp" => memory.fp.push(run),
                    _ => memory.dwarf.push(run),
                }
            }
        }
        let files = executable_files(&maps);
        memory.files = files.len();
        for file in files {
            memory.table_bytes += unwind_section_bytes(Path::new(file))?;
        }
        programs.push(memory);
    }
    Ok(UnwindMemory { programs })
}

/// The files a /proc/PID/maps maps executable, each once.
fn executable_files(maps: &str) -> Vec<&str> {
    let mut files: Vec<&str> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1)?;
            let path = fields.nth(3)?;
            (perms.contains('x') && path.starts_with('/')).then_some(path)
        })
        .collect();
    files.sort_unstable();
    files.dedup();
    files
}

/// Sizes of the sections clockprof keeps for unwinding, from `readelf -SW`.
fn unwind_section_bytes(file: &Path) -> Result<u64> {
    let output = Command::new("readelf")
        .arg("-SW")
        .arg(file)
        .output()
        .context("could not run readelf (binutils)")?;
    ensure!(
        output.status.success(),
        "readelf -SW {} failed",
        file.display()
    );
    Ok(parse_unwind_section_bytes(&String::from_utf8_lossy(
        &output.stdout,
    )))
}

/// `  [19] .eh_frame  PROGBITS  00000000008e0518 4e0518 064450 00 A 0 0 8`:
/// name, type, address, offset, then the size in hex.
fn parse_unwind_section_bytes(readelf: &str) -> u64 {
    readelf
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_once(']')?.1.split_whitespace();
            let name = fields.next()?;
            let size = fields.nth(3)?;
            [".eh_frame", ".eh_frame_hdr", ".debug_frame"]
                .contains(&name)
                .then(|| u64::from_str_radix(size, 16).ok())?
        })
        .sum()
}

/// A process of the bench's own, killed if still running when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Records `program` with `--unwind MODE`; returns the run and the program's
/// /proc/PID/maps.
fn record(clockprof: &Path, mode: &str, program: Program, dir: &Path) -> Result<(Run, String)> {
    let profile = dir.join(format!("{}-{mode}.json", program.comm()));
    let stderr_path = dir.join("stderr");
    let mut cmd = Command::new(clockprof);
    cmd.args(["record", "--unwind", mode, "-o"]).arg(&profile);
    let maps_path = dir.join("maps");
    let _ = fs::remove_file(&maps_path);
    let mut server = None;
    match program {
        Program::Python => {
            let script = dir.join("clock_loop.py");
            fs::write(
                &script,
                format!(
                    "import time\nend = time.monotonic() + {LOOP_SECONDS}\n\
                     while time.monotonic() < end:\n    time.time()\n\
                     open({maps:?}, 'w').write(open('/proc/self/maps').read())\n",
                    maps = maps_path.display().to_string()
                ),
            )?;
            cmd.args(["-s", "vdso", "--"]).arg(PYTHON).arg(script);
        }
        Program::Redis => {
            let (redis, port) = start_redis(dir)?;
            // Clock reads are ~1% of redis's CPU: sampled often enough to
            // unwind a few hundred of them, as the DWARF test does.
            cmd.args(["-p", &redis.0.id().to_string(), "-F", "10000"]);
            server = Some((redis, port));
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path)?)
        .spawn()
        .with_context(|| format!("could not start {}", clockprof.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut daemon = Some(Owned(child));
    let mut bpf_maps_rss_kib = 0;
    let mut anon_rss_kib = 0;
    let mut poll = || {
        if let Ok(smaps) = fs::read_to_string(format!("/proc/{pid}/smaps")) {
            bpf_maps_rss_kib = bpf_maps_rss_kib.max(bpf_map_rss_kib(&smaps));
        }
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            anon_rss_kib = anon_rss_kib.max(status_kib(&status, "RssAnon:").unwrap_or(0));
        }
    };
    if let Some((redis, port)) = &server {
        let started = Instant::now();
        while !fs::read_to_string(&stderr_path)?.contains("clockprof: recording") {
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "clockprof record -p did not start: {}",
                fs::read_to_string(&stderr_path)?
            );
            poll();
            thread::sleep(POLL);
        }
        let benchmark = Command::new(REDIS_BENCHMARK)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", "-n", "100000", "-c", "8", "-t", "set,get"])
            .stdout(Stdio::null())
            .status()
            .context("could not run redis-benchmark")?;
        ensure!(benchmark.success(), "redis-benchmark failed ({benchmark})");
        poll();
        fs::write(
            &maps_path,
            fs::read_to_string(format!("/proc/{}/maps", redis.0.id()))?,
        )?;
        // SAFETY: kill has no memory-safety preconditions; pid is our own
        // unreaped child.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let (status, peak_rss_kib) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child, not yet reaped; status and usage
        // are valid for writes. wait4, unlike Child::wait, gives the peak.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            // Reaped here: Owned must not kill or wait for it any more.
            std::mem::forget(daemon.take());
            // Of clockprof and a child it reaped (python3, far smaller), the larger.
            break (status, usage.ru_maxrss.max(0) as u64);
        }
        if reaped < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        poll();
        thread::sleep(POLL);
    };
    drop(server);
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "clockprof record --unwind {mode} ({}) failed (wait status {status}): {stderr}",
        program.comm()
    );
    let json: Value = serde_json::from_str(&fs::read_to_string(&profile)?)
        .with_context(|| format!("{} is not clockprof's JSON", profile.display()))?;
    let unwinder = json["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["comm"] == program.comm())
        .and_then(|p| p["unwinder"].as_str())
        .unwrap_or("unknown")
        .to_string();
    let maps = fs::read_to_string(&maps_path)
        .with_context(|| format!("{} wrote no maps", program.comm()))?;
    Ok((
        Run {
            peak_rss_kib,
            bpf_maps_rss_kib,
            anon_rss_kib,
            unwinder,
        },
        maps,
    ))
}

/// redis-server on a free loopback port, nothing saved, its files in `dir`.
fn start_redis(dir: &Path) -> Result<(Owned, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let redis = Owned(
        Command::new(REDIS_SERVER)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("could not start redis-server")?,
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            started.elapsed() < START_TIMEOUT,
            "redis-server did not listen on port {port}"
        );
        thread::sleep(POLL);
    }
    Ok((redis, port))
}

/// A `NAME:   1234 kB` field of /proc/PID/status.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The summed Rss of the `anon_inode:bpf-map` mappings in an smaps file.
fn bpf_map_rss_kib(smaps: &str) -> u64 {
    let mut in_bpf_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if in_bpf_map {
                total += rss
                    .split_whitespace()
                    .next()
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        } else if line.split_whitespace().nth(1).is_some_and(is_permissions) {
            in_bpf_map = line.ends_with("anon_inode:bpf-map");
        }
    }
    total
}

/// `r--s` and the like: the second field of a mapping's header line.
fn is_permissions(field: &str) -> bool {
    field.len() == 4
        && field
            .chars()
            .zip(["r-", "w-", "x-", "ps"])
            .all(|(c, allowed)| allowed.contains(c))
}

impl ProgramMemory {
    /// Medians of (peak, BPF maps, heap), in MiB.
    fn medians(runs: &[Run]) -> (f64, f64, f64) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        (
            median(runs.iter().map(|r| mib(r.peak_rss_kib))),
            median(runs.iter().map(|r| mib(r.bpf_maps_rss_kib))),
            median(runs.iter().map(|r| mib(r.anon_rss_kib))),
        )
    }

    fn range(runs: &[Run]) -> (f64, f64) {
        let peaks = runs.iter().map(|r| r.peak_rss_kib as f64 / 1024.0);
        (
            peaks.clone().fold(f64::INFINITY, f64::min),
            peaks.fold(f64::NEG_INFINITY, f64::max),
        )
    }

    fn unwinders(runs: &[Run]) -> String {
        let mut seen: Vec<&str> = runs.iter().map(|r| r.unwinder.as_str()).collect();
        seen.dedup();
        seen.join("/")
    }

    fn print(&self) {
        let (fp_peak, fp_maps, fp_heap) = Self::medians(&self.fp);
        let (dwarf_peak, dwarf_maps, dwarf_heap) = Self::medians(&self.dwarf);
        let (fp_lo, fp_hi) = Self::range(&self.fp);
        let (dwarf_lo, dwarf_hi) = Self::range(&self.dwarf);
        let added = dwarf_peak - fp_peak;
        let ring = dwarf_maps - fp_maps;
        println!(
            "\nUnwind memory: {}, {} rounds, medians of the daemon's peak resident set (wait4):",
            self.program.describe(),
            self.fp.len()
        );
        println!(
            "  --unwind fp:    peak {fp_peak:.1} MiB ({fp_lo:.1}..{fp_hi:.1}); BPF maps \
             {fp_maps:.1} MiB, heap {fp_heap:.1} MiB at most; unwound with {}",
            Self::unwinders(&self.fp)
        );
        println!(
            "  --unwind dwarf: peak {dwarf_peak:.1} MiB ({dwarf_lo:.1}..{dwarf_hi:.1}); BPF maps \
             {dwarf_maps:.1} MiB, heap {dwarf_heap:.1} MiB at most; unwound with {}",
            Self::unwinders(&self.dwarf)
        );
        println!(
            "  DWARF adds {added:.1} MiB to the peak ({:.2}x): the stack ring's mappings \
             {ring:+.1} MiB (32 MiB of pages, its data mapped twice), the heap's peak {:+.1} MiB \
             (reached while the programs load, before any table is read), the rest {:+.1} MiB",
            dwarf_peak / fp_peak,
            dwarf_heap - fp_heap,
            added - ring - (dwarf_heap - fp_heap)
        );
        println!(
            "  The unwind tables clockprof reads (.eh_frame, .eh_frame_hdr, .debug_frame of the \
             {} files {} maps executable): {:.2} MB, kept once per file however many processes \
             map it",
            self.files,
            self.program.comm(),
            self.table_bytes as f64 / 1e6
        );
    }

    fn json(&self) -> Value {
        let runs = |runs: &[Run]| {
            runs.iter()
                .map(|r| {
                    json!({
                        "peak_rss_kib": r.peak_rss_kib,
                        "bpf_maps_rss_kib": r.bpf_maps_rss_kib,
                        "anon_rss_kib_max": r.anon_rss_kib,
                        "unwinder": r.unwinder,
                    })
                })
                .collect::<Vec<_>>()
        };
        let (fp_peak, fp_maps, fp_heap) = Self::medians(&self.fp);
        let (dwarf_peak, dwarf_maps, dwarf_heap) = Self::medians(&self.dwarf);
        json!({
            "program": self.program.describe(),
            "fp": runs(&self.fp),
            "dwarf": runs(&self.dwarf),
            "peak_rss_mib_median": { "fp": fp_peak, "dwarf": dwarf_peak },
            "bpf_maps_rss_mib_median": { "fp": fp_maps, "dwarf": dwarf_maps },
            "heap_rss_mib_max_median": { "fp": fp_heap, "dwarf": dwarf_heap },
            "dwarf_added_mib": dwarf_peak - fp_peak,
            "unwind_table_bytes": self.table_bytes,
            "files_mapped_executable": self.files,
        })
    }
}

impl UnwindMemory {
    pub fn print(&self) {
        for program in &self.programs {
            program.print();
        }
    }

    pub fn json(&self) -> Value {
        self.programs
            .iter()
            .map(|p| (p.program.comm().to_string(), p.json()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_map_mappings_are_summed() {
        let smaps = "\
55710d99f000-55710de0c000 r--p 00000000 fe:00 5466141    /usr/bin/clockprof
Size:               4532 kB
Rss:                2244 kB
7fe4cd2ac000-7fe4d12ad000 r--s 00001000 00:10 1038       anon_inode:bpf-map
Size:              65540 kB
Rss:               65540 kB
7fe4d12ad000-7fe4d12ae000 rw-s 00000000 00:10 1038       anon_inode:bpf-map
Size:                  4 kB
Rss:                   4 kB
7fe4d1357000-7fe4d14ad000 r-xp 00026000 fe:00 326279     /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1060 kB
";
        assert_eq!(bpf_map_rss_kib(smaps), 65544);
        assert_eq!(bpf_map_rss_kib(""), 0);
    }

    #[test]
    fn unwind_sections_are_summed_from_readelf() {
        let readelf = "\
  [Nr] Name              Type            Address          Off    Size   ES Flg Lk Inf Al
  [ 0]                   NULL            0000000000000000 000000 000000 00      0   0  0
  [18] .eh_frame_hdr     PROGBITS        00000000008cc5a4 4cc5a4 013f74 00   A  0   0  4
  [19] .eh_frame         PROGBITS        00000000008e0518 4e0518 064450 00   A  0   0  8
  [20] .gcc_except_table PROGBITS        0000000000944968 544968 000100 00   A  0   0  4
  [30] .debug_frame      PROGBITS        0000000000000000 600000 000010 00      0   0  8
";
        assert_eq!(
            parse_unwind_section_bytes(readelf),
            0x13f74 + 0x64450 + 0x10
        );
    }

    #[test]
    fn executable_mappings_name_each_file_once() {
        let maps = "\
55d1a0000000-55d1a0100000 r--p 00000000 fe:00 12 /usr/bin/python3.11
55d1a0100000-55d1a0400000 r-xp 00100000 fe:00 12 /usr/bin/python3.11
7f0000000000-7f0000100000 r-xp 00026000 fe:00 34 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 fe:00 12 /usr/bin/python3.11
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0  [vdso]
7ffd00010000-7ffd00020000 rw-p 00000000 00:00 0
";
        assert_eq!(
            executable_files(maps),
            ["/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
        );
    }

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tclockprof\nRssAnon:\t   24612 kB\nRssFile:\t   85708 kB\n";
        assert_eq!(status_kib(status, "RssAnon:"), Some(24612));
        assert_eq!(status_kib(status, "RssShmem:"), None);
    }

    #[test]
    fn permissions_are_recognized() {
        assert!(is_permissions("r--s"));
        assert!(is_permissions("rw-p"));
        assert!(!is_permissions("kB"));
        assert!(!is_permissions("Rss:"));
    }
}
