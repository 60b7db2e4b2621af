//! Joining in one step: a node started with `--join` whose ID is not a member yet asks the
//! cluster to add it (`POST /raft/join` on a member's peer port), on real processes over
//! loopback.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftexample::certs::{generate, CertOptions, Generated};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{parse_reply, poll, Cluster, Reply};

/// Long enough for a joiner to start, be added, catch up and be promoted on a shared machine.
const JOINED: Duration = Duration::from_secs(40);

/// The IDs and peer URLs of the voters (or, with `learners`, the learners) `via` reports.
fn members_of(c: &Cluster, via: u64, learners: bool) -> Option<Vec<(u64, String)>> {
    let s = c.node(via).status()?;
    let key = if learners { "learners" } else { "voters" };
    let mut members: Vec<(u64, String)> = s[key]
        .as_array()?
        .iter()
        .filter_map(|m| Some((m["id"].as_u64()?, m["url"].as_str()?.to_string())))
        .collect();
    members.sort();
    Some(members)
}

/// Waits until every running node of `c` lists `id` as a voter with `url`.
fn wait_voter(c: &mut Cluster, id: u64, url: &str) {
    let running: Vec<u64> = c
        .nodes
        .iter_mut()
        .filter_map(|n| n.is_running().then_some(n.id))
        .collect();
    let c = &*c;
    poll(
        JOINED,
        &format!("node {id} to be a voter everywhere"),
        || {
            running
                .iter()
                .all(|via| {
                    members_of(c, *via, false)
                        .is_some_and(|v| v.iter().any(|(m, u)| *m == id && u == url))
                })
                .then_some(())
        },
    );
}

fn peer_addr(c: &Cluster, id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], c.node(id).peer_port))
}

/// One `POST /raft/join` to `peer` with `headers` and `body`, over plain HTTP.
fn post_join(peer: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    support::request(
        peer,
        "POST",
        "/raft/join",
        headers,
        body,
        Duration::from_secs(10),
    )
    .unwrap()
}

/// Starts node `id` and checks that it exits 1 with `sentence` in its log and wrote no WAL.
fn join_is_refused(c: &mut Cluster, id: u64, sentence: &str) {
    c.node_mut(id).start();
    assert_eq!(c.node_mut(id).wait_exit(Duration::from_secs(30)), Some(1));
    let log = c.node(id).log();
    assert!(log.contains(sentence), "{log}");
    assert!(
        !c.dir().join(format!("raftexample-{id}")).exists(),
        "the refused joiner wrote a WAL"
    );
}

// Intent: `--join` alone is enough. Node 4, never added with `POST /4`, asks the cluster to
// add it with its own --cluster URL, comes in as a learner that the leader promotes once it
// started and caught up, and then serves a linearizable GET of a key written before it
// joined, and takes writes.
#[test]
fn join_without_a_post_becomes_a_voter_and_serves_old_keys() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    c.put_eventually(leader, "before", "old");
    let (id, url) = c.prepare_joiner(&[]);
    c.node_mut(id).start();
    wait_voter(&mut c, id, &url);
    let r = poll(
        Duration::from_secs(20),
        "a linearizable read on node 4",
        || c.node(id).get("before").ok().filter(|r| r.status == 200),
    );
    assert_eq!(r.text(), "old");
    c.put_eventually(id, "after", "new");
    let log = c.node(id).log();
    assert!(log.contains("added to the cluster"), "{log}");
    let leader = c.wait_leader();
    let leader_log = c.node(leader).log();
    assert!(
        leader_log.contains("promoting a learner that started and caught up"),
        "{leader_log}"
    );
}

