//! `--web-config FILE`: the web configuration file of Prometheus's
//! exporter-toolkit, which node_exporter and every official exporter read,
//! so that existing files and docs apply:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths: to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # mTLS
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt
//! ```
//!
//! TLS is rustls (served through tokio-rustls). The certificate and key are
//! read again when their files change (checked at most once a second, at a
//! handshake), so cert-manager and ACME rotation need no restart; a pair
//! that does not load keeps the one before. Fields exporter-toolkit has and
//! clockprof does not honour (cipher suites, curves, client SAN lists,
//! HTTP/2) are refused by name rather than ignored.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use crate::host::safe_open;
use crate::say::warning;

/// A certificate, key or CA file larger than this is not one.
const MAX_PEM_FILE: u64 = 4 << 20;
/// A web configuration larger than this is not one.
const MAX_CONFIG_FILE: u64 = 1 << 20;
/// How often, at most, a handshake checks whether the certificate changed.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Passwords verified lately, kept so that a scrape every few seconds
/// costs one bcrypt check, not one per scrape; cleared when full.
const VERIFIED_CACHE: usize = 64;

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: String,
    min_version: Option<String>,
    max_version: Option<String>,
    // Known to exporter-toolkit, refused here by name (see the module).
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    prefer_server_cipher_suites: Option<serde_yaml_ng::Value>,
    client_allowed_sans: Option<serde_yaml_ng::Value>,
    cert: Option<serde_yaml_ng::Value>,
    key: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    http2: Option<bool>,
}

/// A loaded web configuration.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl WebConfig {
    /// Reads and checks `path`; every certificate and key it names is
    /// loaded now, so a mistake stops serve before it attaches anything.
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = safe_open::read_regular(path, MAX_CONFIG_FILE)
            .with_context(|| format!("could not read the web config {}", path.display()))?;
        let file: File = serde_yaml_ng::from_slice(&text)
            .map_err(|err| anyhow!("{} is not a web config: {err}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let tls = file
            .tls_server_config
            .map(|tls| tls_config(tls, base))
            .transpose()
            .with_context(|| format!("in {}", path.display()))?;
        let headers = match file.http_server_config {
            Some(http) => response_headers(http)?,
            None => Vec::new(),
        };
        let auth = (!file.basic_auth_users.is_empty())
            .then(|| BasicAuth::new(file.basic_auth_users))
            .transpose()?;
        Ok(WebConfig { tls, auth, headers })
    }
}

fn tls_config(tls: TlsFile, base: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let unsupported = [
        ("cipher_suites", tls.cipher_suites.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
        (
            "prefer_server_cipher_suites",
            tls.prefer_server_cipher_suites.is_some(),
        ),
        ("client_allowed_sans", tls.client_allowed_sans.is_some()),
        ("cert (inline)", tls.cert.is_some()),
        ("key (inline)", tls.key.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, given)| *given) {
        bail!("tls_server_config.{name} is not supported by clockprof (rustls' defaults apply; certificates and keys come from cert_file and key_file)");
    }
    let (Some(cert_file), Some(key_file)) = (tls.cert_file, tls.key_file) else {
        bail!("tls_server_config needs cert_file and key_file");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = versions(tls.min_version.as_deref(), tls.max_version.as_deref())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("rustls offers none of those TLS versions")?;
    let client_ca = tls.client_ca_file.map(|file| base.join(file));
    let builder = match (tls.client_auth_type.as_str(), client_ca) {
        ("" | "NoClientCert", None) => builder.with_no_client_auth(),
        ("" | "NoClientCert", Some(_)) => {
            bail!("client_ca_file is given without a client_auth_type that uses it (RequireAndVerifyClientCert or VerifyClientCertIfGiven)")
        }
        (kind @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven"), Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(pem_certificates(&ca)?);
            if added == 0 {
                bail!("{} holds no CA certificate rustls can use", ca.display());
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if kind == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|err| anyhow!("the client CA cannot verify: {err}"))?,
            )
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            bail!(
                "client_auth_type {} needs client_ca_file",
                tls.client_auth_type
            )
        }
        (other, _) => bail!(
            "client_auth_type {other} is not supported: clockprof takes NoClientCert, \
             VerifyClientCertIfGiven and RequireAndVerifyClientCert (the others accept \
             certificates nobody verified)"
        ),
    };
    let resolver = ReloadingCertificate::new(base.join(cert_file), base.join(key_file), provider)?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// exporter-toolkit's min_version and max_version (TLS10 to TLS13); rustls
/// has TLS 1.2 and 1.3 only.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let rank = |name: Option<&str>, default: u8| -> Result<u8> {
        match name {
            None => Ok(default),
            Some("TLS10") => Ok(10),
            Some("TLS11") => Ok(11),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => bail!("{other} is not a TLS version (TLS10 to TLS13)"),
        }
    };
    let (low, high) = (rank(min, 12)?.max(12), rank(max, 13)?);
    let mut versions = Vec::new();
    if low <= 12 && high >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if high >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        bail!("max_version allows no TLS version clockprof speaks (TLS12 and TLS13)");
    }
    Ok(versions)
}

