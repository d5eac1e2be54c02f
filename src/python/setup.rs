//! What every interpreter gets before it runs application code: `sys.argv`, the log streams,
//! the `mod_wsgi` and `apache` modules, `WSGIPythonPath`, the `signal.signal` guard, a correct
//! `threading.main_thread()`, and the codecs loaded.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule};

use super::runtime;
use super::streams::{LogStream, Restricted, StreamLevel};
use crate::wsgi::file_wrapper::FileWrapper;

/// The mod_wsgi API level this module implements, as `mod_wsgi.version`.
pub const API_VERSION: (u32, u32, u32) = (5, 0, 0);

/// The part of the setup that is plain Python. It runs with these names defined:
/// `group`, `python_path` (list of str), `restrict_signal` (bool).
const SETUP: &std::ffi::CStr = c"
import sys, codecs

sys.argv = ['mod_wsgi']

# Load the common codecs now, so the first request does not pay for it (and so codec lookup
# works in sub-interpreters from the first request).
for _name in ('ascii', 'latin-1', 'utf-8', 'idna'):
    codecs.lookup(_name)

if python_path:
    import site
    _before = list(sys.path)
    for _dir in python_path:
        site.addsitedir(_dir)
    _added = [p for p in sys.path if p not in _before]
    sys.path[:] = _added + [p for p in _before if p not in _added]

import threading, _thread
if group:
    # A sub-interpreter has no main thread of its own: the request thread that created it must
    # not pass for one (libraries guard main-thread-only calls such as signal.set_wakeup_fd with
    # `current_thread() is main_thread()`).
    _main = threading._main_thread
    if _main.ident == _thread.get_ident():
        _main.name = 'mod_wsgi-request-%d' % _main.ident
        _placeholder = threading.Thread(name='MainThread')
        _placeholder._is_stopped = True
        threading._main_thread = _placeholder

if restrict_signal:
    import signal as _signal
    _getsignal = _signal.getsignal
    import mod_wsgi as _mod_wsgi
    def _ignored_signal(signalnum, handler):
        # Imported when needed: traceback brings tokenize, linecache and textwrap, about
        # 230 KiB in every interpreter of every process.
        import traceback as _traceback
        stack = ''.join(_traceback.format_stack()[:-1]).rstrip('\\n')
        _mod_wsgi._log_warning(
            'WSGI0027: signal.signal(%r, ...) ignored: the Apache process owns its signals '
            '(WSGIRestrictSignal On); called from:\\n%s' % (signalnum, stack))
        return _getsignal(signalnum)
    _signal.signal = _ignored_signal
";

/// `mod_wsgi._log_warning(message)`: one warning line per line of `message`, with the GIL
/// released while writing.
#[pyfunction]
#[pyo3(name = "_log_warning")]
fn log_warning(py: Python<'_>, message: &str) {
    py.detach(|| {
        for line in message.lines() {
            tracing::warn!("{line}");
        }
    });
}

/// Sets up the interpreter that is current on this thread, for application group `group`.
pub fn configure(py: Python<'_>, group: &str) {
    if let Err(e) = try_configure(py, group) {
        crate::wsgi::report_exception(py, e, &format!("setting up interpreter '{group}'"));
    }
}

fn try_configure(py: Python<'_>, group: &str) -> PyResult<()> {
    let Some((settings, info)) = runtime::settings() else {
        return Ok(());
    };
    let sys = py.import("sys")?;
    sys.setattr(
        "stderr",
        Bound::new(py, LogStream::new("sys.stderr", StreamLevel::Error, None))?,
    )?;
    if settings.restrict_stdout {
        sys.setattr("stdout", Bound::new(py, Restricted::new("sys.stdout"))?)?;
    } else {
        sys.setattr(
            "stdout",
            Bound::new(py, LogStream::new("sys.stdout", StreamLevel::Error, None))?,
        )?;
    }
    if settings.restrict_stdin {
        sys.setattr("stdin", Bound::new(py, Restricted::new("sys.stdin"))?)?;
    }

    let modules = sys.getattr("modules")?;
    let mod_wsgi = PyModule::new(py, "mod_wsgi")?;
    mod_wsgi.add("version", API_VERSION)?;
    mod_wsgi.add(
        "implementation",
        concat!("mod_wsgi-rs ", env!("CARGO_PKG_VERSION")),
    )?;
    mod_wsgi.add("process_group", info.process_group.as_str())?;
    mod_wsgi.add("application_group", group)?;
    mod_wsgi.add("maximum_processes", info.maximum_processes)?;
    mod_wsgi.add("threads_per_process", info.threads_per_process)?;
    mod_wsgi.add("FileWrapper", py.get_type::<FileWrapper>())?;
    mod_wsgi.add_function(wrap_pyfunction!(log_warning, &mod_wsgi)?)?;
    mod_wsgi.add(
        "_load_lock",
        py.import("_thread")?.call_method0("allocate_lock")?,
    )?;
    modules.set_item("mod_wsgi", &mod_wsgi)?;

    let apache = PyModule::new(py, "apache")?;
    apache.add("version", info.apache_version)?;
    apache.add("description", info.server_description.as_str())?;
    apache.add("maximum_processes", info.maximum_processes)?;
    apache.add("threads_per_process", info.threads_per_process)?;
    modules.set_item("apache", &apache)?;

    let globals = PyDict::new(py);
    globals.set_item("__builtins__", py.import("builtins")?)?;
    globals.set_item("group", group)?;
    let path: Vec<String> = settings
        .path
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    globals.set_item("python_path", PyList::new(py, path)?)?;
    globals.set_item("restrict_signal", settings.restrict_signal)?;
    py.run(SETUP, Some(&globals), None)?;
    Ok(())
}
