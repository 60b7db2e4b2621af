//! End-to-end runs against in-process fake servers on loopback: a raftexample-like KV, a
//! server that answers one status to everything, one that never answers, and a dead port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::endpoint::Endpoint;
use crate::report::StoppedBy;
use crate::run::{run, Plan, RunError};
use crate::workload::{Mode, Workload};

/// What a fake server does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// raftexample routes: PUT stores and answers 204, GET answers 200 or 404.
    Kv,
    /// Answers this status to everything.
    Status(u16),
    /// Reads the request and never answers.
    Silent,
    /// Like Kv, but acknowledges and then loses PUTs of keys ending in an odd digit.
    Lossy,
}

/// What the fake server saw: stored values and every request target.
#[derive(Default)]
struct Seen {
    store: HashMap<String, Bytes>,
    targets: Vec<String>,
}

async fn fake_server(behaviour: Behaviour) -> (Endpoint, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = shared.clone();
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move { Ok::<_, Infallible>(answer(behaviour, req, &seen).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, seen)
}

async fn answer(
    behaviour: Behaviour,
    req: Request<hyper::body::Incoming>,
    seen: &Mutex<Seen>,
) -> Response<Full<Bytes>> {
    let target = req.uri().to_string();
    let method = req.method().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let status = match behaviour {
        Behaviour::Silent => std::future::pending().await,
        Behaviour::Status(code) => StatusCode::from_u16(code).unwrap(),
        Behaviour::Kv | Behaviour::Lossy => {
            let mut seen = seen.lock().unwrap();
            seen.targets.push(target.clone());
            match method {
                Method::PUT => {
                    let odd = target.ends_with(['1', '3', '5', '7', '9']);
                    if !(odd && matches!(behaviour, Behaviour::Lossy)) {
                        seen.store.insert(target, body);
                    }
                    StatusCode::NO_CONTENT
                }
                _ => match seen.store.get(&target) {
                    Some(value) => return Response::new(Full::new(value.clone())),
                    None => StatusCode::NOT_FOUND,
                },
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn plan(endpoints: Vec<Endpoint>, mode: Mode, requests: Option<u64>, duration: Duration) -> Plan {
    Plan {
        endpoints,
        mode,
        workload: Workload::new(mode, "t-".into(), 50, 100),
        connections: 4,
        duration,
        max_requests: requests,
        request_timeout: Duration::from_millis(300),
        verify: false,
        tls: None,
        latency_log: None,
    }
}

#[tokio::test]
async fn put_run_writes_unique_keys_and_stops_at_request_count() {
    // Intent: every PUT is counted ok, keys are unique, and --requests ends the run.
    let (endpoint, seen) = fake_server(Behaviour::Kv).await;
    let report = run(plan(
        vec![endpoint],
        Mode::Put,
        Some(200),
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    assert_eq!(report.stats.ok(), 200);
    assert!(report.stats.errors().is_empty());
    assert_eq!(report.stopped_by, StoppedBy::Requests);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.store.len(), 200, "keys were reused");
    assert!(seen.store.values().all(|v| v.len() == 100));
}

#[tokio::test]
async fn get_run_preloads_then_reads_only_preloaded_keys() {
    // Intent: get mode first writes its keys, then every read finds one (no 404s).
    let (endpoint, seen) = fake_server(Behaviour::Kv).await;
    let report = run(plan(
        vec![endpoint],
        Mode::Get,
        Some(300),
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    assert_eq!(report.stats.ok(), 300, "{}", report.line());
    assert_eq!(seen.lock().unwrap().store.len(), 50);
}

#[tokio::test]
async fn serializable_reads_carry_the_query() {
    // Intent: get-serializable appends ?consistency=serializable to every timed read.
    let (endpoint, seen) = fake_server(Behaviour::Kv).await;
    let report = run(plan(
        vec![endpoint],
        Mode::GetSerializable,
        Some(20),
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    // The fake store keys by full target, so the query makes every read a 404.
    assert_eq!(report.stats.errors().get("404"), Some(&20));
    let seen = seen.lock().unwrap();
    let with_query = seen
        .targets
        .iter()
        .filter(|t| t.ends_with("?consistency=serializable"))
        .count();
    assert_eq!(with_query, 20);
}

#[tokio::test]
async fn error_statuses_are_counted_by_code() {
    // Intent: non-2xx answers are errors labelled with their status, not successes.
    let (endpoint, _) = fake_server(Behaviour::Status(503)).await;
    let report = run(plan(
        vec![endpoint],
        Mode::Put,
        Some(20),
        Duration::from_secs(60),
    ))
    .await
    .unwrap();
    assert_eq!(report.stats.ok(), 0);
    assert_eq!(report.stats.errors().get("503"), Some(&20));
}

#[tokio::test]
async fn silent_server_times_out_and_the_run_still_ends() {
    // Intent: a server that never answers costs at most duration + one request timeout.
    let (endpoint, _) = fake_server(Behaviour::Silent).await;
    let started = Instant::now();
    let report = run(plan(
        vec![endpoint],
        Mode::Put,
        None,
        Duration::from_millis(500),
    ))
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "run hung");
    assert_eq!(report.stats.ok(), 0);
    assert!(report.stats.errors().get("timeout").copied().unwrap_or(0) >= 4);
    assert_eq!(report.stopped_by, StoppedBy::Duration);
}

#[tokio::test]
async fn dead_endpoint_counts_connect_errors_and_spreads_over_endpoints() {
    // Intent: clients spread round-robin; the ones on a dead port count connect errors and
    // the ones on a live port keep working.
    let (live, seen) = fake_server(Behaviour::Kv).await;
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Endpoint::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap()
    };
    let report = run(plan(
        vec![live, dead],
        Mode::Put,
        None,
        Duration::from_millis(300),
    ))
    .await
    .unwrap();
    assert!(report.stats.ok() > 0);
    assert!(report.stats.errors().get("connect").copied().unwrap_or(0) > 0);
    assert_eq!(seen.lock().unwrap().store.len() as u64, report.stats.ok());
}

#[tokio::test]
async fn preload_failure_fails_the_run_promptly() {
    // Intent: get mode against a cluster that refuses writes ends with a Preload error
    // instead of measuring 404s or retrying every key.
    let (endpoint, _) = fake_server(Behaviour::Status(503)).await;
    let started = Instant::now();
    let result = run(plan(
        vec![endpoint],
        Mode::Get,
        Some(10),
        Duration::from_secs(60),
    ))
    .await;
    assert!(matches!(result, Err(RunError::Preload { .. })));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn verify_reads_back_every_acknowledged_write() {
    // Intent: against an honest store, --verify drains at once and verifies every ok PUT.
    let (endpoint, _) = fake_server(Behaviour::Kv).await;
    let mut plan = plan(
        vec![endpoint],
        Mode::Put,
        Some(100),
        Duration::from_secs(60),
    );
    plan.verify = true;
    let report = run(plan).await.unwrap();
    let v = report.verification.unwrap();
    assert!(v.drained_after.is_some());
    assert_eq!((v.verified, v.lost, v.unverified), (100, 0, 0));
}

#[tokio::test]
async fn verify_catches_acknowledged_writes_that_were_lost() {
    // Intent: a store that answers 204 and drops half of the writes is caught: the dropped
    // keys are reported as lost.
    let (endpoint, _) = fake_server(Behaviour::Lossy).await;
    let mut plan = plan(
        vec![endpoint],
        Mode::Put,
        Some(100),
        Duration::from_secs(60),
    );
    plan.verify = true;
    let report = run(plan).await.unwrap();
    assert_eq!(report.stats.ok(), 100);
    let v = report.verification.unwrap();
    assert_eq!((v.verified, v.lost, v.unverified), (50, 50, 0));
    assert!(report.line().contains("lost=50"), "{}", report.line());
}
