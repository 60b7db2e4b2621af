//! One HTTP request of the workload, and the classification of its answer into an
//! [`Outcome`] (DESIGN.md section 2, outcome codes).
//!
//! | answer                                      | PUT / DELETE    | GET                 |
//! |---------------------------------------------|-----------------|---------------------|
//! | 2xx                                         | `Done`          | 200: `Read(Some)`   |
//! | 404                                         | `NotApplied`    | `Read(None)`        |
//! | 503, other 4xx                              | `NotApplied`    | `Failed`            |
//! | 504, other status                           | `Indeterminate` | `Failed`            |
//! | no connection could be made (nothing sent)  | `NotApplied`    | `Failed`            |
//! | timeout, connection lost after sending      | `Indeterminate` | `Failed`            |
//!
//! Endpoints are `http://` or `https://`; the connector is always hyper-rustls over an
//! [`HttpConnector`] (plain TCP for `http://`), with the config of [`crate::tls`]. A failed
//! TLS handshake is a connect failure: nothing was sent.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;

use crate::error::Error;
use crate::history::{OpKind, Outcome};

/// Largest response body read; our values are a few dozen bytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// An HTTP answer. `body` is `None` when the body could not be read in full.
    Status { code: u16, body: Option<Bytes> },
    /// No connection could be made: the request was never sent.
    ConnectFailed(String),
    /// The connection failed after the request may have been sent.
    Broken(String),
    /// No complete answer within the per-request timeout.
    TimedOut,
}

/// An HTTP/1 client with its own connection pool and a per-request timeout.
pub(crate) struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client for `http://` URLs, and for `https://` ones verified with `tls`.
    pub(crate) fn new(timeout: Duration, tls: ClientConfig) -> HttpClient {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new()).build(connector);
        HttpClient { inner, timeout }
    }

    /// Sends one request and waits for the whole answer, at most the timeout.
    pub(crate) async fn send(&self, method: Method, url: &str, body: Bytes) -> Reply {
        let request = match Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body))
        {
            Ok(request) => request,
            // Endpoints are validated and keys are plain ASCII: nothing was sent.
            Err(e) => return Reply::ConnectFailed(format!("bad request: {e}")),
        };
        let exchange = async {
            let response = match self.inner.request(request).await {
                Ok(response) => response,
                Err(e) if e.is_connect() => return Reply::ConnectFailed(error_chain(&e)),
                Err(e) => return Reply::Broken(error_chain(&e)),
            };
            let code = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .ok()
                .map(|collected| collected.to_bytes());
            Reply::Status { code, body }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Reply::TimedOut)
    }
}

/// The error and its sources on one line ("client error (Connect): Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Classifies `reply` to an operation of `kind`; returns the outcome and a short note.
pub(crate) fn classify(kind: &OpKind, reply: &Reply) -> (Outcome, String) {
    let is_read = matches!(kind, OpKind::Get);
    match reply {
        Reply::Status { code, body } => {
            let outcome = match (is_read, *code, body) {
                (true, 200, Some(body)) => {
                    Outcome::Read(Some(String::from_utf8_lossy(body).into_owned()))
                }
                (true, 404, _) => Outcome::Read(None),
                (true, _, _) => Outcome::Failed,
                (false, 200..=299, _) => Outcome::Done,
                (false, 400..=499 | 503, _) => Outcome::NotApplied,
                (false, _, _) => Outcome::Indeterminate,
            };
            (outcome, code.to_string())
        }
        Reply::ConnectFailed(why) => {
            let outcome = if is_read {
                Outcome::Failed
            } else {
                Outcome::NotApplied
            };
            (outcome, format!("not sent: {why}"))
        }
        Reply::Broken(why) => (maybe_applied(is_read), why.clone()),
        Reply::TimedOut => (maybe_applied(is_read), "timeout".to_string()),
    }
}

fn maybe_applied(is_read: bool) -> Outcome {
    if is_read {
        Outcome::Failed
    } else {
        Outcome::Indeterminate
    }
}

/// Checks that `endpoint` is an `http://host:port` or `https://host:port` base URL and returns
/// it without a trailing slash.
///
/// # Errors
/// [`Error::BadEndpoint`] naming what is wrong.
pub(crate) fn normalize_endpoint(endpoint: &str) -> Result<String, Error> {
    let bad = |reason| Error::BadEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: hyper::Uri = endpoint
        .parse()
        .map_err(|_| bad("not a URL; expected http://HOST:PORT"))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(bad("only http:// and https:// endpoints are supported")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| bad("missing host; expected http://HOST:PORT"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "expected a base URL without a path, like http://HOST:PORT",
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, body: &str) -> Reply {
        Reply::Status {
            code,
            body: Some(Bytes::from(body.to_string())),
        }
    }

    #[test]
    fn writes_are_classified_by_the_outcome_table() {
        // Intent: each answer to a PUT maps to the outcome DESIGN.md gives it.
        let put = OpKind::Put { value: "v".into() };
        let cases = [
            (status(204, ""), Outcome::Done),
            (status(200, ""), Outcome::Done),
            (status(503, "no leader"), Outcome::NotApplied),
            (status(400, "bad"), Outcome::NotApplied),
            (status(504, "timed out"), Outcome::Indeterminate),
            (status(500, "oops"), Outcome::Indeterminate),
            (Reply::ConnectFailed("refused".into()), Outcome::NotApplied),
            (Reply::Broken("reset".into()), Outcome::Indeterminate),
            (Reply::TimedOut, Outcome::Indeterminate),
        ];
        for (reply, want) in cases {
            assert_eq!(classify(&put, &reply).0, want, "{reply:?}");
            assert_eq!(classify(&OpKind::Delete, &reply).0, want, "{reply:?}");
        }
    }

    #[test]
    fn reads_are_classified_by_the_outcome_table() {
        // Intent: only 200 and 404 carry information; anything else is dropped as Failed.
        let cases = [
            (status(200, "v"), Outcome::Read(Some("v".into()))),
            (status(404, "absent"), Outcome::Read(None)),
            (
                Reply::Status {
                    code: 200,
                    body: None,
                },
                Outcome::Failed,
            ),
            (status(503, ""), Outcome::Failed),
            (status(504, ""), Outcome::Failed),
            (Reply::ConnectFailed("refused".into()), Outcome::Failed),
            (Reply::Broken("reset".into()), Outcome::Failed),
            (Reply::TimedOut, Outcome::Failed),
        ];
        for (reply, want) in cases {
            assert_eq!(classify(&OpKind::Get, &reply).0, want, "{reply:?}");
        }
    }

    #[test]
    fn endpoints_must_be_http_or_https_base_urls() {
        // Intent: good endpoints normalise; bad ones give a typed error, never a panic.
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:12380/")
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:12380")
        );
        assert_eq!(
            normalize_endpoint("http://localhost:9121").ok().as_deref(),
            Some("http://localhost:9121")
        );
        assert_eq!(
            normalize_endpoint("https://10.0.0.1:2379/").ok().as_deref(),
            Some("https://10.0.0.1:2379")
        );
        for bad in [
            "",
            "127.0.0.1:1",
            "ftp://a:1",
            "http://a:1/x",
            "http://a:1/?q",
            "::",
        ] {
            assert!(
                matches!(normalize_endpoint(bad), Err(Error::BadEndpoint { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
