//! One WSGI request from start to finish: load the script, build the environ, call the
//! application, send what it returns, and always call `close()`.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::environ::{self, Extras};
use super::file_wrapper::FileWrapper;
use super::input::Input;
use super::response::{Finish, StartResponse};
use super::{Backend, report_exception, script};
use crate::python::streams::{LogStream, StreamLevel};

/// What the caller knows about the request.
pub struct RequestSpec<'a> {
    /// The script file.
    pub script: &'a str,
    /// Its modification time (µs since the epoch).
    pub script_mtime: i64,
    /// `WSGIScriptReloading`.
    pub reloading: bool,
    /// The name of the application callable in the script.
    pub callable: &'a str,
    /// CGI variables, in order (later entries win).
    pub cgi: Vec<(&'a [u8], &'a [u8])>,
    /// `mod_wsgi.process_group`.
    pub process_group: &'a str,
    /// `mod_wsgi.application_group`.
    pub application_group: &'a str,
    /// `mod_wsgi.request_handler`.
    pub request_handler: &'a str,
    /// A HEAD request: the body is not sent, so a short body is not an error.
    pub header_only: bool,
    /// Apache's request log id.
    pub request_id: &'a str,
    /// When the request arrived, seconds since the epoch.
    pub request_start: f64,
    /// When a daemon process took the request, seconds since the epoch (0.0 embedded).
    pub queue_start: f64,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
    /// `apache.version`.
    pub apache_version: (u32, u32, u32),
    /// Set once the script has loaded (a daemon's startup-timeout watches it).
    pub loaded: Option<&'a std::sync::atomic::AtomicBool>,
}

/// How a request ended, for the caller to turn into an HTTP status.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response was sent (possibly cut short; that is logged).
    Sent,
    /// The script has no such callable.
    NoCallable,
    /// The application failed before sending anything: the caller answers 500.
    Failed,
}

/// Serves one request.
pub fn serve(py: Python<'_>, spec: &RequestSpec<'_>, backend: Arc<dyn Backend>) -> Outcome {
    let context = || format!("processing WSGI script '{}'", spec.script);
    let module = match script::load(py, spec.script, spec.script_mtime, spec.reloading) {
        Ok(m) => {
            if let Some(loaded) = spec.loaded {
                loaded.store(true, std::sync::atomic::Ordering::Release);
            }
            m
        }
        Err(e) => {
            report_exception(py, e, &format!("loading WSGI script '{}'", spec.script));
            return Outcome::Failed;
        }
    };
    let app = match module.getattr_opt(spec.callable) {
        Ok(Some(app)) => app,
        Ok(None) => {
            tracing::error!(
                "WSGI0011: target WSGI script '{}' does not contain WSGI application '{}'",
                spec.script,
                spec.callable
            );
            return Outcome::NoCallable;
        }
        Err(e) => {
            report_exception(py, e, &context());
            return Outcome::Failed;
        }
    };

    let errors = LogStream::new(
        "wsgi.errors",
        StreamLevel::Error,
        Some(spec.request_id.into()),
    );
    let parts = (|| -> PyResult<_> {
        let errors = Bound::new(py, errors)?;
        let start_response = Bound::new(
            py,
            StartResponse::new(Arc::clone(&backend), spec.header_only),
        )?;
        let extras = Extras {
            input: Bound::new(py, Input::new(Arc::clone(&backend)))?.into_any(),
            errors: errors.clone().into_any(),
            file_wrapper: py.get_type::<FileWrapper>().into_any(),
            multithread: spec.multithread,
            multiprocess: spec.multiprocess,
            process_group: spec.process_group,
            application_group: spec.application_group,
            callable_object: spec.callable,
            request_handler: spec.request_handler,
            script_reloading: spec.reloading,
            request_id: spec.request_id,
            request_start: spec.request_start,
            queue_start: spec.queue_start,
            apache_version: spec.apache_version,
        };
        let environ = environ::build(py, spec.cgi.iter().copied(), extras)?;
        Ok((environ, start_response, errors))
    })();
    let (environ, start_response, errors) = match parts {
        Ok(parts) => parts,
        Err(e) => {
            report_exception(py, e, &context());
            return Outcome::Failed;
        }
    };

    let outcome = run_app(py, &app, &environ, &start_response, &context);
    errors.get().flush_pending(py);
    outcome
}

