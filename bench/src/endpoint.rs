//! A cluster endpoint given on the command line: `http://host:port`.

use std::fmt;

use hyper::Uri;

/// Where one client connects and what it sends as `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to (resolved at connect time).
    pub authority: String,
}

/// Why an endpoint URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error("endpoint {0:?} is not a URL (want http://host:port)")]
    Unparsable(String),
    /// Only plain HTTP is spoken.
    #[error("endpoint {0:?} must use http:// (https is not supported)")]
    Scheme(String),
    /// A path would be ignored silently; refuse it instead.
    #[error("endpoint {0:?} must not have a path (want http://host:port)")]
    Path(String),
}

impl Endpoint {
    /// Parses `http://host[:port]` (port 80 when absent).
    ///
    /// # Errors
    /// [`EndpointError`] naming the URL when it is not of that form.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| EndpointError::Unparsable(url.to_owned()))?;
        if uri.scheme_str() != Some("http") {
            return Err(EndpointError::Scheme(url.to_owned()));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| EndpointError::Unparsable(url.to_owned()))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(EndpointError::Path(url.to_owned()));
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(Endpoint {
            authority: format!("{host}:{port}"),
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
        write!(f, "http://{}", self.authority)
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
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        // Intent: https, paths and garbage are refused with an error naming the URL.
        assert!(matches!(
            Endpoint::parse("https://a:1"),
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
