//! TLS on the client and peer ports, with etcd's flags and meanings (see `config.rs`), on
//! rustls with the `ring` provider.
//!
//! - [`load`] reads a certificate, its key and (optionally) a CA bundle, and checks at start
//!   what etcd's users trip over, each refusal one sentence naming the file and the fix: a
//!   missing or unreadable file, a key that does not match its certificate, a certificate
//!   expired or not yet valid, a peer certificate without clientAuth while peer client-cert
//!   auth is on, this node's own peer host missing from its certificate's SANs.
//! - [`Acceptor`] turns accepted TCP streams into TLS streams for `http::serve`; it holds the
//!   current `ServerConfig` behind a lock, so a reload can swap it for new connections.
//! - [`client_config`]: the peer transport's `ClientConfig` (the peer CA as roots, this
//!   node's peer certificate as its client certificate).
//! - [`PeerIdentity`]: the names in a peer's certificate, checked after the handshake against
//!   the CN and hostname allow-lists and against the member a request claims to come from.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A certificate this close to its expiry is warned about at start.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The lowest TLS version accepted (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 (the default, as etcd's).
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// Parses `TLS1.2` or `TLS1.3` (etcd's spelling).
    ///
    /// # Errors
    /// A sentence naming the accepted values.
    pub fn parse(s: &str) -> Result<MinVersion, String> {
        match s.to_ascii_uppercase().replace(['v', 'V', '_'], "").as_str() {
            "TLS1.2" | "TLS12" | "1.2" => Ok(MinVersion::Tls12),
            "TLS1.3" | "TLS13" | "1.3" => Ok(MinVersion::Tls13),
            _ => Err(format!(
                "--tls-min-version {s:?} is unknown: use TLS1.2 or TLS1.3"
            )),
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => &BOTH,
            MinVersion::Tls13 => &ONLY_13,
        }
    }
}

/// The files of one port's TLS (etcd: `--cert-file --key-file --trusted-ca-file
/// --client-cert-auth`, or their `--peer-` forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA bundle that client (or peer) certificates must chain to, PEM.
    pub ca: Option<PathBuf>,
    /// Require a client certificate signed by `ca`.
    pub client_cert_auth: bool,
    /// The flag prefix, `""` or `"peer-"`, for sentences.
    pub flag_prefix: &'static str,
}

/// A port's TLS material, loaded and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The CA roots (empty without a CA file).
    pub roots: Arc<RootCertStore>,
    /// Seconds since the epoch at which the leaf certificate expires.
    pub not_after: i64,
    /// Whether client certificates are required.
    pub client_cert_auth: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a port's certificate, key and CA. `own_host` is the host of this node's
/// own URL on that port when it must appear in the certificate's SANs; `needs_client_auth`
/// asks for the clientAuth key usage too (a peer certificate dials as well as listens).
///
/// # Errors
/// One sentence naming the file and the fix.
pub fn load(
    files: &TlsFiles,
    own_host: Option<&str>,
    needs_client_auth: bool,
) -> Result<Loaded, String> {
    let p = files.flag_prefix;
    let chain = read_certs(&files.cert, &format!("--{p}cert-file"))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--{p}key-file {}: cannot read a PEM private key ({e}): give the key of --{p}cert-file",
            files.key.display()
        )
    })?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(
        |e| {
            format!(
                "--{p}key-file {} does not match the certificate in --{p}cert-file {} ({e}): give \
                 the key that certificate was issued for",
                files.key.display(),
                files.cert.display()
            )
        },
    )?;
    let leaf_der = chain[0].clone();
    let (_, leaf) = X509Certificate::from_der(&leaf_der).map_err(|e| {
        format!(
            "--{p}cert-file {}: the first certificate does not parse ({e})",
            files.cert.display()
        )
    })?;
    let now = x509_parser::time::ASN1Time::now();
    let validity = leaf.validity();
    if now < validity.not_before || now > validity.not_after {
        return Err(format!(
            "--{p}cert-file {} is valid from {} to {}, not now: issue a new certificate",
            files.cert.display(),
            validity.not_before,
            validity.not_after
        ));
    }
    if needs_client_auth && !has_client_auth(&leaf) {
        return Err(format!(
            "--{p}cert-file {} lacks the clientAuth extended key usage, which a member needs to \
             dial its peers with it (--{p}client-cert-auth): issue it with both serverAuth and \
             clientAuth",
            files.cert.display()
        ));
    }
    if let Some(host) = own_host {
        let names = PeerIdentity::of(&leaf);
        if !names.has_host(host) {
            return Err(format!(
                "--{p}cert-file {} does not name this node's host {host} in its subject \
                 alternative names ({}): issue it with {host} as a DNS or IP SAN",
                files.cert.display(),
                names.describe()
            ));
        }
    }
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &files.ca {
        for cert in read_certs(ca, &format!("--{p}trusted-ca-file"))? {
            roots.add(cert).map_err(|e| {
                format!(
                    "--{p}trusted-ca-file {}: a certificate is not a usable CA ({e})",
                    ca.display()
                )
            })?;
        }
    } else if files.client_cert_auth {
        return Err(format!(
            "--{p}client-cert-auth needs --{p}trusted-ca-file: the CA client certificates must \
             chain to"
        ));
    }
    Ok(Loaded {
        chain,
        key: Arc::new(key),
        roots: Arc::new(roots),
        not_after: validity.not_after.timestamp(),
        client_cert_auth: files.client_cert_auth,
    })
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |e: &dyn std::fmt::Display| {
        format!(
            "{flag} {}: cannot read PEM certificates ({e}): give a readable PEM file",
            path.display()
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"no CERTIFICATE block"));
    }
    Ok(certs)
}

