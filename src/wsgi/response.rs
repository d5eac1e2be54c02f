//! `start_response` and `write`: the response status and headers an application chooses, checked
//! and copied into Rust strings at once (nothing keeps pointing into Python objects, which was
//! CVE-2014-0242), and the body bytes on their way to the backend.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::{Backend, BackendError, Taken};
use crate::python::files::RegularFile;

/// A validated status and header list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The three-digit code.
    pub status: u16,
    /// The reason phrase, when one was given.
    pub reason: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
}

/// Why a status or header is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// The status line is not `NNN` or `NNN reason`.
    #[error("invalid status {0:?}: expected three digits, a space and a reason phrase")]
    Status(String),
    /// A header name is empty or has a space or control character.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// A header value contains CR, LF or another control character.
    #[error("header {0:?} has a value with a control character (CR/LF are not allowed)")]
    Value(String),
    /// Content-Length is not a non-negative integer.
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
}

/// Parses a WSGI status string.
pub fn parse_status(status: &str) -> Result<(u16, Option<String>), HeadError> {
    let bad = || HeadError::Status(status.to_owned());
    let bytes = status.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code: u16 = status[..3].parse().map_err(|_| bad())?;
    if code < 100 {
        return Err(bad());
    }
    // PEP 3333: the code, a space and a reason phrase (which may be empty).
    let reason = status[3..].strip_prefix(' ').ok_or_else(bad)?;
    if reason.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok((code, Some(reason.to_owned())))
}

/// Checks one header.
pub fn check_header(name: &str, value: &str) -> Result<(), HeadError> {
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == ' ' || c == ':') {
        return Err(HeadError::Name(name.to_owned()));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(HeadError::Value(name.to_owned()));
    }
    if name.eq_ignore_ascii_case("content-length") {
        let v = value.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeadError::ContentLength(value.to_owned()));
        }
    }
    Ok(())
}

#[derive(Default)]
struct State {
    head: Option<ResponseHead>,
    head_sent: bool,
    content_length: Option<u64>,
    sent: u64,
    /// Bytes the application produced beyond its Content-Length (not sent).
    excess: u64,
    client_gone: bool,
}

impl State {
    /// How many of `len` more bytes the declared Content-Length still allows.
    fn allowed(&self, len: usize) -> usize {
        match self.content_length {
            Some(declared) => {
                let left = declared.saturating_sub(self.sent);
                len.min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => len,
        }
    }
}

/// How the end of a response went.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// Complete.
    Complete,
    /// The application never called `start_response`.
    NotStarted,
    /// More bytes than the declared Content-Length were produced; the extra was not sent.
    Long {
        /// Declared length.
        declared: u64,
        /// Bytes left out.
        excess: u64,
    },
    /// Fewer bytes than the declared Content-Length were sent; the connection was cut.
    Short {
        /// Declared length.
        declared: u64,
        /// Bytes sent.
        sent: u64,
    },
}

/// The `start_response` callable given to the application; its `write` method is the
/// callable `start_response` returns.
#[pyclass(frozen, module = "mod_wsgi", name = "StartResponse")]
pub struct StartResponse {
    backend: Arc<dyn Backend>,
    /// A HEAD request: the body is dropped, so a body shorter than Content-Length is normal.
    header_only: bool,
    state: Mutex<State>,
}

