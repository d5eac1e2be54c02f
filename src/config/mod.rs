//! Typed configuration: what the `WSGI*` directives mean, parsed and validated in safe Rust.
//!
//! Apache hands each directive's arguments to `src/apache/directives.rs`, which calls the
//! parsers here and stores the result in one of two records:
//! - [`ServerConfig`], one per server and virtual host (script aliases; on the main server also
//!   the process-wide [`PythonSettings`]);
//! - [`DirConfig`], one per configuration section (`<Directory>`, `<Location>`, …, and the
//!   server-level defaults), merged by Apache along the section hierarchy for each request.
//!
//! Every parse error is a [`ConfigError`]; Apache prints it with the file and line of the
//! directive and `apache2 -t` fails.

mod alias;
mod daemon;
mod directive;
mod group;
pub mod proxy;

use std::path::PathBuf;

pub use alias::{AliasMatch, AliasOptions, AliasPattern, ScriptAlias};
pub use daemon::{DaemonConfig, Principal};
pub use directive::{Directive, Scope};
pub use group::{GroupContext, GroupSpec, collapse_slashes, collapse_slashes_bytes};

/// A directive's arguments could not be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An On/Off directive got something else.
    #[error("{directive} must be one of: Off | On")]
    NotOnOff {
        /// The directive's name.
        directive: &'static str,
    },
    /// A value is outside what the directive accepts.
    #[error("{directive}: {reason}")]
    Invalid {
        /// The directive's name.
        directive: &'static str,
        /// Why the value was refused, for the person reading `apache2 -t`'s output.
        reason: String,
    },
    /// An `option=value` argument the directive does not know.
    #[error("{directive}: unknown option '{option}'; expected one of: {expected}")]
    UnknownOption {
        /// The directive's name.
        directive: &'static str,
        /// The option as written.
        option: String,
        /// The options the directive takes.
        expected: &'static str,
    },
    /// The directive is not allowed where it was written.
    #[error("{directive} cannot occur within <VirtualHost> or a directory section")]
    NotGlobal {
        /// The directive's name.
        directive: &'static str,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(directive: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            directive,
            reason: reason.into(),
        }
    }
}

/// An option value without the quotes around it: Apache splits `key="a value"` into one word
/// and keeps the quotes, which the C module removes.
pub fn unquote(value: &str) -> &str {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(b'"'), Some(b'"')) | (Some(b'\''), Some(b'\'')) if bytes.len() >= 2 => {
            &value[1..value.len() - 1]
        }
        _ => value,
    }
}

/// Parses an On/Off argument (case-insensitive), as Apache's `FLAG` directives do.
pub fn parse_on_off(directive: &'static str, value: &str) -> Result<bool, ConfigError> {
    if value.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        Err(ConfigError::NotOnOff { directive })
    }
}

/// Process-wide Python settings: server scope only, read from the main server's record when an
/// Apache child starts Python.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonSettings {
    /// `WSGIPythonHome`: a Python prefix or a virtual environment.
    pub home: Option<PathBuf>,
    /// `WSGIPythonPath`: folders added with `site.addsitedir` and moved to the front of
    /// `sys.path`.
    pub path: Vec<PathBuf>,
    /// `WSGIPythonOptimize`: 0, 1 or 2.
    pub optimize: u8,
    /// `WSGIDontWriteBytecode On`.
    pub dont_write_bytecode: bool,
    /// `WSGIRestrictStdout On`: `sys.stdout` refuses any use.
    pub restrict_stdout: bool,
    /// `WSGIRestrictStdin On`: `sys.stdin` refuses any use.
    pub restrict_stdin: bool,
    /// `WSGIRestrictSignal` (On by default): `signal.signal()` is logged and ignored.
    pub restrict_signal: bool,
    /// `WSGIDestroyInterpreter` (On by default): end interpreters when the process stops.
    pub destroy_interpreter: bool,
}

