//! The panic boundary: every `extern "C"` function Apache calls enters Rust through [`guard`].
//!
//! A panic must never unwind into httpd's C frames (that is undefined behaviour and would take the
//! whole Apache child down). `guard` catches it, logs it at `error` with the entry point's name,
//! and returns the fallback the caller chose for its return type: `HTTP_INTERNAL_SERVER_ERROR` for
//! a handler, `DECLINED` for a hook, an error message for a directive.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `body`, turning a panic into `fallback` and an error-log line naming `entry`.
///
/// `AssertUnwindSafe` is right here: after a panic the only state touched again is what the
/// fallback path logs, and each entry point owns its state for the duration of the call.
pub fn guard<R>(entry: &'static str, fallback: impl FnOnce() -> R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            tracing::error!(
                "WSGI0001: internal error (panic) in {entry}: {}; the request or step was \
                 abandoned, the process goes on",
                panic_message(payload.as_ref())
            );
            fallback()
        }
    }
}

/// The text of a panic payload, when it has one.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}
