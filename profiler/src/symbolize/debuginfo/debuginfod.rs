//! A debuginfod client: `GET URL/buildid/HEX/debuginfo` on each server of
//! `DEBUGINFOD_URLS` (space-separated, as elfutils reads it), into the cache.
//!
//! A recording must not wait on a server: all the fetching of a run shares
//! one budget of `DEBUGINFOD_TIMEOUT` seconds (default 10), a server that
//! fails (refused, unreachable, too slow, an HTTP error) is not asked again
//! in the run, and each failure is said once. ureq, blocking and small,
//! because symbolization is synchronous code; its timeout covers the
//! connection and the whole body.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cache::{Cache, PutError, MAX_DEBUG_FILE_SIZE};
use super::hex;
use crate::host::safe_open::Opened;
use crate::say::note;

const DEFAULT_BUDGET: Duration = Duration::from_secs(10);

struct Server {
    url: String,
    down: bool,
}

pub struct Debuginfod {
    servers: Vec<Server>,
    agent: ureq::Agent,
    cache: Cache,
    budget: Duration,
    spent: Duration,
    budget_said: bool,
    /// Build ids no server has: not asked again in the run.
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
            spent: Duration::ZERO,
            budget_said: false,
            missing: HashSet::new(),
        })
    }

    /// The debug file of build id `id` (of the file `module`), from the
    /// cache or fetched into it.
    pub fn debug_file(&mut self, id: &[u8], module: &str) -> Option<Opened> {
        let id_hex = hex(id);
        if let Some(cached) = self.cache.get(&id_hex) {
            return Some(cached);
        }
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
                        "debuginfod: the {} s of DEBUGINFOD_TIMEOUT are spent; no more debug files are fetched in this run",
                        self.budget.as_secs()
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
                        "debuginfod server {} {why}; it is not asked again in this run",
                        self.servers[index].url
                    );
                }
            }
        }
        self.missing.insert(id.to_vec());
        None
    }

    fn fetch(&self, index: usize, id: &[u8], id_hex: &str, timeout: Duration) -> Fetched {
        let url = format!("{}/buildid/{id_hex}/debuginfo", self.servers[index].url);
        let response = match self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(timeout))
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
            200 => {}
            404 => return Fetched::NotThere,
            status => return Fetched::ServerFailed(format!("answered HTTP {status}")),
        }
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