impl Default for PythonSettings {
    fn default() -> Self {
        Self {
            home: None,
            path: Vec::new(),
            optimize: 0,
            dont_write_bytecode: false,
            restrict_stdout: false,
            restrict_stdin: false,
            restrict_signal: true,
            destroy_interpreter: true,
        }
    }
}

impl PythonSettings {
    /// `WSGIPythonHome prefix`.
    pub fn set_home(&mut self, value: &str) -> Result<(), ConfigError> {
        if value.is_empty() {
            return Err(ConfigError::invalid("WSGIPythonHome", "the path is empty"));
        }
        self.home = Some(PathBuf::from(value));
        Ok(())
    }

    /// `WSGIPythonPath dir[:dir…]`; repeated directives add up.
    pub fn add_path(&mut self, value: &str) -> Result<(), ConfigError> {
        let dirs: Vec<PathBuf> = value
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        if dirs.is_empty() {
            return Err(ConfigError::invalid("WSGIPythonPath", "no directory given"));
        }
        self.path.extend(dirs);
        Ok(())
    }

    /// `WSGIPythonOptimize 0|1|2`.
    pub fn set_optimize(&mut self, value: &str) -> Result<(), ConfigError> {
        self.optimize = match value.trim() {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            other => {
                return Err(ConfigError::invalid(
                    "WSGIPythonOptimize",
                    format!("'{other}' is not an optimisation level; use 0, 1 or 2"),
                ));
            }
        };
        Ok(())
    }
}

/// The daemon group names defined by the configuration read so far.
pub type DaemonNames = std::collections::HashSet<String>;

/// `WSGIImportScript script process-group=… application-group=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportScript {
    /// The script file.
    pub script: String,
    /// `""` for `%{GLOBAL}` (the Apache children themselves), else a daemon group name.
    pub process_group: String,
    /// The interpreter to load it in (`""`: main).
    pub application_group: String,
}

impl ImportScript {
    /// Parses the directive's arguments; both options are required and must name a group
    /// (`%{GLOBAL}` or a literal name), since no request exists when the script is loaded.
    pub fn parse(directive: &'static str, args: &[String]) -> Result<Self, ConfigError> {
        let [script, options @ ..] = args else {
            return Err(ConfigError::invalid(
                directive,
                "expects a script path, then options",
            ));
        };
        let (mut process_group, mut application_group) = (None, None);
        for option in options {
            let literal = |value: &str| match GroupSpec::parse(directive, value)? {
                GroupSpec::Global => Ok(String::new()),
                GroupSpec::Literal(name) => Ok(name),
                _ => Err(ConfigError::invalid(
                    directive,
                    format!("'{value}': only %{{GLOBAL}} or a plain name is known at start-up"),
                )),
            };
            match option.split_once('=') {
                Some(("process-group", v)) => process_group = Some(literal(v)?),
                Some(("application-group", v)) => application_group = Some(literal(v)?),
                _ => {
                    return Err(ConfigError::UnknownOption {
                        directive,
                        option: option.clone(),
                        expected: "process-group, application-group",
                    });
                }
            }
        }
        let missing = |what| ConfigError::invalid(directive, format!("{what}= is required"));
        Ok(Self {
            script: script.clone(),
            process_group: process_group.ok_or_else(|| missing("process-group"))?,
            application_group: application_group.ok_or_else(|| missing("application-group"))?,
        })
    }
}

/// The scripts to load at start-up across servers (see [`ServerConfig::preloads`]), each once
/// (a virtual host's record also holds the main server's aliases), in the order written.
pub fn preloads<'a>(servers: impl IntoIterator<Item = &'a ServerConfig>) -> Vec<ImportScript> {
    let mut all: Vec<ImportScript> = Vec::new();
    for import in servers.into_iter().flat_map(ServerConfig::preloads) {
        if !all.contains(&import) {
            all.push(import);
        }
    }
    all
}

