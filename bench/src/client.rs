//! One closed-loop client's HTTP/1.1 keep-alive connection.
//!
//! A [`Client`] holds at most one connection (a raw hyper http1 handshake over a TCP
//! stream, or over a rustls stream on it for `https://` endpoints) and sends one request at
//! a time on it. A failed TLS handshake counts as a connect error. Any failure or timeout drops the
//! connection; the next request reconnects. A connection that the server closed while idle
//! is replaced before sending, without counting an error (nothing was sent on it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::endpoint::Endpoint;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status code (body fully read).
    Status(u16),
    /// No complete answer within the request timeout.
    Timeout,
    /// The TCP connection (or its TLS handshake) could not be made.
    Connect,
    /// The connection failed mid-request (reset, closed, malformed answer).
    Io,
}

/// Why an exchange failed before a status was known.
enum Failure {
    Connect,
    Io,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Origin-form target, e.g. `/key?consistency=serializable`.
    pub path: String,
    /// Request body (empty for GET).
    pub body: Bytes,
}

/// A keep-alive connection to one endpoint, reconnected on demand.
pub struct Client {
    endpoint: Endpoint,
    request_timeout: Duration,
    /// Set for `https://` endpoints only.
    tls: Option<TlsConnector>,
    conn: Option<Conn>,
}

/// A live connection: the request sender and the task driving the socket.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Client {
    /// A client for `endpoint`; it connects on its first request. `tls` is used only when
    /// the endpoint is `https://` (and an `https://` endpoint without it cannot connect).
    pub fn new(
        endpoint: Endpoint,
        request_timeout: Duration,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Client {
        let tls = tls
            .filter(|_| endpoint.tls_name.is_some())
            .map(|config| TlsConnector::from(Arc::clone(config)));
        Client {
            endpoint,
            request_timeout,
            tls,
            conn: None,
        }
    }

    /// Sends `call` and reads the whole answer, all within the request timeout (connecting
    /// first if needed). Never takes longer than the timeout.
    pub async fn send(&mut self, call: &Call) -> Outcome {
        self.fetch(call).await.0
    }

    /// Like [`Client::send`], and also returns the answer's body (empty unless a status
    /// came back).
    pub async fn fetch(&mut self, call: &Call) -> (Outcome, Bytes) {
        let outcome = match timeout(self.request_timeout, self.exchange(call)).await {
            Ok(Ok((status, body))) => return (Outcome::Status(status), body),
            Ok(Err(failure)) => {
                self.conn = None;
                match failure {
                    Failure::Connect => Outcome::Connect,
                    Failure::Io => Outcome::Io,
                }
            }
            Err(_) => {
                // The connection is mid-exchange: unusable.
                self.conn = None;
                Outcome::Timeout
            }
        };
        (outcome, Bytes::new())
    }

    async fn exchange(&mut self, call: &Call) -> Result<(u16, Bytes), Failure> {
        let request = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(HOST, self.endpoint.authority.as_str())
            .body(Full::new(call.body.clone()))
            .map_err(|_| Failure::Io)?;
        let sender = self.ready_sender().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Io)?;
        let status = response.status().as_u16();
        let closing = response
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Io)?
            .to_bytes();
        if closing {
            self.conn = None;
        }
        Ok((status, body))
    }

    /// A sender ready for a request: the current connection if it is still usable,
    /// otherwise a new one.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        if let Some(conn) = self.conn.as_mut() {
            if conn.sender.is_closed() || conn.sender.ready().await.is_err() {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            let mut conn = connect(&self.endpoint, self.tls.as_ref()).await?;
            conn.sender.ready().await.map_err(|_| Failure::Io)?;
            self.conn = Some(conn);
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(&mut conn.sender),
            None => Err(Failure::Connect),
        }
    }
}

async fn connect(endpoint: &Endpoint, tls: Option<&TlsConnector>) -> Result<Conn, Failure> {
    let stream = TcpStream::connect(endpoint.authority.as_str())
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    match (&endpoint.tls_name, tls) {
        (None, _) => handshake(stream).await,
        (Some(name), Some(tls)) => {
            let stream = tls
                .connect(name.clone(), stream)
                .await
                .map_err(|_| Failure::Connect)?;
            handshake(stream).await
        }
        (Some(_), None) => Err(Failure::Connect),
    }
}

/// The HTTP/1 handshake over `io`, and the task driving the connection.
async fn handshake<T>(io: T) -> Result<Conn, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| Failure::Connect)?;
    let driver = tokio::spawn(async move {
        // Ends when the server closes or the sender is dropped; errors surface on the sender.
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}
