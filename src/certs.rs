//! Development certificates, the way etcd's guides make them: `raftexample certs` writes a
//! self-signed CA, one serving-and-client certificate per member and a client certificate, all
//! ECDSA P-256 (rcgen on ring), ready for the `--peer-*` and client TLS flags.
//!
//! These are for local clusters and tests: the CA key sits next to the certificates and nothing
//! rotates or revokes them.
//!
//! Files written into the directory (created mode 0700; every file mode 0600):
//! - `ca.pem`, `ca-key.pem`: the CA, CN `raftexample dev CA` (with an OU of its own per CA).
//! - `member-{i}.pem`, `member-{i}-key.pem` for the `i`-th (1-based) peer URL of the cluster:
//!   CN `member-{i}`, extended key usages serverAuth and clientAuth (clientAuth can be left out
//!   with [`CertOptions::member_client_auth`]), subject alternative names: every one of
//!   [`CertOptions::hosts`], the host of the member's peer URL (an IP SAN when the host is an IP
//!   address, a DNS SAN otherwise) and a URI SAN equal to the peer URL.
//! - `client.pem`, `client-key.pem`: CN `client`, extended key usage clientAuth only.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Common name of the development CA.
pub const CA_COMMON_NAME: &str = "raftexample dev CA";

/// What to put in the certificates besides the cluster's peer URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOptions {
    /// Extra subject alternative names of every member certificate: an IP SAN for each entry
    /// that parses as an IP address, a DNS SAN for the others.
    pub hosts: Vec<String>,
    /// Start of the validity of every certificate (CA, members, client).
    pub not_before: OffsetDateTime,
    /// End of the validity of every certificate (CA, members, client).
    pub not_after: OffsetDateTime,
    /// Whether member certificates carry the clientAuth extended key usage next to
    /// serverAuth (members dial each other with them, so a cluster with
    /// `--peer-client-cert-auth` needs it).
    pub member_client_auth: bool,
    /// Whether member certificates carry their peer URL as a URI SAN (which names the member
    /// even when members share a host); without it a member is named by its host alone.
    pub member_uri_san: bool,
}

impl CertOptions {
    /// Hosts `127.0.0.1` and `localhost`, valid from an hour ago (clock skew) for `days` days,
    /// members with clientAuth.
    pub fn valid_for_days(days: u32) -> CertOptions {
        let now = OffsetDateTime::now_utc();
        CertOptions {
            hosts: vec!["127.0.0.1".to_string(), "localhost".to_string()],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
            member_client_auth: true,
            member_uri_san: true,
        }
    }

    /// The same options with a validity entirely in the past (from two days ago to one day
    /// ago): every certificate of the set is expired.
    pub fn expired(self) -> CertOptions {
        let now = OffsetDateTime::now_utc();
        CertOptions {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
            ..self
        }
    }

    /// The same options with member certificates that name their member by host only (no
    /// URI SAN), for members on hosts of their own.
    pub fn without_member_uri_san(self) -> CertOptions {
        CertOptions {
            member_uri_san: false,
            ..self
        }
    }

    /// The same options with member certificates that are serverAuth only (no clientAuth), so
    /// a peer presenting one as a client certificate is refused.
    pub fn without_member_client_auth(self) -> CertOptions {
        CertOptions {
            member_client_auth: false,
            ..self
        }
    }
}

impl Default for CertOptions {
    /// [`CertOptions::valid_for_days`] with 365 days.
    fn default() -> CertOptions {
        CertOptions::valid_for_days(365)
    }
}

/// The certificate and key of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFiles {
    /// The member's certificate, PEM (`member-{i}.pem`).
    pub cert: PathBuf,
    /// The member's private key, PKCS#8 PEM (`member-{i}-key.pem`).
    pub key: PathBuf,
}