// Intent: two nodes joining at once both get in, one after the other. While one addition is
// pending the leader answers another join 409 with Retry-After (forced here: the followers
// are paused so the first cannot commit before the second arrives), and node 5, started
// meanwhile, retries with backoff instead of giving up; once the followers run again nodes
// 4 and 5 both end up voters.
#[test]
fn two_joiners_at_once_both_become_voters() {
    let mut c = Cluster::start(3, &["--request-timeout-ms", "10000"]);
    let leader = c.wait_leader();
    c.put_eventually(leader, "warm", "1");
    let (a, url_a) = c.prepare_joiner(&[]);
    let (b, url_b) = c.prepare_joiner(&[]);
    let peer = peer_addr(&c, leader);
    let cluster = support::cluster_id_of(peer);
    let ask = move |id: u64, url: &str| {
        let (cluster, from, to) = (cluster.clone(), id.to_string(), leader.to_string());
        let body = format!(r#"{{"id": {id}, "url": "{url}"}}"#);
        std::thread::spawn(move || {
            let headers = [
                ("X-Raft-Cluster-Id", cluster.as_str()),
                ("X-Raft-From", from.as_str()),
                ("X-Raft-To", to.as_str()),
            ];
            post_join(peer, &headers, body.as_bytes())
        })
    };
    let followers: Vec<u32> = (1..=3)
        .filter(|i| *i != leader)
        .map(|i| c.node_mut(i).child.as_ref().unwrap().id())
        .collect();
    let last = |c: &Cluster| {
        c.node(leader).status().unwrap()["last_index"]
            .as_u64()
            .unwrap()
    };
    let before = last(&c);
    for pid in &followers {
        support::signal(*pid, "STOP");
    }
    let first = ask(a, &url_a);
    poll(
        Duration::from_secs(10),
        "the first addition to be appended",
        || (last(&c) > before).then_some(()),
    );
    let second = ask(b, &url_b).join().unwrap();
    let refused = (second.status, second.header("retry-after").is_some());
    // Node 5 itself meets the same refusal (or, once the leader stepped down for want of a
    // quorum, no leader) and retries.
    c.node_mut(b).start();
    poll(Duration::from_secs(15), "node 5 to retry its join", || {
        c.node(b)
            .log()
            .contains("join not done yet: retrying")
            .then_some(())
    });
    for pid in &followers {
        support::signal(*pid, "CONT");
    }
    assert_eq!(refused, (409, true), "{}", second.text());
    assert!(second.text().contains("pending"), "{}", second.text());
    // The first may have committed, or been cut short by the leader stepping down (check
    // quorum) while its followers were paused: the joiner finds out either way.
    let first = first.join().unwrap();
    assert!([204, 503, 504].contains(&first.status), "{first:?}");

    c.node_mut(a).start();
    wait_voter(&mut c, a, &url_a);
    wait_voter(&mut c, b, &url_b);
    let leader = c.wait_leader();
    let voters = members_of(&c, leader, false).unwrap();
    assert_eq!(voters.len(), 5, "{voters:?}");
    c.put_eventually(b, "from-5", "v");
    c.wait_converged();
}

// Intent: raftexample's two steps keep working: after `POST /4` with its URL, `--join` finds
// the ID already a member with that URL and asks nothing; it becomes a voter.
#[test]
fn post_then_join_asks_nothing_and_becomes_a_voter() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let (id, url) = c.prepare_joiner(&[]);
    let r = c
        .node(leader)
        .req("POST", &format!("/{id}"), url.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    c.node_mut(id).start();
    wait_voter(&mut c, id, &url);
    let log = c.node(id).log();
    assert!(log.contains("already a member: nothing to ask"), "{log}");
    assert!(!log.contains("added to the cluster"), "{log}");
}

// Intent: a join that cannot be right is refused with one sentence and exit status 1,
// before the node writes anything: the ID is a member under another peer URL (taken), and,
// once that member is removed, the removed ID (never reused).
#[test]
fn a_taken_or_removed_id_is_refused_with_a_sentence() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let (id, _) = c.prepare_joiner(&[]);
    let elsewhere = format!("http://127.0.0.1:{}", support::free_ports(1)[0]);
    let r = c
        .node(leader)
        .req("POST", &format!("/{id}"), elsewhere.as_bytes())
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    join_is_refused(&mut c, id, "so the ID is taken");
    let r = c
        .node(leader)
        .req("DELETE", &format!("/{id}"), b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    join_is_refused(&mut c, id, "an ID is never reused");
    assert_eq!(members_of(&c, leader, false).unwrap().len(), 3);
}

// Intent: a joiner whose --cluster names no running member gives up after the join timeout
// with one sentence and exit status 1, writing nothing.
#[test]
fn a_join_with_no_member_reachable_is_refused() {
    let mut c = Cluster::new(1, &[]);
    let (id, _) = c.prepare_joiner(&[]);
    join_is_refused(&mut c, id, "cannot reach any member of --cluster to join");
}

/// A join request that must be refused: what it is, its headers, its body, the status.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16);

// Intent: hostile or malformed join requests get a clear 4xx and change nothing: bad JSON, a
// body over the limit, ID 0, an ID other than the sender, a bad URL, a URL of the wrong
// scheme, missing headers, another cluster's ID, another receiver, a member's URL, a member's
// ID under another URL, a removed ID, the wrong method. A well-formed request to a follower
// is pointed at the leader. The membership stays as it was and the cluster keeps serving.
#[test]
fn malformed_join_requests_are_refused_and_change_nothing() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let peer = peer_addr(&c, leader);
    let cluster = support::cluster_id_of(peer);
    // Node 7 was added and removed: its ID is never reused.
    let seven = format!("http://127.0.0.1:{}", support::free_ports(1)[0]);
    let r = c.node(leader).req("POST", "/7", seven.as_bytes()).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c.node(leader).req("DELETE", "/7", b"").unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let voters = members_of(&c, leader, false).unwrap();
    let free = format!("http://127.0.0.1:{}", support::free_ports(1)[0]);
    let to = leader.to_string();
    let headers = |from: &'static str| {
        vec![
            ("X-Raft-Cluster-Id", cluster.clone()),
            ("X-Raft-From", from.to_string()),
            ("X-Raft-To", to.clone()),
        ]
    };
    let body = |id: u64, url: &str| format!(r#"{{"id": {id}, "url": "{url}"}}"#).into_bytes();
    let member_url = c.peer_urls[0].clone();
    let huge = vec![b'x'; 6000];
    let cases: Vec<Case> = vec![
        ("bad JSON", headers("4"), b"{\"id\": 4, ".to_vec(), 400),
        ("huge body", headers("4"), huge, 413),
        ("ID 0", headers("4"), body(0, &free), 400),
        ("another ID", headers("4"), body(5, &free), 400),
        ("bad URL", headers("4"), body(4, "127.0.0.1:1"), 400),
        (
            "wrong scheme",
            headers("4"),
            body(4, &free.replace("http", "https")),
            400,
        ),
        ("no headers", Vec::new(), body(4, &free), 400),
        (
            "another cluster",
            vec![
                ("X-Raft-Cluster-Id", "abc".to_string()),
                ("X-Raft-From", "4".to_string()),
                ("X-Raft-To", to.clone()),
            ],
            body(4, &free),
            412,
        ),
        (
            "another receiver",
            vec![
                ("X-Raft-Cluster-Id", cluster.clone()),
                ("X-Raft-From", "4".to_string()),
                ("X-Raft-To", "9".to_string()),
            ],
            body(4, &free),
            400,
        ),
        ("a member's URL", headers("4"), body(4, &member_url), 409),
        ("a member's ID", headers("2"), body(2, &free), 409),
        ("a removed ID", headers("7"), body(7, &free), 410),
    ];
    for (what, headers, body, want) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = post_join(peer, &h, body);
        assert_eq!(r.status, *want, "{what}: {}", r.text());
        assert!(r.header("retry-after").is_none(), "{what}: {}", r.text());
        assert!(!r.text().trim().is_empty(), "{what}: no sentence");
    }
    let r = support::request(peer, "GET", "/raft/join", &[], b"", Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 405, "{}", r.text());
    // Well-formed, but to a follower: 503 with the leader's ID and URL.
    let follower_headers = [
        ("X-Raft-Cluster-Id", cluster.as_str()),
        ("X-Raft-From", "4"),
        ("X-Raft-To", &follower.to_string()),
    ];
    let r = post_join(peer_addr(&c, follower), &follower_headers, &body(4, &free));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-raft-leader"), Some(leader.to_string().as_str()));
    let leader_url = c.peer_urls[(leader - 1) as usize].clone();
    assert_eq!(r.header("x-raft-leader-url"), Some(leader_url.as_str()));
    // Nothing changed.
    assert_eq!(members_of(&c, leader, false).unwrap(), voters);
    assert_eq!(members_of(&c, leader, true).unwrap(), Vec::new());
    c.put_eventually(follower, "still-serving", "v");
    let refused = c.node(leader).status().unwrap()["peer_refused"].clone();
    assert!(refused["malformed"].as_u64().unwrap() >= 5, "{refused}");
}

