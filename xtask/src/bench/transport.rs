//! `serve`'s cost for a fleet's transport, while a fixture reads the clock
//! from 4096 distinct stacks:
//! - CPU and memory with a scrape every second and a push every 10 s, over
//!   plain HTTP and over TLS with basic auth (the baseline is plain HTTP,
//!   in the same run). Each scrape is a new connection (curl), so TLS pays
//!   a handshake every second, where Prometheus would keep its connection:
//!   the worst case.
//! - The size of one 1-minute window as pushed: a Connect push (a gzipped
//!   pprof per series) and an OTLP request (gzipped, and unzipped).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::procfs;

/// How long each transport is measured.
const MEASURE: Duration = Duration::from_secs(60);
/// serve's start-up, before measuring.
const WARM_UP: Duration = Duration::from_secs(5);
/// bcrypt of "scrape-pass" (cost 10), as `htpasswd -nbBC 10` writes (the
/// serve suite's).
const SCRAPE_HASH: &str = "$2b$10$Bxa48SC38RKcnBH/u1.8SeBPPBpZA1SP0rI8QMjJxrOE4luA0pjwC";
const SCRAPE_PASSWORD: &str = "scrape-pass";

pub struct Cost {
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub scrapes: u32,
    pub pushes: usize,
}

pub struct Transport {
    pub plain: Cost,
    pub tls: Cost,
    /// Bytes of a 1-minute window: Connect push body, OTLP gzipped, OTLP
    /// unzipped.
    pub connect_bytes: usize,
    pub otlp_gzip_bytes: usize,
    pub otlp_bytes: usize,
}

/// A child killed and reaped on drop, so no error path leaves serve or the
/// fixture running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SIGINT first: serve detaches its probes on it.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a sink received: each request's path and body.
type Received = mpsc::Receiver<(String, Vec<u8>)>;

/// A loopback receiver answering 200 to every POST.
fn sink() -> Result<(u16, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("could not bind a push sink")?;
    let port = listener.local_addr()?.port();
    let (sent, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let length: usize = head
                .iter()
                .find_map(|h| {
                    let (k, v) = h.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let path = head
                .first()
                .and_then(|h| h.split_whitespace().nth(1))
                .unwrap_or("")
                .to_string();
            let _ = sent.send((path, body));
            let _ = reader
                .into_inner()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Ok((port, received))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("could not run openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A CA and a certificate for 127.0.0.1 signed by it, and the web config
/// serving it with basic auth: (web config, CA file).
fn tls_config(dir: &Path) -> Result<(String, String)> {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", &path("ca.key"), "-out", &path("ca.pem")],
            &["-days", "2", "-subj", "/CN=clockprof bench CA"],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-keyout", &path("server.key"), "-out", &path("server.csr")],
            &["-subj", "/CN=server"],
        ]
        .concat(),
    )?;
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("server.pem"),
        "-days",
        "2",
        "-extfile",
        &path("server.ext"),
    ])?;
    let web_config = path("web-config.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{SCRAPE_HASH}'\n",
            path("server.pem"),
            path("server.key")
        ),
    )?;
    Ok((web_config, path("ca.pem")))
}

