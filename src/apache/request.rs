//! Safe views of one Apache request (`request_rec`) for the handler and hooks.
//!
//! [`Request`] borrows the record for the duration of one hook call and only lives on the
//! thread Apache called the hook on. [`RequestIo`] is the part the WSGI objects need (reading
//! the body, sending the response): it is `Send + Sync + 'static`, so a Python object may keep
//! it and an application thread may use it, but it only reaches the request while
//! [`Request::with_io`] runs; afterwards every call returns [`IoError::Ended`]. A mutex
//! serialises all access, because Apache's request is not thread-safe; callers must not hold the
//! Python GIL while they wait for it (see `src/wsgi/`).

use std::ffi::{CStr, CString, c_char};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use parking_lot::Mutex;

use super::config::{dir_config, server_config};
use super::sys;
use crate::config::{DirConfig, ServerConfig};

/// A request record during one hook call.
pub struct Request<'r> {
    raw: NonNull<sys::request_rec>,
    _borrow: PhantomData<&'r mut sys::request_rec>,
}

/// What the request's file name points at, from Apache's own `stat` (`r->finfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Nothing there.
    Missing,
    /// A regular file.
    Regular,
    /// A folder.
    Directory,
    /// Something else (device, socket, …).
    Other,
}

impl<'r> Request<'r> {
    /// Wraps the record Apache passed to a hook.
    ///
    /// # Safety
    /// `r` must be null or a request record that stays valid, and is used by no other thread,
    /// for `'r` (the hook call).
    pub unsafe fn from_raw(r: *mut sys::request_rec) -> Option<Self> {
        NonNull::new(r).map(|raw| Self {
            raw,
            _borrow: PhantomData,
        })
    }

    fn rec(&self) -> &sys::request_rec {
        // SAFETY: valid and unshared for 'r (contract of `from_raw`).
        unsafe { self.raw.as_ref() }
    }

    /// The raw record, for the log bridge's request scope.
    pub(crate) fn as_ptr(&self) -> *mut sys::request_rec {
        self.raw.as_ptr()
    }