/// A cluster of `n` nodes whose peers speak mutual TLS (https:// URLs, a fresh CA,
/// `--peer-client-cert-auth`), with certificates for one more member at `spare`. Not started.
fn mtls_cluster_with_spare(n: usize, spare: &str) -> (Cluster, Generated) {
    let mut c = Cluster::new(n, &[]);
    let https: Vec<String> = c
        .peer_urls
        .iter()
        .map(|u| u.replacen("http://", "https://", 1))
        .collect();
    let mut all = https.clone();
    all.push(spare.to_string());
    let certs = generate(&c.dir().join("certs"), &all, &CertOptions::default()).unwrap();
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

/// A rustls client trusting `ca`, presenting `identity` (certificate, key) when given.
fn client_config(ca: &Path, identity: (&Path, &Path)) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(identity.0)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(identity.1).unwrap())
        .unwrap();
    Arc::new(config)
}

/// One HTTPS request to `addr` (as host 127.0.0.1).
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

// Intent: on a mutual-TLS cluster (--peer-client-cert-auth) a join request must come with a
// certificate that names the URL it asks to be added with: member 2's certificate asking to
// add node 4 at the spare URL is refused 403 and nothing changes; node 4 itself, with its own
// certificate, joins in one step (probe and join request) and becomes a voter.
#[test]
fn on_mutual_tls_a_join_needs_the_joiners_certificate() {
    let spare_port = support::free_ports(1)[0];
    let spare = format!("https://127.0.0.1:{spare_port}");
    let (mut c, certs) = mtls_cluster_with_spare(3, &spare);
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    let leader = c.wait_leader();
    c.put_eventually(leader, "before", "old");
    let peer = peer_addr(&c, leader);
    let member = (1..=3).find(|i| *i != leader).unwrap();
    let files = certs.member(member).unwrap();
    let as_member = client_config(&certs.ca, (&files.cert, &files.key));
    let probe = tls_request(peer, as_member.clone(), "GET", "/raft/cluster", &[], b"").unwrap();
    let info: serde_json::Value = serde_json::from_slice(&probe.body).unwrap();
    let cluster = info["cluster_id"].as_str().unwrap().to_string();
    let to = leader.to_string();
    let headers = [
        ("X-Raft-Cluster-Id", cluster.as_str()),
        ("X-Raft-From", "4"),
        ("X-Raft-To", to.as_str()),
    ];
    let body = format!(r#"{{"id": 4, "url": "{spare}"}}"#);
    let r = tls_request(
        peer,
        as_member,
        "POST",
        "/raft/join",
        &headers,
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("does not name node 4"), "{}", r.text());
    assert_eq!(members_of(&c, leader, false).unwrap().len(), 3);
    assert_eq!(members_of(&c, leader, true).unwrap(), Vec::new());

    // The joiner with its own certificate, no POST.
    let (id, _) = c.prepare_joiner(&[]);
    assert_eq!(id, 4);
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
    c.node_mut(id).start();
    wait_voter(&mut c, id, &spare);
    let r = poll(
        Duration::from_secs(20),
        "a linearizable read on node 4",
        || c.node(id).get("before").ok().filter(|r| r.status == 200),
    );
    assert_eq!(r.text(), "old");
}
