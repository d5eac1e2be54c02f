//! `wsgi.input`: the request body as a read-only binary file.
//!
//! `read`, `readline`, `readlines` and iteration work as PEP 3333 asks (and as `io` streams do:
//! `read()` and `read(-1)` read to the end, `read(n)` returns fewer than `n` bytes only at the
//! end). Reads release the GIL. A failed read (the client sent less than its Content-Length,
//! went away, or sent bad chunking) raises `OSError` and keeps failing after.

use std::mem::MaybeUninit;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::{Backend, BackendError};
use crate::python;

const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct State {
    /// Bytes read from the backend and not yet returned.
    buffer: Vec<u8>,
    /// Where the unread part of `buffer` starts.
    start: usize,
    eof: bool,
    failed: Option<BackendError>,
}

impl State {
    fn available(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// The failure of an earlier read, if one failed: every read after it fails too, even
    /// when bytes received before it are still buffered (the application was told the body
    /// is broken; handing out more of it would look like a body that recovered).
    fn check(&self) -> Result<(), BackendError> {
        self.failed.map_or(Ok(()), Err)
    }

    /// Reads one more chunk into the buffer; `Ok(false)` at the end of the body.
    fn fill(&mut self, backend: &dyn Backend) -> Result<bool, BackendError> {
        self.check()?;
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let old = self.buffer.len();
        self.buffer.resize(old + CHUNK, 0);
        match backend.read(&mut self.buffer[old..]) {
            Ok(0) => {
                self.buffer.truncate(old);
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.buffer.truncate(old + n);
                Ok(true)
            }
            Err(e) => {
                self.buffer.truncate(old);
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    /// One step of a direct read into `out` (see [`Input::read_direct`]): bytes from the
    /// buffer if it holds any, else one read from the backend. Returns the bytes written, at
    /// the start of `out`; none at the end of the body.
    fn read_step<'a>(
        &mut self,
        backend: &dyn Backend,
        out: &'a mut [MaybeUninit<u8>],
    ) -> Result<&'a mut [u8], BackendError> {
        self.check()?;
        let buffered = self.available().len().min(out.len());
        if buffered > 0 {
            let from = self.start;
            self.start += buffered;
            return Ok(out[..buffered].write_copy_of_slice(&self.buffer[from..from + buffered]));
        }
        if self.eof || out.is_empty() {
            return Ok(&mut []);
        }
        match backend.read_uninit(out) {
            Ok([]) => {
                self.eof = true;
                Ok(&mut [])
            }
            Ok(read) => Ok(read),
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.available().len());
        let out = self.available()[..n].to_vec();
        self.start += n;
        out
    }

    /// Up to `limit` bytes (all when `None`).
    fn read(
        &mut self,
        backend: &dyn Backend,
        limit: Option<usize>,
    ) -> Result<Vec<u8>, BackendError> {
        self.check()?;
        while limit.is_none_or(|n| self.available().len() < n) {
            if !self.fill(backend)? {
                break;
            }
        }
        Ok(self.take(limit.unwrap_or(usize::MAX)))
    }

    /// One line (with its `\n`), at most `limit` bytes.
    fn readline(
        &mut self,
        backend: &dyn Backend,
        limit: Option<usize>,
    ) -> Result<Vec<u8>, BackendError> {
        self.check()?;
        let mut scanned = 0;
        loop {
            let avail = self.available();
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                return Ok(self.take(limit.map_or(end, |l| l.min(end))));
            }
            if limit.is_some_and(|l| avail.len() >= l) {
                return Ok(self.take(limit.unwrap_or(0)));
            }
            scanned = avail.len();
            if !self.fill(backend)? {
                return Ok(self.take(usize::MAX));
            }
        }
    }
}

/// The `wsgi.input` object.
#[pyclass(frozen, module = "mod_wsgi", name = "Input")]
pub struct Input {
    backend: Arc<dyn Backend>,
    state: Mutex<State>,
}

impl Input {
    /// The body of the request `backend` serves.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            state: Mutex::new(State::default()),
        }
    }

    fn run<'py>(
        &self,
        py: Python<'py>,
        op: impl FnOnce(&mut State, &dyn Backend) -> Result<Vec<u8>, BackendError> + Send,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let backend = &*self.backend;
        let state = &self.state;
        let data = py
            .detach(|| op(&mut state.lock(), backend))
            .map_err(read_error)?;
        Ok(PyBytes::new(py, &data))
    }
}

/// The largest `read(n)` read straight into a bytes object of `n` bytes (allocated before
/// anything is read, so `n` is bounded; larger reads grow a buffer as the bytes arrive).
const DIRECT_READ_MAX: usize = 1024 * 1024;

impl Input {
    /// `read(n)` into a new bytes object, filled with the GIL released (the object is not yet
    /// visible to any other Python code) and never zeroed first. Cut to size at the end of the
    /// body.
    fn read_direct<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let backend = &*self.backend;
        let state = &self.state;
        let filled = python::bytes::filled(py, n, |space| {
            let mut state = state.lock();
            while space.step(|out| state.read_step(backend, out))? {}
            Ok(())
        })?;
        filled.map_err(read_error)
    }
}

