//! A debuginfod client: `GET URL/buildid/HEX/debuginfo` on each server of
//! `DEBUGINFOD_URLS` (space-separated, as elfutils reads it), into the cache.
//!
//! A recording must not wait on a server: the fetching of each `WINDOW`
//! shares one budget of `DEBUGINFOD_TIMEOUT` seconds (default 10), a
//! server that fails (refused, unreachable, too slow, an HTTP error) is not
//! asked again in that window, and each failure is said once. The window
//! is longer than any recording's, so a recording has one budget; a daemon
//! gets a new one every few minutes, and one transient error does not end
//! its fetching for months. A redirect is followed only to the same server
//! (scheme, host and port): DEBUGINFOD_URLS names whom root trusts.
//!
//! ureq, blocking and small, because symbolization is synchronous code;
//! its timeout covers the connection and the whole body. A daemon, whose
//! read loop must answer /healthz, fetches on a worker thread of its own
//! (`Background`): a frame waiting for its debug file is named
//! `FILE+0xADDR` until the file is in the cache.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cache::{Cache, PutError, MAX_DEBUG_FILE_SIZE};
use super::hex;
use crate::host::safe_open::Opened;
use crate::say::note;

const DEFAULT_BUDGET: Duration = Duration::from_secs(10);
/// How long a budget, a server's failure and a build id no server has are
/// remembered.
const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Build ids remembered as missing in a window, at most.
const MAX_MISSING: usize = 10_000;
/// Redirects followed on one request (each to the same server).
const MAX_REDIRECTS: usize = 4;
/// Build ids waiting for the worker; more are asked again later.
const WORKER_QUEUE: usize = 64;

struct Server {
    url: String,
    down: bool,
}

pub struct Debuginfod {
    servers: Vec<Server>,
    agent: ureq::Agent,
    cache: Cache,
    budget: Duration,
    /// When the current window began.
    window: Instant,
    spent: Duration,
    budget_said: bool,
    /// Build ids no server has: not asked again in the window.
    missing: HashSet<Vec<u8>>,
}

/// Where the cache lives: `DEBUGINFOD_CACHE_PATH` (elfutils' variable) if
/// set; for root `/var/cache/clockprof/debuginfod`; else under
/// `$XDG_CACHE_HOME` (or `~/.cache`). Returns the existing base and the
/// components clockprof creates under it.
fn cache_location() -> Option<(PathBuf, Vec<String>)> {
    if let Some(path) = std::env::var_os("DEBUGINFOD_CACHE_PATH").map(PathBuf::from) {
        let name = path.file_name()?.to_string_lossy().into_owned();
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty())?;
        return Some((parent.to_path_buf(), vec![name]));
    }
    let own = vec!["clockprof".to_string(), "debuginfod".to_string()];
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some((PathBuf::from("/var/cache"), own));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache")))?;
    Some((base, own))
}

/// The servers of `DEBUGINFOD_URLS` clockprof can ask, and the entries it
/// cannot (not http:// or https://).
fn parse_urls(urls: &str) -> (Vec<String>, Vec<String>) {
    urls.split_whitespace()
        .map(|url| url.trim_end_matches('/').to_string())
        .partition(|url| url.starts_with("http://") || url.starts_with("https://"))
}

const MAX_BUDGET_SECS: u64 = 24 * 3600;

fn budget_from(value: Option<&str>) -> Duration {
    value
        .and_then(|secs| secs.trim().parse::<u64>().ok())
        // Capped at a day: a deadline of now + u64::MAX seconds overflows
        // Instant, and no run waits a day for debug files.
        .map(|secs| Duration::from_secs(secs.min(MAX_BUDGET_SECS)))
        .unwrap_or(DEFAULT_BUDGET)
}

