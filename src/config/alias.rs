//! `WSGIScriptAlias` and `WSGIScriptAliasMatch`: which URLs a WSGI script serves.
//!
//! Matching follows `mod_alias`: a prefix alias matches whole path segments and a run of slashes
//! in the URL matches one slash in the alias. A mount that ends in `/` onto a file keeps the
//! slash in `PATH_INFO`, so `WSGIScriptAlias / /srv/app.wsgi` gives `SCRIPT_NAME` `""` and
//! `PATH_INFO` `/…`.

use regex::bytes::Regex;

use super::{ConfigError, GroupSpec, parse_callable_object, parse_on_off};

/// One script alias.
#[derive(Clone, Debug)]
pub struct ScriptAlias {
    /// The URL side.
    pub pattern: AliasPattern,
    /// The file or folder (for a regex alias: a template with `$0`…`$9`).
    pub target: String,
    /// `name=value` options written after the target.
    pub options: AliasOptions,
}

/// The URL side of an alias.
#[derive(Clone, Debug)]
pub enum AliasPattern {
    /// `WSGIScriptAlias /url …`.
    Prefix(String),
    /// `WSGIScriptAliasMatch regex …`.
    Regex(Regex),
}

/// Options of `WSGIScriptAlias`/`WSGIScriptAliasMatch`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AliasOptions {
    /// `process-group=`.
    pub process_group: Option<String>,
    /// `application-group=`.
    pub application_group: Option<GroupSpec>,
    /// `callable-object=`.
    pub callable_object: Option<String>,
    /// `pass-authorization=`.
    pub pass_authorization: Option<bool>,
}

impl AliasOptions {
    /// Parses `name=value` options (those of `WSGIScriptAlias`, also used by
    /// `WSGIHandlerScript`).
    pub fn parse(directive: &'static str, options: &[String]) -> Result<Self, ConfigError> {
        let mut parsed = AliasOptions::default();
        for option in options {
            let Some((name, value)) = option.split_once('=') else {
                return Err(ConfigError::invalid(
                    directive,
                    format!("'{option}' is not of the form name=value; options are {OPTIONS}"),
                ));
            };
            let value = super::unquote(value);
            match name {
                "process-group" => parsed.process_group = Some(value.to_owned()),
                "application-group" => {
                    parsed.application_group = Some(GroupSpec::parse(directive, value)?);
                }
                "callable-object" => {
                    parsed.callable_object = Some(parse_callable_object(directive, value)?);
                }
                "pass-authorization" => {
                    parsed.pass_authorization = Some(parse_on_off(directive, value)?);
                }
                _ => {
                    return Err(ConfigError::UnknownOption {
                        directive,
                        option: name.to_owned(),
                        expected: OPTIONS,
                    });
                }
            }
        }
        Ok(parsed)
    }
}

/// Where an alias maps one URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasMatch {
    /// The file name to give Apache (`r->filename`): the target plus the rest of the URL.
    pub filename: Vec<u8>,
}

const OPTIONS: &str = "process-group, application-group, callable-object, pass-authorization";

impl ScriptAlias {
    /// Parses `WSGIScriptAlias URL-path file-or-dir [option=value …]` (or the `Match` form when
    /// `regex` is set) from its arguments.
    pub fn parse(
        directive: &'static str,
        args: &[String],
        regex: bool,
    ) -> Result<Self, ConfigError> {
        let [url, target, options @ ..] = args else {
            return Err(ConfigError::invalid(
                directive,
                "expects a URL path (or regex) and a file or folder, then options",
            ));
        };
        let pattern = if regex {
            let re = Regex::new(url).map_err(|e| {
                // The regex crate explains over several lines; its last line says what is wrong.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                let reason = reason.trim().trim_start_matches("error: ");
                ConfigError::invalid(
                    directive,
                    format!("bad regular expression '{url}': {reason}"),
                )
            })?;
            AliasPattern::Regex(re)
        } else {
            if !url.starts_with('/') {
                return Err(ConfigError::invalid(
                    directive,
                    format!("the URL path '{url}' must start with '/'"),
                ));
            }
            AliasPattern::Prefix(url.clone())
        };
        if target.is_empty() {
            return Err(ConfigError::invalid(directive, "the script path is empty"));
        }
        let parsed = AliasOptions::parse(directive, options)?;
        Ok(Self {
            pattern,
            target: target.clone(),
            options: parsed,
        })
    }

    /// Maps `uri` (the decoded request path) if this alias covers it.
    ///
    /// URLs are bytes: a decoded path need not be UTF-8, and its bytes are kept as they are.
    pub fn apply(&self, uri: &[u8]) -> Option<AliasMatch> {
        let (mut target, matched) = match &self.pattern {
            AliasPattern::Prefix(prefix) => {
                let matched = prefix_match(uri, prefix)?;
                // Room for the rest of the URL too: no realloc when it is appended below.
                let mut target = Vec::with_capacity(self.target.len() + uri.len() + 1 - matched);
                target.extend_from_slice(self.target.as_bytes());
                (target, matched)
            }
            AliasPattern::Regex(re) => {
                let caps = re.captures(uri)?;
                let whole = caps.get(0)?;
                (substitute(&self.target, &caps), whole.end())
            }
        };
        let mut rest = &uri[matched..];
        // A mount ending in '/' onto a file: the slash starts PATH_INFO.
        if matched > 0 && uri[matched - 1] == b'/' && !target.ends_with(b"/") {
            rest = &uri[matched - 1..];
        }
        target.extend_from_slice(rest);
        Some(AliasMatch { filename: target })
    }
}

