//! The Apache glue: everything that touches httpd's C API lives in this folder, and all of the
//! crate's `unsafe` code that deals with Apache is here.
//!
//! - `module`: the exported `wsgi_module` record and the hooks;
//! - `directives`: the directive table and its single entry point;
//! - `config`: Apache's configuration callbacks for our typed records;
//! - `request`: safe views of a request for the handler and the WSGI objects;
//! - `log`: the `tracing` → error log bridge;
//! - `process`: MPM facts and process cleanups;
//! - `boundary`: the panic boundary every hook goes through.

pub mod auth;
pub mod boundary;
pub mod config;
pub mod directives;
pub mod log;
pub mod module;
pub mod process;
pub mod request;
pub mod sys;

pub use request::{FileKind, Header, IoError, Request, RequestIo};
