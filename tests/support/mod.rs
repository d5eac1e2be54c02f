//! Integration-test harness: starts a real Apache httpd with a generated configuration,
//! sends HTTP traffic to it on 127.0.0.1, scans its error log, and builds shared Python
//! virtualenvs for the WSGI apps the tests host.
//!
//! Every test file uses it with `mod support;` and then, for example:
//!
//! ```ignore
//! let server = support::ServerBuilder::new()
//!     .file("app.wsgi", "def application(environ, start_response): ...")
//!     .config("WSGIScriptAlias /app ${TEST_DIR}/app.wsgi")
//!     .start();
//! assert_eq!(server.get("/app").status, 200);
//! let stopped = server.stop(); // or just let `server` go out of scope
//! ```
//!
//! When a `Server` is stopped or dropped, its error log must hold no line at level
//! `warn` or worse other than the built-in allowances and the patterns given to
//! [`ServerBuilder::allow_log`]; otherwise the test fails.
//!
//! Everything a server or a venv needs lives under `/tmp/mod-wsgi-rs-test` in
//! world-readable directories, because Apache's children run as `www-data` when the
//! tests run as root.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

mod apache;
mod http;
mod logs;
mod process;
mod python;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use apache::{ConfigTest, Mpm, Server, ServerBuilder, Stopped, closing_connections};
pub use http::Response;
pub use logs::unexpected_log_lines;
pub use python::python_venv;

/// The directory under which the harness keeps server directories and virtualenvs.
pub const TEST_ROOT: &str = "/tmp/mod-wsgi-rs-test";

/// Path to the module under test, `libmod_wsgi.so`.
///
/// The environment variable `MOD_WSGI_SO` overrides it. Otherwise it is the
/// `libmod_wsgi.so` in the same profile directory (`target/debug`, `target/release`, ...)
/// as the running test binary, which lives in `<target>/<profile>/deps/`.
///
/// Panics if the file does not exist.
pub fn module_path() -> PathBuf {
    if let Some(value) = std::env::var_os("MOD_WSGI_SO") {
        let path = std::path::absolute(PathBuf::from(&value))
            .expect("cannot make MOD_WSGI_SO an absolute path");
        assert!(
            path.is_file(),
            "MOD_WSGI_SO points at {}, which does not exist",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("cannot find the path of the test binary");
    let mut dir = exe
        .parent()
        .expect("the test binary has no parent directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    let path = dir.join("libmod_wsgi.so");
    assert!(
        path.is_file(),
        "{} does not exist: run cargo build first (with the same profile as the tests), \
         or set MOD_WSGI_SO to the module to test",
        path.display()
    );
    path
}

/// Creates `path` (which must lie under [`TEST_ROOT`]) and its missing parents, and makes
/// each of them from `TEST_ROOT` down at least `rwxr-xr-x`, so that Apache's unprivileged
/// children can enter them.
pub(crate) fn create_world_readable_dir(path: &Path) {
    assert!(
        path.starts_with(TEST_ROOT),
        "{} is not under {TEST_ROOT}",
        path.display()
    );
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    for dir in path
        .ancestors()
        .take_while(|dir| dir.starts_with(TEST_ROOT))
    {
        let mode = std::fs::metadata(dir)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", dir.display()))
            .permissions()
            .mode();
        if mode & 0o055 != 0o055 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o755))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.display()));
        }
    }
}

/// `len` bytes of a fixed pseudo-random sequence (a linear congruential generator started at
/// `seed`): a request body that every byte value and line length can appear in.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 16) as u8
        })
        .collect()
}
