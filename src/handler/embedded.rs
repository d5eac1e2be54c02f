//! Running a WSGI application inside the Apache child: the request's CGI variables are gathered
//! from Apache, then the application runs in its interpreter with an [`EmbeddedBackend`] over
//! the request's I/O.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{application_group, callable_object, split_script_name};
use crate::apache::{Header, IoError, Request, RequestIo, sys};
use crate::config::{AliasOptions, HeadMapping};
use crate::daemon::manager::GroupInfo;
use crate::python::runtime;
use crate::wsgi::response::ResponseHead;
use crate::wsgi::{self, Backend, BackendError, Outcome, RequestSpec};

/// The WSGI backend of an embedded request: Apache's own request I/O, and whether files may go
/// out through the kernel's sendfile (`WSGIEnableSendfile`).
pub struct EmbeddedBackend {
    io: RequestIo,
    sendfile: bool,
    /// Bytes of a list response held back ([`Backend::hold`]) until the application has
    /// returned and the GIL is released; then sent in one write.
    held: Mutex<Vec<u8>>,
}

/// The most bytes an embedded response holds back before writing.
const HOLD_LIMIT: usize = 256 * 1024;

impl EmbeddedBackend {
    /// Writes the held bytes, if any, before other output.
    fn write_held(&self) -> Result<(), BackendError> {
        let held = std::mem::take(&mut *self.held.lock());
        if held.is_empty() {
            return Ok(());
        }
        self.io.write(&held).map_err(backend_error)
    }

    /// Ends the response after the application returned: the held bytes go out, flushed (as
    /// every write is: leaving them to Apache's end-of-request flush measured 20% slower at 1
    /// connection). Called without the GIL.
    fn complete(&self) {
        if let Err(e) = self.write_held() {
            tracing::debug!("client went away while sending the response: {e}");
        }
    }
}

fn backend_error(e: IoError) -> BackendError {
    match e {
        IoError::Read => BackendError::Read,
        IoError::Write => BackendError::Write,
        _ => BackendError::Ended,
    }
}

/// The headers of `head`, borrowed, as Apache's request I/O takes them.
fn header_refs(head: &ResponseHead) -> Vec<Header<'_>> {
    head.headers
        .iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

impl Backend for EmbeddedBackend {
    fn read(&self, buf: &mut [u8]) -> Result<usize, BackendError> {
        self.io.read(buf).map_err(backend_error)
    }

    fn read_uninit<'a>(
        &self,
        buf: &'a mut [MaybeUninit<u8>],
    ) -> Result<&'a mut [u8], BackendError> {
        self.io.read_uninit(buf).map_err(backend_error)
    }

    fn set_head(&self, head: &ResponseHead) -> Result<(), BackendError> {
        let headers = header_refs(head);
        self.io
            .set_head(head.status, head.reason.as_deref(), &headers)
            .map_err(backend_error)
    }

    fn write(&self, data: &[u8]) -> Result<(), BackendError> {
        self.write_held()?;
        self.io.write(data).map_err(backend_error)
    }

    fn try_set_head(&self, head: &ResponseHead) -> Result<bool, BackendError> {
        let headers = header_refs(head);
        match self
            .io
            .try_set_head(head.status, head.reason.as_deref(), &headers)
        {
            Some(done) => done.map(|()| true).map_err(backend_error),
            None => Ok(false),
        }
    }

    fn hold(&self, data: &[u8]) -> Result<bool, BackendError> {
        let Some(mut held) = self.held.try_lock() else {
            return Ok(false);
        };
        if held.len() + data.len() > HOLD_LIMIT {
            return Ok(false);
        }
        held.extend_from_slice(data);
        Ok(true)
    }

    fn abort(&self) {
        let _ = self.write_held();
        let _ = self.io.abort();
    }

    fn send_file(&self, fd: OwnedFd, offset: u64, len: u64) -> Result<bool, BackendError> {
        self.write_held()?;
        self.io
            .send_file(fd, offset, len, self.sendfile)
            .map(|()| true)
            .map_err(backend_error)
    }
}

/// What serves a request: the script and the choices made for it.
pub(super) struct Target<'r> {
    /// The WSGI script file.
    pub script: String,
    /// Its modification time when it is not the request's own file (a handler script).
    pub mtime: Option<i64>,
    /// Options of the alias or handler script that chose it.
    pub options: Option<&'r AliasOptions>,
    /// The callable, when fixed (`handle_request` of handler scripts, or a dispatch script's).
    pub callable: Option<String>,
    /// The application group, when a dispatch script chose it.
    pub application_group: Option<String>,
}

