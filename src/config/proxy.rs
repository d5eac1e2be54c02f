//! `WSGITrustedProxyHeaders` and `WSGITrustedProxies`: which reverse-proxy headers may rewrite
//! the request's address, host, port, scheme and mount point, and from which peers.

use std::net::IpAddr;

use super::ConfigError;

/// The header categories a trusted proxy may set, each with its synonyms (CGI names).
pub const CATEGORIES: &[(Category, &[&str])] = &[
    (
        Category::ClientAddress,
        &["HTTP_X_FORWARDED_FOR", "HTTP_X_CLIENT_IP", "HTTP_X_REAL_IP"],
    ),
    (Category::Host, &["HTTP_X_FORWARDED_HOST", "HTTP_X_HOST"]),
    (Category::Server, &["HTTP_X_FORWARDED_SERVER"]),
    (Category::Port, &["HTTP_X_FORWARDED_PORT"]),
    (
        Category::ScriptName,
        &["HTTP_X_SCRIPT_NAME", "HTTP_X_FORWARDED_SCRIPT_NAME"],
    ),
    (
        Category::Scheme,
        &[
            "HTTP_X_FORWARDED_PROTO",
            "HTTP_X_FORWARDED_SCHEME",
            "HTTP_X_SCHEME",
            "HTTP_X_FORWARDED_HTTPS",
            "HTTP_X_FORWARDED_SSL",
            "HTTP_X_HTTPS",
        ],
    ),
];

/// What a category of proxy headers rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// `REMOTE_ADDR`.
    ClientAddress,
    /// `HTTP_HOST`.
    Host,
    /// `SERVER_NAME`.
    Server,
    /// `SERVER_PORT`.
    Port,
    /// `SCRIPT_NAME` (and `mod_wsgi.mount_point`).
    ScriptName,
    /// `HTTPS` (and so `wsgi.url_scheme`).
    Scheme,
}

/// A header name as written in the directive (`X-Forwarded-For`) as its CGI name
/// (`HTTP_X_FORWARDED_FOR`); `None` for a header no category knows (ignored, as in C
/// mod_wsgi).
pub fn cgi_name(header: &str) -> Option<&'static str> {
    let wanted: String = format!("HTTP_{}", header.to_ascii_uppercase().replace('-', "_"));
    CATEGORIES
        .iter()
        .flat_map(|(_, names)| names.iter())
        .find(|n| **n == wanted)
        .copied()
}

/// The category of a CGI name.
pub fn category_of(cgi: &str) -> Option<Category> {
    CATEGORIES
        .iter()
        .find(|(_, names)| names.contains(&cgi))
        .map(|(c, _)| *c)
}

/// An address or network of `WSGITrustedProxies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `192.0.2.1`, `10.0.0.0/8` or `2001:db8::/32`.
    pub fn parse(directive: &'static str, text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError::invalid(
                directive,
                format!("'{text}' is not an IP address or network"),
            )
        };
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { address, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_map_to_categories() {
        assert_eq!(cgi_name("X-Forwarded-For"), Some("HTTP_X_FORWARDED_FOR"));
        assert_eq!(
            cgi_name("x-forwarded-proto"),
            Some("HTTP_X_FORWARDED_PROTO")
        );
        assert_eq!(cgi_name("X-Unknown"), None);
        assert_eq!(category_of("HTTP_X_REAL_IP"), Some(Category::ClientAddress));
    }

    #[test]
    fn networks() {
        let n = Network::parse("X", "10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let one = Network::parse("X", "127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Network::parse("X", "2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
        assert!(Network::parse("X", "nonsense").is_err());
        assert!(Network::parse("X", "10.0.0.0/33").is_err());
    }
}
