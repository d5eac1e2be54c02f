//! Applying `WSGITrustedProxyHeaders`/`WSGITrustedProxies` to a request's CGI variables.
//!
//! For every category of proxy header with at least one header configured, the category's
//! other headers are always removed (a client could otherwise pick the one the application
//! reads). If the peer is not a trusted proxy, the configured headers are removed too and
//! nothing is rewritten (CVE-2022-2255); otherwise they rewrite `REMOTE_ADDR`, `HTTP_HOST`,
//! `SERVER_NAME`, `SERVER_PORT`, `SCRIPT_NAME` or `HTTPS`.

use std::net::IpAddr;

use crate::config::proxy::{CATEGORIES, Category, Network};

/// The changes to make: variables to remove, and variables to set (after removal).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// CGI names to drop.
    pub remove: Vec<Vec<u8>>,
    /// CGI names and the values to give them.
    pub set: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Works out the changes for a request whose variables are `cgi`, given the configured
/// header CGI names and trusted networks (`None`: every peer is trusted).
pub fn changes(
    cgi: &[(&[u8], &[u8])],
    configured: &[&'static str],
    proxies: Option<&[Network]>,
) -> Changes {
    let mut out = Changes::default();
    if configured.is_empty() {
        return out;
    }
    let get = |name: &str| -> Option<String> {
        cgi.iter()
            .rev()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let peer = get("REMOTE_ADDR").and_then(|a| a.parse::<IpAddr>().ok());
    let trusted = |ip: IpAddr| proxies.is_none_or(|nets| nets.iter().any(|n| n.contains(ip)));
    let peer_trusted = peer.is_some_and(trusted);

    for (category, names) in CATEGORIES {
        let chosen: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| configured.contains(n))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        for name in names.iter().filter(|n| !chosen.contains(n)) {
            out.remove.push(name.as_bytes().to_vec());
        }
        if !peer_trusted {
            for name in &chosen {
                out.remove.push(name.as_bytes().to_vec());
            }
            continue;
        }
        let Some((name, value)) = chosen.iter().find_map(|n| get(n).map(|v| (*n, v))) else {
            continue;
        };
        apply(*category, name, &value, proxies, &trusted, &mut out);
    }
    out
}

fn set(out: &mut Changes, name: &str, value: &str) {
    out.set
        .push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
}

fn apply(
    category: Category,
    header: &str,
    value: &str,
    proxies: Option<&[Network]>,
    trusted: &dyn Fn(IpAddr) -> bool,
    out: &mut Changes,
) {
    let value = value.trim();
    match category {
        Category::ClientAddress if header == "HTTP_X_FORWARDED_FOR" => {
            let hops: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            if hops.is_empty() {
                return;
            }
            let client = if proxies.is_some() {
                // From the right, skip the trusted proxies; the hop before them is the client.
                let mut index = hops.len() - 1;
                while index > 0 && hops[index].parse::<IpAddr>().is_ok_and(trusted) {
                    index -= 1;
                }
                set(out, header, &hops[index..].join(", "));
                hops[index]
            } else {
                hops[0]
            };
            set(out, "REMOTE_ADDR", client);
        }
        Category::ClientAddress => set(out, "REMOTE_ADDR", value),
        Category::Host => set(out, "HTTP_HOST", value),
        Category::Server => set(out, "SERVER_NAME", value),
        Category::Port => set(out, "SERVER_PORT", value),
        Category::ScriptName => {
            set(out, "SCRIPT_NAME", value);
            set(out, "mod_wsgi.mount_point", value);
        }
        Category::Scheme => {
            let lower = value.to_ascii_lowercase();
            let on = match header {
                "HTTP_X_FORWARDED_PROTO" | "HTTP_X_FORWARDED_SCHEME" | "HTTP_X_SCHEME" => {
                    match lower.as_str() {
                        "https" => Some(true),
                        "http" => Some(false),
                        _ => None,
                    }
                }
                _ => match lower.as_str() {
                    "on" | "true" | "1" => Some(true),
                    "off" | "false" | "0" => Some(false),
                    _ => None,
                },
            };
            match on {
                Some(true) => set(out, "HTTPS", "1"),
                Some(false) => out.remove.push(b"HTTPS".to_vec()),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn value(c: &Changes, name: &str) -> Option<String> {
        c.set
            .iter()
            .rev()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into())
    }

    fn removed(c: &Changes, name: &str) -> bool {
        c.remove.iter().any(|k| k == name.as_bytes())
    }

    const HEADERS: &[&str] = &["HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR"];

    #[test]
    fn trusted_peer_rewrites_address_and_scheme() {
        let cgi = vars(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_PROTO", "https"),
            ("HTTP_X_FORWARDED_FOR", " , 203.0.113.9,,127.0.0.1"),
            ("HTTP_X_REAL_IP", "6.6.6.6"),
        ]);
        let nets = [Network::parse("X", "127.0.0.1").unwrap()];
        let c = changes(&cgi, HEADERS, Some(&nets));
        assert_eq!(value(&c, "REMOTE_ADDR").as_deref(), Some("203.0.113.9"));
        assert_eq!(value(&c, "HTTPS").as_deref(), Some("1"));
        assert!(removed(&c, "HTTP_X_REAL_IP"), "synonyms are dropped");
    }

    #[test]
    fn untrusted_peer_changes_nothing_and_loses_the_headers() {
        let cgi = vars(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_PROTO", "https"),
            ("HTTP_X_FORWARDED_FOR", "203.0.113.9"),
        ]);
        let nets = [Network::parse("X", "192.0.2.1").unwrap()];
        let c = changes(&cgi, HEADERS, Some(&nets));
        assert!(c.set.is_empty());
        assert!(removed(&c, "HTTP_X_FORWARDED_PROTO") && removed(&c, "HTTP_X_FORWARDED_FOR"));
    }

    #[test]
    fn without_a_proxy_list_the_first_hop_is_the_client() {
        let cgi = vars(&[
            ("REMOTE_ADDR", "10.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", ",1.2.3.4, 5.6.7.8"),
        ]);
        let c = changes(&cgi, &["HTTP_X_FORWARDED_FOR"], None);
        assert_eq!(value(&c, "REMOTE_ADDR").as_deref(), Some("1.2.3.4"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right() {
        let cgi = vars(&[
            ("REMOTE_ADDR", "10.0.0.2"),
            (
                "HTTP_X_FORWARDED_FOR",
                "1.1.1.1, 2.2.2.2, 10.0.0.3, 10.0.0.4",
            ),
        ]);
        let nets = [Network::parse("X", "10.0.0.0/8").unwrap()];
        let c = changes(&cgi, &["HTTP_X_FORWARDED_FOR"], Some(&nets));
        assert_eq!(value(&c, "REMOTE_ADDR").as_deref(), Some("2.2.2.2"));
        assert_eq!(
            value(&c, "HTTP_X_FORWARDED_FOR").as_deref(),
            Some("2.2.2.2, 10.0.0.3, 10.0.0.4")
        );
    }

    #[test]
    fn other_categories() {
        let cgi = vars(&[
            ("REMOTE_ADDR", "127.0.0.1"),
            ("HTTP_X_FORWARDED_HOST", "example.org"),
            ("HTTP_X_FORWARDED_PORT", "8443"),
            ("HTTP_X_SCRIPT_NAME", "/mount"),
            ("HTTP_X_FORWARDED_SSL", "off"),
            ("HTTP_X_FORWARDED_SERVER", "front"),
        ]);
        let headers = [
            "HTTP_X_FORWARDED_HOST",
            "HTTP_X_FORWARDED_PORT",
            "HTTP_X_SCRIPT_NAME",
            "HTTP_X_FORWARDED_SSL",
            "HTTP_X_FORWARDED_SERVER",
        ];
        let c = changes(&cgi, &headers, None);
        assert_eq!(value(&c, "HTTP_HOST").as_deref(), Some("example.org"));
        assert_eq!(value(&c, "SERVER_PORT").as_deref(), Some("8443"));
        assert_eq!(value(&c, "SCRIPT_NAME").as_deref(), Some("/mount"));
        assert_eq!(value(&c, "mod_wsgi.mount_point").as_deref(), Some("/mount"));
        assert_eq!(value(&c, "SERVER_NAME").as_deref(), Some("front"));
        assert!(removed(&c, "HTTPS"));
    }
}