/// Settings of one server or virtual host.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// `WSGIScriptAlias`/`WSGIScriptAliasMatch`, in the order written; a virtual host's own
    /// come before the main server's after merging.
    pub script_aliases: Vec<ScriptAlias>,
    /// Meaningful on the main server only.
    pub python: PythonSettings,
    /// `WSGIImportScript`: scripts loaded when a process starts.
    pub import_scripts: Vec<ImportScript>,
    /// `WSGISocketPrefix` (main server only).
    pub socket_prefix: Option<String>,
    /// `WSGIDaemonProcess` groups visible here: this server's own, then (after merging) the
    /// main server's.
    pub daemons: Vec<std::sync::Arc<DaemonConfig>>,
    /// How many of `daemons` (the first ones) this server defines itself.
    pub own_daemons: usize,
    /// `WSGIRestrictEmbedded On` (main server only): requests not sent to a daemon fail.
    pub restrict_embedded: bool,
}

impl ServerConfig {
    /// The record of a virtual host (`over`) on top of the main server's (`base`).
    pub fn merge(base: &Self, over: &Self) -> Self {
        let mut script_aliases = over.script_aliases.clone();
        script_aliases.extend(base.script_aliases.iter().cloned());
        Self {
            script_aliases,
            python: base.python.clone(),
            import_scripts: over.import_scripts.clone(),
            socket_prefix: base.socket_prefix.clone(),
            daemons: over.daemons.iter().chain(&base.daemons).cloned().collect(),
            own_daemons: over.own_daemons,
            restrict_embedded: base.restrict_embedded,
        }
    }

    /// The scripts this server has loaded when a process starts: its `WSGIImportScript`s,
    /// then each `WSGIScriptAlias` that names both its process group and its application
    /// group (either as `%{GLOBAL}` or a plain name).
    pub fn preloads(&self) -> impl Iterator<Item = ImportScript> + '_ {
        let from_aliases = self.script_aliases.iter().filter_map(|alias| {
            if !matches!(alias.pattern, AliasPattern::Prefix(_)) {
                return None;
            }
            let process_group = match alias.options.process_group.as_deref()? {
                "%{GLOBAL}" => String::new(),
                name if name.starts_with("%{") => return None,
                name => name.to_owned(),
            };
            let application_group = match alias.options.application_group.as_ref()? {
                GroupSpec::Global => String::new(),
                GroupSpec::Literal(name) => name.clone(),
                _ => return None,
            };
            Some(ImportScript {
                script: alias.target.clone(),
                process_group,
                application_group,
            })
        });
        self.import_scripts.iter().cloned().chain(from_aliases)
    }

    /// The first alias that maps `uri`, with what it maps it to.
    pub fn find_alias(&self, uri: &[u8]) -> Option<(&ScriptAlias, AliasMatch)> {
        self.script_aliases
            .iter()
            .find_map(|alias| alias.apply(uri).map(|m| (alias, m)))
    }
}

/// Settings of one configuration section; `None` means "not set here, inherit".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirConfig {
    /// `WSGICallableObject`.
    pub callable_object: Option<String>,
    /// `WSGIApplicationGroup`.
    pub application_group: Option<GroupSpec>,
    /// `WSGIPassAuthorization`.
    pub pass_authorization: Option<bool>,
    /// `WSGIScriptReloading`.
    pub script_reloading: Option<bool>,
    /// `WSGIChunkedRequest`.
    pub chunked_request: Option<bool>,
    /// `WSGIMapHEADToGET`.
    pub map_head_to_get: Option<HeadMapping>,
    /// `WSGIEnableSendfile`.
    pub enable_sendfile: Option<bool>,
    /// `WSGIProcessGroup`: `%{GLOBAL}` (embedded), a daemon group name, or `%{ENV:VAR}`.
    pub process_group: Option<String>,
    /// `WSGIRestrictProcess`: the daemon groups that may be chosen here.
    pub restrict_process: Option<Vec<String>>,
    /// `WSGIErrorOverride` (daemon mode): Apache's error documents replace error responses.
    pub error_override: Option<bool>,
    /// `WSGITrustedProxyHeaders`, as CGI names.
    pub trusted_proxy_headers: Option<Vec<&'static str>>,
    /// `WSGITrustedProxies`.
    pub trusted_proxies: Option<Vec<proxy::Network>>,
    /// `WSGIAccessScript`.
    pub access_script: Option<AuthScript>,
    /// `WSGIAuthUserScript`.
    pub auth_user_script: Option<AuthScript>,
    /// `WSGIAuthGroupScript`.
    pub auth_group_script: Option<AuthScript>,
    /// `WSGIGroupAuthoritative` (accepted; Apache 2.4's authorization needs no such switch).
    pub group_authoritative: Option<bool>,
    /// `WSGIDispatchScript`.
    pub dispatch_script: Option<AuthScript>,
    /// `WSGIHandlerScript`s: named handlers served by a script's `handle_request`.
    pub handler_scripts: Vec<HandlerScript>,
}

