//! `check::run` and `check::run_workload` against tiny in-process HTTP servers on loopback:
//! an honest one must pass (exit 0), broken ones must be caught (exit 1), and an unreachable
//! or malformed endpoint means "cannot run" (exit 2).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use check::{CheckArgs, Outcome, Verdict};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// How a fake server misbehaves.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// One map behind a mutex: every answer is the truth.
    Honest,
    /// Honest state, but some writes answer 503 without applying, some apply and answer 504,
    /// and some reads answer 503.
    HonestWithFaults,
    /// Writes are acknowledged by a primary; reads are served by a replica that applies
    /// them `REPLICA_LAG` later (what a follower read without ReadIndex looks like).
    StaleReplica,
    /// Every third write is applied but answered 503 ("known not applied": a lie).
    AppliesOn503,
}

const REPLICA_LAG: Duration = Duration::from_millis(50);

/// Every write to a key: when it was applied on the primary, and the value (None: deleted).
type Log = HashMap<String, Vec<(Instant, Option<Bytes>)>>;

struct Fake {
    mode: Mode,
    log: Mutex<Log>,
    requests: AtomicU64,
}

impl Fake {
    fn write(&self, key: &str, value: Option<Bytes>) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.entry(key.to_string())
            .or_default()
            .push((Instant::now(), value));
    }

    /// The latest value applied at least `lag` ago.
    fn read(&self, key: &str, lag: Duration) -> Option<Bytes> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = Instant::now().checked_sub(lag)?;
        log.get(key)?
            .iter()
            .rev()
            .find(|(at, _)| *at <= horizon)
            .and_then(|(_, value)| value.clone())
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return answer(StatusCode::BAD_REQUEST, ""),
        };
        let faulty = matches!(self.mode, Mode::HonestWithFaults);
        match (method, path.strip_prefix("/kv/"), path.strip_prefix('/')) {
            (Method::DELETE, Some(key), _) => {
                self.write(key, None);
                answer(StatusCode::NO_CONTENT, "")
            }
            (Method::PUT, _, Some(key)) => {
                if faulty && n.is_multiple_of(7) {
                    return answer(StatusCode::SERVICE_UNAVAILABLE, "no leader");
                }
                self.write(key, Some(body));
                if faulty && n.is_multiple_of(11) {
                    return answer(StatusCode::GATEWAY_TIMEOUT, "timed out");
                }
                if matches!(self.mode, Mode::AppliesOn503) && n.is_multiple_of(3) {
                    return answer(StatusCode::SERVICE_UNAVAILABLE, "no leader");
                }
                answer(StatusCode::NO_CONTENT, "")
            }
            (Method::GET, _, Some(key)) => {
                if faulty && n.is_multiple_of(5) {
                    return answer(StatusCode::SERVICE_UNAVAILABLE, "no leader");
                }
                let lag = match self.mode {
                    Mode::StaleReplica => REPLICA_LAG,
                    _ => Duration::ZERO,
                };
                match self.read(key, lag) {
                    Some(value) => Response::new(Full::new(value)),
                    None => answer(StatusCode::NOT_FOUND, "absent"),
                }
            }
            _ => answer(StatusCode::METHOD_NOT_ALLOWED, ""),
        }
    }
}