    /// This server's (or virtual host's) WSGI settings.
    pub fn server_config(&self) -> &'r ServerConfig {
        // SAFETY: `server` of a live request is its virtual host, whose config lives in the
        // configuration pool, longer than any request.
        unsafe { server_config(self.rec().server) }
    }

    /// The merged per-directory WSGI settings of this request.
    pub fn dir_config(&self) -> &'r DirConfig {
        // SAFETY: `per_dir_config` of a live request holds our record (made by
        // `create_dir_config`/`merge_dir_config`) in a pool that outlives the hook call.
        unsafe { dir_config(self.rec().per_dir_config) }
    }

    /// The decoded request path (`r->uri`).
    pub fn uri(&self) -> &'r [u8] {
        bytes(self.rec().uri)
    }

    /// The request target exactly as the client sent it (`r->unparsed_uri`).
    pub fn unparsed_uri(&self) -> &'r [u8] {
        bytes(self.rec().unparsed_uri)
    }

    /// The query string, without `?`.
    pub fn args(&self) -> &'r [u8] {
        bytes(self.rec().args)
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'r [u8] {
        bytes(self.rec().method)
    }

    /// The protocol, e.g. `HTTP/1.1`.
    pub fn protocol(&self) -> &'r [u8] {
        bytes(self.rec().protocol)
    }

    /// When Apache read the request line, in microseconds since the epoch.
    pub fn request_time(&self) -> i64 {
        self.rec().request_time
    }

    /// Whether only the headers are to be sent (a HEAD request).
    pub fn header_only(&self) -> bool {
        self.rec().header_only != 0
    }

    /// The handler name Apache chose (`r->handler`).
    pub fn handler(&self) -> &'r [u8] {
        bytes(self.rec().handler)
    }

    /// The file the request maps to (`r->filename`).
    pub fn filename(&self) -> &'r [u8] {
        bytes(self.rec().filename)
    }

    /// Path info: what followed the file name in the URL.
    pub fn path_info(&self) -> &'r [u8] {
        bytes(self.rec().path_info)
    }

    /// Whether `AcceptPathInfo Off` forbids path info here.
    pub fn rejects_path_info(&self) -> bool {
        self.rec().used_path_info == sys::AP_REQ_REJECT_PATH_INFO as i32
    }

    /// What `r->filename` is, per Apache's `stat`.
    pub fn file_kind(&self) -> FileKind {
        match self.rec().finfo.filetype {
            sys::apr_filetype_e_APR_NOFILE => FileKind::Missing,
            sys::apr_filetype_e_APR_REG => FileKind::Regular,
            sys::apr_filetype_e_APR_DIR => FileKind::Directory,
            _ => FileKind::Other,
        }
    }

    /// Modification time of `r->filename` in microseconds since the epoch.
    pub fn file_mtime(&self) -> i64 {
        self.rec().finfo.mtime
    }

    /// Whether `Options ExecCGI` is on for this request.
    pub fn allows_exec_cgi(&self) -> bool {
        // SAFETY: a live request; `ap_allow_options` only reads its core config.
        let options = unsafe { sys::ap_allow_options(self.raw.as_ptr()) };
        options & sys::OPT_EXECCGI as i32 != 0
    }

    /// The virtual host's `ServerName`.
    pub fn server_name(&self) -> String {
        // SAFETY: `server` of a live request is valid (see `server_config`).
        let server = unsafe { &*self.rec().server };
        String::from_utf8_lossy(bytes(server.server_hostname)).into_owned()
    }

    /// The local port the request arrived on.
    pub fn local_port(&self) -> u16 {
        // SAFETY: `connection` of a live request is valid for the request.
        let conn = unsafe { &*self.rec().connection };
        // SAFETY: `local_addr` of a live connection is a valid socket address record.
        unsafe { (*conn.local_addr).port }
    }

    /// The local address the request arrived on.
    pub fn local_ip(&self) -> &'r [u8] {
        // SAFETY: `connection` of a live request is valid for the request.
        bytes(unsafe { (*self.rec().connection).local_ip })
    }

    /// Whether an output filter that works on the body (Apache's resource or content-set
    /// filters: DEFLATE, caches, substitutions) is the first in the chain.
    pub fn has_content_filter(&self) -> bool {
        // SAFETY: a live request; the shim only reads its filter chain.
        let first = unsafe { sys::wsgi_shim_first_filter_type(self.raw.as_ptr()) };
        first >= 0 && first < sys::ap_filter_type_AP_FTYPE_PROTOCOL as i32
    }

    /// The authenticated user (`r->user`).
    pub fn user(&self) -> Option<String> {
        let user = self.rec().user;
        (!user.is_null()).then(|| String::from_utf8_lossy(bytes(user)).into_owned())
    }

    /// Replaces the authenticated user name (a copy in the request pool).
    pub fn set_user(&mut self, user: &str) {
        let copy = self.pool_bytes(user.as_bytes());
        // SAFETY: exclusive access for 'r; the copy lives in the request pool.
        unsafe { (*self.raw.as_ptr()).user = copy };
    }

    /// The client's host name (when `HostnameLookups` found one), else its address.
    pub fn remote_host(&self) -> Option<String> {
        let r = self.raw.as_ptr();
        // SAFETY: a live request and its connection; Apache returns a pool string or NULL.
        let host = unsafe {
            sys::ap_get_remote_host(
                (*r).connection,
                (*r).per_dir_config.cast(),
                sys::REMOTE_NAME as i32,
                ptr::null_mut(),
            )
        };
        (!host.is_null()).then(|| String::from_utf8_lossy(bytes(host)).into_owned())
    }

    /// A request header.
    pub fn header_in(&self, name: &CStr) -> Option<&'r [u8]> {
        // SAFETY: `headers_in` is a live table; `name` is NUL-terminated.
        let v = unsafe { sys::apr_table_get(self.rec().headers_in, name.as_ptr()) };
        (!v.is_null()).then(|| bytes(v))
    }

    /// Removes every request header whose name `drop` says so (before the CGI variables are
    /// made from them).
    pub fn remove_headers_in(&mut self, drop: impl Fn(&[u8]) -> bool) {
        let names: Vec<CString> = table_entries(self.rec().headers_in)
            .filter(|(k, _)| drop(k))
            .filter_map(|(k, _)| CString::new(k).ok())
            .collect();
        for name in names {
            // SAFETY: live table, NUL-terminated key.
            unsafe { sys::apr_table_unset(self.rec().headers_in, name.as_ptr()) };
        }
    }

    /// A request note (`r->notes`).
    pub fn note(&self, name: &CStr) -> Option<&'r [u8]> {
        // SAFETY: `notes` is a live table; `name` is NUL-terminated.
        let v = unsafe { sys::apr_table_get(self.rec().notes, name.as_ptr()) };
        (!v.is_null()).then(|| bytes(v))
    }

    /// Sets a request note.
    pub fn set_note(&mut self, name: &CStr, value: &str) {
        let value = cstring(value);
        // SAFETY: `notes` is a live table; apr_table_set copies both strings into its pool.
        unsafe { sys::apr_table_set(self.rec().notes, name.as_ptr(), value.as_ptr()) };
    }

    /// Sets `r->filename` (a copy in the request pool).
    pub fn set_filename(&mut self, filename: &[u8]) {
        let copy = self.pool_bytes(filename);
        // SAFETY: exclusive access for 'r; the copy lives in the request pool.
        unsafe { (*self.raw.as_ptr()).filename = copy };
    }

    /// Sets `r->handler` to a static name.
    pub fn set_handler(&mut self, handler: &'static CStr) {
        // SAFETY: exclusive access for 'r; the name is 'static.
        unsafe { (*self.raw.as_ptr()).handler = handler.as_ptr() };
    }

    /// Fills `r->subprocess_env` with Apache's standard CGI variables (headers as `HTTP_*`,
    /// server and client addresses, `SCRIPT_FILENAME`, …) on top of what `SetEnv` and friends
    /// put there.
    pub fn add_common_vars(&mut self) {
        // SAFETY: a live request used only by this thread.
        unsafe { sys::ap_add_common_vars(self.raw.as_ptr()) };
    }

    /// The request's environment table (`r->subprocess_env`), in order.
    pub fn subprocess_env(&self) -> impl Iterator<Item = (&'r [u8], &'r [u8])> {
        table_entries(self.rec().subprocess_env)
    }

    /// A variable of `r->subprocess_env`.
    pub fn env_var(&self, name: &CStr) -> Option<&'r [u8]> {
        // SAFETY: live table, NUL-terminated key.
        let v = unsafe { sys::apr_table_get(self.rec().subprocess_env, name.as_ptr()) };
        (!v.is_null()).then(|| bytes(v))
    }

    /// Apache's log id for this request (generated now if no one asked for it yet).
    pub fn log_id(&mut self) -> String {
        if self.rec().log_id.is_null() {
            let r = self.raw.as_ptr();
            // SAFETY: a live request; the hook stores a pool string in `log_id` (which is where
            // Apache itself keeps it), and does nothing else with the record.
            unsafe { sys::ap_run_generate_log_id((*r).connection, r, &raw mut (*r).log_id) };
        }
        String::from_utf8_lossy(bytes(self.rec().log_id)).into_owned()
    }

    /// Prepares to read the body: `Err(status)` when Apache refuses it (e.g. 411 for a chunked
    /// body when `dechunk` is false, 413 over `LimitRequestBody`).
    pub fn setup_body(&mut self, dechunk: bool) -> Result<(), i32> {
        let policy = if dechunk {
            sys::REQUEST_CHUNKED_DECHUNK
        } else {
            sys::REQUEST_CHUNKED_ERROR
        };
        // SAFETY: a live request used only by this thread.
        let status = unsafe { sys::ap_setup_client_block(self.raw.as_ptr(), policy as i32) };
        if status == sys::OK as i32 {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// Serves `location` (a local URL) instead, as a GET, the way CGI scripts redirect with a
    /// `Location` header and status 200.
    pub fn internal_redirect(&mut self, location: &str) {
        let location = cstring(location);
        let r = self.raw.as_ptr();
        // SAFETY: exclusive access for 'r; the strings handed over are 'static or copied into
        // the request pool; this is the sequence mod_cgi uses for the same purpose.
        unsafe {
            (*r).method = c"GET".as_ptr();
            (*r).method_number = sys::M_GET as i32;
            sys::apr_table_unset((*r).headers_in, c"Content-Length".as_ptr());
            let copy = sys::apr_pstrdup((*r).pool, location.as_ptr());
            sys::ap_internal_redirect_handler(copy, r);
        }
    }

    /// Runs `body` with a handle on the request's I/O that works until `body` returns (or
    /// unwinds) and reports [`IoError::Ended`] after.
    pub fn with_io<R>(&mut self, body: impl FnOnce(&RequestIo) -> R) -> R {
        let io = RequestIo(Arc::new(Mutex::new(Some(IoState {
            r: self.raw,
            brigade: ptr::null_mut(),
            body_checked: false,
            body_expected: false,
        }))));
        let _close = CloseOnDrop(&io);
        body(&io)
    }

    fn pool_bytes(&self, s: &[u8]) -> *mut c_char {
        // Bytes after a NUL (which a decoded URL never has: Apache refuses %00) are dropped.
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        // SAFETY: copies `end` bytes into the live request pool and NUL-terminates them.
        unsafe { sys::apr_pstrmemdup(self.rec().pool, s.as_ptr().cast(), end) }
    }
}

/// The request's I/O, shareable with Python objects; see the module docs.
#[derive(Clone)]
pub struct RequestIo(Arc<Mutex<Option<IoState>>>);

struct IoState {
    r: NonNull<sys::request_rec>,
    brigade: *mut sys::apr_bucket_brigade,
    body_checked: bool,
    body_expected: bool,
}

// SAFETY: the raw pointers are only dereferenced with the mutex held and while `with_io` runs,
// during which Apache does not touch the request on any other thread (the handler thread is
// inside `with_io`, blocked in Python or waiting for this same mutex). Apache allows a request
// to be used from any one thread at a time.
unsafe impl Send for IoState {}

struct CloseOnDrop<'a>(&'a RequestIo);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        *self.0.0.lock() = None;
    }
}