/// The PEM certificates of `path` (a certificate chain or a CA bundle,
/// Debian's whole bundle is about 200 KiB): also the CA file of https pushes.
pub(super) fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = safe_open::read_regular(path, MAX_PEM_FILE)
        .with_context(|| format!("could not read {}", path.display()))?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow!("{} is not PEM: {err:?}", path.display()))?;
    if certificates.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}

/// What tells a file changed: its inode (a rename over it), size and
/// modification time.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    })
}

/// The server's certificate, read again once its files change.
#[derive(Debug)]
struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    stamps: (Option<Stamp>, Option<Stamp>),
    key: Arc<CertifiedKey>,
    /// The stamps of a pair that failed to load, so it is reported once.
    failed: Option<(Option<Stamp>, Option<Stamp>)>,
}

impl ReloadingCertificate {
    fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<ReloadingCertificate> {
        let stamps = (stamp(&cert_file), stamp(&key_file));
        let key = load_pair(&cert_file, &key_file, &provider)?;
        Ok(ReloadingCertificate {
            cert_file,
            key_file,
            provider,
            state: Mutex::new(Loaded {
                checked: Instant::now(),
                stamps,
                key,
                failed: None,
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamps = (stamp(&self.cert_file), stamp(&self.key_file));
            if stamps != state.stamps && state.failed != Some(stamps) {
                match load_pair(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(key) => {
                        state.key = key;
                        state.stamps = stamps;
                        state.failed = None;
                    }
                    Err(err) => {
                        // Often a rotation caught between its two writes:
                        // tried again once either file changes.
                        state.failed = Some(stamps);
                        warning!("kept the TLS certificate served so far: {err:#}");
                    }
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>> {
    let chain = pem_certificates(cert_file)?;
    let key_pem = safe_open::read_regular(key_file, MAX_PEM_FILE)
        .with_context(|| format!("could not read {}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|err| anyhow!("{} holds no PEM private key: {err:?}", key_file.display()))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|err| {
        anyhow!(
            "{} and {} are not a certificate and its key: {err}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// Response headers clockprof sets itself.
const OWN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "www-authenticate",
];

fn response_headers(http: HttpFile) -> Result<Vec<(HeaderName, HeaderValue)>> {
    if http.http2 == Some(true) {
        bail!("http_server_config.http2 is not supported by clockprof (it serves HTTP/1.1)");
    }
    http.headers
        .into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                anyhow!("http_server_config.headers: `{name}` is not a header name")
            })?;
            if OWN_HEADERS.contains(&header.as_str()) {
                bail!("http_server_config.headers: `{name}` is set by clockprof");
            }
            let value = HeaderValue::from_str(&value).map_err(|_| {
                anyhow!("http_server_config.headers: the value of `{name}` cannot be a header's")
            })?;
            Ok((header, value))
        })
        .collect()
}

/// basic_auth_users: user to bcrypt hash.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// (user, password) pairs verified lately.
    verified: Mutex<HashSet<(String, String)>>,
    /// Bcrypt checks run two at a time: each costs tens of ms of CPU, and
    /// a flood of wrong passwords must not take the daemon's cores.
    checks: tokio::sync::Semaphore,
}

/// A bcrypt hash of nothing anyone types, compared against for unknown
/// users so that they take as long as known ones.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        for (user, hash) in &users {
            let parts: Vec<&str> = hash.split('$').collect();
            let bcrypt_like = parts.len() == 4
                && parts[0].is_empty()
                && matches!(parts[1], "2a" | "2b" | "2x" | "2y")
                && parts[2].parse::<u32>().is_ok();
            if !bcrypt_like {
                bail!("basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)");
            }
            if user.contains(':') {
                bail!("basic_auth_users: a user name may not hold `:`");
            }
        }
        Ok(BasicAuth {
            users,
            verified: Mutex::new(HashSet::new()),
            checks: tokio::sync::Semaphore::new(2),
        })
    }

    /// Whether `authorization` (the request's header) names a user with
    /// their password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let pair = (user, password);
        if self.verified_lately(&pair) {
            return true;
        }
        let hash = self
            .users
            .get(&pair.0)
            .cloned()
            .unwrap_or_else(|| DUMMY_HASH.to_string());
        let known = self.users.contains_key(&pair.0);
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let password = pair.1.clone();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if matches && known {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
            verified.insert(pair);
            return true;
        }
        false
    }

    fn verified_lately(&self, pair: &(String, String)) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(pair)
    }
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<WebConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap();
        WebConfig::load(&path)
    }

