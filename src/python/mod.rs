//! The Python runtime: starting CPython in an Apache child, the interpreters of the application
//! groups and how threads enter them, and what each interpreter is given at creation. The
//! crate's `unsafe` code that deals with CPython is in this folder (`runtime`, `interp`).

pub mod files;
pub mod interp;
pub mod runtime;
pub mod setup;
pub mod streams;

pub use interp::PythonError;
