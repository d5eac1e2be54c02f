//! The Python runtime: starting CPython in an Apache child, the interpreters of the application
//! groups and how threads enter them, and what each interpreter is given at creation. The
//! crate's `unsafe` code that deals with CPython is in this folder (`runtime`, `interp`, and
//! [`modules_dict`] here).

pub mod files;
pub mod interp;
pub mod runtime;
pub mod setup;
pub mod streams;

pub use interp::PythonError;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The current interpreter's `sys.modules`, without an `import sys` (which costs several
/// percent of a hello-world request when done on each one).
pub fn modules_dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: `py` proves the GIL is held and a thread state of the current interpreter is
    // attached; PyImport_GetModuleDict returns a borrowed reference to that interpreter's
    // `sys.modules` (never NULL while it runs), which we turn into an owned one at once.
    let modules = unsafe { Bound::from_borrowed_ptr(py, pyo3::ffi::PyImport_GetModuleDict()) };
    Ok(modules.cast_into::<PyDict>()?)
}
