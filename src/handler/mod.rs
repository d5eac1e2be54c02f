//! The embedded-mode request path: `WSGIScriptAlias` mapping (translate_name) and the
//! `wsgi-script` content handler, which runs the application inside the Apache child.
//!
//! Called from the hooks in `src/apache/module.rs` with a safe [`Request`]; returns Apache
//! status codes.

mod embedded;
mod proxy;

use crate::apache::{FileKind, Request, sys};
use crate::config::{AliasOptions, GroupContext, GroupSpec, ImportScript, collapse_slashes_bytes};
use crate::daemon::manager::GroupInfo;

pub use embedded::EmbeddedBackend;

/// Handler names this module serves (`r->handler`).
const HANDLERS: &[&[u8]] = &[b"wsgi-script", b"application/x-httpd-wsgi"];

/// Note recording which script alias mapped the request (its index in the server's list).
const ALIAS_NOTE: &std::ffi::CStr = c"mod_wsgi.alias";

/// translate_name: maps a URL covered by `WSGIScriptAlias`/`WSGIScriptAliasMatch` to its script.
pub fn translate(r: &mut Request<'_>) -> i32 {
    let uri = r.uri();
    if !uri.starts_with(b"/") {
        return sys::DECLINED;
    }
    let config = r.server_config();
    let Some((index, found)) = config
        .script_aliases
        .iter()
        .enumerate()
        .find_map(|(i, alias)| alias.apply(uri).map(|m| (i, m)))
    else {
        return sys::DECLINED;
    };
    r.set_filename(&found.filename);
    r.set_handler(c"wsgi-script");
    r.set_note(ALIAS_NOTE, &index.to_string());
    sys::OK as i32
}

/// Loads the start-up scripts meant for this process: `process_group` is `""` in Apache's own
/// children, the group's name in a daemon process. Failures are logged and the process
/// carries on; a script alias to a folder is skipped.
pub fn preload<'a>(process_group: &str, scripts: impl IntoIterator<Item = &'a ImportScript>) {
    let mine = scripts
        .into_iter()
        .filter(|i| i.process_group == process_group);
    for import in mine {
        let path = &import.script;
        if std::path::Path::new(path).is_dir() {
            continue;
        }
        let mtime = crate::wsgi::script::file_mtime(path);
        let loaded = crate::python::runtime::run_in(&import.application_group, |py| {
            match crate::wsgi::script::load(py, path, mtime, true) {
                Ok(_) => true,
                Err(e) => {
                    crate::wsgi::report_exception(py, e, &format!("preloading '{path}'"));
                    false
                }
            }
        });
        match loaded {
            Ok(true) => tracing::debug!(
                "preloaded '{path}' in application group '{}'",
                import.application_group
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("WSGI0024: cannot preload '{path}': {e}"),
        }
    }
}

/// The options of the alias that mapped this request, if one did.
fn alias_options<'r>(r: &Request<'r>) -> Option<&'r AliasOptions> {
    let index: usize = std::str::from_utf8(r.note(ALIAS_NOTE)?)
        .ok()?
        .parse()
        .ok()?;
    r.server_config()
        .script_aliases
        .get(index)
        .map(|a| &a.options)
}

/// The content handler.
pub fn handle(r: &mut Request<'_>) -> i32 {
    let handler = r.handler();
    let handler_script = r
        .dir_config()
        .handler_scripts
        .iter()
        .find(|h| h.name.as_bytes() == handler);
    if handler_script.is_none() && !HANDLERS.contains(&handler) {
        return sys::DECLINED;
    }
    // Made now, so that every line logged for this request carries it.
    r.log_id();
    let dispatch = match r.dir_config().dispatch_script.clone() {
        Some(script) => crate::auth::dispatch(r, &script),
        None => crate::auth::Dispatch::default(),
    };
    if let Some(handler_script) = handler_script {
        return serve_handler_script(r, handler_script, dispatch);
    }
    let script = String::from_utf8_lossy(r.filename()).into_owned();
    match r.file_kind() {
        FileKind::Regular => {}
        FileKind::Missing => {
            tracing::error!("WSGI0020: target WSGI script not found or unable to stat: '{script}'");
            return sys::HTTP_NOT_FOUND as i32;
        }
        FileKind::Directory | FileKind::Other => {
            tracing::error!("WSGI0021: target WSGI script '{script}' is not a regular file");
            return sys::HTTP_FORBIDDEN as i32;
        }
    }
    let options = alias_options(r);
    let daemon = match daemon_group(r, options, dispatch.process_group.as_deref()) {
        Ok(daemon) => daemon,
        Err(status) => return status,
    };
    if options.is_none() && !r.allows_exec_cgi() {
        tracing::error!(
            "WSGI0022: Options ExecCGI is off in this directory: '{script}' (a .wsgi file served \
             by AddHandler needs `Options ExecCGI`)"
        );
        return sys::HTTP_FORBIDDEN as i32;
    }
    if r.rejects_path_info() && !r.path_info().is_empty() {
        return sys::HTTP_NOT_FOUND as i32;
    }
    let target = embedded::Target {
        script,
        mtime: None,
        options,
        callable: dispatch.callable_object,
        application_group: dispatch.application_group,
    };
    embedded::serve(r, &target, daemon.as_deref())
}