impl Debuginfod {
    /// The client `DEBUGINFOD_URLS` asks for, if any.
    pub fn from_env() -> Option<Debuginfod> {
        let urls = std::env::var("DEBUGINFOD_URLS").ok()?;
        let (urls, ignored) = parse_urls(&urls);
        for url in ignored {
            note!(
                "ignoring {url:?} in DEBUGINFOD_URLS: only http:// and https:// servers are asked"
            );
        }
        if urls.is_empty() {
            return None;
        }
        let cache = match cache_location()
            .ok_or_else(|| std::io::Error::other("no cache directory is known (HOME unset)"))
            .and_then(|(base, components)| {
                let components: Vec<&str> = components.iter().map(String::as_str).collect();
                Cache::open(&base, &components)
                    .map_err(|err| std::io::Error::other(format!("{}: {err}", base.display())))
            }) {
            Ok(cache) => cache,
            Err(err) => {
                note!(
                    "debug files are not fetched from debuginfod: its cache cannot be used: {err}"
                );
                return None;
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .user_agent(concat!("clockprof/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by hand, to the same server only.
            .max_redirects(0)
            .build()
            .new_agent();
        Some(Debuginfod {
            servers: urls
                .into_iter()
                .map(|url| Server { url, down: false })
                .collect(),
            agent,
            cache,
            budget: budget_from(std::env::var("DEBUGINFOD_TIMEOUT").ok().as_deref()),
            window: Instant::now(),
            spent: Duration::ZERO,
            budget_said: false,
            missing: HashSet::new(),
        })
    }

    /// Fetches on a thread of its own from now on (see `Background`).
    pub fn in_background(self) -> Option<Background> {
        let cache = self.cache.try_clone().ok()?;
        let (requests, received) = mpsc::sync_channel::<(Vec<u8>, String)>(WORKER_QUEUE);
        let mut client = self;
        std::thread::Builder::new()
            .name("debuginfod".to_string())
            .spawn(move || {
                // Ends when the symbolizer, and its sender, are dropped.
                for (id, module) in received {
                    drop(client.debug_file(&id, &module));
                }
            })
            .ok()?;
        Some(Background {
            requests,
            cache,
            asked: HashMap::new(),
        })
    }

    /// A new window once the last is `WINDOW` old: a fresh budget, and the
    /// servers and build ids that failed are asked again.
    fn begin_window_if_due(&mut self) {
        if self.window.elapsed() < WINDOW {
            return;
        }
        self.window = Instant::now();
        self.spent = Duration::ZERO;
        self.budget_said = false;
        self.missing.clear();
        for server in &mut self.servers {
            server.down = false;
        }
    }

    /// The debug file of build id `id` (of the file `module`), from the
    /// cache or fetched into it.
    pub fn debug_file(&mut self, id: &[u8], module: &str) -> Option<Opened> {
        let id_hex = hex(id);
        if let Some(cached) = self.cache.get(&id_hex) {
            return Some(cached);
        }
        self.begin_window_if_due();
        if self.missing.contains(id) {
            return None;
        }
        for index in 0..self.servers.len() {
            if self.servers[index].down {
                continue;
            }
            let Some(remaining) = self.budget.checked_sub(self.spent).filter(|d| !d.is_zero())
            else {
                if !self.budget_said {
                    self.budget_said = true;
                    note!(
                        "debuginfod: the {} s of DEBUGINFOD_TIMEOUT are spent; no more debug files are fetched for {} min",
                        self.budget.as_secs(),
                        WINDOW.as_secs() / 60
                    );
                }
                return None;
            };
            let started = Instant::now();
            let fetched = self.fetch(index, id, &id_hex, remaining);
            self.spent += started.elapsed();
            match fetched {
                Fetched::Found(opened) => return Some(opened),
                Fetched::NotThere => {}
                Fetched::Refused(why) => note!(
                    "debuginfod: the debug file {} served for {module} is not used: {why}",
                    self.servers[index].url
                ),
                Fetched::ServerFailed(why) => {
                    self.servers[index].down = true;
                    note!(
                        "debuginfod server {} {why}; it is not asked again for {} min",
                        self.servers[index].url,
                        WINDOW.as_secs() / 60
                    );
                }
            }
        }
        if self.missing.len() < MAX_MISSING {
            self.missing.insert(id.to_vec());
        }
        None
    }

    fn fetch(&self, index: usize, id: &[u8], id_hex: &str, timeout: Duration) -> Fetched {
        let mut url = format!("{}/buildid/{id_hex}/debuginfo", self.servers[index].url);
        let started = Instant::now();
        let mut redirects = 0;
        let response = loop {
            let left = timeout.saturating_sub(started.elapsed());
            let response = match self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(left))
                .build()
                .call()
            {
                Ok(response) => response,
                Err(ureq::Error::Timeout(_)) => {
                    return Fetched::ServerFailed(format!(
                        "did not answer within {} ms",
                        timeout.as_millis()
                    ))
                }
                Err(err) => return Fetched::ServerFailed(format!("failed: {err}")),
            };
            match response.status().as_u16() {
                200 => break response,
                404 => return Fetched::NotThere,
                301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                    let location = response
                        .headers()
                        .get("location")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or("");
                    match same_server_redirect(&url, location) {
                        Some(next) => {
                            url = next;
                            redirects += 1;
                        }
                        None => {
                            return Fetched::ServerFailed(format!(
                                "redirected to another server ({}), which is not followed",
                                crate::host::printable::printable(location)
                            ))
                        }
                    }
                }
                status => return Fetched::ServerFailed(format!("answered HTTP {status}")),
            }
        };
        let mut body = response
            .into_body()
            .into_with_config()
            .limit(MAX_DEBUG_FILE_SIZE + 1)
            .reader();
        let accept = |path: &Path| {
            let facts = super::ElfFacts::read(path).ok_or("it is not an ELF file")?;
            if facts.build_id.as_deref() != Some(id) {
                return Err("its build id differs".to_string());
            }
            Ok(())
        };
        match self.cache.put(id_hex, &mut body, accept) {
            Ok(opened) => Fetched::Found(opened),
            Err(PutError::Download(err)) => Fetched::ServerFailed(format!(
                "did not send the whole debug file within {} ms: {err}",
                timeout.as_millis()
            )),
            Err(PutError::Refused(why)) => Fetched::Refused(why),
        }
    }
}

/// Where a redirect from `from` to `location` leads, if it stays on the
/// same server: a path, or an absolute URL of the same scheme, host and
/// port.
fn same_server_redirect(from: &str, location: &str) -> Option<String> {
    let origin_end = |url: &str| {
        let after_scheme = url.find("://")? + 3;
        Some(
            url[after_scheme..]
                .find('/')
                .map_or(url.len(), |at| after_scheme + at),
        )
    };
    let origin = &from[..origin_end(from)?];
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(format!("{origin}{location}"));
    }
    let other = &location[..origin_end(location)?];
    (other.eq_ignore_ascii_case(origin)).then(|| location.to_string())
}

/// A `Debuginfod` working on a thread of its own: asking never waits.
pub struct Background {
    requests: mpsc::SyncSender<(Vec<u8>, String)>,
    cache: Cache,
    /// Build ids handed to the worker, and when: asked again after `WINDOW`.
    asked: HashMap<Vec<u8>, Instant>,
}

/// What asking for a debug file found.
pub enum Lookup {
    Found(Opened),
    /// No server has it (as far as this window knows).
    Missing,
    /// Being fetched: ask again later.
    Pending,
}

impl Background {
    /// The debug file of build id `id`, if the cache has it; else it is
    /// asked for, once a window.
    pub fn debug_file(&mut self, id: &[u8], module: &str) -> Lookup {
        if let Some(cached) = self.cache.get(&hex(id)) {
            self.asked.remove(id);
            return Lookup::Found(cached);
        }
        let now = Instant::now();
        self.asked
            .retain(|_, when| now.duration_since(*when) < WINDOW);
        if self.asked.contains_key(id) {
            return Lookup::Pending;
        }
        if self.asked.len() >= MAX_MISSING {
            return Lookup::Missing;
        }
        match self.requests.try_send((id.to_vec(), module.to_string())) {
            Ok(()) => {
                self.asked.insert(id.to_vec(), now);
                Lookup::Pending
            }
            // Full: asked again at a later read.
            Err(mpsc::TrySendError::Full(_)) => Lookup::Pending,
            Err(mpsc::TrySendError::Disconnected(_)) => Lookup::Missing,
        }
    }
}

enum Fetched {
    Found(Opened),
    /// 404: this server has no such build id.
    NotThere,
    /// The file came but cannot be used.
    Refused(String),
    ServerFailed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_servers_are_asked() {
        let (urls, ignored) =
            parse_urls(" https://debuginfod.example/ http://127.0.0.1:8002\tfile:///srv ");
        assert_eq!(
            urls,
            ["https://debuginfod.example", "http://127.0.0.1:8002"]
        );
        assert_eq!(ignored, ["file:///srv"]);
    }

