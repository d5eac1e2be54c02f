//! The Python runtime: starting CPython in an Apache child, the interpreters of the application
//! groups and how threads enter them, and what each interpreter is given at creation. The
//! crate's `unsafe` code that deals with CPython is in this folder (`runtime`, `interp`, `bytes`,
//! and [`modules_dict`] and [`latin1`] here).

pub mod bytes;
pub mod files;
pub mod interp;
pub mod runtime;
pub mod setup;
pub mod streams;

pub use interp::PythonError;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The current interpreter's `sys.modules`, without an `import sys` (which costs several
/// percent of a hello-world request when done on each one).
pub fn modules_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: `py` proves the GIL is held and a thread state of the current interpreter is
    // attached; PyImport_GetModuleDict returns a borrowed reference to that interpreter's
    // `sys.modules` (never NULL while it runs), which we turn into an owned one at once.
    let modules = unsafe { Bound::from_borrowed_ptr(py, pyo3::ffi::PyImport_GetModuleDict()) };
    Ok(modules.cast_into::<PyDict>()?)
}

/// `bytes` decoded as ISO-8859-1 (every byte is the code point of the same value), as PEP 3333
/// wants for the environ's native strings. One pass of CPython's own decoder, which copies
/// ASCII straight into a compact string: checking the bytes in Rust first and then handing
/// them to `PyUnicode_FromStringAndSize` (a UTF-8 decoder) was about an eighth of the
/// instructions of a hello-world request in callgrind.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = isize::try_from(bytes.len()).unwrap_or(isize::MAX);
    // SAFETY: `py` proves the GIL is held; the pointer and length describe `bytes`, alive for
    // the call, and a NULL errors pointer means "strict". The result is a new reference, or
    // NULL with an exception set (only when memory runs out), which `from_owned_ptr_or_err`
    // turns into an `Err`.
    let decoded = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null()),
        )
    };
    Ok(decoded?.cast_into::<PyString>()?)
}
