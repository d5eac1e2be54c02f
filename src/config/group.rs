//! Application group names (`WSGIApplicationGroup`, `application-group=`): which Python
//! interpreter of the process serves a request.

use super::ConfigError;

/// An application group as configured, before a request gives it a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSpec {
    /// `%{GLOBAL}`: the main interpreter (name `""`).
    Global,
    /// `%{SERVER}`: one interpreter per virtual host (`name[:port]`).
    Server,
    /// `%{HOST}`: one per `Host` header value.
    Host,
    /// `%{RESOURCE}` (the default): one per virtual host and script mount.
    Resource,
    /// `%{ENV:VAR}`: named by a request variable.
    Env(String),
    /// Any other text: that name.
    Literal(String),
}

/// What a request knows that group names are made from.
pub struct GroupContext<'a> {
    /// `ServerName` of the virtual host that took the request.
    pub server_name: &'a str,
    /// The port the request came in on.
    pub port: u16,
    /// The `Host` header, if sent.
    pub host_header: Option<&'a str>,
    /// The request's `SCRIPT_NAME`.
    pub script_name: &'a str,
    /// Looks a variable up in the request's notes, environment, then the process environment.
    pub lookup_env: &'a dyn Fn(&str) -> Option<String>,
}

impl GroupSpec {
    /// Parses the directive's argument.
    pub fn parse(directive: &'static str, value: &str) -> Result<Self, ConfigError> {
        Ok(match value {
            "" => return Err(ConfigError::invalid(directive, "the group name is empty")),
            "%{GLOBAL}" => Self::Global,
            "%{SERVER}" => Self::Server,
            "%{HOST}" => Self::Host,
            "%{RESOURCE}" => Self::Resource,
            v if v.starts_with("%{ENV:") && v.ends_with('}') && v.len() > 7 => {
                Self::Env(v[6..v.len() - 1].to_owned())
            }
            v if v.starts_with("%{") => {
                return Err(ConfigError::invalid(
                    directive,
                    format!(
                        "unknown expansion '{v}'; use %{{GLOBAL}}, %{{SERVER}}, %{{HOST}}, \
                         %{{RESOURCE}}, %{{ENV:VAR}} or a plain name"
                    ),
                ));
            }
            v => Self::Literal(v.to_owned()),
        })
    }

    /// The interpreter name for one request (`""` is the main interpreter).
    pub fn resolve(&self, ctx: &GroupContext<'_>) -> String {
        match self {
            Self::Global => String::new(),
            Self::Server => with_port(ctx.server_name, ctx.port),
            Self::Host => {
                let host = ctx.host_header.map(|h| h.split(':').next().unwrap_or(h));
                with_port(host.unwrap_or(ctx.server_name), ctx.port)
            }
            Self::Resource => {
                let script = collapse_slashes(ctx.script_name);
                format!("{}|{script}", with_port(ctx.server_name, ctx.port))
            }
            Self::Env(var) => match (ctx.lookup_env)(var) {
                Some(v) if v == "%{GLOBAL}" => String::new(),
                Some(v) => v,
                None => format!("%{{ENV:{var}}}"),
            },
            Self::Literal(name) => name.clone(),
        }
    }
}

fn with_port(host: &str, port: u16) -> String {
    if port == 80 || port == 443 || port == 0 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// `//` and longer runs of slashes folded to one, in a byte string.
pub fn collapse_slashes_bytes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
    }
    out
}

/// `//` and longer runs of slashes folded to one.
pub fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' && last_slash {
            continue;
        }
        last_slash = c == '/';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(env: &'a dyn Fn(&str) -> Option<String>) -> GroupContext<'a> {
        GroupContext {
            server_name: "example.com",
            port: 8080,
            host_header: Some("alias.example.com:8080"),
            script_name: "/app//x",
            lookup_env: env,
        }
    }

    #[test]
    fn expansions_resolve_like_mod_wsgi() {
        let env = |v: &str| (v == "GRP").then(|| "named".to_owned());
        let c = ctx(&env);
        assert_eq!(GroupSpec::parse("X", "%{GLOBAL}").unwrap().resolve(&c), "");
        assert_eq!(
            GroupSpec::parse("X", "%{SERVER}").unwrap().resolve(&c),
            "example.com:8080"
        );
        assert_eq!(
            GroupSpec::parse("X", "%{HOST}").unwrap().resolve(&c),
            "alias.example.com:8080"
        );
        assert_eq!(
            GroupSpec::parse("X", "%{RESOURCE}").unwrap().resolve(&c),
            "example.com:8080|/app/x"
        );
        assert_eq!(
            GroupSpec::parse("X", "%{ENV:GRP}").unwrap().resolve(&c),
            "named"
        );
        assert_eq!(
            GroupSpec::parse("X", "%{ENV:NONE}").unwrap().resolve(&c),
            "%{ENV:NONE}"
        );
        assert_eq!(GroupSpec::parse("X", "mine").unwrap().resolve(&c), "mine");
    }

    #[test]
    fn unknown_expansions_are_refused() {
        assert!(GroupSpec::parse("X", "%{BOGUS}").is_err());
        assert!(GroupSpec::parse("X", "").is_err());
    }

    #[test]
    fn default_ports_are_left_out() {
        assert_eq!(with_port("h", 80), "h");
        assert_eq!(with_port("h", 443), "h");
        assert_eq!(with_port("h", 81), "h:81");
    }
}
