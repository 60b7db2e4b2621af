//! The retry rules (see the module doc of `ctl`): which answers move a request on to the next
//! endpoint, which end it, and which make a write's outcome unknown.
//!
//! | what came back | read | write | once (health) |
//! |---|---|---|---|
//! | not sent (refused, dial timeout, TLS) | next endpoint | next endpoint | next endpoint |
//! | 503 | next endpoint | next endpoint | the answer |
//! | 504 | next endpoint | stop: may or may not be applied | the answer |
//! | other 5xx | the answer | stop: may or may not be applied | the answer |
//! | timeout, connection lost after sending | next endpoint | stop: may or may not be applied | stop |
//! | any other status | the answer | the answer | the answer |
//!
//! After a round over every endpoint, the next round starts after a pause: a 503's
//! `Retry-After`, at most [`MAX_RETRY_AFTER`], else [`ROUND_PAUSE`]. Rounds go on until the
//! command's deadline, except that when no connection at all could be made for the dial
//! timeout, the command stops with "no endpoint could be reached" (exit 2).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::RETRY_AFTER;
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::ctl::client::{show, Attempt, Client};
use crate::ctl::endpoint::Endpoint;
use crate::ctl::error::{failed, CtlError, Result};

/// Longest wait for a 503's `Retry-After` between two rounds ("briefly": another endpoint
/// may already serve, and the deadline is short).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Pause between two rounds when no `Retry-After` was given.
pub const ROUND_PAUSE: Duration = Duration::from_millis(100);
/// Largest answer body read into memory (a value is at most about 59 MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Largest error sentence read.
const MAX_SENTENCE_BYTES: usize = 4096;
/// Longest wait for an error sentence after its status line.
const SENTENCE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a request is retried (see the table in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Safe to send again: retried on 503, 504 and timeouts.
    Read,
    /// Retried only when known not applied: not sent, or 503.
    Write,
    /// One answer from one endpoint, whatever it is; only "not sent" moves on.
    Once,
}

/// One request to make.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path and query (`/kv/a?consistency=serializable`).
    pub path: String,
    /// The body.
    pub body: Bytes,
    /// How it is retried.
    pub policy: Policy,
    /// What it is, in sentences ("the write", "the read").
    pub what: &'static str,
}

