//! The `WSGI*` directives this module accepts: their names, where they may be written, and how
//! their arguments change the configuration records.

use std::ffi::CStr;

use super::{
    AuthScript, ConfigError, DaemonConfig, DaemonNames, DirConfig, GroupSpec, HandlerScript,
    HeadMapping, ImportScript, ScriptAlias, ServerConfig, parse_on_off,
};

/// Where a directive may appear (Apache's `req_override` for it is derived from this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Main server configuration only.
    Global,
    /// Server configuration and `<VirtualHost>`.
    Server,
    /// Server, `<VirtualHost>` and directory sections.
    Directory,
    /// Everywhere, including `.htaccess` with `AllowOverride FileInfo`.
    FileInfo,
    /// Directory sections and `.htaccess` with `AllowOverride AuthConfig`.
    AuthConfig,
}

/// One directive of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Directive {
    /// `WSGIScriptAlias URL-path file [options]`.
    ScriptAlias,
    /// `WSGIScriptAliasMatch regex file [options]`.
    ScriptAliasMatch,
    /// `WSGICallableObject name`.
    CallableObject,
    /// `WSGIApplicationGroup name`.
    ApplicationGroup,
    /// `WSGIPassAuthorization On|Off`.
    PassAuthorization,
    /// `WSGIScriptReloading On|Off`.
    ScriptReloading,
    /// `WSGIChunkedRequest On|Off`.
    ChunkedRequest,
    /// `WSGIMapHEADToGET On|Off|Auto`.
    MapHeadToGet,
    /// `WSGIEnableSendfile On|Off`.
    EnableSendfile,
    /// `WSGIPythonHome prefix`.
    PythonHome,
    /// `WSGIPythonPath dir[:dir]`.
    PythonPath,
    /// `WSGIPythonOptimize 0|1|2`.
    PythonOptimize,
    /// `WSGIDontWriteBytecode On|Off`.
    DontWriteBytecode,
    /// `WSGIRestrictStdout On|Off`.
    RestrictStdout,
    /// `WSGIRestrictStdin On|Off`.
    RestrictStdin,
    /// `WSGIRestrictSignal On|Off`.
    RestrictSignal,
    /// `WSGIDestroyInterpreter On|Off`.
    DestroyInterpreter,
    /// `WSGISocketPrefix path`: where daemon-mode sockets go.
    SocketPrefix,
    /// `WSGIImportScript script process-group=… application-group=…`.
    ImportScript,
    /// `WSGIDaemonProcess name option=value …`.
    DaemonProcess,
    /// `WSGIProcessGroup name`.
    ProcessGroup,
    /// `WSGIRestrictEmbedded On|Off`.
    RestrictEmbedded,
    /// `WSGIRestrictProcess group …`.
    RestrictProcess,
    /// `WSGIErrorOverride On|Off`.
    ErrorOverride,
    /// `WSGITrustedProxyHeaders header …`.
    TrustedProxyHeaders,
    /// `WSGITrustedProxies address-or-network …`.
    TrustedProxies,
    /// `WSGIAccessScript script [application-group=…]`.
    AccessScript,
    /// `WSGIAuthUserScript script [application-group=…]`.
    AuthUserScript,
    /// `WSGIAuthGroupScript script [application-group=…]`.
    AuthGroupScript,
    /// `WSGIGroupAuthoritative On|Off`.
    GroupAuthoritative,
    /// `WSGIDispatchScript script [application-group=…]`.
    DispatchScript,
    /// `WSGIHandlerScript name script [options]`.
    HandlerScript,
}