/// The files [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The CA certificate, PEM (`ca.pem`): the `--trusted-ca-file`/`--peer-trusted-ca-file`.
    pub ca: PathBuf,
    /// The CA's private key, PKCS#8 PEM (`ca-key.pem`).
    pub ca_key: PathBuf,
    /// One entry per peer URL, in `cluster` order: entry `i` belongs to node `i + 1`.
    pub members: Vec<MemberFiles>,
    /// The client certificate, PEM (`client.pem`).
    pub client: PathBuf,
    /// The client's private key, PKCS#8 PEM (`client-key.pem`).
    pub client_key: PathBuf,
}

impl Generated {
    /// The files of node `id` (1-based, as `--id`), if the cluster has that many members.
    pub fn member(&self, id: u64) -> Option<&MemberFiles> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.members.get(index)
    }

    /// The flags that give node `id` mutual TLS on its peer port with this set:
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`. The member's files need not be issued yet.
    pub fn peer_flags(&self, id: u64) -> Vec<String> {
        let file = |name: String| self.dir.join(name).to_string_lossy().into_owned();
        vec![
            "--peer-cert-file".to_string(),
            file(format!("member-{id}.pem")),
            "--peer-key-file".to_string(),
            file(format!("member-{id}-key.pem")),
            "--peer-trusted-ca-file".to_string(),
            self.ca.to_string_lossy().into_owned(),
            "--peer-client-cert-auth".to_string(),
        ]
    }

    /// Every file written, in the order they were written (CA, members, client).
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.ca.as_path(), self.ca_key.as_path()];
        for member in &self.members {
            files.push(&member.cert);
            files.push(&member.key);
        }
        files.push(&self.client);
        files.push(&self.client_key);
        files
    }
}

/// Writes a fresh CA and the certificates of the members of `cluster` (peer URLs such as
/// `https://127.0.0.1:12379`, one per member in `--cluster` order) and of a client into `dir`,
/// which is created with mode 0700 if missing. Existing files of the same names are replaced.
/// Every call makes a new CA: call it on another directory for an independent CA.
///
/// # Errors
/// One sentence when a peer URL is not `https://host:port`, `cluster` is empty, `not_after` is
/// not after `not_before`, a host cannot be a SAN, or a file cannot be written.
pub fn generate(
    dir: &Path,
    cluster: &[String],
    options: &CertOptions,
) -> Result<Generated, String> {
    if cluster.is_empty() {
        return Err("the cluster lists no peer URL: give one https:// URL per member".into());
    }
    if options.not_after <= options.not_before {
        return Err("the certificates' not_after is not after their not_before".into());
    }
    let urls: Vec<&str> = cluster
        .iter()
        .map(|u| u.trim().trim_end_matches('/'))
        .collect();
    let sans = urls
        .iter()
        .map(|url| member_sans(url, options))
        .collect::<Result<Vec<_>, _>>()?;
    create_dir(dir)?;

    let ca_key = new_key()?;
    let ca_params = ca_params(&ca_key, options);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
    let generated_ca = dir.join("ca.pem");
    let generated_ca_key = dir.join("ca-key.pem");
    write_private(&generated_ca, &ca_cert.pem())?;
    write_private(&generated_ca_key, &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut members = Vec::with_capacity(urls.len());
    for (index, sans) in sans.into_iter().enumerate() {
        members.push(issue_member_with(
            &issuer,
            dir,
            index as u64 + 1,
            sans,
            options,
        )?);
    }

    let mut client = params("client", options);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = dir.join("client.pem");
    let client_key = dir.join("client-key.pem");
    issue(&client, &issuer, "client", &client_cert, &client_key)?;

    Ok(Generated {
        dir: dir.to_path_buf(),
        ca: generated_ca,
        ca_key: generated_ca_key,
        members,
        client: client_cert,
        client_key,
    })
}

/// Issues member `id` at `url` a certificate and key from the CA of `set` (written as
/// `member-{id}.pem` and `member-{id}-key.pem` in its directory), as [`generate`] issues its
/// members: for a member added later, such as a joiner or a replacement.
///
/// # Errors
/// One sentence when the CA files do not load, `url` is not `https://host:port`, or a file
/// cannot be written.
pub fn issue_member(
    set: &Generated,
    id: u64,
    url: &str,
    options: &CertOptions,
) -> Result<MemberFiles, String> {
    let url = url.trim().trim_end_matches('/');
    let sans = member_sans(url, options)?;
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let key = KeyPair::from_pem(&read(&set.ca_key)?)
        .map_err(|e| format!("{} is not a key: {e}", set.ca_key.display()))?;
    let issuer = Issuer::new(ca_params(&key, options), key);
    issue_member_with(&issuer, &set.dir, id, sans, options)
}

/// Issues member `id` its certificate (serverAuth, clientAuth unless `options` say no, the
/// SANs `sans`) and key from `issuer`, into `dir`.
fn issue_member_with(
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    id: u64,
    sans: Vec<SanType>,
    options: &CertOptions,
) -> Result<MemberFiles, String> {
    let name = format!("member-{id}");
    let mut member = params(&name, options);
    member.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if options.member_client_auth {
        member
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    member.subject_alt_names = sans;
    let files = MemberFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    issue(&member, issuer, &name, &files.cert, &files.key)?;
    Ok(files)
}

/// The CA's parameters for `ca_key`; the same key gives the same subject, so a CA written by
/// [`generate`] can issue again from its key alone ([`issue_member`]).
fn ca_params(ca_key: &KeyPair, options: &CertOptions) -> CertificateParams {
    let mut ca_params = params(CA_COMMON_NAME, options);
    // A subject of its own for every CA, so a certificate of another set is refused as having
    // an unknown issuer rather than a bad signature.
    let id: String = ca_params.key_identifier(ca_key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ca_params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, format!("dev CA {id}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
}

/// The SANs of the member at `url`: `hosts`, the host of `url` (each once) and `url` as a URI.
fn member_sans(url: &str, options: &CertOptions) -> Result<Vec<SanType>, String> {
    let host = peer_host(url)?;
    let mut sans = Vec::new();
    for h in options
        .hosts
        .iter()
        .map(String::as_str)
        .chain([host.as_str()])
    {
        let san = host_san(h)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let uri = url
        .try_into()
        .map_err(|e| format!("peer URL {url:?} cannot be a URI SAN: {e}"))?;
    if options.member_uri_san {
        sans.push(SanType::URI(uri));
    }
    Ok(sans)
}

/// The host of `https://host:port` (brackets of an IPv6 literal removed).
fn peer_host(url: &str) -> Result<String, String> {
    let shape = || {
        format!(
            "peer URL {url:?} is not of the form https://host:port (for example \
             https://127.0.0.1:12379)"
        )
    };
    let rest = url.strip_prefix("https://").ok_or_else(shape)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(shape)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(shape());
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(shape)?,
        None => host,
    };
    Ok(host.to_string())
}

/// An IP SAN when `host` parses as an IP address, else a DNS SAN.
fn host_san(host: &str) -> Result<SanType, String> {
    let host = host.trim();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "host {host:?} is neither an IP address nor a DNS name: use e.g. 127.0.0.1 or \
             node1.example"
        ));
    }
    host.try_into()
        .map(SanType::DnsName)
        .map_err(|e| format!("host {host:?} cannot be a DNS name SAN: {e}"))
}

/// Parameters with the common name `cn` and the validity of `options`.
fn params(cn: &str, options: &CertOptions) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name.push(DnType::OrganizationName, "raftexample");
    params.distinguished_name = name;
    params.not_before = options.not_before;
    params.not_after = options.not_after;
    params
}