    #[test]
    fn redirects_are_followed_to_the_same_server_only() {
        let from = "http://127.0.0.1:8002/buildid/ab/debuginfo";
        assert_eq!(
            same_server_redirect(from, "/files/ab.debug").as_deref(),
            Some("http://127.0.0.1:8002/files/ab.debug")
        );
        assert_eq!(
            same_server_redirect(from, "http://127.0.0.1:8002/x").as_deref(),
            Some("http://127.0.0.1:8002/x")
        );
        assert_eq!(same_server_redirect(from, "http://127.0.0.1:8003/x"), None);
        assert_eq!(same_server_redirect(from, "https://127.0.0.1:8002/x"), None);
        assert_eq!(same_server_redirect(from, "http://evil.example/x"), None);
        assert_eq!(same_server_redirect(from, "//evil.example/x"), None);
        assert_eq!(same_server_redirect(from, "x"), None);
    }

    #[test]
    fn budget_defaults_to_ten_seconds() {
        assert_eq!(budget_from(None), DEFAULT_BUDGET);
        assert_eq!(budget_from(Some("3")), Duration::from_secs(3));
        assert_eq!(budget_from(Some("soon")), DEFAULT_BUDGET);
        assert_eq!(
            budget_from(Some("18446744073709551615")),
            Duration::from_secs(MAX_BUDGET_SECS)
        );
    }
}