fn answer(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Starts a fake on 127.0.0.1:0 on `runtime`; returns its base URL.
fn start_fake(runtime: &Runtime, mode: Mode) -> String {
    let fake = Arc::new(Fake {
        mode,
        log: Mutex::new(HashMap::new()),
        requests: AtomicU64::new(0),
    });
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr: SocketAddr = listener.local_addr().expect("bound address");
    runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let fake = fake.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let fake = fake.clone();
                    async move { Ok::<_, Infallible>(fake.handle(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A loopback port nobody listens on (bound, then released).
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{addr}")
}

fn server_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn short_args(endpoints: Vec<String>) -> CheckArgs {
    CheckArgs {
        duration: Duration::from_millis(800),
        clients: 4,
        keys: 3,
        timeout: Duration::from_secs(1),
        seed: Some(42),
        ..CheckArgs::new(endpoints)
    }
}

#[test]
fn honest_server_is_linearizable() {
    // Intent: a single mutex-protected map, reached through two endpoints, passes (exit 0),
    // with deletes too.
    let runtime = server_runtime();
    let url = start_fake(&runtime, Mode::Honest);
    let args = CheckArgs {
        deletes: true,
        ..short_args(vec![url.clone(), url])
    };
    assert_eq!(check::run(&args), 0);
}

#[test]
fn honest_server_with_503_and_504_answers_is_linearizable() {
    // Intent: 503'd writes that were not applied and 504'd writes that were are both
    // accepted; failed reads are ignored.
    let runtime = server_runtime();
    let url = start_fake(&runtime, Mode::HonestWithFaults);
    assert_eq!(check::run(&short_args(vec![url])), 0);
}

#[test]
fn stale_replica_reads_are_caught() {
    // Intent: acknowledging writes on one replica and reading from a lagging one is found
    // (exit 1), as Go raftexample's stale reads must be.
    let runtime = server_runtime();
    let url = start_fake(&runtime, Mode::StaleReplica);
    assert_eq!(check::run(&short_args(vec![url])), 1);
}

#[test]
fn writes_applied_despite_503_are_caught() {
    // Intent: a 503 promises "not applied"; a server that applies anyway is caught.
    let runtime = server_runtime();
    let url = start_fake(&runtime, Mode::AppliesOn503);
    assert_eq!(check::run(&short_args(vec![url])), 1);
}

#[test]
fn unreachable_or_malformed_endpoints_cannot_run() {
    // Intent: with nobody listening, or an endpoint that is not http://HOST:PORT, the answer
    // is "cannot run" (exit 2), quickly.
    let args = CheckArgs {
        duration: Duration::from_millis(300),
        ..short_args(vec![closed_endpoint()])
    };
    assert_eq!(check::run(&args), 2);
    assert_eq!(check::run(&short_args(vec!["https://a:1".into()])), 2);
    assert_eq!(check::run(&short_args(vec![])), 2);
    let no_clients = CheckArgs {
        clients: 0,
        ..short_args(vec![closed_endpoint()])
    };
    assert_eq!(check::run(&no_clients), 2);
    // Called from async code, run refuses instead of panicking on a nested runtime.
    let inside =
        server_runtime().block_on(async { check::run(&short_args(vec![closed_endpoint()])) });
    assert_eq!(inside, 2);
}

#[test]
fn workload_stops_early_when_told() {
    // Intent: a harness can stop a long workload through the watch channel, and gets a
    // checkable history back promptly.
    let runtime = server_runtime();
    let url = start_fake(&runtime, Mode::Honest);
    let args = CheckArgs {
        duration: Duration::from_secs(60),
        ..short_args(vec![url])
    };
    let progress = Arc::new(check::Progress::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let workload = runtime.spawn({
        let progress = progress.clone();
        async move { check::run_workload_with_progress(&args, stop, progress).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.counts().ok < 200 {
        assert!(Instant::now() < deadline, "workload made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop_tx.send(true).expect("workload listening");
    let history = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), workload).await })
        .expect("workload stopped in time")
        .expect("workload task")
        .expect("workload ran");
    assert!(history.ops.len() >= 200);
    assert_eq!(
        check::check_history(&history).verdict(),
        Verdict::Linearizable
    );
}

#[test]
fn refused_clients_move_to_another_endpoint() {
    // Intent: a client bound to a dead endpoint records its refused operations (writes as
    // not applied) and moves on to a live endpoint.
    let runtime = server_runtime();
    let live = start_fake(&runtime, Mode::Honest);
    let args = CheckArgs {
        duration: Duration::from_millis(500),
        clients: 2,
        ..short_args(vec![closed_endpoint(), live])
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let history = runtime
        .block_on(check::run_workload(&args, stop))
        .expect("workload ran");
    let client0: Vec<_> = history.ops.iter().filter(|o| o.client == 0).collect();
    let refused = client0
        .iter()
        .find(|o| o.note.starts_with("not sent"))
        .expect("client 0 started on the dead endpoint");
    assert!(matches!(
        refused.outcome,
        Outcome::NotApplied | Outcome::Failed
    ));
    assert!(client0
        .iter()
        .any(|o| matches!(o.outcome, Outcome::Done | Outcome::Read(_))));
    assert_eq!(
        check::check_history(&history).verdict(),
        Verdict::Linearizable
    );
}
