//! Routes `tracing` events into Apache's error log.
//!
//! The whole crate logs through `tracing`; [`install`] (called from `post_config` and
//! `child_init`) sets a subscriber whose only layer writes each event with `ap_log_rerror` when
//! the emitting thread is serving a request (so Apache adds `[client …]` and honours a
//! per-directory `LogLevel`), otherwise with `ap_log_error` on the main server. Levels map
//! error→ERR, warn→WARNING, info→INFO, debug→DEBUG, trace→TRACE1, and the module's own level
//! (`LogLevel wsgi:LEVEL`) is checked before anything is formatted.
//!
//! Request-scoped lines start with `[request <id>]`, Apache's request log id (the `%L` of
//! `ErrorLogFormat`), so every line of one request can be found whatever the log format.
//! Threads that are not serving a request but act for one (an application's own thread writing
//! to `wsgi.errors`) pass the id as the event field `request_id`.

use std::cell::Cell;
use std::ffi::CString;
use std::fmt::Write as _;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use super::sys;

/// The server whose error log takes messages logged outside a request.
static MAIN_SERVER: AtomicPtr<sys::server_rec> = AtomicPtr::new(ptr::null_mut());

thread_local! {
    /// The request this thread is serving, set by [`RequestScope`].
    static CURRENT_REQUEST: Cell<*const sys::request_rec> = const { Cell::new(ptr::null()) };
}

/// Points the log bridge at `server` and installs the subscriber (once per load of the module).
///
/// # Safety
/// `server` must be Apache's main server record, which lives as long as the configuration pool
/// this module was loaded for (the module is unloaded before that pool goes away).
pub unsafe fn install(server: *mut sys::server_rec) {
    MAIN_SERVER.store(server, Ordering::Release);
    // A second call (the next config pass in the same load) keeps the existing subscriber.
    let _ =
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(ApacheLayer));
}

/// A server record whose error log takes messages (a virtual host's, for a daemon group it
/// defined).
#[derive(Clone, Copy, Debug)]
pub struct LogTarget(*mut sys::server_rec);

// SAFETY: a server record lives for the whole configuration cycle (and, in a forked daemon,
// for the process); the pointer is only handed back to Apache's logging functions.
unsafe impl Send for LogTarget {}
// SAFETY: as above; Apache's logging is thread-safe.
unsafe impl Sync for LogTarget {}

impl LogTarget {
    /// Wraps a server record.
    ///
    /// # Safety
    /// `server` must be a live server record for as long as the target is used.
    pub unsafe fn from_raw(server: *mut sys::server_rec) -> Self {
        Self(server)
    }

    /// Sends this process's log lines (outside requests) to this server's error log.
    pub fn make_default(self) {
        MAIN_SERVER.store(self.0, Ordering::Release);
    }
}

/// While alive, this thread's log lines belong to one request.
pub struct RequestScope {
    previous: *const sys::request_rec,
}

impl RequestScope {
    /// Marks the current thread as serving `r` until the scope is dropped.
    ///
    /// # Safety
    /// `r` must stay valid until the returned scope is dropped, and the scope must be dropped on
    /// this thread.
    pub unsafe fn enter(r: *const sys::request_rec) -> Self {
        let previous = CURRENT_REQUEST.with(|c| c.replace(r));
        Self { previous }
    }
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        CURRENT_REQUEST.with(|c| c.set(self.previous));
    }
}

thread_local! {
    /// The id of the request this thread serves outside Apache's own request processing (a
    /// daemon process), set by [`RequestIdScope`].
    static CURRENT_REQUEST_ID: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// While alive, this thread's log lines carry request id `id` (daemon processes, which have
/// no `request_rec`).
pub struct RequestIdScope(());

impl RequestIdScope {
    /// Tags this thread's log lines with `id` until the scope is dropped.
    pub fn enter(id: &str) -> Self {
        CURRENT_REQUEST_ID.with(|c| *c.borrow_mut() = Some(id.to_owned()));
        Self(())
    }
}

impl Drop for RequestIdScope {
    fn drop(&mut self) {
        CURRENT_REQUEST_ID.with(|c| *c.borrow_mut() = None);
    }
}

/// Apache's log id of the request this thread is serving, if any.
pub fn current_request_id() -> Option<String> {
    if let Some(id) = CURRENT_REQUEST_ID.with(|c| c.borrow().clone()) {
        return Some(id);
    }
    let r = CURRENT_REQUEST.with(Cell::get);
    if r.is_null() {
        return None;
    }
    // SAFETY: a non-null CURRENT_REQUEST is valid for as long as its RequestScope lives on this
    // thread (the contract of `RequestScope::enter`), and we are on that thread.
    let log_id = unsafe { (*r).log_id };
    (!log_id.is_null()).then(|| {
        // SAFETY: Apache's log ids are NUL-terminated strings in the request or connection pool.
        unsafe { std::ffi::CStr::from_ptr(log_id) }
            .to_string_lossy()
            .into()
    })
}

struct ApacheLayer;

fn apache_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => sys::APLOG_ERR,
        Level::WARN => sys::APLOG_WARNING,
        Level::INFO => sys::APLOG_INFO,
        Level::DEBUG => sys::APLOG_DEBUG,
        Level::TRACE => sys::APLOG_TRACE1,
    }
}

impl<S: Subscriber> Layer<S> for ApacheLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = apache_level(event.metadata().level()) as i32;
        let server = MAIN_SERVER.load(Ordering::Acquire);
        let request = CURRENT_REQUEST.with(Cell::get);
        if server.is_null() && request.is_null() {
            return;
        }
        // SAFETY: `server` is the main server record (see `install`) or null, `request` is this
        // thread's live request (see `RequestScope::enter`) or null; the shim reads their log
        // configuration only.
        if unsafe { sys::wsgi_shim_log_enabled(server, request, level) } == 0 {
            return;
        }

        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let id = visitor.request_id.or_else(current_request_id);
        let mut line = String::with_capacity(visitor.message.len() + 32);
        if let Some(id) = id {
            let _ = write!(line, "[request {id}] ");
        }
        line.push_str(&visitor.message);
        line.push_str(&visitor.fields);
        // Interior NULs would cut the message short in C; show them instead.
        let text = CString::new(line.replace('\0', "\\0")).unwrap_or_default();

        let meta = event.metadata();
        let file = CString::new(meta.file().unwrap_or("mod_wsgi")).unwrap_or_default();
        let line_no = meta.line().map_or(0, |l| l as i32);
        if request.is_null() {
            // SAFETY: `server` is non-null here (checked above) and valid (see `install`);
            // the strings outlive the call.
            unsafe {
                sys::wsgi_shim_log_server(server, file.as_ptr(), line_no, level, text.as_ptr());
            }
        } else {
            // SAFETY: `request` is this thread's live request; the strings outlive the call.
            unsafe {
                sys::wsgi_shim_log_request(request, file.as_ptr(), line_no, level, text.as_ptr());
            }
        }
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
    request_id: Option<String>,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "request_id" => self.request_id = Some(value.to_owned()),
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "request_id" => self.request_id = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}