    fn error_of(text: &str) -> String {
        match load_text(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn unknown_and_unsupported_fields_are_refused_by_name() {
        assert!(error_of("tls_server_confg: {}\n").contains("unknown field"));
        assert!(error_of(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"
        )
        .contains("cipher_suites is not supported"));
        assert!(error_of("tls_server_config:\n  cert_file: a\n")
            .contains("needs cert_file and key_file"));
        assert!(error_of("http_server_config:\n  http2: true\n").contains("http2"));
        assert!(
            error_of("http_server_config:\n  headers:\n    Content-Type: x\n")
                .contains("set by clockprof")
        );
        assert!(error_of("basic_auth_users:\n  alice: plain\n").contains("not a bcrypt hash"));
        assert!(error_of(
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n"
        )
        .contains("missing.crt"));
    }

    #[test]
    fn versions_map_to_what_rustls_speaks() {
        let names = |min, max| {
            versions(min, max).map(|v| {
                v.iter()
                    .map(|v| format!("{:?}", v.version))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(names(None, None).unwrap(), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(names(Some("TLS13"), None).unwrap(), ["TLSv1_3"]);
        assert_eq!(names(Some("TLS10"), Some("TLS12")).unwrap(), ["TLSv1_2"]);
        assert!(names(None, Some("TLS11")).is_err());
        assert!(names(Some("SSL3"), None).is_err());
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_and_remembers_a_good_password() {
        let hash = bcrypt::hash_with_salt("s3cret", 4, [7u8; 16])
            .unwrap()
            .to_string();
        let config = load_text(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let auth = config.auth.unwrap();
        let header = |user: &str, password: &str| {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
        };
        assert!(auth.allows(Some(&header("alice", "s3cret"))).await);
        assert!(auth.verified_lately(&("alice".into(), "s3cret".into())));
        assert!(auth.allows(Some(&header("alice", "s3cret"))).await);
        assert!(!auth.allows(Some(&header("alice", "wrong"))).await);
        assert!(!auth.allows(Some(&header("bob", "s3cret"))).await);
        assert!(!auth.allows(None).await);
        assert!(
            !auth
                .allows(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
    }
}
