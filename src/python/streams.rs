//! Python stream objects that write to Apache's error log: `sys.stdout`, `sys.stderr` and
//! `wsgi.errors` are [`LogStream`]s; `WSGIRestrictStdout`/`WSGIRestrictStdin` install
//! [`Restricted`] objects instead.
//!
//! Output is line-buffered: each complete line becomes one error-log entry (at ERR by default),
//! a partial line waits for its newline, `flush()` or `close()`. Lines written by a thread that
//! is serving a request carry that request's id (see `src/apache/log.rs`); a stream made for one
//! request (`wsgi.errors`) carries its id from any thread.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

/// The error-log level a stream writes at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamLevel {
    /// `[wsgi:error]`.
    Error,
    /// `[wsgi:info]`.
    Info,
}

/// A file-like object whose lines go to the error log.
#[pyclass(frozen, module = "mod_wsgi", name = "Log")]
pub struct LogStream {
    name: &'static str,
    level: StreamLevel,
    request_id: Option<String>,
    pending: Mutex<Vec<u8>>,
    closed: AtomicBool,
}

impl LogStream {
    /// A stream named `name` (shown by `repr`) writing at `level`, for one request when
    /// `request_id` is given.
    pub fn new(name: &'static str, level: StreamLevel, request_id: Option<String>) -> Self {
        Self {
            name,
            level,
            request_id,
            pending: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    fn append(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyValueError::new_err("I/O operation on closed file"));
        }
        let lines = {
            let mut pending = self.pending.lock();
            pending.extend_from_slice(data);
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(end) => {
                    let rest = pending.split_off(end + 1);
                    std::mem::replace(&mut *pending, rest)
                }
                None => return Ok(()),
            }
        };
        self.emit(py, &lines);
        Ok(())
    }

    /// Logs `text` line by line, with the GIL released.
    fn emit(&self, py: Python<'_>, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let id = self.request_id.as_deref();
        let level = self.level;
        py.detach(|| {
            for line in text.strip_suffix('\n').unwrap_or(&text).split('\n') {
                match (level, id) {
                    (StreamLevel::Error, Some(id)) => tracing::error!(request_id = id, "{line}"),
                    (StreamLevel::Error, None) => tracing::error!("{line}"),
                    (StreamLevel::Info, Some(id)) => tracing::info!(request_id = id, "{line}"),
                    (StreamLevel::Info, None) => tracing::info!("{line}"),
                }
            }
        });
    }

    /// Writes out a partial last line.
    pub fn flush_pending(&self, py: Python<'_>) {
        let rest = std::mem::take(&mut *self.pending.lock());
        if !rest.is_empty() {
            self.emit(py, &rest);
        }
    }
}

#[pymethods]
impl LogStream {
    /// Writes `str` or bytes-like data; returns how much was taken.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        if let Ok(s) = data.cast::<PyString>() {
            let s = s.to_cow()?;
            self.append(py, s.as_bytes())?;
            Ok(s.chars().count())
        } else if let Ok(b) = data.cast::<PyBytes>() {
            self.append(py, b.as_bytes())?;
            Ok(b.as_bytes().len())
        } else if let Ok(b) = data.cast::<PyByteArray>() {
            let bytes = b.to_vec();
            self.append(py, &bytes)?;
            Ok(bytes.len())
        } else if let Ok(view) = data.call_method0("tobytes") {
            let b = view.cast::<PyBytes>()?;
            self.append(py, b.as_bytes())?;
            Ok(b.as_bytes().len())
        } else {
            Err(PyTypeError::new_err(format!(
                "write() argument must be str or bytes, not {}",
                data.get_type().name()?
            )))
        }
    }

    /// Writes each item of an iterable.
    fn writelines(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(py, &line?)?;
        }
        Ok(())
    }

    /// Sends a partial last line to the log.
    fn flush(&self, py: Python<'_>) {
        self.flush_pending(py);
    }

    /// Flushes and refuses further writes.
    fn close(&self, py: Python<'_>) {
        self.flush_pending(py);
        self.closed.store(true, Ordering::Release);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[getter]
    fn name(&self) -> &'static str {
        self.name
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }

    #[getter]
    fn errors(&self) -> &'static str {
        "replace"
    }

    /// The binary side: the same object, which takes bytes too.
    #[getter]
    fn buffer<'py>(slf: &Bound<'py, Self>) -> Bound<'py, Self> {
        slf.clone()
    }

    fn isatty(&self) -> bool {
        false
    }

    fn readable(&self) -> bool {
        false
    }

    fn seekable(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    fn fileno(&self) -> PyResult<i32> {
        Err(PyOSError::new_err(format!(
            "{} has no file descriptor",
            self.name
        )))
    }

    fn __repr__(&self) -> String {
        format!("<mod_wsgi.Log {}>", self.name)
    }
}

/// Stands in for `sys.stdin`/`sys.stdout` when the configuration forbids using them: any
/// attribute raises `OSError` naming the stream.
#[pyclass(frozen, module = "mod_wsgi", name = "Restricted")]
pub struct Restricted {
    name: &'static str,
}

impl Restricted {
    /// A stand-in for the stream called `name` (e.g. `sys.stdin`).
    pub fn new(name: &'static str) -> Self {
        Self { name }
    }
}

#[pymethods]
impl Restricted {
    /// A no-op, so that interpreter shutdown (which flushes the standard streams) does not
    /// report an error; every other use raises.
    fn flush(&self) {}

    fn __getattr__(&self, _attr: &str) -> PyResult<()> {
        Err(PyOSError::new_err(format!(
            "{} access restricted by mod_wsgi",
            self.name
        )))
    }
}
