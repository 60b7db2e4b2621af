//! One HTTP/1 request on a connection of its own, and what came of it.
//!
//! The connection is made first (TCP, then TLS for `https://`), within the dial timeout; only
//! then is the request written. So a failure before the connection exists is certainly
//! [`Attempt::NotSent`], and everything after it may have reached the server: the retry rules
//! (`retry.rs`) depend on telling the two apart, which a pooled client hides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, USER_AGENT};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::ctl::endpoint::{Endpoint, Scheme};

/// What came of one request.
#[derive(Debug)]
pub enum Attempt {
    /// Nothing was sent: no connection could be made (refused, dial timeout, TLS handshake).
    NotSent(String),
    /// The answer's head arrived; the body is still to be read.
    Answered(Response<Incoming>),
    /// The request may have been sent and the connection broke before an answer.
    Lost(String),
    /// The request may have been sent and no answer came within the attempt's time.
    TimedOut,
}

/// Makes connections and sends requests (one connection per request, no pool).
#[derive(Clone)]
pub struct Client {
    /// For `https://` endpoints; `None` without `--cacert` (such endpoints are refused when
    /// the flags are checked, so a `None` here is only met for `http://`).
    tls: Option<Arc<rustls::ClientConfig>>,
    dial_timeout: Duration,
}

impl Client {
    /// A client dialing within `dial_timeout`, speaking TLS with `tls` to `https://`
    /// endpoints.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>, dial_timeout: Duration) -> Client {
        Client { tls, dial_timeout }
    }

    /// Sends `method path_and_query` with `body` to `endpoint` and waits for the answer's
    /// head, all within `timeout` (the connection within the dial timeout as well).
    pub async fn attempt(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Attempt {
        let started = Instant::now();
        let request = match Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, endpoint.authority())
            .header(USER_AGENT, HeaderValue::from_static("raftexample-ctl"))
            .body(Full::new(body))
        {
            Ok(request) => request,
            Err(e) => return Attempt::NotSent(format!("cannot build the request: {e}")),
        };
        let dial = self.dial_timeout.min(timeout);
        let tcp = match tokio::time::timeout(dial, connect(endpoint)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(why)) => return Attempt::NotSent(why),
            Err(_) => {
                return Attempt::NotSent(format!("no connection within {}", show(dial)));
            }
        };
        let left = timeout.saturating_sub(started.elapsed());
        match endpoint.scheme() {
            Scheme::Http => exchange(TokioIo::new(tcp), request, left).await,
            Scheme::Https => {
                let Some(config) = &self.tls else {
                    return Attempt::NotSent("https:// needs --cacert".to_string());
                };
                let tls = match tokio::time::timeout(
                    dial.saturating_sub(started.elapsed()),
                    handshake(config.clone(), endpoint, tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(why)) => return Attempt::NotSent(why),
                    Err(_) => {
                        return Attempt::NotSent(format!("no TLS handshake within {}", show(dial)));
                    }
                };
                let left = timeout.saturating_sub(started.elapsed());
                exchange(TokioIo::new(tls), request, left).await
            }
        }
    }
}

async fn connect(endpoint: &Endpoint) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect((endpoint.host(), endpoint.port()))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    // Requests are one small write each; no Nagle delay.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn handshake(
    config: Arc<rustls::ClientConfig>,
    endpoint: &Endpoint,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(endpoint.host().to_string())
        .map_err(|e| format!("{:?} is not a TLS server name: {e}", endpoint.host()))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// Writes `request` on the connection `io` and waits for the answer's head.
async fn exchange<T>(io: TokioIo<T>, request: Request<Full<Bytes>>, timeout: Duration) -> Attempt
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        // The HTTP handshake does no I/O: nothing was written.
        Err(e) => return Attempt::NotSent(format!("cannot start HTTP: {}", error_chain(&e))),
    };
    // Drives the connection until the answer's body is read or dropped; its errors reach us
    // through `send_request` or the body.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    match tokio::time::timeout(timeout, sender.send_request(request)).await {
        Ok(Ok(response)) => Attempt::Answered(response),
        // Under TLS 1.3 the client's side of the handshake ends before the server checked the
        // client certificate; its refusal (an alert) arrives instead of the answer, and the
        // server never read the request.
        Ok(Err(e)) if tls_alert(&e) => Attempt::NotSent(format!(
            "the server refused the TLS session: {}",
            error_chain(&e)
        )),
        Ok(Err(e)) => Attempt::Lost(error_chain(&e)),
        Err(_) => Attempt::TimedOut,
    }
}

/// Whether `error` comes from a fatal TLS alert of the server.
fn tls_alert(error: &(dyn std::error::Error + 'static)) -> bool {
    let is_alert = |e: &(dyn std::error::Error + 'static)| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::AlertReceived(_))
        )
    };
    let mut source = Some(error);
    while let Some(e) = source {
        // An io::Error's `source` skips the error it wraps: look inside it too.
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| is_alert(inner));
        if wrapped || is_alert(e) {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// A duration as an operator wrote it: `500ms`, `2s`, `2.5s`.
pub fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 || d >= Duration::from_secs(60) {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
