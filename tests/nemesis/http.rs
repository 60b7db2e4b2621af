//! A tiny blocking HTTP/1.1 client for the harness: one request per connection
//! (`Connection: close`), with the failure classes the outcome rules need.
//!
//! A request that could not even connect was never sent ([`Exchange::NotSent`]: a write is
//! known not applied); any failure after the connection was made may have delivered the
//! request ([`Exchange::Lost`]: a write is indeterminate).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What became of one request.
#[derive(Debug, Clone)]
pub enum Exchange {
    /// A complete answer.
    Reply(Reply),
    /// No connection could be made: nothing was sent.
    NotSent(String),
    /// The connection failed or timed out after it was made: the request may have arrived.
    Lost(String),
}

impl Exchange {
    /// The reply, if one came back.
    pub fn reply(self) -> Option<Reply> {
        match self {
            Exchange::Reply(r) => Some(r),
            Exchange::NotSent(_) | Exchange::Lost(_) => None,
        }
    }
}

/// Sends one request to `addr` and reads the whole answer, each step within `timeout`.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Exchange {
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return Exchange::NotSent(e.to_string()),
    };
    let mut exchange = || -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        stream.write_all(&message)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    };
    match exchange() {
        Ok(raw) => match parse(&raw) {
            Some(reply) => Exchange::Reply(reply),
            None => Exchange::Lost(format!("unparsable answer of {} bytes", raw.len())),
        },
        Err(e) => Exchange::Lost(e.to_string()),
    }
}

fn parse(raw: &[u8]) -> Option<Reply> {
    let reply = crate::support::parse_reply(raw)?;
    Some(Reply {
        status: reply.status,
        body: reply.body,
    })
}
