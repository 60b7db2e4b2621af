//! TLS and mutual TLS on real node processes, with certificates made by `raftexample::certs`
//! (rcgen) in each test, offline.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftexample::certs::{generate, CertOptions, Generated};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{parse_reply, Cluster, Reply};

/// A cluster of `n` nodes whose peers speak mutual TLS (https:// URLs, certificates from a
/// fresh CA, `--peer-client-cert-auth`); the client API stays plain HTTP so the shared
/// helpers work. Not started.
fn mtls_cluster(n: usize, extra: &[&str], options: &CertOptions) -> (Cluster, Generated) {
    mtls_cluster_with_spare(n, extra, options, None)
}

/// As [`mtls_cluster`], with certificates for one more member at `spare` (a joiner).
fn mtls_cluster_with_spare(
    n: usize,
    extra: &[&str],
    options: &CertOptions,
    spare: Option<&str>,
) -> (Cluster, Generated) {
    let mut c = Cluster::new(n, extra);
    let https: Vec<String> = c
        .peer_urls
        .iter()
        .map(|u| u.replacen("http://", "https://", 1))
        .collect();
    let mut all = https.clone();
    all.extend(spare.map(String::from));
    let certs = generate(&c.dir().join("certs"), &all, options).unwrap();
    for node in &mut c.nodes {
        for a in node.args.iter_mut() {
            if a.contains("http://") {
                *a = a.replace("http://", "https://");
            }
        }
        node.args.extend(certs.peer_flags(node.id));
    }
    c.peer_urls = https;
    (c, certs)
}

fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    })
}

/// One HTTPS request to `addr` (as host 127.0.0.1); an `Err` when the handshake or the
/// exchange fails.
fn tls_request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&support::request_bytes(addr, method, path, headers, body))?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify after a full answer is fine here.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse_reply(&raw).ok_or_else(|| std::io::Error::other("bad HTTP reply"))
}

fn peer_addr(c: &Cluster, id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], c.node(id).peer_port))
}

/// A batch of one heartbeat response from `from` to `to` in `term`.
fn heartbeat_response(from: u64, to: u64, term: u64) -> Vec<u8> {
    let mut m = raft::eraftpb::Message {
        from,
        to,
        term,
        ..Default::default()
    };
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
    raftexample::transport::encode_batch(&[m])
}