fn new_key() -> Result<KeyPair, String> {
    KeyPair::generate().map_err(|e| format!("cannot generate a key pair: {e}"))
}

/// Signs a certificate for a new key with `params` and writes both.
fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    what: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), String> {
    let mut params = params.clone();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let key = new_key()?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| format!("cannot sign the {what} certificate: {e}"))?;
    write_private(cert_path, &cert.pem())?;
    write_private(key_path, &key.serialize_pem())
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is kept as is.
fn create_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes `contents` to `path` with mode 0600 (also when the file existed with another mode).
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Flags of `raftexample certs`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct CertsArgs {
    /// Directory to write the certificates and keys into (created mode 0700 if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Comma-separated https:// peer URLs of the cluster, as given to the nodes' --cluster;
    /// member i's certificate names the i-th URL.
    #[arg(long)]
    pub cluster: String,
    /// Comma-separated extra IP addresses and DNS names of every member certificate.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
    pub hosts: Vec<String>,
    /// Days the certificates are valid for.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// Runs `raftexample certs`: writes the files, prints one line per file and the flags that use
/// them. Returns the process exit code: 0 written, 1 refused or failed (with one sentence on
/// stderr).
pub fn run(args: &CertsArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("raftexample certs: {e}");
            1
        }
    }
}