/// Length of the part of `uri` that `prefix` matches, the way `mod_alias` matches, or `None`.
fn prefix_match(uri: &[u8], prefix: &str) -> Option<usize> {
    let u = uri;
    let p = prefix.as_bytes();
    let (mut i, mut j) = (0, 0);
    while j < p.len() {
        if p[j] == b'/' {
            if u.get(i) != Some(&b'/') {
                return None;
            }
            while p.get(j) == Some(&b'/') {
                j += 1;
            }
            while u.get(i) == Some(&b'/') {
                i += 1;
            }
        } else {
            if u.get(i) != Some(&p[j]) {
                return None;
            }
            i += 1;
            j += 1;
        }
    }
    // The match must end at a segment boundary.
    if p.last() != Some(&b'/') && i < u.len() && u[i] != b'/' {
        return None;
    }
    Some(i)
}

/// Replaces `$0`…`$9` in `template` with the captured groups (missing groups are empty);
/// `\$` is a literal dollar.
fn substitute(template: &str, caps: &regex::bytes::Captures<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len());
    let mut bytes = template.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' if bytes.peek() == Some(&b'$') => {
                out.push(b'$');
                bytes.next();
            }
            b'$' if bytes.peek().is_some_and(u8::is_ascii_digit) => {
                let digit = bytes.next().map_or(0, |d| usize::from(d - b'0'));
                out.extend_from_slice(caps.get(digit).map_or(&[][..], |m| m.as_bytes()));
            }
            b => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(args: &[&str], regex: bool) -> ScriptAlias {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        ScriptAlias::parse("WSGIScriptAlias", &args, regex).unwrap()
    }

    fn filename(a: &ScriptAlias, uri: &str) -> Option<String> {
        a.apply(uri.as_bytes())
            .map(|m| String::from_utf8(m.filename).unwrap())
    }

    #[test]
    fn non_utf8_bytes_are_kept() {
        let a = alias(&["/", "/srv/app.wsgi"], false);
        let m = a.apply(b"/caf\xff").unwrap();
        assert_eq!(m.filename, b"/srv/app.wsgi/caf\xff");
    }

    #[test]
    fn root_mount_on_a_file_keeps_the_slash_in_path_info() {
        let a = alias(&["/", "/srv/app.wsgi"], false);
        assert_eq!(filename(&a, "/").as_deref(), Some("/srv/app.wsgi/"));
        assert_eq!(filename(&a, "/x/y").as_deref(), Some("/srv/app.wsgi/x/y"));
    }

    #[test]
    fn sub_path_mount_matches_whole_segments() {
        let a = alias(&["/app", "/srv/app.wsgi"], false);
        assert_eq!(filename(&a, "/app").as_deref(), Some("/srv/app.wsgi"));
        assert_eq!(filename(&a, "/app/x").as_deref(), Some("/srv/app.wsgi/x"));
        assert_eq!(filename(&a, "/application"), None);
        assert_eq!(filename(&a, "/other"), None);
    }

    #[test]
    fn repeated_slashes_match_one() {
        let a = alias(&["/a/b", "/srv/app.wsgi"], false);
        assert_eq!(
            filename(&a, "//a///b/c").as_deref(),
            Some("/srv/app.wsgi/c")
        );
    }

    #[test]
    fn folder_targets_append_the_rest() {
        let a = alias(&["/wsgi/", "/srv/scripts/"], false);
        assert_eq!(
            filename(&a, "/wsgi/x.wsgi/p").as_deref(),
            Some("/srv/scripts/x.wsgi/p")
        );
    }

    #[test]
    fn regex_aliases_substitute_groups() {
        let a = alias(&["^/apps/([^/]+)", "/srv/$1.wsgi"], true);
        assert_eq!(
            filename(&a, "/apps/blog/post/1").as_deref(),
            Some("/srv/blog.wsgi/post/1")
        );
        assert_eq!(filename(&a, "/other"), None);
    }

    #[test]
    fn options_are_parsed_and_checked() {
        let a = alias(
            &[
                "/",
                "/srv/a.wsgi",
                "application-group=%{GLOBAL}",
                "callable-object=app",
            ],
            false,
        );
        assert_eq!(a.options.application_group, Some(GroupSpec::Global));
        assert_eq!(a.options.callable_object.as_deref(), Some("app"));

        let bad: Vec<String> = ["/", "/a.wsgi", "colour=red"].map(String::from).to_vec();
        let err = ScriptAlias::parse("WSGIScriptAlias", &bad, false).unwrap_err();
        assert!(err.to_string().contains("unknown option 'colour'"), "{err}");
        let bad: Vec<String> = ["/", "/a.wsgi", "noequals"].map(String::from).to_vec();
        assert!(ScriptAlias::parse("WSGIScriptAlias", &bad, false).is_err());
        let bad: Vec<String> = ["app", "/a.wsgi"].map(String::from).to_vec();
        assert!(ScriptAlias::parse("WSGIScriptAlias", &bad, false).is_err());
        let bad: Vec<String> = ["(", "/a.wsgi"].map(String::from).to_vec();
        assert!(ScriptAlias::parse("WSGIScriptAliasMatch", &bad, true).is_err());
    }
}