// Intent: a 3-node cluster whose members speak mutual TLS to each other elects a leader,
// replicates writes from every member, catches a restarted member up from a snapshot
// streamed over https, takes a fourth member (join over https) and removes it again.
#[test]
fn a_mutual_tls_cluster_replicates_joins_removes_and_catches_up() {
    let flags = ["--snapshot-count", "20", "--snapshot-catchup-entries", "0"];
    let spare_port = support::free_ports(1)[0];
    let spare = format!("https://127.0.0.1:{spare_port}");
    let (mut c, _certs) = mtls_cluster_with_spare(3, &flags, &CertOptions::default(), Some(&spare));
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    let leader = c.wait_leader();
    for id in 1..=3 {
        c.put_eventually(id, &format!("from{id}"), "v");
    }
    let f = if leader == 3 { 2 } else { 3 };
    assert_eq!(c.node_mut(f).terminate(), Some(0));
    for i in 0..60 {
        c.put_eventually(leader, &format!("k{i}"), "x");
    }
    c.node_mut(f).start();
    c.wait_converged();
    let r = c
        .node(f)
        .req("GET", "/kv/k59?consistency=serializable", b"")
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "x"));
    assert!(
        c.node(f)
            .log()
            .contains("installing snapshot from the leader"),
        "{}",
        c.node(f).log()
    );
    assert!(!c.node(leader).log().contains("not authenticated"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry = c
        .node(leader)
        .metric("raftexample_tls_cert_expiry_seconds{")
        .unwrap();
    assert!(expiry > now + 300 * 86_400, "{expiry}");
    // A new member's URL must be https too.
    let r = c
        .node(leader)
        .req("POST", "/9", b"http://127.0.0.1:9")
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());

    // A join over https, with the joiner's own certificate.
    let (id, _) = c.prepare_joiner(&[]);
    c.peer_urls[(id - 1) as usize] = spare.clone();
    let cluster = c.peer_urls.join(",");
    let joiner = c.node_mut(id);
    joiner.peer_port = spare_port;
    let mut args = std::mem::take(&mut joiner.args);
    for i in 0..args.len() {
        if i > 0 && args[i - 1] == "--cluster" {
            args[i] = cluster.clone();
        }
        args[i] = args[i].replace("member-1", &format!("member-{id}"));
    }
    joiner.args = args;
    let r = c
        .node(leader)
        .req("POST", &format!("/{id}"), spare.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    c.node_mut(id).start();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while c
        .node(id)
        .put("from-joiner", "v")
        .map_or(true, |r| r.status != 204)
    {
        assert!(
            std::time::Instant::now() < end,
            "the joiner never took a write: {}",
            c.node(id).log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_converged();
    let r = c
        .node(leader)
        .req("DELETE", &format!("/{id}"), b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(c.node_mut(id).wait_exit(Duration::from_secs(20)), Some(0));
    c.put_eventually(leader, "after-removal", "v");
}

// Intent: with --peer-client-cert-auth a peer must present a certificate of the cluster's CA
// (none, or another CA's, is refused at the handshake), and a certificate speaks only for the
// member it names: member 2's certificate claiming to be member 1 is refused (403, counted as
// `identity`), also for GET /raft/cluster, while as member 2 it is accepted. A certificate
// whose CN is not allowed is refused. Plain HTTP to the TLS port is refused and the node
// keeps serving.
#[test]
fn peer_certificates_speak_only_for_their_member() {
    let (mut c, certs) = mtls_cluster(3, &[], &CertOptions::default());
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    let leader = c.wait_leader();
    let target = if leader == 3 { 2 } else { 3 };
    let other = (1..=3).find(|id| *id != leader && *id != target).unwrap();
    let addr = peer_addr(&c, target);
    let as_member = |id: u64| {
        let m = certs.member(id).unwrap();
        client_config(&certs.ca, Some((&m.cert, &m.key)))
    };
    let path = format!("/raft/cluster?id={other}");
    let r = tls_request(addr, as_member(other), "GET", &path, &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let info: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let cluster = info["cluster_id"].as_str().unwrap().to_string();
    let term = c.node(target).status().unwrap()["term"].as_u64().unwrap();
    let headers = |from: u64| {
        vec![
            ("X-Raft-Cluster-Id", cluster.clone()),
            ("X-Raft-From", from.to_string()),
            ("X-Raft-To", target.to_string()),
        ]
    };
    let post = |config, claimed: u64| {
        let h = headers(claimed);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = heartbeat_response(claimed, target, term);
        tls_request(addr, config, "POST", "/raft", &h, &body)
    };
    // As itself: accepted.
    let r = post(as_member(other), other).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    // Claiming to be the leader: refused, and never stepped.
    let r = post(as_member(other), leader).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("does not name node"), "{}", r.text());
    let path = format!("/raft/cluster?id={leader}");
    let r = tls_request(addr, as_member(other), "GET", &path, &[], b"").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let refused = c.node(target).status().unwrap()["peer_refused"]["identity"]
        .as_u64()
        .unwrap();
    assert_eq!(refused, 2);

    // No certificate, or one of another CA: no handshake.
    let no_cert = client_config(&certs.ca, None);
    assert!(tls_request(addr, no_cert, "GET", "/raft/cluster", &[], b"").is_err());
    let stranger = generate(
        &c.dir().join("other-ca"),
        &c.peer_urls,
        &CertOptions::default(),
    )
    .unwrap();
    let m = stranger.member(other).unwrap();
    let foreign = client_config(&certs.ca, Some((&m.cert, &m.key)));
    assert!(tls_request(addr, foreign, "GET", "/raft/cluster", &[], b"").is_err());

    // Plain HTTP to the TLS port: refused; the node serves on.
    let plain = support::request(
        addr,
        "GET",
        "/raft/cluster",
        &[],
        b"",
        Duration::from_secs(5),
    );
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP got an answer: {:?}",
        plain.map(|r| r.status)
    );
    c.put_eventually(target, "after", "v");

    // A CN outside --peer-cert-allowed-cn is refused.
    assert_eq!(c.node_mut(target).terminate(), Some(0));
    c.node_mut(target)
        .args
        .extend(["--peer-cert-allowed-cn", "member-9"].map(String::from));
    c.node_mut(target).start();
    let r = support::poll(Duration::from_secs(20), "the restarted member", || {
        post(as_member(other), other).ok()
    });
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("common name"), "{}", r.text());
}

/// Starts node 1 and checks that it exits 1 with `sentence` in its log.
fn start_is_refused(c: &mut Cluster, sentence: &str) {
    c.node_mut(1).start();
    assert_eq!(
        c.node_mut(1).wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        c.node(1).log()
    );
    assert!(c.node(1).log().contains(sentence), "{}", c.node(1).log());
}

// Intent: certificates that cannot work stop startup with one sentence naming the file and
// the fix: an expired certificate, a peer certificate without clientAuth while
// --peer-client-cert-auth is on, a key of another certificate, a certificate that does not
// name this node's host; and flag combinations that cannot work: https:// peers without a
// certificate, a --cluster mixing http:// and https://.
#[test]
fn bad_certificates_and_tls_flags_stop_startup_with_a_sentence() {
    let cases: Vec<(CertOptions, &str)> = vec![
        (CertOptions::default().expired(), "is valid from"),
        (
            CertOptions::default().without_member_client_auth(),
            "lacks the clientAuth",
        ),
    ];
    for (options, sentence) in cases {
        let (mut c, _) = mtls_cluster(1, &[], &options);
        start_is_refused(&mut c, sentence);
    }
    // A key of another certificate, and a certificate that does not name this node's host.
    let (mut c, certs) = mtls_cluster(1, &[], &CertOptions::default());
    let other = generate(
        &c.dir().join("other"),
        &["https://127.0.101.9:1".to_string()],
        &CertOptions {
            hosts: Vec::new(),
            ..CertOptions::default()
        },
    )
    .unwrap();
    let swaps = [
        (
            &certs.member(1).unwrap().key,
            &other.members[0].key,
            "does not match",
        ),
        (
            &certs.member(1).unwrap().cert,
            &other.members[0].cert,
            "does not name this node's host",
        ),
    ];
    let own_key = std::fs::read(&certs.member(1).unwrap().key).unwrap();
    for (target, replacement, sentence) in swaps {
        let original = std::fs::read(target).unwrap();
        if sentence.contains("host") {
            // Cert and key of the other member together: only the host is wrong.
            std::fs::copy(&other.members[0].key, &certs.member(1).unwrap().key).unwrap();
        }
        std::fs::copy(replacement, target).unwrap();
        start_is_refused(&mut c, sentence);
        std::fs::write(target, original).unwrap();
        std::fs::write(&certs.member(1).unwrap().key, &own_key).unwrap();
    }
    let flag_cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--cluster".into(), "https://127.0.0.1:1".into()],
            "no --peer-cert-file",
        ),
        (
            vec![
                "--cluster".into(),
                "https://127.0.0.1:1,http://127.0.0.1:2".into(),
            ],
            "mixes http",
        ),
    ];
    for (args, sentence) in flag_cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftexample"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(sentence), "{stderr}");
    }
}