impl StartResponse {
    /// A fresh response for one request (`header_only` for HEAD).
    pub fn new(backend: Arc<dyn Backend>, header_only: bool) -> Self {
        Self {
            backend,
            header_only,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether the status and headers went out.
    pub fn head_sent(&self) -> bool {
        self.state.lock().head_sent
    }

    /// Queues a body block of a list or tuple response with the backend ([`Backend::hold`]),
    /// without giving up the GIL: the head is set if it was not yet, and at most what
    /// Content-Length still allows is kept. Sent with [`StartResponse::send`] when the backend
    /// cannot hold it. `Ok(false)` when the client has gone.
    pub fn send_held(&self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        self.send_at_once(py, data, true)
    }

    /// Sends a body block of a streamed response: with the GIL held when the backend can do
    /// it at once ([`Backend::try_send`]), else as [`StartResponse::send`]. `Ok(false)` when
    /// the client has gone.
    pub fn send_streamed(&self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        self.send_at_once(py, data, false)
    }

    /// [`StartResponse::send_held`] (`hold`) or [`StartResponse::send_streamed`].
    fn send_at_once(&self, py: Python<'_>, data: &[u8], hold: bool) -> PyResult<bool> {
        let taken = 'fast: {
            // Nothing here waits with the GIL held: a lock another thread has (one blocked
            // reading the body, say) sends this block the usual way instead.
            let Some(mut st) = self.state.try_lock() else {
                break 'fast Taken::No;
            };
            if st.client_gone || data.is_empty() {
                return Ok(!st.client_gone);
            }
            if st.head.is_none() {
                return Err(SendError::NotStarted.into_py());
            }
            match self.try_head(&mut st) {
                Ok(true) => {}
                Ok(false) => break 'fast Taken::No,
                Err(e) => return Err(SendError::Backend(e).into_py()),
            }
            let keep = st.allowed(data.len());
            let attempt = if hold {
                let held = self.backend.hold(&data[..keep]);
                held.map(|held| if held { Taken::Sent } else { Taken::No })
            } else {
                self.backend.try_send(&data[..keep])
            };
            match attempt {
                Ok(Taken::No) => Taken::No,
                Ok(taken) => {
                    st.excess += (data.len() - keep) as u64;
                    st.sent += keep as u64;
                    taken
                }
                Err(e) => {
                    st.client_gone = true;
                    tracing::debug!("client went away while sending the response: {e}");
                    return Ok(false);
                }
            }
        };
        match taken {
            Taken::Sent => Ok(true),
            Taken::Queued => {
                let (backend, state) = (&*self.backend, &self.state);
                Ok(py.detach(|| match backend.flush() {
                    Ok(()) => true,
                    Err(e) => {
                        state.lock().client_gone = true;
                        tracing::debug!("client went away while sending the response: {e}");
                        false
                    }
                }))
            }
            Taken::No => self.send(py, data),
        }
    }

    /// Sends a body block: the head first if it has not gone yet, then at most what
    /// Content-Length still allows. `Ok(false)` when the client has gone.
    pub fn send(&self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        let backend = &*self.backend;
        let state = &self.state;
        let result = py.detach(|| {
            let mut st = state.lock();
            if st.client_gone {
                return Ok(false);
            }
            let Some(head) = st.head.as_ref() else {
                return Err(SendError::NotStarted);
            };
            if data.is_empty() {
                return Ok(true);
            }
            if !st.head_sent {
                backend.set_head(head).map_err(SendError::Backend)?;
                st.head_sent = true;
            }
            let keep = st.allowed(data.len());
            st.excess += (data.len() - keep) as u64;
            let allowed = &data[..keep];
            if !allowed.is_empty() {
                if let Err(e) = backend.write(allowed) {
                    st.client_gone = true;
                    tracing::debug!("client went away while sending the response: {e}");
                    return Ok(false);
                }
                st.sent += allowed.len() as u64;
            }
            Ok(true)
        });
        result.map_err(SendError::into_py)
    }

    /// Completes the response after the application's iterable is exhausted. Gives up the GIL
    /// only to cut a short response, or when the head cannot be set at once.
    pub fn finish(&self, py: Python<'_>) -> Result<Finish, BackendError> {
        let fast = match self.state.try_lock() {
            Some(mut st) => self.try_head(&mut st)?.then(|| self.outcome(&st)),
            None => None,
        };
        let finish = match fast {
            Some(finish) => finish,
            None => {
                let (backend, state) = (&*self.backend, &self.state);
                py.detach(|| {
                    let mut st = state.lock();
                    if let (false, Some(head)) = (st.head_sent, st.head.as_ref()) {
                        backend.set_head(head)?;
                        st.head_sent = true;
                    }
                    Ok::<_, BackendError>(self.outcome(&st))
                })?
            }
        };
        if matches!(finish, Finish::Short { .. }) {
            let backend = &*self.backend;
            py.detach(|| backend.abort());
        }
        Ok(finish)
    }

    /// Sets the head on the backend if it is not yet, only if that can be done at once
    /// ([`Backend::try_set_head`]); `Ok(false)` when it would have to wait. `Ok(true)` also
    /// when there is no head to set.
    fn try_head(&self, st: &mut State) -> Result<bool, BackendError> {
        match st.head.as_ref() {
            Some(head) if !st.head_sent => {
                st.head_sent = self.backend.try_set_head(head)?;
                Ok(st.head_sent)
            }
            _ => Ok(true),
        }
    }

    /// How the response ended, from its state once the head is set.
    fn outcome(&self, st: &State) -> Finish {
        if st.head.is_none() {
            return Finish::NotStarted;
        }
        match st.content_length {
            Some(declared) if st.sent < declared && !st.client_gone && !self.header_only => {
                Finish::Short {
                    declared,
                    sent: st.sent,
                }
            }
            Some(declared) if st.excess > 0 => Finish::Long {
                declared,
                excess: st.excess,
            },
            _ => Finish::Complete,
        }
    }

    /// Sends a whole file region as the body (`wsgi.file_wrapper` over a regular file), when
    /// nothing was sent yet and the backend can; `Ok(false)` otherwise (the caller iterates).
    /// Without a declared Content-Length, one is added for the region.
    pub fn send_file(&self, py: Python<'_>, file: RegularFile) -> PyResult<bool> {
        let backend = &*self.backend;
        let state = &self.state;
        let result = py.detach(move || {
            let mut st = state.lock();
            if st.head_sent || st.client_gone || st.sent > 0 {
                return Ok(false);
            }
            let available = file.size.saturating_sub(file.offset);
            let declared = st.content_length;
            if declared.is_some_and(|d| d > available) {
                // The file is shorter than the declared length: sent block by block, so that
                // the response is then cut short as any other (sent whole, Apache would fix
                // the length and the client could not tell).
                return Ok(false);
            }
            let len = declared.map_or(available, |d| d.min(available));
            let Some(head) = st.head.as_mut() else {
                return Err(SendError::NotStarted);
            };
            if declared.is_none() {
                head.headers
                    .push(("Content-Length".into(), len.to_string()));
            }
            backend.set_head(head).map_err(SendError::Backend)?;
            st.head_sent = true;
            if declared.is_none() {
                st.content_length = Some(len);
            }
            match backend.send_file(file.fd, file.offset, len) {
                Ok(true) => {
                    st.sent += len;
                    Ok(true)
                }
                Ok(false) => Ok(false),
                Err(e) => {
                    st.client_gone = true;
                    tracing::debug!("client went away while sending a file: {e}");
                    Ok(true)
                }
            }
        });
        result.map_err(SendError::into_py)
    }

    /// Cuts the response short after an error (only meaningful once the head was sent).
    pub fn abort(&self, py: Python<'_>) {
        let backend = &*self.backend;
        py.detach(|| backend.abort());
    }
}

enum SendError {
    NotStarted,
    Backend(BackendError),
}

impl SendError {
    fn into_py(self) -> PyErr {
        match self {
            Self::NotStarted => {
                PyRuntimeError::new_err("response has not been started (call start_response first)")
            }
            Self::Backend(e) => PyOSError::new_err(format!("mod_wsgi: {e}")),
        }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, response_headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        response_headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        let (already_set, already_sent) = {
            let st = this.state.lock();
            (st.head.is_some(), st.head_sent)
        };
        if let Some(exc_info) = exc_info {
            if already_sent {
                // PEP 3333: too late to change the response; re-raise the original error.
                let exc_info = exc_info.cast::<PyTuple>()?;
                let value = exc_info.get_item(1)?;
                let traceback = exc_info.get_item(2)?;
                let value = value.call_method1("with_traceback", (traceback,))?;
                return Err(PyErr::from_value(value));
            }
        } else if already_sent {
            return Err(PyRuntimeError::new_err("headers have already been sent"));
        } else if already_set {
            tracing::debug!("start_response called again before any output; using the new head");
        }

        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str"))?
            .to_str()?;
        let (code, reason) =
            parse_status(status).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let list = response_headers
            .cast::<PyList>()
            .map_err(|_| PyTypeError::new_err("response headers must be a list"))?;
        let mut headers = Vec::with_capacity(list.len());
        let mut content_length = None;
        for item in list.iter() {
            let pair = item
                .cast::<PyTuple>()
                .ok()
                .filter(|t| t.len() == 2)
                .ok_or_else(|| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
            let name = header_str(&pair.get_item(0)?, "header name")?;
            let value = header_str(&pair.get_item(1)?, "header value")?;
            check_header(&name, &value).map_err(|e| PyValueError::new_err(e.to_string()))?;
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse::<u64>().ok();
            }
            headers.push((name, value));
        }
        let mut st = this.state.lock();
        st.head = Some(ResponseHead {
            status: code,
            reason,
            headers,
        });
        st.content_length = content_length;
        drop(st);
        slf.getattr("write")
    }

