//! The TLS client of https pushes: rustls, with the system's roots (as
//! OpenSSL finds them, through rustls-native-certs) plus `--push-ca-file`
//! for a private CA.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::host::safe_open;

/// A CA bundle larger than this is not one (Debian's whole bundle is
/// about 200 KiB).
const MAX_CA_FILE: u64 = 4 << 20;

/// The configuration every https push uses.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca_file) = ca_file {
        let certificates = read_certificates(ca_file)?;
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

/// The PEM certificates of `path`, opened as every file root reads.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let mut opened = safe_open::open_regular(path, None, MAX_CA_FILE)
        .with_context(|| format!("could not read the CA file {}", path.display()))?;
    let mut pem = Vec::new();
    opened.file.read_to_end(&mut pem)?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow::anyhow!("{} is not PEM: {err:?}", path.display()))?;
    if certificates.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}