/// Why request I/O failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoError {
    /// The request is over; the handle outlived it.
    #[error("the request has ended")]
    Ended,
    /// Reading the request body failed (client gone, timeout, bad chunking, short body).
    #[error("request body read failed")]
    Read,
    /// The client connection was closed or failed while sending.
    #[error("client connection closed")]
    Write,
}

/// One header to send, already validated by the WSGI layer.
pub struct Header<'a> {
    /// Header name.
    pub name: &'a str,
    /// Header value.
    pub value: &'a str,
}

impl RequestIo {
    fn with<R>(&self, f: impl FnOnce(&mut IoState) -> Result<R, IoError>) -> Result<R, IoError> {
        let mut guard = self.0.lock();
        let state = guard.as_mut().ok_or(IoError::Ended)?;
        f(state)
    }

    /// Reads up to `buf.len()` bytes of the request body; `Ok(0)` at its end.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, IoError> {
        // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and `read_into` only
        // writes initialised bytes into the slice (Apache copies body bytes there).
        let space = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [MaybeUninit<u8>]) };
        self.read_into(space)
    }

    /// [`RequestIo::read`] into space that need not be initialised; returns the bytes read,
    /// at the start of `buf` (none at the end of the body).
    pub fn read_uninit<'a>(&self, buf: &'a mut [MaybeUninit<u8>]) -> Result<&'a mut [u8], IoError> {
        let n = self.read_into(buf)?;
        // SAFETY: `read_into` returns how many bytes Apache wrote at the start of `buf`
        // (at most its length), so they are initialised.
        Ok(unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), n) })
    }

    /// Copies up to `buf.len()` body bytes to the start of `buf`; returns how many.
    fn read_into(&self, buf: &mut [MaybeUninit<u8>]) -> Result<usize, IoError> {
        self.with(|s| {
            let r = s.r.as_ptr();
            if !s.body_checked {
                s.body_checked = true;
                // SAFETY: live request (see IoState's Send note); called once, after
                // `setup_body`.
                s.body_expected = unsafe { sys::ap_should_client_block(r) } != 0;
            }
            if !s.body_expected || buf.is_empty() {
                return Ok(0);
            }
            // SAFETY: live request; `buf` is writable for its length (Apache only writes to
            // it, so its bytes need not be initialised), and at most that many are written.
            let n = unsafe { sys::ap_get_client_block(r, buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                n if n < 0 => {
                    s.body_expected = false;
                    Err(IoError::Read)
                }
                0 => {
                    s.body_expected = false;
                    Ok(0)
                }
                // Never more than asked for; the bound keeps `read_uninit` sound regardless.
                n => Ok((n as usize).min(buf.len())),
            }
        })
    }

    /// Sets the status and headers of the response (sent with the first body bytes).
    pub fn set_head(
        &self,
        status: u16,
        reason: Option<&str>,
        headers: &[Header<'_>],
    ) -> Result<(), IoError> {
        self.with(|s| Self::put_head(s, status, reason, headers))
    }

    /// [`RequestIo::set_head`] unless another thread is using the request (reading its body):
    /// `None` then, without waiting.
    pub fn try_set_head(
        &self,
        status: u16,
        reason: Option<&str>,
        headers: &[Header<'_>],
    ) -> Option<Result<(), IoError>> {
        let mut guard = self.0.try_lock()?;
        Some(match guard.as_mut() {
            Some(state) => Self::put_head(state, status, reason, headers),
            None => Err(IoError::Ended),
        })
    }

    fn put_head(
        s: &mut IoState,
        status: u16,
        reason: Option<&str>,
        headers: &[Header<'_>],
    ) -> Result<(), IoError> {
        let r = s.r.as_ptr();
        // SAFETY: live request; every string handed to Apache is first copied into the
        // request pool (apr_pstrdup, or apr_table_add which copies), so nothing points
        // into Rust or Python memory after this returns (the CVE-2014-0242 class).
        unsafe {
            let pool = (*r).pool;
            (*r).status = i32::from(status);
            (*r).status_line = match reason {
                Some(reason) => pool_copy(pool, &format!("{status} {reason}")),
                None => ptr::null(),
            };
            for h in headers {
                let name = cstring(h.name);
                let value = cstring(h.value);
                if h.name.eq_ignore_ascii_case("content-type") {
                    sys::ap_set_content_type(r, sys::apr_pstrdup(pool, value.as_ptr()));
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    let length = h.value.trim().parse::<i64>().unwrap_or(0);
                    sys::ap_set_content_length(r, length);
                } else if h.name.eq_ignore_ascii_case("www-authenticate") {
                    sys::apr_table_add((*r).err_headers_out, name.as_ptr(), value.as_ptr());
                } else {
                    sys::apr_table_add((*r).headers_out, name.as_ptr(), value.as_ptr());
                }
            }
        }
        Ok(())
    }

    /// Sends body bytes (with a flush, so streamed output reaches the client as it is made).
    pub fn write(&self, data: &[u8]) -> Result<(), IoError> {
        self.with(|s| {
            let r = s.r.as_ptr();
            // SAFETY: live request; `data` is only read during the call (a transient bucket,
            // which filters that keep it copy first), and the brigade is emptied after each
            // pass so no bucket refers to `data` afterwards.
            unsafe {
                if s.brigade.is_null() {
                    s.brigade = sys::apr_brigade_create((*r).pool, (*(*r).connection).bucket_alloc);
                }
                let status =
                    sys::wsgi_shim_pass_bytes(r, s.brigade, data.as_ptr().cast(), data.len(), 1);
                sys::apr_brigade_cleanup(s.brigade.cast());
                if status != sys::APR_SUCCESS as i32 || (*(*r).connection).aborted != 0 {
                    return Err(IoError::Write);
                }
            }
            Ok(())
        })
    }

    /// Sends `len` bytes of an open regular file from `offset` as the rest of the response
    /// (followed by the end-of-stream marker). Takes ownership
    /// of `fd` (a descriptor nobody else uses), which is closed with the request.
    pub fn send_file(
        &self,
        fd: OwnedFd,
        offset: u64,
        len: u64,
        sendfile: bool,
    ) -> Result<(), IoError> {
        self.with(|s| {
            let r = s.r.as_ptr();
            let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
                return Err(IoError::Write);
            };
            // SAFETY: live request (see IoState's Send note); the shim takes ownership of the
            // descriptor (closing it with the request pool, or at once on failure) and flushes
            // the file bucket before returning, with mmap disabled for it.
            unsafe {
                if s.brigade.is_null() {
                    s.brigade = sys::apr_brigade_create((*r).pool, (*(*r).connection).bucket_alloc);
                }
                let status = sys::wsgi_shim_pass_file(
                    r,
                    s.brigade,
                    fd.into_raw_fd(),
                    offset,
                    len,
                    i32::from(sendfile),
                );
                sys::apr_brigade_cleanup(s.brigade.cast());
                if status != sys::APR_SUCCESS as i32 || (*(*r).connection).aborted != 0 {
                    return Err(IoError::Write);
                }
            }
            Ok(())
        })
    }

    /// Whether the connection is TLS (mod_ssl's `ssl_is_https`); false without mod_ssl.
    pub fn ssl_is_https(&self) -> Result<bool, IoError> {
        type IsHttps = unsafe extern "C" fn(*mut sys::conn_rec) -> std::ffi::c_int;
        self.with(|s| {
            // SAFETY: mod_ssl registers `ssl_is_https` with exactly this signature; a missing
            // function is NULL. The connection of a live request is valid.
            unsafe {
                let f = sys::apr_dynamic_fn_retrieve(c"ssl_is_https".as_ptr());
                let Some(f) = f else { return Ok(false) };
                let f: IsHttps = std::mem::transmute::<unsafe extern "C" fn(), IsHttps>(f);
                Ok(f((*s.r.as_ptr()).connection) != 0)
            }
        })
    }

    /// A mod_ssl variable (`ssl_var_lookup`), e.g. `SSL_PROTOCOL`; `None` without mod_ssl.
    pub fn ssl_var(&self, name: &str) -> Result<Option<String>, IoError> {
        type VarLookup = unsafe extern "C" fn(
            *mut sys::apr_pool_t,
            *mut sys::server_rec,
            *mut sys::conn_rec,
            *mut sys::request_rec,
            *mut c_char,
        ) -> *mut c_char;
        let name = cstring(name);
        self.with(|s| {
            let r = s.r.as_ptr();
            // SAFETY: mod_ssl registers `ssl_var_lookup` with exactly this signature; a missing
            // function is NULL. All records belong to the live request; the name is copied into
            // the request pool; the result is a pool string or NULL.
            unsafe {
                let f = sys::apr_dynamic_fn_retrieve(c"ssl_var_lookup".as_ptr());
                let Some(f) = f else { return Ok(None) };
                let f: VarLookup = std::mem::transmute::<unsafe extern "C" fn(), VarLookup>(f);
                let name = sys::apr_pstrdup((*r).pool, name.as_ptr());
                let value = f((*r).pool, (*r).server, (*r).connection, r, name);
                Ok((!value.is_null()).then(|| String::from_utf8_lossy(bytes(value)).into_owned()))
            }
        })
    }

    /// Ends the response abnormally: the connection is closed after what was sent, without
    /// the end-of-body marker, so the client can tell the response is incomplete.
    pub fn abort(&self) -> Result<(), IoError> {
        self.with(|s| {
            // SAFETY: live request and connection; setting these flags is how Apache modules
            // drop a connection (output filters stop writing to an aborted connection).
            unsafe {
                let c = (*s.r.as_ptr()).connection;
                (*c).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE;
                (*c).aborted = 1;
            }
            Ok(())
        })
    }
}

/// The bytes of a C string, or empty for NULL. The result lives as long as the string's pool.
fn bytes<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        &[]
    } else {
        // SAFETY: Apache's strings in request, connection and config records are NUL-terminated
        // and live in pools that outlive the borrow given out here ('r at most).
        unsafe { CStr::from_ptr(p) }.to_bytes()
    }
}