fn run_inner(args: &CertsArgs) -> Result<(), String> {
    if args.days == 0 {
        return Err("--days must be at least 1".into());
    }
    let cluster: Vec<String> = args
        .cluster
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let hosts: Vec<String> = args
        .hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    let options = CertOptions {
        hosts,
        ..CertOptions::valid_for_days(args.days)
    };
    let generated = generate(&args.dir, &cluster, &options)?;
    for file in generated.files() {
        println!("wrote {}", file.display());
    }
    let d = generated.dir.display();
    println!(
        "flags of node 1 (node N uses member-N): --peer-cert-file {d}/member-1.pem \
         --peer-key-file {d}/member-1-key.pem --peer-trusted-ca-file {d}/ca.pem \
         --peer-client-cert-auth --cert-file {d}/member-1.pem --key-file {d}/member-1-key.pem \
         --trusted-ca-file {d}/ca.pem --client-cert-auth; clients: --cacert {d}/ca.pem \
         --cert {d}/client.pem --key {d}/client-key.pem"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    fn cluster() -> Vec<String> {
        vec![
            "https://127.0.0.1:12379".to_string(),
            "https://node2.example:22379/".to_string(),
        ]
    }

    fn read_cert(path: &Path) -> Vec<u8> {
        let text = fs::read(path).unwrap();
        let (_, pem) = parse_x509_pem(&text).expect("PEM");
        assert_eq!(pem.label, "CERTIFICATE");
        pem.contents
    }

    /// The subject alternative names of `cert` (which must have them).
    fn sans<'a>(cert: &'a X509Certificate<'_>) -> &'a [GeneralName<'a>] {
        &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_every_file_private_with_the_right_names() {
        // Intent: a 2-member generation writes CA, member and client files, each mode 0600,
        // in a created directory of mode 0700, at the paths the returned struct names.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let generated = generate(&dir, &cluster(), &CertOptions::default()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let names: Vec<String> = generated
            .files()
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca-key.pem",
                "member-1.pem",
                "member-1-key.pem",
                "member-2.pem",
                "member-2-key.pem",
                "client.pem",
                "client-key.pem",
            ]
        );
        for file in generated.files() {
            assert!(file.is_file(), "{} missing", file.display());
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        assert_eq!(generated.member(2).unwrap().cert, dir.join("member-2.pem"));
        assert!(generated.member(0).is_none() && generated.member(3).is_none());
        let key = fs::read_to_string(&generated.member(1).unwrap().key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn member_certificates_name_their_peer_url_and_allow_both_usages() {
        // Intent: member i's certificate is signed by the CA, has CN member-i, serverAuth and
        // clientAuth, an IP SAN 127.0.0.1, DNS SAN localhost, the host of its own URL (IP or
        // DNS) and a URI SAN equal to its peer URL (trailing '/' trimmed); the CA is a CA and
        // the client certificate is clientAuth only.
        let tmp = tempfile::tempdir().unwrap();
        let generated = generate(tmp.path(), &cluster(), &CertOptions::default()).unwrap();
        let ca_der = read_cert(&generated.ca);
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert!(ca.is_ca());
        assert_eq!(
            ca.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            CA_COMMON_NAME
        );
        let expected = [
            ("https://127.0.0.1:12379", None),
            ("https://node2.example:22379", Some("node2.example")),
        ];
        for (i, (url, dns)) in expected.iter().enumerate() {
            let der = read_cert(&generated.members[i].cert);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(!cert.is_ca());
            assert_eq!(cert.issuer(), ca.subject());
            cert.verify_signature(Some(ca.public_key()))
                .expect("signed by the CA");
            let cn = cert.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), format!("member-{}", i + 1));
            assert!(cert.validity().is_valid());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            let sans = sans(&cert);
            let uris: Vec<&str> = sans
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect();
            assert_eq!(uris, [*url]);
            assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
            assert!(sans.contains(&GeneralName::DNSName("localhost")));
            if let Some(dns) = dns {
                assert!(sans.contains(&GeneralName::DNSName(dns)));
            }
            let ips = sans
                .iter()
                .filter(|n| matches!(n, GeneralName::IPAddress(_)))
                .count();
            assert_eq!(ips, 1, "127.0.0.1 is listed once");
        }
        let der = read_cert(&generated.client);
        let (_, client) = X509Certificate::from_der(&der).unwrap();
        client.verify_signature(Some(ca.public_key())).unwrap();
        let eku = client.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn options_make_expired_and_server_only_sets() {
        // Intent: the expired option gives certificates whose not_after is in the past, the
        // no-clientAuth option gives member certificates with serverAuth only, and two calls
        // make two independent CAs (other key, other subject).
        let tmp = tempfile::tempdir().unwrap();
        let options = CertOptions::default()
            .expired()
            .without_member_client_auth();
        let a = generate(&tmp.path().join("a"), &cluster(), &options).unwrap();
        let now = ASN1Time::now();
        for path in [&a.ca, &a.members[0].cert, &a.client] {
            let der = read_cert(path);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(cert.validity().not_after < now, "{}", path.display());
            assert!(!cert.validity().is_valid());
        }
        let der = read_cert(&a.members[1].cert);
        let (_, member) = X509Certificate::from_der(&der).unwrap();
        let eku = member.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);

        let b = generate(&tmp.path().join("b"), &cluster(), &CertOptions::default()).unwrap();
        let ca_b = read_cert(&b.ca);
        let (_, ca_b) = X509Certificate::from_der(&ca_b).unwrap();
        assert!(member.verify_signature(Some(ca_b.public_key())).is_err());
        let ca_a = read_cert(&a.ca);
        let (_, ca_a) = X509Certificate::from_der(&ca_a).unwrap();
        assert_ne!(
            ca_a.subject(),
            ca_b.subject(),
            "each CA has a subject of its own"
        );
        assert_eq!(member.issuer(), ca_a.subject());
    }

    #[test]
    fn refuses_bad_peer_urls_and_validity() {
        // Intent: a non-https or malformed peer URL, an empty cluster, a host that is neither
        // an IP nor a DNS name and an empty validity are refused with a sentence before
        // anything is written; an IPv6 peer URL gives an IP SAN without the brackets.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("never");
        for url in [
            "http://127.0.0.1:1",
            "https://127.0.0.1",
            "https://:1",
            "https://h:0",
        ] {
            let err = generate(&dir, &[url.to_string()], &CertOptions::default()).unwrap_err();
            assert!(err.contains("https://host:port"), "{err}");
        }
        assert!(generate(&dir, &[], &CertOptions::default()).is_err());
        for host in ["bad_host!", "", "a..b", "-a.b"] {
            let mut options = CertOptions::default();
            options.hosts.push(host.to_string());
            let err = generate(&dir, &cluster(), &options).unwrap_err();
            assert!(
                err.contains("neither an IP address nor a DNS name"),
                "{err}"
            );
        }
        let mut options = CertOptions::default();
        options.not_after = options.not_before;
        assert!(generate(&dir, &cluster(), &options).is_err());
        assert!(!dir.exists());
        let ipv6 = generate(
            &dir,
            &["https://[::1]:1".to_string()],
            &CertOptions::default(),
        );
        let der = read_cert(&ipv6.unwrap().members[0].cert);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let sans = sans(&cert);
        let mut loopback = [0u8; 16];
        loopback[15] = 1;
        assert!(sans.contains(&GeneralName::IPAddress(&loopback)));
        assert!(sans.contains(&GeneralName::URI("https://[::1]:1")));
    }
}