fn run_app(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    environ: &Bound<'_, pyo3::types::PyDict>,
    start_response: &Bound<'_, StartResponse>,
    context: &dyn Fn() -> String,
) -> Outcome {
    let sr = start_response.get();
    let result = match app.call1((environ, start_response)) {
        Ok(result) => result,
        Err(e) => return failed(py, sr, e, context),
    };

    let sent = match send_file_wrapper(py, &result, sr) {
        Ok(true) => Ok(()),
        Ok(false) => send_iterable(py, &result, sr),
        Err(e) => Err(e),
    };
    // close() is called whatever happened while iterating (PEP 3333).
    // A list or tuple (the usual hello world answer) has no close(): skip the look-up, whose
    // AttributeError costs a formatted message on every request.
    let plain = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
    let close = if plain {
        Ok(None)
    } else {
        result.getattr_opt("close")
    };
    let closed = match close {
        Ok(Some(close)) => close.call0().map(drop),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        if let Err(close_error) = closed {
            report_exception(py, close_error, "closing the response iterable");
        }
        return failed(py, sr, e, context);
    }
    if let Err(e) = closed {
        return failed(py, sr, e, context);
    }

    match sr.finish(py) {
        Ok(Finish::Complete) => Outcome::Sent,
        Ok(Finish::NotStarted) => {
            tracing::error!(
                "WSGI0012: the application returned without calling start_response ({})",
                context()
            );
            Outcome::Failed
        }
        Ok(Finish::Long { declared, excess }) => {
            tracing::warn!(
                "WSGI0014: the application produced {excess} bytes more than its Content-Length \
                 {declared}; they were not sent ({})",
                context()
            );
            Outcome::Sent
        }
        Ok(Finish::Short { declared, sent }) => {
            tracing::error!(
                "WSGI0013: the application sent {sent} bytes but declared Content-Length \
                 {declared}; the connection was closed so the client can tell ({})",
                context()
            );
            Outcome::Sent
        }
        Err(e) => {
            tracing::debug!("response not completed: {e}");
            Outcome::Sent
        }
    }
}

/// `wsgi.file_wrapper` over a regular file is sent straight from the file; `Ok(false)` when
/// `result` is anything else (or the file cannot be sent that way).
fn send_file_wrapper(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    sr: &StartResponse,
) -> PyResult<bool> {
    let Ok(wrapper) = result.cast::<FileWrapper>() else {
        return Ok(false);
    };
    match crate::python::files::regular_file(py, wrapper.get().filelike(py))? {
        Some(file) => sr.send_file(py, file),
        None => Ok(false),
    }
}

/// Sends every item of the application's iterable; stops quietly if the client went away.
///
/// The items of a list or tuple are all there already: they are held by the backend (when it
/// can) and go out after the application has returned, in one write with no extra GIL
/// hand-off. Anything else is sent item by item as it is produced (streaming), with the GIL
/// held where the backend can send a block at once.
fn send_iterable(py: Python<'_>, result: &Bound<'_, PyAny>, sr: &StartResponse) -> PyResult<()> {
    let complete =
        result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "response iterable items must be bytes, not {}",
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        let sent = if complete {
            sr.send_held(py, bytes.as_bytes())?
        } else {
            sr.send_streamed(py, bytes.as_bytes())?
        };
        if !sent {
            tracing::debug!("client connection closed; response abandoned");
            break;
        }
    }
    Ok(())
}

/// Logs the application's exception; before any output the caller answers 500, after it the
/// response is cut short.
fn failed(py: Python<'_>, sr: &StartResponse, e: PyErr, context: &dyn Fn() -> String) -> Outcome {
    report_exception(py, e, &context());
    if sr.head_sent() {
        sr.abort(py);
        Outcome::Sent
    } else {
        Outcome::Failed
    }
}
