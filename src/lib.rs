//! mod_wsgi for Rust: an Apache httpd 2.4 module that hosts Python WSGI applications, a drop-in
//! replacement for the C `mod_wsgi`.
//!
//! Layers, bottom up (see `docs/architecture.md`):
//! - [`apache`]: the module record, hooks, directive table, request I/O and log bridge; the
//!   only place that touches httpd's C API.
//! - [`config`]: typed configuration, parsed and validated in safe Rust.
//! - [`python`]: starting CPython in an Apache child, interpreters per application group, and
//!   how threads enter them; the only place that touches CPython's C API directly.
//! - [`wsgi`]: the PEP 3333 objects and request flow, independent of where a request comes from.
//! - [`handler`]: the embedded-mode request path tying Apache requests to the WSGI layer.
//! - [`express`]: the `mod_wsgi-express` command (`src/bin/mod_wsgi-express.rs`), which writes
//!   a standalone Apache configuration for an application and runs it.

pub mod apache;
pub mod auth;
pub mod config;
pub mod daemon;
pub mod express;
pub mod handler;
pub mod python;
pub mod wsgi;