    /// The legacy `write(data)` callable.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                data.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        if self.send(py, bytes.as_bytes())? {
            Ok(())
        } else {
            Err(PyOSError::new_err("mod_wsgi client connection closed"))
        }
    }
}

/// A header name or value: must be `str`, and (being sent as latin-1) only latin-1 characters.
fn header_str(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    let s = s.to_cow()?;
    if s.chars().any(|c| u32::from(c) > 0xff) {
        return Err(PyValueError::new_err(format!(
            "{what} {s:?} is not latin-1"
        )));
    }
    Ok(s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(parse_status("200 OK"), Ok((200, Some("OK".into()))));
        assert_eq!(
            parse_status("404 Not Found"),
            Ok((404, Some("Not Found".into())))
        );
        assert_eq!(parse_status("207 "), Ok((207, Some(String::new()))));
        assert!(parse_status("200").is_err());
        assert!(parse_status("200OK").is_err());
        assert!(parse_status("2000 OK").is_err());
        assert!(parse_status("20 OK").is_err());
        assert!(parse_status("099 Low").is_err());
        assert!(parse_status("200 O\nK").is_err());
        assert!(parse_status("").is_err());
    }

    #[test]
    fn headers() {
        assert!(check_header("Content-Type", "text/plain").is_ok());
        assert!(check_header("X-A", "a\tb").is_ok());
        assert!(check_header("", "x").is_err());
        assert!(check_header("Bad Name", "x").is_err());
        assert!(check_header("X", "a\r\nInjected: 1").is_err());
        assert!(check_header("Content-Length", "12").is_ok());
        assert!(check_header("Content-Length", "twelve").is_err());
        assert!(check_header("Content-Length", "-1").is_err());
    }
}