/// `WSGIHandlerScript name script [options]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerScript {
    /// The handler name (`SetHandler NAME`, `AddHandler NAME .ext`, `RewriteRule … [H=NAME]`).
    pub name: String,
    /// The script whose `handle_request` serves the requests.
    pub script: String,
    /// `process-group=`, `application-group=`, `pass-authorization=`.
    pub options: AliasOptions,
}

impl HandlerScript {
    /// Parses the directive's arguments.
    pub fn parse(directive: &'static str, args: &[String]) -> Result<Self, ConfigError> {
        let [name, script, options @ ..] = args else {
            return Err(ConfigError::invalid(
                directive,
                "expects a handler name and a script",
            ));
        };
        Ok(Self {
            name: name.clone(),
            script: script.clone(),
            options: AliasOptions::parse(directive, options)?,
        })
    }
}

/// A Python script used by an Apache access, authentication or authorization hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthScript {
    /// The script file.
    pub script: String,
    /// `application-group=` (default: the main interpreter).
    pub application_group: GroupSpec,
}

impl AuthScript {
    /// Parses `script [application-group=NAME]`.
    pub fn parse(directive: &'static str, args: &[String]) -> Result<Self, ConfigError> {
        let [script, options @ ..] = args else {
            return Err(ConfigError::invalid(directive, "expects a script path"));
        };
        let mut application_group = GroupSpec::Global;
        for option in options {
            match option.split_once('=') {
                Some(("application-group", v)) => {
                    application_group = GroupSpec::parse(directive, v)?;
                }
                _ => {
                    return Err(ConfigError::UnknownOption {
                        directive,
                        option: option.clone(),
                        expected: "application-group",
                    });
                }
            }
        }
        Ok(Self {
            script: script.clone(),
            application_group,
        })
    }
}

/// `WSGIMapHEADToGET`: whether the application sees a HEAD request as GET.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeadMapping {
    /// Always: the application produces the full body and Apache drops it.
    On,
    /// Never.
    Off,
    /// Only when an output filter that looks at the body (DEFLATE, a cache, ...) is active,
    /// because the headers it produces depend on the body.
    #[default]
    Auto,
}

impl HeadMapping {
    /// Parses `On`, `Off` or `Auto` (any case).
    pub fn parse(directive: &'static str, value: &str) -> Result<Self, ConfigError> {
        if value.eq_ignore_ascii_case("auto") {
            Ok(Self::Auto)
        } else {
            parse_on_off(directive, value)
                .map(|on| if on { Self::On } else { Self::Off })
                .map_err(|_| ConfigError::invalid(directive, "must be one of: Off | On | Auto"))
        }
    }
}

