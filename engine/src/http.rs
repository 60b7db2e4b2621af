//! The HTTP plumbing both servers share: an accept loop with a connection bound and graceful
//! shutdown, bounded body reads, and plain-text answers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use slog::{warn, Logger};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Time a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The body of every answer: a whole buffer, or a stream (`GET /events`).
pub type Body = BoxBody<Bytes, Infallible>;

/// The answer type of every handler.
pub type Answer = Response<Body>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// Serves `handler` on `listener` until `shutdown` turns true, then lets in-flight requests
/// finish for a short while. At most `max_connections` are served at once (see
/// [`crate::limits::connection_bounds`]); further ones wait in the kernel's backlog.
pub async fn serve<H, F>(
    listener: TcpListener,
    max_connections: usize,
    tls: Option<crate::tls::Acceptor>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    logger: Logger,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let handshake_failures = Arc::new(HandshakeLog::default());
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
            _ = stopped(&mut shutdown) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(logger, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        let watcher = graceful.watcher();
        let Some(tls) = tls.as_ref().map(crate::tls::Acceptor::current) else {
            tokio::spawn(async move {
                let _ = watcher
                    .watch(connection(TokioIo::new(stream), h, None))
                    .await;
                drop(permit);
            });
            continue;
        };
        let (logger, failures) = (logger.clone(), handshake_failures.clone());
        tokio::spawn(async move {
            // The handshake gets the same time as a request head.
            let accepted = tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await;
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return failures.log(&logger, remote, &e.to_string()),
                Err(_) => return failures.log(&logger, remote, "no handshake in time"),
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::tls::PeerCertificate::new(c.clone().into_owned()));
            let _ = watcher
                .watch(connection(TokioIo::new(stream), h, cert))
                .await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

/// One HTTP/1 connection; every request carries the peer's certificate, if any, in its
/// extensions.
fn connection<I, H, F>(
    io: TokioIo<I>,
    handler: H,
    cert: Option<crate::tls::PeerCertificate>,
) -> impl hyper_util::server::graceful::GracefulConnection<Output = Result<(), hyper::Error>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send + 'static,
{
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let h = handler.clone();
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        async move { Ok::<_, Infallible>(h(req).await) }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(crate::limits::MAX_REQUEST_HEAD_BYTES)
        .serve_connection(io, svc)
}

/// Failed TLS handshakes, logged with their reason at most once a second (a scanner or a
/// plain-HTTP client must not flood the log), with the count since the last line.
#[derive(Default)]
struct HandshakeLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl HandshakeLog {
    fn log(&self, logger: &Logger, remote: std::net::SocketAddr, why: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let now = std::time::Instant::now();
        if state
            .0
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        warn!(logger, "TLS handshake refused"; "remote" => %remote, "why" => why,
            "refused_since_last_line" => state.1);
        *state = (Some(now), 0);
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// A plain-text answer: one sentence and a newline.
pub fn text(status: StatusCode, sentence: impl Into<String>) -> Answer {
    let mut body = sentence.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(body))
        .expect("static response parts are valid")
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Answer {
    let body = serde_json::to_vec_pretty(value).expect("status types serialize");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

/// Reads the whole body, at most `limit` bytes, by `deadline`.
///
/// # Errors
/// The answer to send instead: 413 over the limit, 400 when the body breaks off, 408 when it
/// has not arrived by the deadline (a stalled client never holds a handler forever).
pub async fn read_body(
    body: Incoming,
    limit: usize,
    deadline: std::time::Instant,
) -> Result<Bytes, Answer> {
    let collected =
        tokio::time::timeout_at(deadline.into(), Limited::new(body, limit).collect()).await;
    let Ok(collected) = collected else {
        return Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time: send it again",
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the limit of {limit} bytes: send a smaller body"),
        )),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body ({e}): send it again"),
        )),
    }
}

/// One Server-Sent Event: `id:` (optional), `event:` and one `data:` line of JSON.
pub fn sse_frame(name: &str, id: Option<u64>, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).expect("event payloads serialize");
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {name}\ndata: {json}\n\n"))
}

/// Events buffered per SSE client between its producer task and its connection.
pub const SSE_BOUND: usize = 64;

/// A streaming `text/event-stream` answer fed by `frames` (see [`sse_frame`]). The producer
/// stops when the client goes away (its sends fail once this body is dropped).
pub fn sse(frames: tokio::sync::mpsc::Receiver<Bytes>) -> Answer {
    use http_body_util::StreamBody;
    use tokio_stream::StreamExt;
    // A first comment so that clients see the stream open at once.
    let hello = tokio_stream::once(Bytes::from_static(b": events\n\n"));
    let stream = hello
        .chain(tokio_stream::wrappers::ReceiverStream::new(frames))
        .map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b)));
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(stream).boxed())
        .expect("valid response")
}
