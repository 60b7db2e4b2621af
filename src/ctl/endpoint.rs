//! Endpoints (client base URLs, `http://host:port` or `https://host:port`) and the
//! percent-encoding of keys in `/kv/<key>` paths.

use std::fmt;

use crate::ctl::error::{invalid, Result};

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TLS, verified with `--cacert`.
    Https,
}

/// A member's client base URL, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: Scheme,
    /// The host to dial (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// `scheme://authority` as given, without a trailing slash: how the endpoint is named in
    /// output and errors, and the `Host` header's source.
    base: String,
}

impl Endpoint {
    /// Parses `http://host[:port]` or `https://host[:port]` (a trailing `/` is fine; a path, a
    /// query or another scheme is not). `what` names the URL in the error ("endpoint", "peer
    /// URL").
    ///
    /// # Errors
    /// [`CtlError::Invalid`](crate::ctl::error::CtlError::Invalid) saying what is wrong.
    pub fn parse(text: &str, what: &str) -> Result<Endpoint> {
        let bad = |why: &str| invalid(format!("{what} {text:?} {why}"));
        let uri: hyper::Uri = text
            .parse()
            .map_err(|_| bad("is not a URL: use http://HOST:PORT or https://HOST:PORT"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(bad("is not an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad("has no host: use http://HOST:PORT"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "has a path or a query: give the base URL, http://HOST:PORT",
            ));
        }
        if authority.as_str().contains('@') {
            return Err(bad(
                "has user information: give the base URL, http://HOST:PORT",
            ));
        }
        let host = authority.host().trim_matches(|c| c == '[' || c == ']');
        if host.is_empty() {
            return Err(bad("has no host: use http://HOST:PORT"));
        }
        let port = match (authority.port_u16(), scheme) {
            (Some(0), _) => return Err(bad("has port 0")),
            (Some(port), _) => port,
            (None, Scheme::Http) => 80,
            (None, Scheme::Https) => 443,
        };
        let scheme_text = if scheme == Scheme::Http {
            "http"
        } else {
            "https"
        };
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            port,
            base: format!("{scheme_text}://{}", authority.as_str()),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host to dial and to check the server certificate against.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to dial.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The value of the `Host` header.
    pub fn authority(&self) -> &str {
        self.base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, a)| a)
    }

    /// `scheme://authority`, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.base
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// `key` percent-encoded for a `/kv/<key>` path: every byte except the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) as `%XX`, slashes included (the server decodes them back to the
/// same key).
pub fn encode_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for &byte in key {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_to_base_urls_and_bad_ones_are_sentences() {
        // Intent: good endpoints keep their authority and get a default port; every bad one is
        // an Invalid error (exit 3), never a panic.
        let e = Endpoint::parse("http://127.0.0.1:12380/", "endpoint").unwrap();
        assert_eq!(
            (e.as_str(), e.host(), e.port()),
            ("http://127.0.0.1:12380", "127.0.0.1", 12380)
        );
        assert_eq!(e.authority(), "127.0.0.1:12380");
        let v6 = Endpoint::parse("https://[::1]:2379", "endpoint").unwrap();
        assert_eq!(
            (v6.host(), v6.port(), v6.scheme()),
            ("::1", 2379, Scheme::Https)
        );
        assert_eq!(
            Endpoint::parse("http://localhost", "endpoint")
                .unwrap()
                .port(),
            80
        );
        for bad in [
            "",
            "127.0.0.1:1",
            "ftp://a:1",
            "http://a:1/x",
            "http://a:1/?q",
            "http://a:0",
            "http://u@a:1",
            "::",
            "http://",
        ] {
            let err = Endpoint::parse(bad, "endpoint").unwrap_err();
            assert_eq!(err.exit_code(), 3, "{bad:?}: {err}");
        }
    }

    #[test]
    fn keys_are_percent_encoded_byte_by_byte() {
        // Intent: unreserved bytes stay, everything else (slash, space, %, non-UTF-8) is %XX.
        assert_eq!(encode_key(b"a-b.c_d~9"), "a-b.c_d~9");
        assert_eq!(encode_key(b"a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode_key(&[0xff, 0x00]), "%FF%00");
        assert_eq!(encode_key("é".as_bytes()), "%C3%A9");
    }
}
