//! The WSGI objects and the request flow of PEP 3333, independent of where the request came
//! from: an embedded Apache request now, a daemon-process connection later. The only link to
//! the outside is the [`Backend`] trait.
//!
//! Everything here is safe Rust over pyo3's `Bound` API and runs while the thread is attached
//! to the right interpreter (see `src/python/interp.rs`). Backend I/O that can block always
//! happens with the GIL released (`py.detach`). Setting the head and queueing the bytes of a
//! list response ([`Backend::try_set_head`], [`Backend::hold`]) are tried with the GIL held,
//! with `try_lock` only, so a small response costs no extra GIL hand-off and nothing waits
//! with the GIL held; when a lock is taken, the usual detached path is used. No lock of this
//! layer is ever held while the GIL is being re-acquired.

pub mod call;
pub mod environ;
pub mod file_wrapper;
pub mod input;
pub mod response;
pub mod script;

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

use pyo3::prelude::*;

pub use call::{Outcome, RequestSpec, serve};

/// Where a request's body comes from and its response goes.
pub trait Backend: Send + Sync {
    /// Reads up to `buf.len()` body bytes; `Ok(0)` at the end.
    fn read(&self, buf: &mut [u8]) -> Result<usize, BackendError>;
    /// [`Backend::read`] into space that need not be initialised (a new `bytes` object's);
    /// returns the bytes read, at the start of `buf`, and none at the end. This default reads
    /// through a zeroed buffer; backends override it to spare that and the copy.
    fn read_uninit<'a>(
        &self,
        buf: &'a mut [MaybeUninit<u8>],
    ) -> Result<&'a mut [u8], BackendError> {
        let mut tmp = vec![0; buf.len()];
        let n = self.read(&mut tmp)?;
        Ok(buf[..n].write_copy_of_slice(&tmp[..n]))
    }
    /// Sets the status line and headers (sent with the first body bytes or at the end).
    fn set_head(&self, head: &response::ResponseHead) -> Result<(), BackendError>;
    /// [`Backend::set_head`] if it can be done at once, without waiting for anything (another
    /// thread may be blocked reading the body with the request's I/O locked); `Ok(false)`
    /// otherwise. Called with the GIL held.
    fn try_set_head(&self, head: &response::ResponseHead) -> Result<bool, BackendError> {
        let _ = head;
        Ok(false)
    }
    /// Sends body bytes, after any held ones.
    fn write(&self, data: &[u8]) -> Result<(), BackendError>;
    /// Queues body bytes to go out after the application has returned (or with the next
    /// `write`, `send_file` or `abort`), when the backend can do so at once, without waiting
    /// for a lock or for I/O.
    /// `Ok(false)` when it cannot: the caller then sends them with `write`. Called with the
    /// GIL held, for the items of a list or tuple response (already complete, so holding them
    /// delays nothing the application could still be producing).
    fn hold(&self, data: &[u8]) -> Result<bool, BackendError> {
        let _ = data;
        Ok(false)
    }
    /// Sends body bytes of a streamed response with the GIL held, when that needs no waiting:
    /// no lock held by another thread, and a transport that takes the bytes at once (a daemon
    /// connection with room in its socket buffer). Saves the GIL hand-off of
    /// [`Backend::write`] for each small block. [`Taken::No`] when it cannot (nothing was
    /// sent); [`Taken::Queued`] when only part went out: the rest must go out at once, with
    /// [`Backend::flush`] (without the GIL), so that nothing waits for the next block.
    fn try_send(&self, data: &[u8]) -> Result<Taken, BackendError> {
        let _ = data;
        Ok(Taken::No)
    }
    /// Sends the bytes that [`Backend::try_send`] queued.
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Ends the response abnormally, so the client sees it is incomplete (held bytes first).
    fn abort(&self);
    /// Sends `len` bytes of the regular file `fd` from `offset` without copying them through
    /// Python; `Ok(false)` when this backend cannot, and the caller sends the bytes itself.
    fn send_file(&self, fd: OwnedFd, offset: u64, len: u64) -> Result<bool, BackendError> {
        let _ = (fd, offset, len);
        Ok(false)
    }
}

/// What [`Backend::try_send`] did with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Nothing: the caller sends them with [`Backend::write`].
    No,
    /// All of them went out.
    Sent,
    /// Part went out; the rest waits for [`Backend::flush`].
    Queued,
}

/// Why backend I/O failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// The request is over.
    #[error("the request has ended")]
    Ended,
    /// The request body could not be read (client gone, short body, bad chunking).
    #[error("request data read error")]
    Read,
    /// The client went away while the response was sent.
    #[error("client connection closed")]
    Write,
}

/// Logs a Python exception with its traceback, one error-log line per traceback line, and
/// consumes it.
pub fn report_exception(py: Python<'_>, err: PyErr, context: &str) {
    let kind = err
        .get_type(py)
        .name()
        .map_or_else(|_| "Exception".into(), |n| n.to_string());
    tracing::error!("WSGI0010: {kind} raised while {context}:");
    let formatted = py.import("traceback").and_then(|tb| {
        let args = (err.get_type(py), err.value(py), err.traceback(py));
        tb.call_method1("format_exception", args)?
            .extract::<Vec<String>>()
    });
    match formatted {
        Ok(chunks) => {
            for line in chunks.iter().flat_map(|chunk| chunk.lines()) {
                tracing::error!("{line}");
            }
        }
        Err(_) => tracing::error!("{kind}: (the traceback could not be formatted)"),
    }
}
