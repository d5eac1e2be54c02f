//! Building the WSGI `environ` dictionary from the request's CGI variables and the WSGI and
//! `mod_wsgi.*` keys.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::python::setup::API_VERSION;

/// Everything besides the CGI variables that goes into one request's environ.
pub struct Extras<'py, 'a> {
    /// `wsgi.input`.
    pub input: Bound<'py, PyAny>,
    /// `wsgi.errors`.
    pub errors: Bound<'py, PyAny>,
    /// `wsgi.file_wrapper`.
    pub file_wrapper: Bound<'py, PyAny>,
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
    /// `mod_wsgi.process_group`.
    pub process_group: &'a str,
    /// `mod_wsgi.application_group`.
    pub application_group: &'a str,
    /// `mod_wsgi.callable_object`.
    pub callable_object: &'a str,
    /// `mod_wsgi.request_handler`.
    pub request_handler: &'a str,
    /// `mod_wsgi.script_reloading`.
    pub script_reloading: bool,
    /// `mod_wsgi.request_id`.
    pub request_id: &'a str,
    /// `mod_wsgi.request_start`, seconds since the epoch.
    pub request_start: f64,
    /// `mod_wsgi.queue_start`: when a daemon process took the request (0.0 when embedded).
    pub queue_start: f64,
    /// `apache.version`.
    pub apache_version: (u32, u32, u32),
}

/// A CGI value as a `str`: decoded as latin-1, so any byte sequence survives.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    crate::python::latin1(py, bytes)
}

/// Builds the environ. `cgi` is in order; a later entry replaces an earlier one of the same
/// name. `PATH` is left out; `HTTPS` is turned into `wsgi.url_scheme` and left out.
pub fn build<'py, 'a>(
    py: Python<'py>,
    cgi: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    extras: Extras<'py, '_>,
) -> PyResult<Bound<'py, PyDict>> {
    let environ = PyDict::new(py);
    let mut https = false;
    for (key, value) in cgi {
        match key {
            b"PATH" => continue,
            b"HTTPS" => {
                https = value == b"1" || value.eq_ignore_ascii_case(b"on");
                continue;
            }
            _ => environ.set_item(latin1(py, key)?, latin1(py, value)?)?,
        }
    }
    // The CGI table may have had an HTTPS entry set after our decision point; make sure it is
    // not visible.
    let _ = environ.del_item("HTTPS");

    environ.set_item("wsgi.version", (1, 0))?;
    environ.set_item("wsgi.url_scheme", if https { "https" } else { "http" })?;
    environ.set_item("wsgi.input", extras.input)?;
    environ.set_item("wsgi.input_terminated", true)?;
    environ.set_item("wsgi.errors", extras.errors)?;
    environ.set_item("wsgi.file_wrapper", extras.file_wrapper)?;
    environ.set_item("wsgi.multithread", extras.multithread)?;
    environ.set_item("wsgi.multiprocess", extras.multiprocess)?;
    environ.set_item("wsgi.run_once", false)?;

    environ.set_item("mod_wsgi.version", API_VERSION)?;
    environ.set_item("mod_wsgi.process_group", extras.process_group)?;
    environ.set_item("mod_wsgi.application_group", extras.application_group)?;
    environ.set_item("mod_wsgi.callable_object", extras.callable_object)?;
    environ.set_item("mod_wsgi.request_handler", extras.request_handler)?;
    environ.set_item("mod_wsgi.handler_script", "")?;
    environ.set_item(
        "mod_wsgi.script_reloading",
        if extras.script_reloading { "1" } else { "0" },
    )?;
    environ.set_item("mod_wsgi.request_id", extras.request_id)?;
    environ.set_item("mod_wsgi.request_start", extras.request_start)?;
    environ.set_item("mod_wsgi.queue_start", extras.queue_start)?;
    environ.set_item("mod_wsgi.thread_id", thread_number())?;
    if let Some(s) = environ.get_item("SCRIPT_NAME")? {
        environ.set_item("mod_wsgi.script_name", s)?;
    }
    if let Some(p) = environ.get_item("PATH_INFO")? {
        environ.set_item("mod_wsgi.path_info", p)?;
    }
    environ.set_item("apache.version", extras.apache_version)?;
    Ok(environ)
}

/// A small number for this OS thread, stable for its life (`mod_wsgi.thread_id`).
fn thread_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    ID.with(|id| *id)
}