// Intent: --cert-file with --client-cert-auth serves the client API over https only to
// clients with a certificate of --trusted-ca-file; none, or another CA's, is refused at the
// handshake, and plain HTTP gets no answer.
#[test]
fn the_client_port_requires_a_client_certificate() {
    let c = Cluster::new(1, &[]);
    let certs = generate(
        &c.dir().join("certs"),
        &["https://127.0.0.1:1".to_string()],
        &CertOptions::default(),
    )
    .unwrap();
    let mut c = c;
    let m = certs.member(1).unwrap().clone();
    c.node_mut(1).args.extend(
        [
            "--cert-file",
            m.cert.to_str().unwrap(),
            "--key-file",
            m.key.to_str().unwrap(),
            "--trusted-ca-file",
            certs.ca.to_str().unwrap(),
            "--client-cert-auth",
        ]
        .map(String::from),
    );
    c.node_mut(1).start();
    let addr = c.node(1).client;
    let client = client_config(&certs.ca, Some((&certs.client, &certs.client_key)));
    let r = support::poll(Duration::from_secs(20), "a PUT over https", || {
        tls_request(addr, client.clone(), "PUT", "/k", &[], b"v")
            .ok()
            .filter(|r| r.status == 204)
    });
    assert_eq!(r.status, 204);
    let r = tls_request(addr, client.clone(), "GET", "/k", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "v"));
    assert!(tls_request(addr, client_config(&certs.ca, None), "GET", "/k", &[], b"").is_err());
    let stranger = generate(
        &c.dir().join("other-ca"),
        &["https://127.0.0.1:1".to_string()],
        &CertOptions::default(),
    )
    .unwrap();
    let foreign = client_config(&certs.ca, Some((&stranger.client, &stranger.client_key)));
    assert!(tls_request(addr, foreign, "GET", "/k", &[], b"").is_err());
    let plain = support::request(addr, "GET", "/k", &[], b"", Duration::from_secs(5));
    assert!(plain.map_or(true, |r| r.status != 200));
    let r = tls_request(addr, client, "GET", "/k", &[], b"").unwrap();
    assert_eq!(r.status, 200, "the node stopped serving");
}