fn start_serve(clockprof: &Path, args: &[&str]) -> Result<Reaped> {
    let child = Command::new(clockprof)
        .arg("serve")
        .args(["-s", "syscall"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start clockprof serve")?;
    Ok(Reaped(child))
}

/// serve's cost over MEASURE with a scrape (curl `scrape`) every second.
fn cost(clockprof: &Path, serve_args: &[&str], scrape: &[&str], pushes: &Received) -> Result<Cost> {
    let serve = start_serve(clockprof, serve_args)?;
    sleep(WARM_UP);
    let pid = serve.0.id();
    let _ = pushes.try_iter().count();
    let before = procfs::cpu_time_ms(pid)?;
    let started = Instant::now();
    let mut scrapes = 0;
    while started.elapsed() < MEASURE {
        let tick = Instant::now();
        let status = Command::new("curl")
            .args(["-s", "-f", "-o", "/dev/null"])
            .args(scrape)
            .status()
            .context("could not run curl")?;
        if !status.success() {
            bail!("a scrape ({scrape:?}) failed: {status}");
        }
        scrapes += 1;
        sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let cpu_ms = procfs::cpu_time_ms(pid)? - before;
    let rss_mib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
        / 1024.0;
    let peak_rss_mib = procfs::peak_rss_kib(pid)? as f64 / 1024.0;
    Ok(Cost {
        cpu_percent: 100.0 * cpu_ms / started.elapsed().as_millis() as f64,
        rss_mib,
        peak_rss_mib,
        scrapes,
        pushes: pushes.try_iter().count(),
    })
}

fn gunzipped_len(bytes: &[u8]) -> Result<usize> {
    Ok(crate::process::filter(Command::new("gzip").arg("-dc"), bytes)?.len())
}

pub fn measure(clockprof: &Path, fixture: &Path) -> Result<Transport> {
    let dir = tempfile::Builder::new()
        .prefix("clockprof-bench-transport")
        .tempdir()?;
    let _fixture = Reaped(
        Command::new(fixture)
            .args(["stacks", "600"])
            .stdout(Stdio::null())
            .spawn()
            .context("could not start the stack-tree fixture")?,
    );
    let (push_port, pushes) = sink()?;
    let push_url = format!("http://127.0.0.1:{push_port}");

    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let push = ["--push", &push_url, "--push-interval", "10"];
    let plain = cost(
        clockprof,
        &[&["--listen", &listen][..], &push].concat(),
        &[&format!("http://{listen}/metrics")],
        &pushes,
    )?;
    let (web_config, ca) = tls_config(dir.path())?;
    let tls = cost(
        clockprof,
        &[
            &["--listen", &listen, "--web-config", &web_config][..],
            &push,
        ]
        .concat(),
        &[
            "--cacert",
            &ca,
            "-u",
            &format!("prometheus:{SCRAPE_PASSWORD}"),
            &format!("https://{listen}/metrics"),
        ],
        &pushes,
    )?;

    // One 1-minute window, pushed both ways at once.
    let (otlp_port, otlp) = sink()?;
    let serve = start_serve(
        clockprof,
        &[
            "--listen",
            &listen,
            "--push",
            &push_url,
            "--otlp",
            &format!("http://127.0.0.1:{otlp_port}"),
            "--push-interval",
            "60",
        ],
    )?;
    let _ = pushes.try_iter().count();
    let connect = pushes
        .recv_timeout(Duration::from_secs(90))
        .context("no Connect push came within 90 s")?
        .1;
    let otlp_body = otlp
        .recv_timeout(Duration::from_secs(30))
        .context("no OTLP push came")?
        .1;
    drop(serve);
    Ok(Transport {
        plain,
        tls,
        connect_bytes: connect.len(),
        otlp_gzip_bytes: otlp_body.len(),
        otlp_bytes: gunzipped_len(&otlp_body)?,
    })
}

impl Transport {
    pub fn print(&self) {
        println!(
            "\nclockprof serve, a scrape every 1 s (curl, a new connection each) and a push \
             every 10 s, a fixture reading the clock from 4096 stacks ({} s each):",
            MEASURE.as_secs()
        );
        for (name, cost) in [("plain HTTP", &self.plain), ("TLS + basic auth", &self.tls)] {
            println!(
                "  {name:<18} {:5.2}% of one core, {:.1} MiB resident ({:.1} peak), {} scrapes, {} pushes",
                cost.cpu_percent, cost.rss_mib, cost.peak_rss_mib, cost.scrapes, cost.pushes
            );
        }
        println!(
            "  TLS / plain        CPU x{:.2}, memory x{:.2}",
            self.tls.cpu_percent / self.plain.cpu_percent.max(1e-9),
            self.tls.rss_mib / self.plain.rss_mib.max(1e-9)
        );
        println!(
            "  a 1-minute window: Connect push {} B (gzipped pprofs), OTLP {} B gzipped ({} B unzipped)",
            self.connect_bytes, self.otlp_gzip_bytes, self.otlp_bytes
        );
    }

    pub fn json(&self) -> serde_json::Value {
        let cost = |c: &Cost| {
            json!({
                "cpu_percent": c.cpu_percent,
                "rss_mib": c.rss_mib,
                "peak_rss_mib": c.peak_rss_mib,
                "scrapes": c.scrapes,
                "pushes": c.pushes,
            })
        };
        json!({
            "measure_secs": MEASURE.as_secs(),
            "plain": cost(&self.plain),
            "tls_basic_auth": cost(&self.tls),
            "tls_cpu_ratio": self.tls.cpu_percent / self.plain.cpu_percent.max(1e-9),
            "window_60s_bytes": {
                "connect_pprof": self.connect_bytes,
                "otlp_gzip": self.otlp_gzip_bytes,
                "otlp": self.otlp_bytes,
            },
        })
    }
}
