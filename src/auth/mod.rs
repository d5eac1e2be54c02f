//! Access control, authentication, authorization and dispatch in Python: the scripts of
//! `WSGIAccessScript` (`allow_access`), `WSGIAuthUserScript` (`check_password`,
//! `get_realm_hash`, for Apache's `wsgi` authn provider) and `WSGIAuthGroupScript`
//! (`groups_for_user`, for the `wsgi-group` authz provider), and `WSGIDispatchScript`
//! (`process_group`, `application_group`, `callable_object`: per-request choices).
//!
//! Called from the hooks in `src/apache/auth.rs` on the Apache worker thread serving the
//! request, whatever the request's process group: the scripts run in the Apache child, in the
//! interpreter of their `application-group` (main by default). A script that fails denies the
//! request and logs the traceback; scripts are reloaded when they change.

use std::ffi::CStr;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::apache::{Request, RequestIo, sys};
use crate::config::{AuthScript, GroupContext};
use crate::python::runtime;
use crate::python::streams::{LogStream, StreamLevel};
use crate::wsgi::environ::latin1;
use crate::wsgi::{report_exception, script};

/// `mod_ssl.is_https` and `mod_ssl.var_lookup` for an access script's environ.
#[pyclass(frozen, module = "mod_wsgi", name = "SslInfo")]
struct SslInfo {
    io: RequestIo,
}

#[pymethods]
impl SslInfo {
    fn is_https(&self, py: Python<'_>) -> PyResult<bool> {
        let io = &self.io;
        py.detach(|| io.ssl_is_https())
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }

    fn var_lookup(&self, py: Python<'_>, name: &str) -> PyResult<Option<String>> {
        let io = &self.io;
        py.detach(|| io.ssl_var(name))
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }
}

/// What a Python hook answered.
enum Answer {
    /// `True`.
    Yes,
    /// `False`.
    No,
    /// `None`.
    Unknown,
    /// A string (a replacement user name, or a realm hash).
    Text(String),
    /// A list of strings (groups).
    List(Vec<String>),
    /// The script or the call failed (logged).
    Failed,
}

/// The access_checker hook: `allow_access(environ, host)`.
pub fn access(r: &mut Request<'_>) -> i32 {
    let Some(script) = r.dir_config().access_script.clone() else {
        return sys::DECLINED;
    };
    let host = r.remote_host();
    match call(r, &script, "allow_access", CallArgs::Host(host), true) {
        Answer::Yes => sys::OK as i32,
        Answer::Unknown => sys::DECLINED,
        Answer::No | Answer::Failed | Answer::Text(_) | Answer::List(_) => {
            sys::HTTP_FORBIDDEN as i32
        }
    }
}

/// How the `wsgi` authn provider answers.
pub enum Authn {
    /// Granted; with a replacement user name when the script returned one.
    Granted(Option<String>),
    /// Wrong password.
    Denied,
    /// No such user.
    NotFound,
    /// The user exists; here is the realm hash (digest authentication).
    Hash(String),
    /// The script failed.
    Error,
}

/// `check_password(environ, user, password)`.
pub fn check_password(r: &mut Request<'_>, user: &str, password: &str) -> Authn {
    let Some(script) = r.dir_config().auth_user_script.clone() else {
        return Authn::Error;
    };
    let args = CallArgs::Password(user.to_owned(), password.to_owned());
    match call(r, &script, "check_password", args, false) {
        Answer::Yes => Authn::Granted(None),
        Answer::Text(name) => Authn::Granted(Some(name)),
        Answer::No => Authn::Denied,
        Answer::Unknown => Authn::NotFound,
        Answer::Failed | Answer::List(_) => Authn::Error,
    }
}

/// `get_realm_hash(environ, user, realm)`.
pub fn realm_hash(r: &mut Request<'_>, user: &str, realm: &str) -> Authn {
    let Some(script) = r.dir_config().auth_user_script.clone() else {
        return Authn::Error;
    };
    let args = CallArgs::Realm(user.to_owned(), realm.to_owned());
    match call(r, &script, "get_realm_hash", args, false) {
        Answer::Text(hash) => Authn::Hash(hash),
        Answer::Unknown => Authn::NotFound,
        _ => Authn::Error,
    }
}

/// How the `wsgi-group` authz provider answers.
pub enum Authz {
    /// The user is in one of the required groups.
    Granted,
    /// It is not.
    Denied,
    /// No user has authenticated yet.
    NoUser,
    /// The script failed.
    Error,
}

/// `Require wsgi-group g1 g2 …`: `groups_for_user(environ, user)` must name one of them.
pub fn check_groups(r: &mut Request<'_>, require_line: &CStr) -> Authz {
    let Some(user) = r.user() else {
        return Authz::NoUser;
    };
    let Some(script) = r.dir_config().auth_group_script.clone() else {
        return Authz::Error;
    };
    let required: Vec<String> = require_line
        .to_string_lossy()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    match call(r, &script, "groups_for_user", CallArgs::User(user), false) {
        Answer::List(groups) if groups.iter().any(|g| required.contains(g)) => Authz::Granted,
        Answer::List(_) | Answer::Unknown | Answer::No => Authz::Denied,
        _ => Authz::Error,
    }
}