/// Copies the certificate set `from` over the files `to`'s flags point at.
fn rotate(from: &Generated, to: &Generated) {
    std::fs::copy(&from.ca, &to.ca).unwrap();
    for (new, old) in from.members.iter().zip(&to.members) {
        std::fs::copy(&new.cert, &old.cert).unwrap();
        std::fs::copy(&new.key, &old.key).unwrap();
    }
}

// Intent: SIGHUP after the leaf certificates and the CA were replaced on every member makes
// new connections use the new ones, on the listening side and on the dialing side (a member
// restarted with only the new CA must be dialed with the new certificates to catch up),
// while the cluster keeps committing through the rotation. A bad file at the next SIGHUP
// keeps the certificate in use and says why.
#[test]
fn sighup_rotates_certificates_and_ca_for_new_connections() {
    let (mut c, old) = mtls_cluster(3, &[], &CertOptions::default());
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    c.wait_leader();
    c.put_eventually(1, "before", "v");
    let new = generate(
        &c.dir().join("new-certs"),
        &c.peer_urls,
        &CertOptions::default(),
    )
    .unwrap();
    rotate(&new, &old);
    for id in 1..=3 {
        let pid = c.node_mut(id).child.as_ref().unwrap().id();
        support::signal(pid, "HUP");
    }
    let m = new.member(1).unwrap();
    let new_client = client_config(&new.ca, Some((&m.cert, &m.key)));
    for id in 1..=3 {
        let addr = peer_addr(&c, id);
        support::poll(Duration::from_secs(20), "the new certificate", || {
            tls_request(
                addr,
                new_client.clone(),
                "GET",
                "/raft/cluster?id=1",
                &[],
                b"",
            )
            .ok()
            .filter(|r| r.status == 200)
        });
        assert!(c
            .node(id)
            .log()
            .contains("SIGHUP: peer certificate reloaded"));
    }
    c.put_eventually(2, "during", "v");
    // Member 3 restarts knowing only the new CA: the others must dial it with new certs.
    c.node_mut(3).kill();
    c.node_mut(3).start();
    c.put_eventually(1, "after", "v");
    c.wait_converged();
    // A bad file keeps what is in use.
    std::fs::write(&old.members[0].cert, b"not a certificate").unwrap();
    let pid = c.node_mut(1).child.as_ref().unwrap().id();
    support::signal(pid, "HUP");
    support::poll(Duration::from_secs(10), "the refused reload", || {
        c.node(1)
            .log()
            .contains("peer certificate NOT reloaded")
            .then_some(())
    });
    let addr = peer_addr(&c, 1);
    let r = tls_request(addr, new_client, "GET", "/raft/cluster?id=1", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    c.put_eventually(1, "still", "v");
}

// Intent: a node's data dirs are created 0700 and its files 0600, and a data dir that group
// or others may write to stops startup with the chmod to run.
#[test]
fn data_dirs_are_private_and_an_open_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::start(1, &[]);
    c.put_eventually(1, "k", "v");
    let wal = c.dir().join("raftexample-1");
    let snap = c.dir().join("raftexample-1-snap");
    for dir in [&wal, &snap] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }
    }
    assert_eq!(c.node_mut(1).terminate(), Some(0));
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o777)).unwrap();
    c.node_mut(1).start();
    assert_eq!(c.node_mut(1).wait_exit(Duration::from_secs(20)), Some(1));
    assert!(
        c.node(1).log().contains("writable by group or others"),
        "{}",
        c.node(1).log()
    );
}

