//! The TLS client of https pushes: rustls, with the system's roots (as
//! OpenSSL finds them, through rustls-native-certs) plus `--push-ca-file`
//! for a private CA (read as web_config reads its certificates).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// The configuration every https push uses.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca_file) = ca_file {
        let certificates = crate::serve::web_config::pem_certificates(ca_file)?;
        let (added, _ignored) = roots.add_parsable_certificates(certificates);
        if added == 0 {
            bail!(
                "{} holds no CA certificate rustls can use",
                ca_file.display()
            );
        }
    }
    if roots.is_empty() {
        bail!("no CA certificate was found on this system for https pushes: give --push-ca-file");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls offers no TLS version")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