/// What `WSGIDispatchScript` chose for a request (`None`: keep the configured choice).
#[derive(Debug, Default)]
pub struct Dispatch {
    /// `process_group(environ)`.
    pub process_group: Option<String>,
    /// `application_group(environ)`.
    pub application_group: Option<String>,
    /// `callable_object(environ)`.
    pub callable_object: Option<String>,
}

/// Runs the dispatch script's optional `process_group`, `application_group` and
/// `callable_object` functions; each returns a name or `None`.
pub fn dispatch(r: &mut Request<'_>, script: &AuthScript) -> Dispatch {
    let mut pick = |function: &str| match call(r, script, function, CallArgs::Environ, false) {
        Answer::Text(name) => Some(name),
        _ => None,
    };
    Dispatch {
        process_group: pick("process_group"),
        application_group: pick("application_group"),
        callable_object: pick("callable_object"),
    }
}

enum CallArgs {
    /// Just the environ; the function is optional.
    Environ,
    Host(Option<String>),
    Password(String, String),
    Realm(String, String),
    User(String),
}

/// Runs `function` of `script` with an environ built from the request.
fn call(
    r: &mut Request<'_>,
    script: &AuthScript,
    function: &str,
    args: CallArgs,
    ssl: bool,
) -> Answer {
    r.add_common_vars();
    let request_id = r.log_id();
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = r
        .subprocess_env()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    for (k, v) in [
        (&b"REQUEST_METHOD"[..], r.method()),
        (b"REQUEST_URI", r.unparsed_uri()),
        (b"QUERY_STRING", r.args()),
        (b"SERVER_PROTOCOL", r.protocol()),
    ] {
        vars.push((k.to_vec(), v.to_vec()));
    }
    let server_name = r.server_name();
    let lookup = |_: &str| None;
    let uri = String::from_utf8_lossy(r.uri()).into_owned();
    let group = script.application_group.resolve(&GroupContext {
        server_name: &server_name,
        port: r.local_port(),
        host_header: None,
        script_name: &uri,
        lookup_env: &lookup,
    });
    let path = script.script.clone();
    let mtime = crate::wsgi::script::file_mtime(&path);

    let outcome = r.with_io(|io| {
        runtime::run_in(&group, |py| {
            let result = (|| -> PyResult<Answer> {
                let module = script::load(py, &path, mtime, true)?;
                let Some(f) = module.getattr_opt(function)? else {
                    if matches!(args, CallArgs::Environ) {
                        return Ok(Answer::Unknown);
                    }
                    tracing::error!(
                        "WSGI0052: script '{path}' has no function '{function}' for the hook"
                    );
                    return Ok(Answer::Failed);
                };
                let environ = PyDict::new(py);
                for (k, v) in &vars {
                    if k.as_slice() == b"PATH" {
                        continue;
                    }
                    environ.set_item(latin1(py, k)?, latin1(py, v)?)?;
                }
                let errors =
                    LogStream::new("wsgi.errors", StreamLevel::Error, Some(request_id.clone()));
                environ.set_item("wsgi.errors", Bound::new(py, errors)?)?;
                environ.set_item("mod_wsgi.application_group", group.as_str())?;
                if ssl {
                    let info = Bound::new(py, SslInfo { io: io.clone() })?;
                    environ.set_item("mod_ssl.is_https", info.getattr("is_https")?)?;
                    environ.set_item("mod_ssl.var_lookup", info.getattr("var_lookup")?)?;
                }
                let returned = match &args {
                    CallArgs::Environ => f.call1((environ,))?,
                    CallArgs::Host(host) => f.call1((environ, host.clone()))?,
                    CallArgs::Password(user, password) => {
                        f.call1((environ, user.as_str(), password.as_str()))?
                    }
                    CallArgs::Realm(user, realm) => {
                        f.call1((environ, user.as_str(), realm.as_str()))?
                    }
                    CallArgs::User(user) => f.call1((environ, user.as_str()))?,
                };
                Ok(interpret(&returned))
            })();
            result.unwrap_or_else(|e| {
                report_exception(py, e, &format!("calling {function}() of '{path}'"));
                Answer::Failed
            })
        })
    });
    outcome.unwrap_or_else(|e| {
        tracing::error!("WSGI0023: cannot run '{}': {e}", script.script);
        Answer::Failed
    })
}

fn interpret(value: &Bound<'_, PyAny>) -> Answer {
    if value.is_none() {
        return Answer::Unknown;
    }
    if let Ok(b) = value.extract::<bool>() {
        return if b { Answer::Yes } else { Answer::No };
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Answer::Text(s.to_string_lossy().into_owned());
    }
    if let Ok(bytes) = value.extract::<Vec<u8>>() {
        return Answer::Text(String::from_utf8_lossy(&bytes).into_owned());
    }
    match value.try_iter() {
        Ok(items) => Answer::List(
            items
                .filter_map(Result::ok)
                .filter_map(|g| g.extract::<String>().ok())
                .collect(),
        ),
        Err(_) => Answer::Failed,
    }
}