impl Call {
    /// A GET with the read policy.
    pub fn read(path: impl Into<String>, what: &'static str) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            body: Bytes::new(),
            policy: Policy::Read,
            what,
        }
    }

    /// A request with the write policy.
    pub fn write(method: Method, path: impl Into<String>, body: Bytes, what: &'static str) -> Call {
        Call {
            method,
            path: path.into(),
            body,
            policy: Policy::Write,
            what,
        }
    }

    /// The same request with another policy.
    pub fn with_policy(mut self, policy: Policy) -> Call {
        self.policy = policy;
        self
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The endpoint that answered.
    pub endpoint: Endpoint,
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Reply {
    /// The body as the server's sentence (trimmed, on one line).
    pub fn sentence(&self) -> String {
        sentence_of(&self.body, self.status)
    }

    /// A header's value as a number.
    pub fn header_u64(&self, name: &str) -> Option<u64> {
        header_u64(&self.headers, name)
    }

    /// The error for an answer the command cannot use: "<endpoint> answered <code>: <sentence>".
    pub fn refused(&self) -> CtlError {
        failed(format!(
            "{} answered {}: {}",
            self.endpoint,
            self.status.as_u16(),
            self.sentence()
        ))
    }
}

/// A 2xx answer whose body is still arriving.
#[derive(Debug)]
pub struct Stream {
    /// The endpoint that answered.
    pub endpoint: Endpoint,
    /// Its headers.
    pub headers: HeaderMap,
    /// The body, as it arrives.
    pub body: Incoming,
}

/// A header's value as a number.
pub fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The client and the deadline of one command.
pub struct Session {
    client: Client,
    dial_timeout: Duration,
    command_timeout: Duration,
    deadline: Instant,
}

impl Session {
    /// A session whose deadline is `command_timeout` from now.
    pub fn new(client: Client, dial_timeout: Duration, command_timeout: Duration) -> Session {
        Session {
            client,
            dial_timeout,
            command_timeout,
            deadline: Instant::now() + command_timeout,
        }
    }

    /// The command's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// `--command-timeout`.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Sends `call` to `endpoints` by its policy and reads the whole answer.
    ///
    /// # Errors
    /// `Unreachable` when no endpoint could be reached; `Failed` when the deadline passed or
    /// a write's outcome became unknown. Any other answer (404, 409, ...) is returned for the
    /// command to judge.
    pub async fn send(&self, endpoints: &[Endpoint], call: &Call) -> Result<Reply> {
        let mut rounds = Rounds::new(self, endpoints, call);
        loop {
            let (endpoint, response, until) = rounds.next_answer().await?;
            let status = response.status();
            let headers = response.headers().clone();
            match read_whole(response, until).await {
                Ok(body) => {
                    return Ok(Reply {
                        endpoint,
                        status,
                        headers,
                        body,
                    })
                }
                // A read whose answer broke off is sent again; a write's status line is its
                // outcome, whatever became of the body.
                Err(why) if call.policy == Policy::Read => rounds.note(&endpoint, why),
                Err(_) => {
                    return Ok(Reply {
                        endpoint,
                        status,
                        headers,
                        body: Bytes::new(),
                    })
                }
            }
        }
    }

    /// Sends `call` by its policy until a 2xx answer starts, and hands its body over as it
    /// arrives.
    ///
    /// # Errors
    /// As [`Session::send`], and `Failed` for an answer that is not 2xx.
    pub async fn open(&self, endpoints: &[Endpoint], call: &Call) -> Result<Stream> {
        let mut rounds = Rounds::new(self, endpoints, call);
        let (endpoint, response, _) = rounds.next_answer().await?;
        let status = response.status();
        if !status.is_success() {
            let sentence = read_sentence(response).await;
            return Err(failed(format!(
                "{endpoint} answered {}: {sentence}",
                status.as_u16()
            )));
        }
        let (parts, body) = response.into_parts();
        Ok(Stream {
            endpoint,
            headers: parts.headers,
            body,
        })
    }
}

/// The state of one request going round the endpoints.
struct Rounds<'a> {
    session: &'a Session,
    endpoints: &'a [Endpoint],
    call: &'a Call,
    started: Instant,
    /// Next endpoint to try.
    next: usize,
    /// Whether a connection was ever made.
    connected: bool,
    /// The longest `Retry-After` of this round.
    retry_after: Option<Duration>,
    /// The latest failure of each endpoint, for the final sentence.
    notes: Vec<(String, String)>,
}