/// Serves the request with the application in `script`.
pub(super) fn serve(r: &mut Request<'_>, target: &Target<'_>, daemon: Option<&GroupInfo>) -> i32 {
    let (script, options) = (target.script.as_str(), target.options);
    let dir = r.dir_config();
    let chunked_allowed = dir.chunked_request.unwrap_or(false);
    if let Err(status) = r.setup_body(chunked_allowed) {
        if status == sys::HTTP_LENGTH_REQUIRED as i32 && !chunked_allowed {
            tracing::error!(
                "WSGI0026: a chunked request body was refused for '{script}': it needs \
                 `WSGIChunkedRequest On`"
            );
        }
        return status;
    }
    // Header names with characters other than letters, digits and '-' could be confused with
    // others once turned into CGI names (X-Foo_Bar vs X-Foo-Bar): drop them.
    r.remove_headers_in(|name| !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-'));
    r.add_common_vars();

    let request_id = r.log_id();
    let (script_name, path_info) = split_script_name(r.uri(), r.path_info());
    let group = target
        .application_group
        .clone()
        .unwrap_or_else(|| application_group(r, options, &String::from_utf8_lossy(&script_name)));
    let callable = target
        .callable
        .clone()
        .unwrap_or_else(|| callable_object(r, options));
    let pass_authorization = options
        .and_then(|o| o.pass_authorization)
        .or(dir.pass_authorization)
        .unwrap_or(false);

    let method = match (r.method(), dir.map_head_to_get.unwrap_or_default()) {
        (b"HEAD", HeadMapping::On) => b"GET".as_slice(),
        (b"HEAD", HeadMapping::Auto) if r.has_content_filter() => b"GET".as_slice(),
        (method, _) => method,
    };
    // Sized once: grown by doubling, the vector was reallocated three times per request, and
    // glibc keeps each chunk that a realloc frees in the thread's cache (see "Memory of the
    // Apache children in daemon mode" in docs/performance.md).
    let env = r.subprocess_env();
    let mut cgi: Vec<(&[u8], &[u8])> = Vec::with_capacity(env.size_hint().1.unwrap_or(0) + 16);
    cgi.extend(env);
    cgi.extend_from_slice(&[
        (b"GATEWAY_INTERFACE".as_slice(), b"CGI/1.1".as_slice()),
        (b"SERVER_PROTOCOL", r.protocol()),
        (b"REQUEST_METHOD", method),
        (b"QUERY_STRING", r.args()),
        (b"REQUEST_URI", r.unparsed_uri()),
        (b"SCRIPT_NAME", &script_name),
        (b"PATH_INFO", &path_info),
    ]);
    if let Some(auth) = r.header_in(c"Authorization").filter(|_| pass_authorization) {
        cgi.push((b"HTTP_AUTHORIZATION", auth));
    }
    // Trusted proxy headers: drop what may not be trusted, rewrite from what may.
    let proxied = super::proxy::changes(
        &cgi,
        dir.trusted_proxy_headers.as_deref().unwrap_or_default(),
        dir.trusted_proxies.as_deref(),
    );
    if !proxied.remove.is_empty() || !proxied.set.is_empty() {
        cgi.retain(|(k, _)| !proxied.remove.iter().any(|r| r == k));
        cgi.extend(
            proxied
                .set
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
    }

    let info = runtime::settings().map(|(_, info)| info.clone());
    let (threads, processes, apache_version) = info.as_ref().map_or((1, 1, (2, 4, 0)), |i| {
        (i.threads_per_process, i.maximum_processes, i.apache_version)
    });
    // Apache's request time is in microseconds since the epoch.
    let request_start = r.request_time() as f64 / 1e6;
    let handler_name = String::from_utf8_lossy(r.handler()).into_owned();
    let spec = RequestSpec {
        script,
        script_mtime: target.mtime.unwrap_or_else(|| r.file_mtime()),
        reloading: dir.script_reloading.unwrap_or(true),
        callable: &callable,
        cgi,
        process_group: "",
        application_group: &group,
        request_handler: &handler_name,
        header_only: r.header_only(),
        request_id: &request_id,
        request_start,
        queue_start: 0.0,
        multithread: threads > 1,
        multiprocess: processes > 1,
        apache_version,
        loaded: None,
    };

    if let Some(group) = daemon {
        let error_override = dir.error_override.unwrap_or(false);
        return crate::daemon::client::relay(
            r,
            &spec,
            group,
            error_override,
            dir.enable_sendfile.unwrap_or(false),
        );
    }
    let outcome = r.with_io(|io| {
        let backend = Arc::new(EmbeddedBackend {
            io: io.clone(),
            sendfile: dir.enable_sendfile.unwrap_or(false),
            held: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&backend) as Arc<dyn Backend>;
        let outcome = runtime::run_in(&group, |py| wsgi::serve(py, &spec, shared));
        backend.complete();
        outcome
    });
    match outcome {
        Ok(Outcome::Sent) => sys::OK as i32,
        Ok(Outcome::NoCallable) => sys::HTTP_NOT_FOUND as i32,
        Ok(Outcome::Failed) => sys::HTTP_INTERNAL_SERVER_ERROR as i32,
        Err(e) => {
            tracing::error!("WSGI0023: cannot run '{script}': {e}");
            sys::HTTP_INTERNAL_SERVER_ERROR as i32
        }
    }
}