fn has_client_auth(leaf: &X509Certificate<'_>) -> bool {
    match leaf.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        // No extension: every usage is allowed.
        Ok(None) => true,
        Err(_) => false,
    }
}

/// The server side of a port: the current `ServerConfig`, replaceable for new connections.
#[derive(Clone)]
pub struct Acceptor(Arc<RwLock<Arc<ServerConfig>>>);

impl Acceptor {
    /// An acceptor for `loaded`.
    ///
    /// # Errors
    /// A sentence when rustls refuses the material.
    pub fn new(loaded: &Loaded, min: MinVersion) -> Result<Acceptor, String> {
        Ok(Acceptor(Arc::new(RwLock::new(server_config(loaded, min)?))))
    }

    /// Uses `loaded` for connections accepted from now on.
    ///
    /// # Errors
    /// A sentence when rustls refuses the material (the old one stays).
    pub fn replace(&self, loaded: &Loaded, min: MinVersion) -> Result<(), String> {
        let config = server_config(loaded, min)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The acceptor for the next connection.
    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn server_config(loaded: &Loaded, min: MinVersion) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(min.versions())
        .map_err(|e| e.to_string())?;
    let builder = if loaded.client_cert_auth {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(loaded.roots.clone(), provider())
                .build()
                .map_err(|e| format!("cannot verify client certificates: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(loaded.chain.clone(), loaded.key.clone_key())
        .map_err(|e| format!("rustls refused the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The peer transport's TLS: `loaded`'s CA as the roots and its certificate as the client
/// certificate.
///
/// # Errors
/// A sentence when rustls refuses the material.
pub fn client_config(loaded: &Loaded, min: MinVersion) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(min.versions())
        .map_err(|e| e.to_string())?
        .with_root_certificates(loaded.roots.clone())
        .with_client_auth_cert(loaded.chain.clone(), loaded.key.clone_key())
        .map_err(|e| format!("rustls refused the peer certificate as a client: {e}"))?;
    Ok(Arc::new(config))
}

/// The names in a peer's (or client's) certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common names.
    pub cn: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs.
    pub uris: Vec<String>,
}

impl PeerIdentity {
    /// The names of a DER certificate (`None` when it does not parse).
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(PeerIdentity::of(&cert))
    }

    fn of(cert: &X509Certificate<'_>) -> PeerIdentity {
        let mut id = PeerIdentity {
            cn: cert
                .subject()
                .iter_common_name()
                .filter_map(|c| c.as_str().ok().map(str::to_string))
                .collect(),
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => id.dns.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => id.uris.push(u.trim_end_matches('/').to_string()),
                    GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                            _ => None,
                        };
                        id.ips.extend(ip);
                    }
                    _ => {}
                }
            }
        }
        id
    }

    /// Whether `host` (a DNS name or an IP) is among the SANs.
    pub fn has_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => self.ips.contains(&ip),
            Err(_) => self.dns.iter().any(|d| d == &host.to_ascii_lowercase()),
        }
    }

    /// Whether this certificate speaks for the member whose peer URL is `url`: a URI SAN equal
    /// to the URL, or the URL's host among the DNS or IP SANs (which counts only when the
    /// host is that member's alone: `host_shared` says it is not).
    pub fn names_member(&self, url: &str, host_shared: bool) -> bool {
        let url = url.trim_end_matches('/');
        if self.uris.iter().any(|u| u == url) {
            return true;
        }
        !host_shared && url_host(url).is_some_and(|h| self.has_host(h))
    }

    /// For sentences: the names, briefly.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.cn.iter().map(|c| format!("CN={c}")));
        parts.extend(self.dns.iter().map(|d| format!("DNS:{d}")));
        parts.extend(self.ips.iter().map(|i| format!("IP:{i}")));
        parts.extend(self.uris.iter().map(|u| format!("URI:{u}")));
        if parts.is_empty() {
            "no names".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The host of `scheme://host:port`.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let (host, _) = rest.rsplit_once(':')?;
    Some(host)
}

