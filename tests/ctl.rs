//! `raftexample ctl` against real clusters on loopback, and against fake endpoints (tiny TCP
//! servers in this file) that answer what a test needs and count the requests they get: the
//! retry rules are only believable where "exactly one request" can be counted.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_ports, poll, Cluster};

/// Longest a single ctl invocation may take in these tests before it is killed.
const CTL_LIMIT: Duration = Duration::from_secs(30);

/// What one ctl run printed and returned.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// Runs `raftexample ctl ARGS` with `stdin`, without `RAFTEXAMPLE_ENDPOINTS` from outside;
/// kills it after [`CTL_LIMIT`].
fn ctl_with_stdin(args: &[&str], stdin: &[u8]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftexample"))
        .arg("ctl")
        .args(args)
        .env_remove("RAFTEXAMPLE_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftexample ctl");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let end = Instant::now() + CTL_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("raftexample ctl {args:?} ran over {CTL_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Out {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn ctl(args: &[&str]) -> Out {
    ctl_with_stdin(args, b"")
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Asserts the error contract: the exit code, and one line on stderr with the prefix.
fn assert_error(out: &Out, code: i32, contains: &str) {
    assert_eq!(out.code, code, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one sentence: {out:?}");
    assert!(out.stderr.starts_with("raftexample ctl: "), "{out:?}");
    assert!(
        out.stderr.contains(contains),
        "wanted {contains:?}: {out:?}"
    );
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn endpoints(c: &Cluster, ids: &[u64]) -> String {
    let urls: Vec<String> = ids.iter().map(|id| url(c.node(*id).client)).collect();
    urls.join(",")
}

/// A loopback URL where nothing listens (connections are refused).
fn closed_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_ports(1)[0])
}

fn followers(c: &mut Cluster) -> (u64, Vec<u64>) {
    let leader = c.wait_leader();
    let n = c.nodes.len() as u64;
    (leader, (1..=n).filter(|id| *id != leader).collect())
}

/// `endpoint status --cluster -w json` through `via`, once it shows `n` members that all
/// answered and agree on one leader.
fn cluster_status(c: &Cluster, via: u64, n: usize) -> Vec<Value> {
    let via = endpoints(c, &[via]);
    poll(Duration::from_secs(20), "a full cluster status", || {
        let out = ctl(&[
            "endpoint",
            "status",
            "--cluster",
            "-w",
            "json",
            "--endpoints",
            &via,
        ]);
        let rows: Vec<Value> = serde_json::from_str::<Value>(&out.stdout)
            .ok()?
            .as_array()?
            .clone();
        let answered = rows.iter().all(|r| r["errors"] == Value::Array(vec![]));
        let leaders = rows.iter().filter(|r| r["is_leader"] == true).count();
        (out.code == 0 && rows.len() == n && answered && leaders == 1).then_some(rows)
    })
}

// ---------------------------------------------------------------------------------------
// A fake endpoint.

/// What a fake endpoint does with a request, once it has read it whole.
#[derive(Clone)]
enum Script {
    /// Writes these bytes (a whole HTTP answer) and closes.
    Answer(Vec<u8>),
    /// Never answers (keeps the connection open until the fake is dropped).
    Hang,
    /// Closes the connection without answering.
    Close,
}

/// An HTTP answer with `Content-Length` (or `length` when given, to cut a body short) and
/// `Connection: close`.
fn answer(status: u16, headers: &[(&str, &str)], body: &[u8], length: Option<usize>) -> Script {
    let mut head = format!(
        "HTTP/1.1 {status} Fake\r\nContent-Length: {}\r\nConnection: close\r\n",
        length.unwrap_or(body.len())
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Script::Answer(bytes)
}

fn sentence(status: u16, text: &str) -> Script {
    answer(
        status,
        &[("Retry-After", "1")],
        format!("{text}\n").as_bytes(),
        None,
    )
}

/// The request line and the body of a request a fake endpoint received.
type Received = (String, Vec<u8>);

/// A TCP server on loopback that gives its n-th connection `script[n]` (the last entry
/// repeats) and records every request line.
struct Fake {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    fn start(script: Vec<Script>) -> Fake {
        assert!(!script.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let step = script[n.min(script.len() - 1)].clone();
                        n += 1;
                        let (seen, stopped) = (seen.clone(), stopped.clone());
                        std::thread::spawn(move || serve(stream, step, &seen, &stopped));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fake {
            addr,
            requests,
            stop,
        }
    }

    fn url(&self) -> String {
        url(self.addr)
    }

    /// The request lines received.
    fn requests(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|(line, _)| line.clone()).collect()
    }

    /// The bodies received, as text.
    fn bodies(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .map(|(_, body)| String::from_utf8_lossy(body).to_string())
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, step: Script, seen: &Mutex<Vec<Received>>, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    seen.lock().unwrap().push(request);
    match step {
        Script::Answer(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Script::Close => {}
        Script::Hang => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Reads a request's head and its `Content-Length` body; returns its request line and body.
fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((head.lines().next()?.to_string(), body))
}

// ---------------------------------------------------------------------------------------
// Keys.

#[test]
fn put_get_del_through_a_follower_and_past_a_down_endpoint() {
    // Intent: the key commands work through a follower (which forwards to the leader), and
    // through an endpoint list whose first entry refuses connections; a deleted key is
    // "key not found" with exit 1; keys with slashes and spaces survive the percent-encoding.
    let mut c = Cluster::start(3, &[]);
    let (_, followers) = followers(&mut c);
    let follower = endpoints(&c, &followers[..1]);
    let put = ctl(&["--endpoints", &follower, "put", "dir/a key", "v1"]);
    assert_eq!((put.code, put.stdout.as_str()), (0, "OK\n"), "{put:?}");
    let get = ctl(&["--endpoints", &follower, "get", "dir/a key"]);
    assert_eq!((get.code, get.stdout.as_str()), (0, "v1\n"), "{get:?}");
    let json = ctl(&["--endpoints", &follower, "get", "dir/a key", "-w", "json"]).json();
    assert_eq!(
        (json["key"].as_str(), json["value"].as_str()),
        (Some("dir/a key"), Some("v1"))
    );
    let serializable = ctl(&[
        "--endpoints",
        &follower,
        "get",
        "dir/a key",
        "--consistency",
        "serializable",
    ]);
    assert_eq!(serializable.stdout, "v1\n", "{serializable:?}");
    let del = ctl(&["--endpoints", &follower, "del", "dir/a key"]);
    assert_eq!((del.code, del.stdout.as_str()), (0, "OK\n"), "{del:?}");
    assert_error(
        &ctl(&["--endpoints", &follower, "get", "dir/a key"]),
        1,
        "key not found",
    );

    let list = format!("{},{}", closed_endpoint(), endpoints(&c, &followers[1..2]));
    let put = ctl(&["--endpoints", &list, "put", "k", "-w", "json", "v2"]);
    assert_eq!(put.code, 0, "{put:?}");
    assert!(
        put.json()["index"].as_u64().is_some_and(|i| i > 0),
        "{put:?}"
    );
    assert!(
        put.json()["term"].as_u64().is_some_and(|t| t > 0),
        "{put:?}"
    );
    let from_stdin = ctl_with_stdin(&["--endpoints", &list, "put", "s", "-"], b"from stdin");
    assert_eq!(from_stdin.code, 0, "{from_stdin:?}");
    assert_eq!(ctl(&["--endpoints", &list, "get", "k"]).stdout, "v2\n");
    assert_eq!(
        ctl(&["--endpoints", &list, "get", "s"]).stdout,
        "from stdin\n"
    );
    assert_eq!(ctl(&["--endpoints", &list, "del", "k"]).code, 0);
    assert_error(
        &ctl(&["--endpoints", &list, "get", "k"]),
        1,
        "key not found",
    );
}

#[test]
fn a_put_during_an_election_is_carried_by_another_endpoint() {
    // Intent: right after the leader is killed, a put whose first endpoint is the dead
    // leader moves on to a follower, which holds it until a new leader commits it.
    let mut c = Cluster::start(3, &[]);
    let (leader, followers) = followers(&mut c);
    c.node_mut(leader).kill();
    let list = endpoints(&c, &[leader, followers[0], followers[1]]);
    let put = ctl(&["--endpoints", &list, "put", "election", "won"]);
    assert_eq!((put.code, put.stdout.as_str()), (0, "OK\n"), "{put:?}");
    let get = ctl(&["--endpoints", &list, "get", "election"]);
    assert_eq!(get.stdout, "won\n", "{get:?}");
}

// ---------------------------------------------------------------------------------------
// Retry rules, against fake endpoints.

#[test]
fn a_write_is_never_retried_after_a_504() {
    // Intent: a 504 means the write may still commit, so ctl sends it exactly once, never to
    // the next endpoint, and says the outcome is unknown (exit 1).
    let timed_out = Fake::start(vec![sentence(504, "the write timed out after 3000 ms")]);
    let next = Fake::start(vec![answer(204, &[], b"", None)]);
    let list = format!("{},{}", timed_out.url(), next.url());
    let out = ctl(&["--endpoints", &list, "put", "k", "v"]);
    assert_error(&out, 1, "may or may not have been applied");
    assert!(
        out.stderr.contains("the write timed out after 3000 ms"),
        "{out:?}"
    );
    assert_eq!(timed_out.requests(), vec!["PUT /kv/k HTTP/1.1".to_string()]);
    assert!(next.requests().is_empty(), "{:?}", next.requests());
    // The same for a membership change.
    let out = ctl(&["--endpoints", &list, "member", "remove", "3"]);
    assert_error(&out, 1, "may or may not have been applied");
    assert_eq!(timed_out.requests().len(), 2);
    assert!(next.requests().is_empty());
}

#[test]
fn a_write_is_never_retried_after_a_timeout_or_a_lost_connection() {
    // Intent: once the request may have been sent, silence (past the deadline) and a closed
    // connection are "outcome unknown" too: one request, none to the next endpoint.
    let next = Fake::start(vec![answer(204, &[], b"", None)]);
    for (script, why) in [
        (Script::Hang, "no answer within"),
        (Script::Close, "connection"),
    ] {
        let first = Fake::start(vec![script]);
        let list = format!("{},{}", first.url(), next.url());
        let out = ctl(&["--endpoints", &list, "--command-timeout", "1s", "del", "k"]);
        assert_error(&out, 1, "may or may not have been applied");
        assert!(out.stderr.contains(why), "{out:?}");
        assert_eq!(first.requests(), vec!["DELETE /kv/k HTTP/1.1".to_string()]);
    }
    assert!(next.requests().is_empty(), "{:?}", next.requests());
}

#[test]
fn a_write_after_a_503_goes_to_the_next_endpoint() {
    // Intent: a 503 is known not applied, so the put moves on to the next endpoint (a real
    // node) and succeeds; alone, a 503 endpoint is retried until the deadline, and ctl then
    // says the write was not applied.
    let mut c = Cluster::start(1, &[]);
    c.wait_leader();
    let unavailable = Fake::start(vec![sentence(503, "no leader: retry")]);
    let list = format!("{},{}", unavailable.url(), endpoints(&c, &[1]));
    let put = ctl(&["--endpoints", &list, "put", "k", "after 503"]);
    assert_eq!((put.code, put.stdout.as_str()), (0, "OK\n"), "{put:?}");
    assert_eq!(unavailable.requests().len(), 1);
    assert_eq!(
        ctl(&["--endpoints", &endpoints(&c, &[1]), "get", "k"]).stdout,
        "after 503\n"
    );

    let alone = Fake::start(vec![sentence(503, "no leader: retry")]);
    let out = ctl(&[
        "--endpoints",
        &alone.url(),
        "--command-timeout",
        "2s",
        "put",
        "k",
        "v",
    ]);
    assert_error(&out, 1, "the write was not applied");
    assert!(out.stderr.contains("no leader: retry"), "{out:?}");
    let tries = alone.requests().len();
    assert!(
        (2..=4).contains(&tries),
        "Retry-After 1s within 2s: {tries} requests"
    );
}

#[test]
fn reads_are_retried_after_503_504_and_timeouts() {
    // Intent: a read is safe to repeat, so a 503, a 504 and an endpoint that never answers
    // each move it on to the next endpoint, where it succeeds.
    let mut c = Cluster::start(1, &[]);
    c.wait_leader();
    let real = endpoints(&c, &[1]);
    assert_eq!(ctl(&["--endpoints", &real, "put", "r", "read me"]).code, 0);
    let unavailable = Fake::start(vec![sentence(503, "no leader")]);
    let timed_out = Fake::start(vec![sentence(504, "the read timed out")]);
    let silent = Fake::start(vec![Script::Hang]);
    let list = format!(
        "{},{},{},{real}",
        unavailable.url(),
        timed_out.url(),
        silent.url()
    );
    let get = ctl(&["--endpoints", &list, "--command-timeout", "4s", "get", "r"]);
    assert_eq!((get.code, get.stdout.as_str()), (0, "read me\n"), "{get:?}");
    for fake in [&unavailable, &timed_out, &silent] {
        assert_eq!(fake.requests(), vec!["GET /kv/r HTTP/1.1".to_string()]);
    }
    // A 404 is an answer, not a reason to ask elsewhere.
    let absent = Fake::start(vec![sentence(404, "key not found")]);
    let list = format!("{},{real}", absent.url());
    assert_error(
        &ctl(&["--endpoints", &list, "get", "r"]),
        1,
        "key not found",
    );
}

// ---------------------------------------------------------------------------------------
// Exit codes.

#[test]
fn exit_2_when_nothing_is_reachable_and_3_on_invalid_input() {
    // Intent: refused connections everywhere give exit 2 for every kind of command, within
    // the dial timeout; bad flags and arguments give exit 3 before anything is sent.
    let list = format!("{},{}", closed_endpoint(), closed_endpoint());
    for command in [
        &["get", "k"][..],
        &["put", "k", "v"],
        &["member", "list"],
        &["member", "remove", "2"],
        &["endpoint", "status"],
        &["endpoint", "health"],
        &["leader", "move", "2"],
        &["watch"],
    ] {
        let started = Instant::now();
        let mut args = vec!["--endpoints", &list, "--dial-timeout", "300ms"];
        args.extend_from_slice(command);
        let out = ctl(&args);
        assert_error(&out, 2, "could be reached");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{command:?} took too long"
        );
    }
    let fake = Fake::start(vec![answer(204, &[], b"", None)]);
    let at = fake.url();
    for args in [
        &["--endpoints", &at, "--bogus", "get", "k"][..],
        &["--endpoints", &at, "get"],
        &["--endpoints", &at, "frobnicate"],
        &["--endpoints", "ftp://127.0.0.1:1", "get", "k"],
        &["--endpoints", &at, "--command-timeout", "soon", "get", "k"],
        &[
            "--endpoints",
            &at,
            "member",
            "add",
            "0",
            "http://127.0.0.1:1",
        ],
        &["--endpoints", &at, "member", "add", "4", "127.0.0.1:1"],
        &["--endpoints", &at, "leader", "move", "two"],
        &["--endpoints", &at, "-w", "xml", "member", "list"],
        &["--endpoints", &at, "put", "", "v"],
    ] {
        assert_error(&ctl(args), 3, "");
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

// ---------------------------------------------------------------------------------------
// Cluster commands.

#[test]
fn endpoint_status_cluster_shows_every_member_and_one_leader() {
    // Intent: --cluster finds all 3 members from one endpoint; -w json is one array with
    // exactly one leader; -w table lines up, including a row for an endpoint that is down.
    let c = Cluster::start(3, &[]);
    let rows = cluster_status(&c, 2, 3);
    let mut ids: Vec<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);
    for row in &rows {
        assert!(
            row["state_digest"].is_string() && row["keys"].is_u64(),
            "{row}"
        );
        assert!(row["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"));
    }

    // Through another member, whose view of the start records may lag the first's by a
    // heartbeat: polled until it too knows every client URL.
    let via_1 = endpoints(&c, &[1]);
    let table = poll(Duration::from_secs(20), "a full status table", || {
        let out = ctl(&[
            "--endpoints",
            &via_1,
            "endpoint",
            "status",
            "--cluster",
            "-w",
            "table",
        ]);
        (out.code == 0).then_some(out)
    });
    assert_lined_up(&table.stdout, 3);

    let down = closed_endpoint();
    let list = format!("{},{down}", endpoints(&c, &[1]));
    let partial = ctl(&[
        "--endpoints",
        &list,
        "--dial-timeout",
        "300ms",
        "endpoint",
        "status",
        "-w",
        "table",
    ]);
    assert_error(&partial, 1, "1 of 2 endpoints did not answer");
    assert_lined_up(&partial.stdout, 2);
    let down_row = partial.stdout.lines().find(|l| l.contains(&down)).unwrap();
    assert!(down_row.contains("could be reached"), "{}", partial.stdout);

    let via_3 = endpoints(&c, &[3]);
    let health = poll(Duration::from_secs(20), "a healthy cluster", || {
        let out = ctl(&["--endpoints", &via_3, "endpoint", "health", "--cluster"]);
        (out.code == 0).then_some(out)
    });
    assert_eq!(health.stdout.matches("is healthy").count(), 3, "{health:?}");
}

/// Every line of `table` has one width, and it has `rows` data rows.
fn assert_lined_up(table: &str, rows: usize) {
    let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
    assert!(
        widths.iter().all(|w| *w == widths[0]),
        "not aligned:\n{table}"
    );
    let data = table.lines().filter(|l| l.starts_with("| http://")).count();
    assert_eq!(data, rows, "{table}");
}

#[test]
fn member_list_add_learner_and_remove() {
    // Intent: member list shows the 3 voters with their client URLs; a learner added with
    // --learner is listed as one; remove takes it out, and its ID cannot come back (the
    // server's 409 sentence, exit 1).
    let c = Cluster::start(3, &[]);
    let via = endpoints(&c, &[1, 2, 3]);
    let members = |format: &str| ctl(&["--endpoints", &via, "member", "list", "-w", format]);
    // Polled until the answering member applied every start record (the client URLs).
    let list = poll(Duration::from_secs(20), "every client URL", || {
        let list = members("json").json();
        let listed = list["members"].as_array()?;
        listed
            .iter()
            .all(|m| m["client_url"].is_string())
            .then(|| list.clone())
    });
    let listed = list["members"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{list}");
    assert!(listed.iter().all(|m| m["role"] == "voter"), "{list}");
    assert_eq!(listed.iter().filter(|m| m["is_leader"] == true).count(), 1);

    let peer = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let add = ctl(&[
        "--endpoints",
        &via,
        "member",
        "add",
        "4",
        &peer,
        "--learner",
    ]);
    assert_eq!(add.code, 0, "{add:?}");
    assert!(add.stdout.starts_with("Member 4 added"), "{add:?}");
    let simple = members("simple");
    assert!(
        simple
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("4, learner, {peer}"))),
        "{simple:?}"
    );
    assert_lined_up_members(&members("table").stdout, 4);

    let remove = ctl(&["--endpoints", &via, "member", "remove", "4"]);
    assert_eq!(
        (remove.code, remove.stdout.as_str()),
        (0, "Member 4 removed from the cluster\n"),
        "{remove:?}"
    );
    let after = members("json").json();
    assert_eq!(after["members"].as_array().unwrap().len(), 3, "{after}");
    let again = ctl(&["--endpoints", &via, "member", "add", "4", &peer]);
    assert_error(&again, 1, "never reused");
}

#[test]
fn membership_commands_send_the_documented_requests() {
    // Intent: add (voter and --learner), promote and remove map to the routes and bodies of
    // the client API, and a refusal (409) is exit 1 with the server's sentence.
    let fake = Fake::start(vec![answer(
        204,
        &[("X-Raft-Index", "9"), ("X-Raft-Term", "2")],
        b"",
        None,
    )]);
    let at = fake.url();
    let peer = "http://127.0.0.1:42379";
    for args in [
        &["member", "add", "4", peer][..],
        &["member", "add", "5", peer, "--learner"],
        &["member", "promote", "5"],
        &["member", "remove", "5"],
    ] {
        let mut full = vec!["--endpoints", at.as_str()];
        full.extend_from_slice(args);
        assert_eq!(ctl(&full).code, 0, "{args:?}");
    }
    let json = ctl(&["--endpoints", &at, "-w", "json", "member", "promote", "5"]).json();
    assert_eq!(
        (json["index"].as_u64(), json["term"].as_u64()),
        (Some(9), Some(2))
    );
    assert_eq!(
        fake.requests(),
        [
            "POST /members/4 HTTP/1.1",
            "POST /members/5?learner=true HTTP/1.1",
            "POST /members/5/promote HTTP/1.1",
            "DELETE /members/5 HTTP/1.1",
            "POST /members/5/promote HTTP/1.1",
        ]
    );
    assert_eq!(fake.bodies(), [peer, peer, "", "", ""]);
    let refusing = Fake::start(vec![sentence(
        409,
        "learner 5 has not caught up with the log yet: retry the promotion shortly",
    )]);
    let out = ctl(&["--endpoints", &refusing.url(), "member", "promote", "5"]);
    assert_error(&out, 1, "answered 409: learner 5 has not caught up");
}

fn assert_lined_up_members(table: &str, rows: usize) {
    let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
    assert!(
        widths.iter().all(|w| *w == widths[0]),
        "not aligned:\n{table}"
    );
    let data = table
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("http://"))
        .count();
    assert_eq!(data, rows, "{table}");
}

#[test]
fn leader_move_hands_leadership_to_another_voter() {
    // Intent: leader move, sent through a member that is neither the leader nor the target,
    // reaches the leader, and the status then shows the target leading.
    let mut c = Cluster::start(3, &[]);
    let (leader, followers) = followers(&mut c);
    let (target, via) = (followers[0], followers[1]);
    cluster_status(&c, via, 3);
    let out = ctl(&[
        "--endpoints",
        &endpoints(&c, &[via]),
        "leader",
        "move",
        &target.to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("Leadership transferred from member {leader} to member {target}\n")
    );
    let rows = cluster_status(&c, via, 3);
    let leading: Vec<u64> = rows
        .iter()
        .filter(|r| r["is_leader"] == true)
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(leading, vec![target], "{rows:?}");
    let again = ctl(&[
        "--endpoints",
        &endpoints(&c, &[leader]),
        "leader",
        "move",
        &target.to_string(),
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("already leads"), "{again:?}");
}

#[test]
fn watch_prints_the_state_then_a_leader_change() {
    // Intent: watch prints the subscription's first event at once and then a leader event
    // when leadership moves, one JSON object per line; it is killed after, bounded in time.
    let mut c = Cluster::start(3, &[]);
    let (_, followers) = followers(&mut c);
    let via = endpoints(&c, &[followers[1]]);
    let mut watch = Watch::start(&["--endpoints", &via, "-w", "json", "watch"]);
    let first = watch.next_line(Duration::from_secs(10));
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["event"], "state", "{first}");
    assert!(first["data"]["term"].is_u64(), "{first}");
    let term = first["data"]["term"].as_u64().unwrap();

    let target = followers[0].to_string();
    let moved = ctl(&["--endpoints", &via, "leader", "move", &target]);
    assert_eq!(moved.code, 0, "{moved:?}");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no leader event for the move");
        let event: Value = serde_json::from_str(&watch.next_line(left)).unwrap();
        if event["event"] == "leader" && event["data"]["leader"].as_u64() == Some(followers[0]) {
            assert!(event["data"]["term"].as_u64().unwrap() > term, "{event}");
            break;
        }
    }
}

/// A running `ctl watch`, its stdout read line by line on a thread.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_raftexample"))
            .arg("ctl")
            .args(args)
            .env_remove("RAFTEXAMPLE_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn raftexample ctl watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch { child, lines }
    }

    fn next_line(&mut self, within: Duration) -> String {
        self.lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no line from watch within {within:?}: {e}"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Backups, against fake endpoints (the real /snapshot is the server side's).

/// `body` followed by its SHA-256.
fn with_trailer(body: &[u8]) -> Vec<u8> {
    let mut file = body.to_vec();
    file.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    file
}

#[test]
fn snapshot_save_keeps_a_good_backup_and_removes_a_bad_one() {
    // Intent: a body whose trailer matches lands in FILE (byte for byte, no FILE.part left),
    // also past a down endpoint; a bad trailer, a stream cut short and a body shorter than a
    // trailer each exit 1 and leave neither FILE nor FILE.part.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let part = dir.path().join("backup.db.part");
    let path = file.to_str().unwrap();
    let content: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let good = with_trailer(&content);
    let fake = Fake::start(vec![answer(200, &[("X-Raft-Index", "42")], &good, None)]);
    let list = format!("{},{}", closed_endpoint(), fake.url());
    let out = ctl(&["--endpoints", &list, "snapshot", "save", path]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("{} bytes, index 42", good.len())),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), good);
    assert!(!part.exists());
    assert_eq!(fake.requests(), vec!["GET /snapshot HTTP/1.1".to_string()]);
    std::fs::remove_file(&file).unwrap();

    let mut bad = good.clone();
    bad[1000] ^= 0xff;
    let cut = good[..good.len() / 2].to_vec();
    for (script, why) in [
        (answer(200, &[], &bad, None), "does not match"),
        (answer(200, &[], &cut, Some(good.len())), "broke off"),
        (answer(200, &[], &[7; 20], None), "shorter than"),
    ] {
        let fake = Fake::start(vec![script]);
        let out = ctl(&[
            "--endpoints",
            &fake.url(),
            "snapshot",
            "save",
            path,
            "--consistency",
            "serializable",
        ]);
        assert_error(&out, 1, why);
        assert!(!file.exists() && !part.exists(), "{out:?}");
        assert_eq!(
            fake.requests(),
            vec!["GET /snapshot?consistency=serializable HTTP/1.1".to_string()]
        );
    }
}

// ---------------------------------------------------------------------------------------
// TLS.

#[test]
fn https_endpoints_with_a_client_certificate() {
    // Intent: against a member that serves clients over TLS and requires a client
    // certificate, ctl with --cacert --cert --key writes, reads and finds the member's
    // https:// client URL through --cluster; without the client certificate it fails with
    // one sentence.
    use raftexample::certs::{generate, CertOptions};
    let mut c = Cluster::new(1, &[]);
    let certs = generate(
        &c.dir().join("certs"),
        &["https://127.0.0.1:1".to_string()],
        &CertOptions::default(),
    )
    .unwrap();
    let member = certs.member(1).unwrap().clone();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    c.node_mut(1).args.extend([
        "--cert-file".to_string(),
        path(&member.cert),
        "--key-file".to_string(),
        path(&member.key),
        "--trusted-ca-file".to_string(),
        path(&certs.ca),
        "--client-cert-auth".to_string(),
    ]);
    c.node_mut(1).start();
    let https = format!("https://{}", c.node(1).client);
    let (ca, cert, key) = (
        path(&certs.ca),
        path(&certs.client),
        path(&certs.client_key),
    );
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let with_tls = |args: &[&str]| {
        let mut full = vec!["--endpoints", https.as_str()];
        full.extend_from_slice(&tls);
        full.extend_from_slice(args);
        ctl(&full)
    };
    let put = poll(Duration::from_secs(20), "a put over https", || {
        Some(with_tls(&["put", "k", "over tls"])).filter(|o| o.code == 0)
    });
    assert_eq!(put.stdout, "OK\n");
    assert_eq!(with_tls(&["get", "k"]).stdout, "over tls\n");
    let rows = poll(Duration::from_secs(20), "the member's start record", || {
        let out = with_tls(&["endpoint", "status", "--cluster", "-w", "json"]);
        (out.code == 0).then(|| out.json())
    });
    assert_eq!(rows[0]["endpoint"].as_str(), Some(https.as_str()), "{rows}");
    let anonymous = ctl(&[
        "--endpoints",
        &https,
        "--cacert",
        &ca,
        "--command-timeout",
        "1s",
        "get",
        "k",
    ]);
    // The server's refusal comes as a TLS alert: the request was never read, whatever it
    // was, so even a write is "not sent" (exit 2), not "may or may not have been applied".
    assert_error(&anonymous, 2, "refused the TLS session");
    let write = ctl(&[
        "--endpoints",
        &https,
        "--cacert",
        &ca,
        "--dial-timeout",
        "500ms",
        "put",
        "k",
        "v",
    ]);
    assert_error(&write, 2, "was not sent");
}