/// A request for a `WSGIHandlerScript` handler: the script's `handle_request` serves it,
/// whatever file the URL maps to.
fn serve_handler_script(
    r: &mut Request<'_>,
    handler: &crate::config::HandlerScript,
    dispatch: crate::auth::Dispatch,
) -> i32 {
    let Ok(meta) = std::fs::metadata(&handler.script) else {
        tracing::error!(
            "WSGI0053: handler script '{}' of handler '{}' not found or unable to stat",
            handler.script,
            handler.name
        );
        return sys::HTTP_INTERNAL_SERVER_ERROR as i32;
    };
    let mtime = crate::wsgi::script::mtime_micros(meta.modified().ok());
    let options = Some(&handler.options);
    let daemon = match daemon_group(r, options, dispatch.process_group.as_deref()) {
        Ok(daemon) => daemon,
        Err(status) => return status,
    };
    let target = embedded::Target {
        script: handler.script.clone(),
        mtime: Some(mtime),
        options,
        callable: Some(
            dispatch
                .callable_object
                .unwrap_or_else(|| "handle_request".into()),
        ),
        application_group: dispatch.application_group,
    };
    embedded::serve(r, &target, daemon.as_deref())
}

/// The daemon process group that serves this request (`None`: embedded mode), or the status
/// to fail it with.
fn daemon_group(
    r: &Request<'_>,
    options: Option<&AliasOptions>,
    dispatched: Option<&str>,
) -> Result<Option<std::sync::Arc<GroupInfo>>, i32> {
    let configured = dispatched
        .or(options.and_then(|o| o.process_group.as_deref()))
        .or(r.dir_config().process_group.as_deref())
        .unwrap_or("");
    let name = match configured
        .strip_prefix("%{ENV:")
        .and_then(|v| v.strip_suffix('}'))
    {
        Some(var) => env_lookup(r, var).unwrap_or_default(),
        None => configured.to_owned(),
    };
    let name = if name == "%{GLOBAL}" {
        String::new()
    } else {
        name
    };
    if name.is_empty() {
        if r.server_config().restrict_embedded {
            tracing::error!(
                "WSGI0044: embedded mode is disabled (WSGIRestrictEmbedded On) and the request \
                 names no daemon process group"
            );
            return Err(sys::HTTP_INTERNAL_SERVER_ERROR as i32);
        }
        return Ok(None);
    }
    if let Some(allowed) = &r.dir_config().restrict_process
        && !allowed.contains(&name)
    {
        tracing::error!(
            "WSGI0045: daemon process group '{name}' is not allowed here (WSGIRestrictProcess)"
        );
        return Err(sys::HTTP_INTERNAL_SERVER_ERROR as i32);
    }
    let visible = r.server_config().daemons.iter().any(|d| d.name == name);
    match crate::daemon::manager::group(&name).filter(|_| visible) {
        Some(group) => Ok(Some(group)),
        None => {
            tracing::error!(
                "WSGI0025: no WSGI daemon process called '{name}' has been configured for this \
                 virtual host"
            );
            Err(sys::HTTP_INTERNAL_SERVER_ERROR as i32)
        }
    }
}

/// `SCRIPT_NAME` and `PATH_INFO` of a request: the URI minus the path info, and the path info,
/// with runs of slashes collapsed; a trailing slash of the mount point belongs to `PATH_INFO`.
fn split_script_name(uri: &[u8], path_info: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let script_name = uri.strip_suffix(path_info).unwrap_or(uri);
    let mut script_name = collapse_slashes_bytes(script_name);
    let mut path_info = collapse_slashes_bytes(path_info);
    while script_name.last() == Some(&b'/') {
        script_name.pop();
        path_info.insert(0, b'/');
        path_info = collapse_slashes_bytes(&path_info);
    }
    (script_name, path_info)
}

/// The application group name for this request.
fn application_group(r: &Request<'_>, options: Option<&AliasOptions>, script_name: &str) -> String {
    let spec = options
        .and_then(|o| o.application_group.as_ref())
        .or(r.dir_config().application_group.as_ref())
        .unwrap_or(&GroupSpec::Resource);
    let server_name = r.server_name();
    let host = r.header_in(c"Host").map(String::from_utf8_lossy);
    let lookup = |var: &str| env_lookup(r, var);
    spec.resolve(&GroupContext {
        server_name: &server_name,
        port: r.local_port(),
        host_header: host.as_deref(),
        script_name,
        lookup_env: &lookup,
    })
}

/// `%{ENV:VAR}`: the request's notes, then its environment, then the process environment.
fn env_lookup(r: &Request<'_>, var: &str) -> Option<String> {
    let name = std::ffi::CString::new(var).ok()?;
    r.note(&name)
        .or_else(|| r.env_var(&name))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .or_else(|| std::env::var(var).ok())
}

/// The name of the application callable.
fn callable_object(r: &Request<'_>, options: Option<&AliasOptions>) -> String {
    let configured = options
        .and_then(|o| o.callable_object.as_deref())
        .or(r.dir_config().callable_object.as_deref())
        .unwrap_or("application");
    match configured
        .strip_prefix("%{ENV:")
        .and_then(|v| v.strip_suffix('}'))
    {
        Some(var) => env_lookup(r, var).unwrap_or_else(|| "application".into()),
        None => configured.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::split_script_name;

    fn split(uri: &str, pi: &str) -> (String, String) {
        let (s, p) = split_script_name(uri.as_bytes(), pi.as_bytes());
        (String::from_utf8(s).unwrap(), String::from_utf8(p).unwrap())
    }

    #[test]
    fn root_mount() {
        assert_eq!(split("/", "/"), (String::new(), "/".into()));
        assert_eq!(split("/a/b", "/a/b"), (String::new(), "/a/b".into()));
    }

    #[test]
    fn sub_path_mount() {
        assert_eq!(split("/app", ""), ("/app".into(), String::new()));
        assert_eq!(split("/app/", "/"), ("/app".into(), "/".into()));
        assert_eq!(split("/app/x//y", "/x//y"), ("/app".into(), "/x/y".into()));
        assert_eq!(split("//app//x", "/x"), ("/app".into(), "/x".into()));
    }
}
