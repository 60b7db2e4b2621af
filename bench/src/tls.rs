//! `--cacert`, `--cert` and `--key` into the rustls [`ClientConfig`] of `https://` endpoints
//! (ring provider only, TLS 1.2 and 1.3).
//!
//! Servers must present a certificate chaining to one of the PEM certificates of `--cacert`
//! and naming the endpoint's host; with `--cert` and `--key` the client also presents that
//! certificate (for servers that require client certificates).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The config trusting the CA certificates of `cacert`, presenting `client_auth` (a PEM
/// certificate chain and its PEM private key) when given.
///
/// # Errors
/// One sentence naming the file that cannot be read or used.
pub fn client_config(
    cacert: &Path,
    client_auth: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(cacert, "--cacert")? {
        roots.add(cert).map_err(|e| {
            format!(
                "cannot use a CA certificate of {} (--cacert): {e}",
                cacert.display()
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots);
    let Some((cert, key)) = client_auth else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = read_certs(cert, "--cert")?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {} (--key): {e}", key.display()))?;
    builder
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| {
            format!(
                "cannot use client certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            )
        })
}

/// Every PEM certificate of `path`; at least one.
fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read {} ({flag}): {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} ({flag}) holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}