/// The expiry (seconds since the epoch) of each port's certificate in use, by port name
/// (`client`, `peer`), for `/metrics`; updated at start and on every reload.
pub type Expiries = Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, i64>>>;

/// Records `port`'s certificate expiry in `expiries`.
pub fn set_expiry(expiries: &Expiries, port: &'static str, not_after: i64) {
    expiries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port, not_after);
}

/// What the peer server checks of a peer's certificate after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// `--peer-client-cert-auth`: a certificate is required, and it must name the member a
    /// request claims to come from.
    pub require_cert: bool,
    /// `--peer-cert-allowed-cn`.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname`.
    pub allowed_hostname: Option<String>,
}

impl PeerPolicy {
    /// The peer's names, or why its certificate is not accepted (CN or hostname not allowed,
    /// none given while one is required).
    ///
    /// # Errors
    /// The sentence of the refusal.
    pub fn admit<'c>(
        &self,
        cert: Option<&'c PeerCertificate>,
    ) -> Result<Option<&'c PeerIdentity>, String> {
        let Some(cert) = cert else {
            if self.require_cert {
                return Err("a peer certificate is required (--peer-client-cert-auth)".into());
            }
            return Ok(None);
        };
        let id = cert
            .identity()
            .ok_or_else(|| "the peer certificate does not parse".to_string())?;
        if let Some(cn) = &self.allowed_cn {
            if !id.cn.iter().any(|c| c == cn) {
                return Err(format!(
                    "the peer certificate ({}) lacks the allowed common name {cn} \
                     (--peer-cert-allowed-cn)",
                    id.describe()
                ));
            }
        }
        if let Some(host) = &self.allowed_hostname {
            if !id.has_host(host) {
                return Err(format!(
                    "the peer certificate ({}) lacks the allowed hostname {host} \
                     (--peer-cert-allowed-hostname)",
                    id.describe()
                ));
            }
        }
        Ok(Some(id))
    }
}

/// The peer port's TLS, loaded once at start: the server side, the client side (dialing
/// peers) and the post-handshake policy.
#[derive(Clone)]
pub struct PeerTlsContext {
    /// Accepts peer connections.
    pub acceptor: Acceptor,
    /// Dials peers.
    pub client: Arc<ClientConfig>,
    /// Checked after the handshake.
    pub policy: Arc<PeerPolicy>,
    /// Expiry of this node's peer certificate (seconds since the epoch).
    pub not_after: i64,
}

/// The leaf certificate a TLS connection's peer presented, if any (inserted into every
/// request's extensions by `http::serve`); its names are parsed once per connection.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    der: Arc<CertificateDer<'static>>,
    names: Arc<std::sync::OnceLock<Option<PeerIdentity>>>,
}

impl PeerCertificate {
    /// The certificate `der`.
    pub fn new(der: CertificateDer<'static>) -> PeerCertificate {
        PeerCertificate {
            der: Arc::new(der),
            names: Arc::default(),
        }
    }

    /// Its names (`None` when it does not parse).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.names
            .get_or_init(|| PeerIdentity::from_der(&self.der))
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intent: a member is named by a URI SAN equal to its peer URL, or by its host among the
    // IP/DNS SANs only when no other member shares that host.
    #[test]
    fn certificates_name_members_by_uri_or_unshared_host() {
        let id = PeerIdentity {
            ips: vec!["127.0.0.1".parse().unwrap()],
            uris: vec!["https://127.0.0.1:12379".into()],
            dns: vec!["node2.example".into()],
            ..Default::default()
        };
        assert!(id.names_member("https://127.0.0.1:12379", true));
        assert!(!id.names_member("https://127.0.0.1:22379", true));
        assert!(id.names_member("https://127.0.0.1:22379", false));
        assert!(id.names_member("https://node2.example:2380", false));
        assert!(!id.names_member("https://node3.example:2380", false));
        assert!(id.has_host("[::1]") == id.ips.contains(&"::1".parse().unwrap()));
        assert_eq!(MinVersion::parse("TLS1.3").unwrap(), MinVersion::Tls13);
        assert!(MinVersion::parse("SSL3").is_err());
    }
}