impl Directive {
    /// Every directive, in table order.
    pub const ALL: &'static [Directive] = &[
        Self::ScriptAlias,
        Self::ScriptAliasMatch,
        Self::CallableObject,
        Self::ApplicationGroup,
        Self::PassAuthorization,
        Self::ScriptReloading,
        Self::ChunkedRequest,
        Self::MapHeadToGet,
        Self::EnableSendfile,
        Self::PythonHome,
        Self::PythonPath,
        Self::PythonOptimize,
        Self::DontWriteBytecode,
        Self::RestrictStdout,
        Self::RestrictStdin,
        Self::RestrictSignal,
        Self::DestroyInterpreter,
        Self::SocketPrefix,
        Self::ImportScript,
        Self::DaemonProcess,
        Self::ProcessGroup,
        Self::RestrictEmbedded,
        Self::RestrictProcess,
        Self::ErrorOverride,
        Self::TrustedProxyHeaders,
        Self::TrustedProxies,
        Self::AccessScript,
        Self::AuthUserScript,
        Self::AuthGroupScript,
        Self::GroupAuthoritative,
        Self::DispatchScript,
        Self::HandlerScript,
    ];

    /// The directive's name as written in `httpd.conf`, NUL-terminated for Apache's table.
    pub const fn c_name(self) -> &'static CStr {
        match self {
            Self::ScriptAlias => c"WSGIScriptAlias",
            Self::ScriptAliasMatch => c"WSGIScriptAliasMatch",
            Self::CallableObject => c"WSGICallableObject",
            Self::ApplicationGroup => c"WSGIApplicationGroup",
            Self::PassAuthorization => c"WSGIPassAuthorization",
            Self::ScriptReloading => c"WSGIScriptReloading",
            Self::ChunkedRequest => c"WSGIChunkedRequest",
            Self::MapHeadToGet => c"WSGIMapHEADToGET",
            Self::EnableSendfile => c"WSGIEnableSendfile",
            Self::PythonHome => c"WSGIPythonHome",
            Self::PythonPath => c"WSGIPythonPath",
            Self::PythonOptimize => c"WSGIPythonOptimize",
            Self::DontWriteBytecode => c"WSGIDontWriteBytecode",
            Self::RestrictStdout => c"WSGIRestrictStdout",
            Self::RestrictStdin => c"WSGIRestrictStdin",
            Self::RestrictSignal => c"WSGIRestrictSignal",
            Self::DestroyInterpreter => c"WSGIDestroyInterpreter",
            Self::SocketPrefix => c"WSGISocketPrefix",
            Self::ImportScript => c"WSGIImportScript",
            Self::DaemonProcess => c"WSGIDaemonProcess",
            Self::ProcessGroup => c"WSGIProcessGroup",
            Self::RestrictEmbedded => c"WSGIRestrictEmbedded",
            Self::RestrictProcess => c"WSGIRestrictProcess",
            Self::ErrorOverride => c"WSGIErrorOverride",
            Self::TrustedProxyHeaders => c"WSGITrustedProxyHeaders",
            Self::TrustedProxies => c"WSGITrustedProxies",
            Self::AccessScript => c"WSGIAccessScript",
            Self::AuthUserScript => c"WSGIAuthUserScript",
            Self::AuthGroupScript => c"WSGIAuthGroupScript",
            Self::GroupAuthoritative => c"WSGIGroupAuthoritative",
            Self::DispatchScript => c"WSGIDispatchScript",
            Self::HandlerScript => c"WSGIHandlerScript",
        }
    }

    /// The directive's name as written in `httpd.conf`.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or("WSGI?")
    }

    /// Whether the directive names a script that runs in Apache's own children whatever the
    /// process group (access, authentication, authorization and dispatch scripts): Python must
    /// start there even with `WSGIRestrictEmbedded On`.
    pub const fn runs_in_apache_children(self) -> bool {
        matches!(
            self,
            Self::AccessScript
                | Self::AuthUserScript
                | Self::AuthGroupScript
                | Self::DispatchScript
        )
    }

    /// Where it may be written.
    pub const fn scope(self) -> Scope {
        match self {
            Self::ScriptAlias
            | Self::ScriptAliasMatch
            | Self::ImportScript
            | Self::DaemonProcess => Scope::Server,
            Self::ApplicationGroup
            | Self::ProcessGroup
            | Self::RestrictProcess
            | Self::DispatchScript
            | Self::HandlerScript => Scope::Directory,
            Self::CallableObject
            | Self::PassAuthorization
            | Self::ScriptReloading
            | Self::ChunkedRequest
            | Self::MapHeadToGet
            | Self::EnableSendfile
            | Self::ErrorOverride
            | Self::TrustedProxyHeaders
            | Self::TrustedProxies => Scope::FileInfo,
            Self::AccessScript
            | Self::AuthUserScript
            | Self::AuthGroupScript
            | Self::GroupAuthoritative => Scope::AuthConfig,
            Self::PythonHome
            | Self::PythonPath
            | Self::PythonOptimize
            | Self::DontWriteBytecode
            | Self::RestrictStdout
            | Self::RestrictStdin
            | Self::RestrictSignal
            | Self::DestroyInterpreter
            | Self::SocketPrefix
            | Self::RestrictEmbedded => Scope::Global,
        }
    }

    /// One line of usage, shown by `apache2 -h`-style listings and in argument-count errors.
    pub fn usage(self) -> &'static str {
        match self {
            Self::ScriptAlias => "URL-path file-or-folder [process-group=…] [application-group=…]",
            Self::ScriptAliasMatch => "regex file-or-folder [options]",
            Self::ImportScript => "script process-group=… application-group=…",
            Self::DaemonProcess => "name [processes=N] [threads=N] [user=…] [option=value …]",
            Self::ProcessGroup => "%{GLOBAL} | %{ENV:VAR} | name of a WSGIDaemonProcess group",
            Self::RestrictProcess => "names of the daemon groups allowed here",
            Self::TrustedProxyHeaders => "X-Forwarded-For X-Forwarded-Proto … (headers to trust)",
            Self::TrustedProxies => "addresses or networks (10.0.0.0/8) of trusted proxies",
            Self::AccessScript
            | Self::AuthUserScript
            | Self::AuthGroupScript
            | Self::DispatchScript => "script [application-group=…]",
            Self::HandlerScript => "handler-name script [process-group=…] [application-group=…]",
            Self::CallableObject => "name of the WSGI callable in the script (default application)",
            Self::ApplicationGroup => {
                "%{GLOBAL} | %{SERVER} | %{HOST} | %{RESOURCE} | %{ENV:VAR} | name"
            }
            Self::PythonHome => "prefix of the Python installation or virtual environment",
            Self::PythonPath => "folders to add to sys.path, separated by ':'",
            Self::PythonOptimize => "0, 1 or 2",
            Self::SocketPrefix => "path prefix for daemon-mode sockets",
            Self::MapHeadToGet => "On | Off | Auto",
            _ => "On | Off",
        }
    }

    /// Applies the directive's arguments. `server` is the record of the server or virtual host
    /// being configured, `dir` the record of the enclosing section; `daemon_names` holds the
    /// daemon group names of the whole configuration read so far.
    pub fn apply(
        self,
        args: &[String],
        server: &mut ServerConfig,
        dir: &mut DirConfig,
        daemon_names: &mut DaemonNames,
    ) -> Result<(), ConfigError> {
        let name = self.name();
        match self {
            Self::ScriptAlias | Self::ScriptAliasMatch => {
                let alias = ScriptAlias::parse(name, args, self == Self::ScriptAliasMatch)?;
                server.script_aliases.push(alias);
                return Ok(());
            }
            Self::ImportScript => {
                let import = ImportScript::parse(name, args)?;
                let group = &import.process_group;
                if !group.is_empty() && !daemon_names.contains(group) {
                    return Err(ConfigError::invalid(
                        name,
                        format!(
                            "process-group={group}: no WSGIDaemonProcess of that name is \
                             defined before this line"
                        ),
                    ));
                }
                server.import_scripts.push(import);
                return Ok(());
            }
            Self::DaemonProcess => {
                let daemon = DaemonConfig::parse(args)?;
                if !daemon_names.insert(daemon.name.clone()) {
                    return Err(ConfigError::invalid(
                        name,
                        format!(
                            "the name '{}' duplicates an earlier daemon group",
                            daemon.name
                        ),
                    ));
                }
                server
                    .daemons
                    .insert(server.own_daemons, std::sync::Arc::new(daemon));
                server.own_daemons += 1;
                return Ok(());
            }
            Self::AccessScript
            | Self::AuthUserScript
            | Self::AuthGroupScript
            | Self::DispatchScript => {
                let script = Some(AuthScript::parse(name, args)?);
                match self {
                    Self::AccessScript => dir.access_script = script,
                    Self::AuthUserScript => dir.auth_user_script = script,
                    Self::AuthGroupScript => dir.auth_group_script = script,
                    _ => dir.dispatch_script = script,
                }
                return Ok(());
            }
            Self::HandlerScript => {
                dir.handler_scripts.push(HandlerScript::parse(name, args)?);
                return Ok(());
            }
            Self::TrustedProxyHeaders => {
                if args.is_empty() {
                    return Err(ConfigError::invalid(
                        name,
                        "expects one or more header names",
                    ));
                }
                let list = dir.trusted_proxy_headers.get_or_insert_with(Vec::new);
                list.extend(args.iter().filter_map(|h| super::proxy::cgi_name(h)));
                return Ok(());
            }
            Self::TrustedProxies => {
                if args.is_empty() {
                    return Err(ConfigError::invalid(name, "expects addresses or networks"));
                }
                let parsed = args
                    .iter()
                    .map(|a| super::proxy::Network::parse(name, a))
                    .collect::<Result<Vec<_>, _>>()?;
                dir.trusted_proxies
                    .get_or_insert_with(Vec::new)
                    .extend(parsed);
                return Ok(());
            }
            Self::RestrictProcess => {
                if args.is_empty() {
                    return Err(ConfigError::invalid(
                        name,
                        "expects one or more group names",
                    ));
                }
                dir.restrict_process = Some(args.to_vec());
                return Ok(());
            }
            _ => {}
        }
        let [value] = args else {
            return Err(ConfigError::invalid(
                name,
                format!("takes one argument ({}), got {}", self.usage(), args.len()),
            ));
        };
        let python = &mut server.python;
        match self {
            Self::CallableObject => dir.set_callable_object(value)?,
            Self::ApplicationGroup => dir.application_group = Some(GroupSpec::parse(name, value)?),
            Self::PassAuthorization => dir.pass_authorization = Some(parse_on_off(name, value)?),
            Self::ScriptReloading => dir.script_reloading = Some(parse_on_off(name, value)?),
            Self::ChunkedRequest => dir.chunked_request = Some(parse_on_off(name, value)?),
            Self::MapHeadToGet => dir.map_head_to_get = Some(HeadMapping::parse(name, value)?),
            Self::EnableSendfile => dir.enable_sendfile = Some(parse_on_off(name, value)?),
            Self::PythonHome => python.set_home(value)?,
            Self::PythonPath => python.add_path(value)?,
            Self::PythonOptimize => python.set_optimize(value)?,
            Self::DontWriteBytecode => python.dont_write_bytecode = parse_on_off(name, value)?,
            Self::RestrictStdout => python.restrict_stdout = parse_on_off(name, value)?,
            Self::RestrictStdin => python.restrict_stdin = parse_on_off(name, value)?,
            Self::RestrictSignal => python.restrict_signal = parse_on_off(name, value)?,
            Self::DestroyInterpreter => python.destroy_interpreter = parse_on_off(name, value)?,
            Self::SocketPrefix => {
                if value.is_empty() {
                    return Err(ConfigError::invalid(name, "the prefix is empty"));
                }
                server.socket_prefix = Some(value.clone());
            }
            Self::ProcessGroup => {
                let env_ok = value.starts_with("%{ENV:") && value.ends_with('}') && value.len() > 7;
                if value.starts_with("%{") && value != "%{GLOBAL}" && !env_ok {
                    return Err(ConfigError::invalid(
                        name,
                        format!("'{value}': use %{{GLOBAL}}, %{{ENV:VAR}} or a group name"),
                    ));
                }
                dir.process_group = Some(value.clone());
            }
            Self::RestrictEmbedded => server.restrict_embedded = parse_on_off(name, value)?,
            Self::ErrorOverride => dir.error_override = Some(parse_on_off(name, value)?),
            Self::GroupAuthoritative => dir.group_authoritative = Some(parse_on_off(name, value)?),
            Self::ScriptAlias
            | Self::ScriptAliasMatch
            | Self::ImportScript
            | Self::DaemonProcess
            | Self::RestrictProcess
            | Self::TrustedProxyHeaders
            | Self::TrustedProxies
            | Self::AccessScript
            | Self::AuthUserScript
            | Self::AuthGroupScript
            | Self::DispatchScript
            | Self::HandlerScript => unreachable!("handled above"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(d: Directive, args: &[&str]) -> Result<(ServerConfig, DirConfig), ConfigError> {
        let (mut s, mut dir) = (ServerConfig::default(), DirConfig::default());
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        d.apply(&args, &mut s, &mut dir, &mut DaemonNames::new())
            .map(|()| (s, dir))
    }

    #[test]
    fn every_directive_has_a_unique_wsgi_name() {
        let mut names: Vec<_> = Directive::ALL.iter().map(|d| d.name()).collect();
        assert!(names.iter().all(|n| n.starts_with("WSGI")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Directive::ALL.len());
    }

    #[test]
    fn single_argument_directives_check_their_count() {
        let err = apply(Directive::PythonOptimize, &["1", "2"]).unwrap_err();
        assert!(err.to_string().contains("takes one argument"), "{err}");
        assert!(apply(Directive::RestrictStdout, &[]).is_err());
    }

    #[test]
    fn values_land_in_the_right_record() {
        let (s, _) = apply(Directive::PythonHome, &["/venv"]).unwrap();
        assert_eq!(
            s.python.home.as_deref(),
            Some(std::path::Path::new("/venv"))
        );
        let (_, d) = apply(Directive::ApplicationGroup, &["%{GLOBAL}"]).unwrap();
        assert_eq!(d.application_group, Some(GroupSpec::Global));
        let (s, _) = apply(Directive::ScriptAlias, &["/", "/srv/a.wsgi"]).unwrap();
        assert_eq!(s.script_aliases.len(), 1);
        let (s, _) = apply(Directive::RestrictSignal, &["Off"]).unwrap();
        assert!(!s.python.restrict_signal);
    }
}