impl DirConfig {
    /// `over` (the more specific section) on top of `base`.
    pub fn merge(base: &Self, over: &Self) -> Self {
        Self {
            callable_object: over
                .callable_object
                .clone()
                .or_else(|| base.callable_object.clone()),
            application_group: over
                .application_group
                .clone()
                .or_else(|| base.application_group.clone()),
            pass_authorization: over.pass_authorization.or(base.pass_authorization),
            script_reloading: over.script_reloading.or(base.script_reloading),
            chunked_request: over.chunked_request.or(base.chunked_request),
            map_head_to_get: over.map_head_to_get.or(base.map_head_to_get),
            enable_sendfile: over.enable_sendfile.or(base.enable_sendfile),
            process_group: over
                .process_group
                .clone()
                .or_else(|| base.process_group.clone()),
            error_override: over.error_override.or(base.error_override),
            trusted_proxy_headers: over
                .trusted_proxy_headers
                .clone()
                .or_else(|| base.trusted_proxy_headers.clone()),
            trusted_proxies: over
                .trusted_proxies
                .clone()
                .or_else(|| base.trusted_proxies.clone()),
            access_script: over
                .access_script
                .clone()
                .or_else(|| base.access_script.clone()),
            auth_user_script: over
                .auth_user_script
                .clone()
                .or_else(|| base.auth_user_script.clone()),
            auth_group_script: over
                .auth_group_script
                .clone()
                .or_else(|| base.auth_group_script.clone()),
            group_authoritative: over.group_authoritative.or(base.group_authoritative),
            dispatch_script: over
                .dispatch_script
                .clone()
                .or_else(|| base.dispatch_script.clone()),
            handler_scripts: over
                .handler_scripts
                .iter()
                .chain(&base.handler_scripts)
                .cloned()
                .collect(),
            restrict_process: over
                .restrict_process
                .clone()
                .or_else(|| base.restrict_process.clone()),
        }
    }

    /// `WSGICallableObject name`.
    pub fn set_callable_object(&mut self, value: &str) -> Result<(), ConfigError> {
        self.callable_object = Some(parse_callable_object("WSGICallableObject", value)?);
        Ok(())
    }
}

/// A callable name: a Python identifier, or `%{ENV:VAR}`.
pub fn parse_callable_object(directive: &'static str, value: &str) -> Result<String, ConfigError> {
    let is_identifier = value
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_alphabetic())
        && value.chars().all(|c| c == '_' || c.is_alphanumeric());
    let is_env = value.starts_with("%{ENV:") && value.ends_with('}') && value.len() > 7;
    if is_identifier || is_env {
        Ok(value.to_owned())
    } else {
        Err(ConfigError::invalid(
            directive,
            format!("'{value}' is not a Python identifier (or %{{ENV:VAR}})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_off_is_case_insensitive_and_strict() {
        assert_eq!(parse_on_off("X", "ON"), Ok(true));
        assert_eq!(parse_on_off("X", "off"), Ok(false));
        assert_eq!(
            parse_on_off("WSGIScriptReloading", "yes")
                .unwrap_err()
                .to_string(),
            "WSGIScriptReloading must be one of: Off | On"
        );
    }

    #[test]
    fn optimize_takes_only_0_1_2() {
        let mut p = PythonSettings::default();
        p.set_optimize("2").unwrap();
        assert_eq!(p.optimize, 2);
        assert!(p.set_optimize("3").is_err());
        assert!(p.set_optimize("x").is_err());
    }

    #[test]
    fn python_path_splits_on_colons_and_accumulates() {
        let mut p = PythonSettings::default();
        p.add_path("/a:/b").unwrap();
        p.add_path("/c").unwrap();
        assert_eq!(
            p.path,
            vec![
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/c")
            ]
        );
        assert!(p.add_path(":").is_err());
    }

    #[test]
    fn callable_names_are_identifiers() {
        assert!(parse_callable_object("X", "application").is_ok());
        assert!(parse_callable_object("X", "_app2").is_ok());
        assert!(parse_callable_object("X", "%{ENV:APP}").is_ok());
        assert!(parse_callable_object("X", "my-app").is_err());
        assert!(parse_callable_object("X", "").is_err());
    }

    #[test]
    fn dir_merge_prefers_the_specific_section() {
        let base = DirConfig {
            callable_object: Some("a".into()),
            script_reloading: Some(true),
            ..DirConfig::default()
        };
        let over = DirConfig {
            callable_object: Some("b".into()),
            ..DirConfig::default()
        };
        let merged = DirConfig::merge(&base, &over);
        assert_eq!(merged.callable_object.as_deref(), Some("b"));
        assert_eq!(merged.script_reloading, Some(true));
    }
}
