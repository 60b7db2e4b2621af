//! TLS to `https://` endpoints: `--cacert` (the CA the servers' certificates chain to), and
//! `--cert` with `--key` for servers that require a client certificate
//! (`--client-cert-auth`). rustls with the ring provider, TLS 1.2 and 1.3.
//!
//! (`check` has the same loading, but crate-private; this is ctl's own.)

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::ctl::error::{invalid, Result};

/// The client config of the flags, or `None` without `--cacert` (then `https://` endpoints
/// are refused before anything is sent, see `args.rs`).
///
/// # Errors
/// `Invalid` when `--cert` and `--key` are not given together, come without `--cacert`, or a
/// file cannot be read or used.
pub fn client_config(
    cacert: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>> {
    let client_auth = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "--cert and --key go together: give both or neither",
            ))
        }
    };
    let Some(cacert) = cacert else {
        if client_auth.is_some() {
            return Err(invalid(
                "--cert and --key need --cacert too (the CA of the servers' certificates)",
            ));
        }
        return Ok(None);
    };
    let roots = load_roots(cacert)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, private_key) = load_identity(cert, key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| {
                    invalid(format!(
                        "cannot use the client certificate {} with the key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?
        }
    };
    Ok(Some(Arc::new(config)))
}

fn load_roots(cacert: &Path) -> Result<RootCertStore> {
    let certs = CertificateDer::pem_file_iter(cacert)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| {
            invalid(format!(
                "cannot read CA certificates from {} (--cacert): {e}",
                cacert.display()
            ))
        })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            invalid(format!(
                "cannot use a CA certificate of {} (--cacert): {e}",
                cacert.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(invalid(format!(
            "{} holds no PEM certificate (--cacert)",
            cacert.display()
        )));
    }
    Ok(roots)
}

fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| {
            invalid(format!(
                "cannot read the client certificate {} (--cert): {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "{} holds no PEM certificate (--cert)",
            cert.display()
        )));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(format!(
            "cannot read the private key {} (--key): {e}",
            key.display()
        ))
    })?;
    Ok((chain, private_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_are_checked_before_any_connection() {
        // Intent: half a client identity, an identity without a CA, and an unreadable CA are
        // each one Invalid sentence; no flags at all is plain HTTP only.
        assert!(client_config(None, None, None).unwrap().is_none());
        let p = Path::new;
        let half = client_config(Some(p("ca.pem")), Some(p("c.pem")), None).unwrap_err();
        assert!(half.to_string().contains("go together"), "{half}");
        let no_ca = client_config(None, Some(p("c.pem")), Some(p("k.pem"))).unwrap_err();
        assert!(no_ca.to_string().contains("need --cacert"), "{no_ca}");
        let missing = client_config(Some(p("/nonexistent/ca.pem")), None, None).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        assert_eq!(missing.exit_code(), 3);
    }
}
