//! A cluster endpoint given on the command line: `http://host:port` or `https://host:port`
//! (`https` needs `--cacert`, checked in `args.rs`).

use std::fmt;

use hyper::Uri;
use rustls::pki_types::ServerName;

/// Where one client connects and what it sends as `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to (resolved at connect time).
    pub authority: String,
    /// For `https://`: the name the server's certificate must carry (a DNS name or an IP
    /// address). `None` for plain `http://`.
    pub tls_name: Option<ServerName<'static>>,
}

/// Why an endpoint URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error("endpoint {0:?} is not a URL (want http://host:port or https://host:port)")]
    Unparsable(String),
    /// Neither `http` nor `https`.
    #[error("endpoint {0:?} must use http:// or https://")]
    Scheme(String),
    /// An `https://` host that cannot be checked against a certificate.
    #[error("endpoint {0:?} has a host that is neither a DNS name nor an IP address")]
    TlsName(String),
    /// A path would be ignored silently; refuse it instead.
    #[error("endpoint {0:?} must not have a path (want http://host:port)")]
    Path(String),
}

impl Endpoint {
    /// Parses `http://host[:port]` (port 80 when absent) or `https://host[:port]` (443).
    ///
    /// # Errors
    /// [`EndpointError`] naming the URL when it is not of that form.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| EndpointError::Unparsable(url.to_owned()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(EndpointError::Scheme(url.to_owned())),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| EndpointError::Unparsable(url.to_owned()))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(EndpointError::Path(url.to_owned()));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls_name = if https {
            // IPv6 hosts come bracketed ("[::1]"); the certificate names the bare address.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|_| EndpointError::TlsName(url.to_owned()))?;
            Some(name)
        } else {
            None
        };
        Ok(Endpoint {
            authority: format!("{host}:{port}"),
            tls_name,
        })
    }

    /// Parses a comma-separated list, skipping empty items.
    ///
    /// # Errors
    /// The first bad URL's [`EndpointError`].
    pub fn parse_list(list: &str) -> Result<Vec<Endpoint>, EndpointError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Endpoint::parse)
            .collect()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls_name.is_some() {
            "https"
        } else {
            "http"
        };
        write!(f, "{scheme}://{}", self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_of_http_urls() {
        // Intent: the usual endpoint lists parse to host:port, with port 80 as default.
        let list = Endpoint::parse_list("http://127.0.0.1:12380, http://localhost/,").unwrap();
        assert_eq!(list[0].authority, "127.0.0.1:12380");
        assert_eq!(list[1].authority, "localhost:80");
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|e| e.tls_name.is_none()));
    }

    #[test]
    fn parses_https_urls_with_their_tls_name() {
        // Intent: https endpoints keep their host (DNS name or IP, IPv6 unbracketed) as the
        // name to verify, default to port 443 and print back as https.
        let list =
            Endpoint::parse_list("https://node1.example:2379,https://127.0.0.1,https://[::1]:9")
                .unwrap();
        assert_eq!(list[0].authority, "node1.example:2379");
        assert_eq!(
            list[0].tls_name,
            Some(ServerName::try_from("node1.example").unwrap())
        );
        assert_eq!(list[1].authority, "127.0.0.1:443");
        assert_eq!(
            list[1].tls_name,
            Some(ServerName::try_from("127.0.0.1").unwrap())
        );
        assert_eq!(list[2].tls_name, Some(ServerName::try_from("::1").unwrap()));
        assert_eq!(list[0].to_string(), "https://node1.example:2379");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        // Intent: other schemes, paths and garbage are refused with an error naming the URL.
        assert!(matches!(
            Endpoint::parse("ftp://a:1"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://a:1/kv"),
            Err(EndpointError::Path(_))
        ));
        assert!(Endpoint::parse("127.0.0.1:12380").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("ht tp://x").is_err());
    }
}