impl<'a> Rounds<'a> {
    fn new(session: &'a Session, endpoints: &'a [Endpoint], call: &'a Call) -> Rounds<'a> {
        Rounds {
            session,
            endpoints,
            call,
            started: Instant::now(),
            next: 0,
            connected: false,
            retry_after: None,
            notes: Vec::new(),
        }
    }

    /// The next answer the policy does not retry: the endpoint, the answer, and when the
    /// attempt's time runs out (for reading its body).
    async fn next_answer(&mut self) -> Result<(Endpoint, Response<Incoming>, Instant)> {
        if self.endpoints.is_empty() {
            return Err(CtlError::Invalid(
                "no endpoint given: use --endpoints".into(),
            ));
        }
        loop {
            if self.next == self.endpoints.len() {
                self.next = 0;
                self.pause_between_rounds().await?;
            }
            let endpoint = &self.endpoints[self.next];
            self.next += 1;
            let now = Instant::now();
            if now >= self.session.deadline {
                return Err(self.give_up());
            }
            let timeout = self.attempt_timeout(now);
            let attempt = self
                .session
                .client
                .attempt(
                    endpoint,
                    self.call.method.clone(),
                    &self.call.path,
                    self.call.body.clone(),
                    timeout,
                )
                .await;
            if let Some(answer) = self.judge(endpoint, attempt, timeout).await? {
                return Ok((endpoint.clone(), answer, now + timeout));
            }
        }
    }

    /// The policy's verdict on one attempt: `Some` answer to return, `None` to go on, or the
    /// error that ends the command.
    async fn judge(
        &mut self,
        endpoint: &Endpoint,
        attempt: Attempt,
        timeout: Duration,
    ) -> Result<Option<Response<Incoming>>> {
        let policy = self.call.policy;
        match attempt {
            Attempt::NotSent(why) => self.note(endpoint, why),
            Attempt::TimedOut | Attempt::Lost(_) => {
                self.connected = true;
                let why = match attempt {
                    Attempt::Lost(why) => format!("the connection broke: {why}"),
                    _ => format!("no answer within {}", show(timeout)),
                };
                match policy {
                    Policy::Read => self.note(endpoint, why),
                    Policy::Write => return Err(self.maybe_applied(endpoint, &why)),
                    Policy::Once => return Err(failed(format!("{endpoint}: {why}"))),
                }
            }
            Attempt::Answered(response) => {
                self.connected = true;
                let status = response.status();
                let retried = match policy {
                    Policy::Once => false,
                    Policy::Read => matches!(status.as_u16(), 503 | 504),
                    // 507 (no space) is known not applied: the answer, not a retry.
                    Policy::Write => status.is_server_error() && status.as_u16() != 507,
                };
                if !retried {
                    return Ok(Some(response));
                }
                let retry_after = header_u64(response.headers(), RETRY_AFTER.as_str());
                let why = format!(
                    "answered {}: {}",
                    status.as_u16(),
                    read_sentence(response).await
                );
                if policy == Policy::Write && status.as_u16() != 503 {
                    return Err(self.maybe_applied(endpoint, &why));
                }
                if status.as_u16() == 503 {
                    let wait = Duration::from_secs(retry_after.unwrap_or(0)).min(MAX_RETRY_AFTER);
                    self.retry_after = Some(self.retry_after.unwrap_or_default().max(wait));
                }
                self.note(endpoint, why);
            }
        }
        Ok(None)
    }

    /// A read gets at most half the command timeout, so that an endpoint that hangs leaves
    /// time for another; anything else gets what is left.
    fn attempt_timeout(&self, now: Instant) -> Duration {
        let left = self.session.deadline.saturating_duration_since(now);
        match self.call.policy {
            Policy::Read => left.min(self.session.command_timeout / 2),
            Policy::Write | Policy::Once => left,
        }
    }

    async fn pause_between_rounds(&mut self) -> Result<()> {
        if !self.connected && self.started.elapsed() >= self.session.dial_timeout {
            return Err(self.give_up());
        }
        let pause = self.retry_after.take().unwrap_or(ROUND_PAUSE);
        if Instant::now() + pause >= self.session.deadline {
            return Err(self.give_up());
        }
        tokio::time::sleep(pause).await;
        Ok(())
    }

    fn note(&mut self, endpoint: &Endpoint, why: String) {
        let name = endpoint.as_str();
        match self.notes.iter_mut().find(|(e, _)| e == name) {
            Some(note) => note.1 = why,
            None => self.notes.push((name.to_string(), why)),
        }
    }

    fn notes(&self) -> String {
        let notes: Vec<String> = self
            .notes
            .iter()
            .map(|(endpoint, why)| format!("{endpoint} {why}"))
            .collect();
        notes.join("; ")
    }

    /// The error once the deadline passed (or nothing could be reached for the dial timeout).
    fn give_up(&self) -> CtlError {
        let what = self.call.what;
        if !self.connected {
            let not_applied = match self.call.policy {
                Policy::Write => format!(" ({what} was not sent)"),
                Policy::Read | Policy::Once => String::new(),
            };
            return CtlError::Unreachable(format!(
                "no endpoint could be reached{not_applied}: {}: check --endpoints and that the \
                 members are running",
                self.notes()
            ));
        }
        match self.call.policy {
            Policy::Write => failed(format!(
                "{what} was not applied: {}: retry once the cluster has a leader",
                self.notes()
            )),
            Policy::Read | Policy::Once => failed(format!(
                "{what} did not succeed within --command-timeout {}: {}",
                show(self.session.command_timeout),
                self.notes()
            )),
        }
    }

    fn maybe_applied(&self, endpoint: &Endpoint, why: &str) -> CtlError {
        failed(format!(
            "{} may or may not have been applied ({endpoint} {why}): read it back before \
             retrying, and do not retry blindly",
            self.call.what
        ))
    }
}

/// Reads the whole body by `until`, at most [`MAX_BODY_BYTES`].
async fn read_whole(
    response: Response<Incoming>,
    until: Instant,
) -> std::result::Result<Bytes, String> {
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES).collect();
    match tokio::time::timeout_at(until.into(), body).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(format!("the answer broke off: {e}")),
        Err(_) => Err("the answer did not arrive in time".to_string()),
    }
}

/// The server's error sentence, or the status's reason when there is none.
pub async fn read_sentence(response: Response<Incoming>) -> String {
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_SENTENCE_BYTES).collect();
    let bytes = match tokio::time::timeout(SENTENCE_TIMEOUT, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    };
    sentence_of(&bytes, status)
}

fn sentence_of(body: &[u8], status: StatusCode) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_lowercase()
    } else {
        text
    }
}