fn read_error(e: BackendError) -> PyErr {
    PyOSError::new_err(format!("mod_wsgi request data read error: {e}"))
}

/// `None` or a negative size mean "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = limit(size);
        match limit {
            Some(0) => Ok(PyBytes::new(py, b"")),
            // The usual `read(n)` of a body read in blocks: straight into the bytes object.
            // Smaller reads go through the buffer, which asks for a whole chunk at a time (in
            // daemon mode each backend read is an exchange with the Apache child).
            Some(n) if (CHUNK..=DIRECT_READ_MAX).contains(&n) => self.read_direct(py, n),
            _ => self.run(py, |st, b| st.read(b, limit)),
        }
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = limit(size);
        if limit == Some(0) {
            return Ok(PyBytes::new(py, b""));
        }
        self.run(py, |st, b| st.readline(b, limit))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn close(&self) {}

    fn readable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsgi::response::ResponseHead;

    /// A backend that returns its body in small pieces.
    struct Body(Mutex<(Vec<u8>, usize)>, usize);

    impl Backend for Body {
        fn read(&self, buf: &mut [u8]) -> Result<usize, BackendError> {
            let mut g = self.0.lock();
            let (data, pos) = &mut *g;
            if *pos == usize::MAX {
                return Err(BackendError::Read);
            }
            let n = buf.len().min(self.1).min(data.len() - *pos);
            buf[..n].copy_from_slice(&data[*pos..*pos + n]);
            *pos += n;
            Ok(n)
        }
        fn set_head(&self, _: &ResponseHead) -> Result<(), BackendError> {
            Ok(())
        }
        fn write(&self, _: &[u8]) -> Result<(), BackendError> {
            Ok(())
        }
        fn abort(&self) {}
    }

    fn body(data: &[u8]) -> Body {
        Body(Mutex::new((data.to_vec(), 0)), 3)
    }

    #[test]
    fn read_sizes_and_lines() {
        let b = body(b"ab\ncdef\ngh");
        let mut st = State::default();
        assert_eq!(st.read(&b, Some(1)).unwrap(), b"a");
        assert_eq!(st.readline(&b, None).unwrap(), b"b\n");
        assert_eq!(st.readline(&b, Some(2)).unwrap(), b"cd");
        assert_eq!(st.readline(&b, None).unwrap(), b"ef\n");
        assert_eq!(st.read(&b, None).unwrap(), b"gh");
        assert_eq!(st.read(&b, None).unwrap(), b"");
        assert_eq!(st.readline(&b, None).unwrap(), b"");
    }

    /// A direct read of up to `len` bytes, stepped as `python::bytes::filled` steps it.
    fn direct(st: &mut State, b: &Body, len: usize) -> Result<Vec<u8>, BackendError> {
        let mut space = vec![MaybeUninit::uninit(); len];
        let mut out = Vec::new();
        while out.len() < len {
            let wrote = st.read_step(b, &mut space[out.len()..])?;
            if wrote.is_empty() {
                break;
            }
            out.extend_from_slice(wrote);
        }
        Ok(out)
    }

    #[test]
    fn direct_reads_take_the_buffer_first_and_stop_at_the_end() {
        let b = body(b"ab\ncdefgh");
        let mut st = State::default();
        assert_eq!(st.read(&b, Some(1)).unwrap(), b"a");
        // "b\n" is buffered (the backend gives 3 bytes a read); the rest comes from it.
        assert_eq!(direct(&mut st, &b, 5).unwrap(), b"b\ncde");
        assert_eq!(direct(&mut st, &b, 5).unwrap(), b"fgh");
        assert_eq!(direct(&mut st, &b, 5).unwrap(), b"");
        assert_eq!(st.read(&b, None).unwrap(), b"");
    }

    #[test]
    fn direct_reads_keep_a_failure() {
        let b = body(b"abcdef");
        let mut st = State::default();
        assert_eq!(direct(&mut st, &b, 2).unwrap(), b"ab");
        b.0.lock().1 = usize::MAX;
        assert_eq!(direct(&mut st, &b, 2), Err(BackendError::Read));
        b.0.lock().1 = 0;
        assert_eq!(direct(&mut st, &b, 2), Err(BackendError::Read));
    }

    #[test]
    fn bytes_buffered_before_a_failure_are_not_handed_out_after_it() {
        let b = body(b"abcdefgh");
        let mut st = State::default();
        assert_eq!(st.read(&b, Some(1)).unwrap(), b"a");
        // "bc" is buffered; the next backend read fails.
        b.0.lock().1 = usize::MAX;
        assert_eq!(st.read(&b, None), Err(BackendError::Read));
        assert_eq!(st.read(&b, Some(1)), Err(BackendError::Read));
        assert_eq!(st.readline(&b, None), Err(BackendError::Read));
        assert_eq!(direct(&mut st, &b, 2), Err(BackendError::Read));
    }

    #[test]
    fn errors_stick() {
        let b = body(b"abc");
        b.0.lock().1 = usize::MAX;
        let mut st = State::default();
        assert_eq!(st.read(&b, None), Err(BackendError::Read));
        assert_eq!(st.read(&b, Some(1)), Err(BackendError::Read));
    }
}