/// The entries of an APR table, in order.
fn table_entries<'a>(table: *const sys::apr_table_t) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let entries: &[sys::apr_table_entry_t] = if table.is_null() {
        &[]
    } else {
        // SAFETY: `apr_table_elts` returns the table's array header, whose `elts` holds `nelts`
        // entries of `apr_table_entry_t`; the table lives in a pool that outlives 'a.
        unsafe {
            let header = &*sys::apr_table_elts(table);
            if header.elts.is_null() || header.nelts <= 0 {
                &[]
            } else {
                std::slice::from_raw_parts(header.elts.cast(), header.nelts as usize)
            }
        }
    };
    entries
        .iter()
        .filter(|e| !e.key.is_null())
        .map(|e| (bytes(e.key), bytes(e.val)))
}

/// A C string of `s`; an interior NUL (which validated input never has) ends it early.
fn cstring(s: &str) -> CString {
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

/// Copies `s` into `pool`.
///
/// # Safety
/// `pool` must be a live APR pool.
unsafe fn pool_copy(pool: *mut sys::apr_pool_t, s: &str) -> *const c_char {
    let c = cstring(s);
    // SAFETY: live pool (caller); apr_pstrdup copies the NUL-terminated string.
    unsafe { sys::apr_pstrdup(pool, c.as_ptr()) }
}

/// What one [`recv_with_fds`] call got.
pub struct Received {
    /// Bytes read into the buffer; 0 at the end of the stream.
    pub bytes: usize,
    /// Whether the kernel dropped control data that did not fit (`MSG_CTRUNC`): descriptors
    /// sent with these bytes were then closed on the way.
    pub truncated: bool,
}

/// The most descriptors one [`recv_with_fds`] call takes; the daemon sends one per response.
const RECV_FDS: usize = 4;

/// Reads from the Unix stream socket `socket` with `recvmsg`, appending every descriptor that
/// arrives with the bytes (`SCM_RIGHTS`, made close-on-exec) to `fds`, in order. Daemon mode
/// reads the daemon's frames with it (its file responses come as a descriptor), so that no
/// descriptor can arrive unseen and stay open. Interrupted calls are not retried.
///
/// # Errors
///
/// The socket's error, including `WouldBlock` when its read timeout expires.
pub fn recv_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> std::io::Result<Received> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    let mut space = nix::cmsg_space!([RawFd; RECV_FDS]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let received = Received {
        bytes: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_CTRUNC),
    };
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel has just installed each of these descriptors in this process
            // for this message; nothing else knows them, so each OwnedFd is the only owner.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(received)
}