// Intent: members on hosts of their own (127.0.101.i here) whose certificates name only their
// host (an IP SAN, no URI SAN) form a mutual-TLS cluster, and a certificate still speaks only
// for the member whose host it names: member X's certificate claiming to be the leader is
// refused (403), as itself it is accepted.
#[test]
fn members_on_hosts_of_their_own_are_named_by_their_host() {
    let mut c = Cluster::new(3, &[]);
    let host = |id: u64| format!("127.0.101.{id}");
    let urls: Vec<String> = (1..=3)
        .map(|id| format!("https://{}:{}", host(id), c.node(id).peer_port))
        .collect();
    let options = CertOptions {
        hosts: Vec::new(),
        ..CertOptions::default()
    }
    .without_member_uri_san();
    let certs = generate(&c.dir().join("certs"), &urls, &options).unwrap();
    for node in &mut c.nodes {
        let i = node.args.iter().position(|a| a == "--cluster").unwrap();
        node.args[i + 1] = urls.join(",");
        node.args.extend(certs.peer_flags(node.id));
    }
    c.peer_urls = urls;
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    let leader = c.wait_leader();
    c.put_eventually(leader, "k", "v");
    let target = if leader == 3 { 2 } else { 3 };
    let other = (1..=3).find(|id| *id != leader && *id != target).unwrap();
    let addr: SocketAddr = format!("{}:{}", host(target), c.node(target).peer_port)
        .parse()
        .unwrap();
    let m = certs.member(other).unwrap();
    let as_other = client_config(&certs.ca, Some((&m.cert, &m.key)));
    let path = format!("/raft/cluster?id={other}");
    let r = tls_request(addr, as_other.clone(), "GET", &path, &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let info: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let cluster = info["cluster_id"].as_str().unwrap().to_string();
    let term = c.node(target).status().unwrap()["term"].as_u64().unwrap();
    for (claimed, want) in [(leader, 403), (other, 204)] {
        let (from, to) = (claimed.to_string(), target.to_string());
        let h = [
            ("X-Raft-Cluster-Id", cluster.as_str()),
            ("X-Raft-From", from.as_str()),
            ("X-Raft-To", to.as_str()),
        ];
        let body = heartbeat_response(claimed, target, term);
        let r = tls_request(addr, as_other.clone(), "POST", "/raft", &h, &body).unwrap();
        assert_eq!(r.status, want, "claiming {claimed}: {}", r.text());
    }
}
