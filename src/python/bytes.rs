//! `bytes` objects filled in place, without the GIL: `wsgi.input.read(n)` reads the request
//! body straight into the object it returns. The object's buffer is handed over uninitialised;
//! zeroing it first (as `PyBytes::new_with` does) was about 5% of the Apache children's CPU
//! time in the 10 MiB upload benchmark.

use std::mem::MaybeUninit;

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The buffer of a `bytes` object that no Python code can see yet, taken across the GIL
/// release of [`filled`].
struct Space {
    start: *mut MaybeUninit<u8>,
    len: usize,
}

// SAFETY: the buffer belongs to a new object that only `filled` holds a reference to, and
// `filled` keeps it alive and untouched by anyone else while the other thread fills it.
unsafe impl Send for Space {}

/// The unfilled part of the buffer of [`filled`], and how much of it is filled.
pub struct Filler<'b> {
    buf: &'b mut [MaybeUninit<u8>],
    got: usize,
}

impl Filler<'_> {
    /// Lets `step` write to the part not yet filled; `step` returns the bytes it wrote, which
    /// must be the start of that part. `Ok(false)` when the buffer is full or `step` wrote
    /// nothing (the end of the input).
    ///
    /// # Errors
    ///
    /// Those of `step`.
    pub fn step<E>(
        &mut self,
        step: impl FnOnce(&mut [MaybeUninit<u8>]) -> Result<&mut [u8], E>,
    ) -> Result<bool, E> {
        let rest = &mut self.buf[self.got..];
        if rest.is_empty() {
            return Ok(false);
        }
        let (at, room) = (rest.as_ptr().cast::<u8>(), rest.len());
        let wrote = step(rest)?;
        // Only bytes written at the start of the rest count: they are what `got` vouches for
        // in `filled`. Anything else ends the filling (a bug in `step`, not expected).
        if wrote.is_empty() || wrote.as_ptr() != at || wrote.len() > room {
            return Ok(false);
        }
        self.got += wrote.len();
        Ok(self.got < self.buf.len())
    }
}

/// A new `bytes` object of `len` bytes, filled by `fill` with the GIL released, through
/// [`Filler::step`]; cut to what was filled if that is less. An `Err` from `fill` drops the
/// object and is returned as the inner `Err`; the outer one is CPython's (out of memory).
pub fn filled<'py, E: Send>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut Filler<'_>) -> Result<(), E> + Send,
) -> PyResult<Result<Bound<'py, PyBytes>, E>> {
    let size = isize::try_from(len).map_err(|_| PyOverflowError::new_err("read size"))?;
    // SAFETY: `py` proves the GIL is held. A NULL data pointer asks for an object of `size`
    // bytes whose content is left uninitialised; the result is a new reference, or NULL with
    // an exception set, which `from_owned_ptr_or_err` turns into an `Err`.
    let object = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?
    };
    let object = object.cast_into::<PyBytes>()?;
    // SAFETY: `object` is a `bytes` object (checked above); its buffer holds `len` bytes and
    // lives as long as the object.
    let start = unsafe { pyo3::ffi::PyBytes_AsString(object.as_ptr()) };
    let space = Space {
        start: start.cast(),
        len,
    };
    let outcome = py.detach(move || {
        let space = space;
        // SAFETY: the buffer is `space.len` bytes, valid while `object` lives, which it does
        // until after this closure; no other code has a reference to the object, so none
        // reads or writes the buffer meanwhile. MaybeUninit makes no claim on its content.
        let buf = unsafe { std::slice::from_raw_parts_mut(space.start, space.len) };
        let mut filler = Filler { buf, got: 0 };
        fill(&mut filler).map(|()| filler.got)
    });
    let got = match outcome {
        Ok(got) => got,
        Err(e) => return Ok(Err(e)),
    };
    if got == len {
        return Ok(Ok(object));
    }
    // SAFETY: the first `got` bytes of the buffer were written through the `&mut [u8]`
    // slices that steps returned, each at the start of the part then unfilled (checked in
    // `Filler::step`); the object is alive. The rest of the buffer is never read: the result
    // is a copy of that start.
    let start = unsafe { std::slice::from_raw_parts(start.cast::<u8>(), got) };
    Ok(Ok(PyBytes::new(py, start)))
}
