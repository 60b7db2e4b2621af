//! TLS of the workload's clients: `--cacert`, `--cert` and `--key` into one rustls
//! [`ClientConfig`] (ring provider only, TLS 1.2 and 1.3).
//!
//! - Without `--cacert` the config trusts no root at all: `http://` endpoints never use it,
//!   and `https://` endpoints are refused before the run (see [`crate::workload`]).
//! - With `--cacert`, servers must present a certificate chaining to one of the PEM
//!   certificates in that file; with `--cert` and `--key` as well, the client presents that
//!   certificate (for servers that require client certificates).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::args::CheckArgs;
use crate::error::Error;

/// The client config the flags of `args` ask for, and whether it can verify servers (that
/// is, whether `--cacert` was given).
///
/// # Errors
/// [`Error::BadArgument`] when only one of `--cert` and `--key` is given, or either without
/// `--cacert`; [`Error::Tls`] when a file cannot be read or used.
pub(crate) fn client_config(args: &CheckArgs) -> Result<(ClientConfig, bool), Error> {
    let client_auth = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => {
            return Err(Error::BadArgument(
                "--cert and --key go together: give both or neither",
            ))
        }
    };
    let Some(cacert) = &args.cacert else {
        if client_auth.is_some() {
            return Err(Error::BadArgument(
                "--cert and --key need --cacert too (the CA of the servers' certificates)",
            ));
        }
        return Ok((build(RootCertStore::empty(), None)?, false));
    };
    let roots = load_roots(cacert)?;
    Ok((build(roots, client_auth)?, true))
}

fn build(roots: RootCertStore, client_auth: Option<(&Path, &Path)>) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots);
    let Some((cert, key)) = client_auth else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| {
            Error::Tls(format!(
                "cannot read the client certificate {}: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no PEM certificate (--cert)",
            cert.display()
        )));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::Tls(format!(
            "cannot read the private key {}: {e}",
            key.display()
        ))
    })?;
    builder
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| {
            Error::Tls(format!(
                "cannot use client certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            ))
        })
}

fn load_roots(cacert: &Path) -> Result<RootCertStore, Error> {
    let certs = CertificateDer::pem_file_iter(cacert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| {
            Error::Tls(format!(
                "cannot read CA certificates from {}: {e}",
                cacert.display()
            ))
        })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            Error::Tls(format!(
                "cannot use a CA certificate of {}: {e}",
                cacert.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no PEM certificate (--cacert)",
            cacert.display()
        )));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_are_validated_before_any_connection() {
        // Intent: --cert without --key (and the reverse), client auth without --cacert and an
        // unreadable --cacert are each refused with one sentence; no flags give a config.
        let base = CheckArgs::new(vec!["http://127.0.0.1:1".into()]);
        let (_, verifies) = client_config(&base).expect("no TLS flags is fine");
        assert!(!verifies);
        let cert_only = CheckArgs {
            cacert: Some("ca.pem".into()),
            cert: Some("client.pem".into()),
            ..base.clone()
        };
        let key_only = CheckArgs {
            cacert: Some("ca.pem".into()),
            key: Some("client-key.pem".into()),
            ..base.clone()
        };
        for args in [cert_only, key_only] {
            let err = client_config(&args).unwrap_err().to_string();
            assert!(err.contains("--cert and --key go together"), "{err}");
        }
        let auth_without_ca = CheckArgs {
            cert: Some("client.pem".into()),
            key: Some("client-key.pem".into()),
            ..base.clone()
        };
        let err = client_config(&auth_without_ca).unwrap_err().to_string();
        assert!(err.contains("need --cacert"), "{err}");
        let missing_ca = CheckArgs {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..base
        };
        let err = client_config(&missing_ca).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
