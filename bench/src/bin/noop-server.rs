//! `noop-server`: the HTTP ceiling of bench/compare.sh. It answers every request after
//! reading its whole body (PUT: 204, anything else: 200), on the same stack a raftexample
//! node serves its clients with: a multi-thread tokio runtime of 2 workers, `TCP_NODELAY`,
//! and hyper's http1 server with a header-read timeout. Nothing is stored, so a load run
//! against it measures the load generator, the loopback and the HTTP stack alone.
//!
//! ```text
//! noop-server --port 12380 [--threads 2]
//! ```
//!
//! It runs until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// How long a connection may take to send a request head (as a node allows).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A no-op HTTP/1.1 server: 204 to every PUT once its body is read, 200 to anything else.
#[derive(Debug, Parser)]
#[command(name = "noop-server")]
struct Args {
    /// Port to listen on (all addresses).
    #[arg(long, default_value_t = 12380)]
    port: u16,
    /// Runtime worker threads (a raftexample node runs 2).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

async fn answer(req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let put = req.method() == Method::PUT;
    // Read (and drop) the whole body, as a node must before it can propose the value.
    let read = req.into_body().collect().await.is_ok();
    let status = match (read, put) {
        (false, _) => StatusCode::BAD_REQUEST,
        (true, true) => StatusCode::NO_CONTENT,
        (true, false) => StatusCode::OK,
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

async fn serve(listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("noop-server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.threads == 0 {
        eprintln!("noop-server: --threads must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("noop-server: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let addr = SocketAddr::from(([0, 0, 0, 0], args.port));
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                serve(listener).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("noop-server: cannot listen on {addr}: {e}");
                ExitCode::from(1)
            }
        }
    })
}
