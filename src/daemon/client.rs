//! The Apache child's side of daemon mode: relays one request to its daemon process group and
//! the response back to the client.
//!
//! Runs on the Apache worker thread that took the request; Python is never involved here.
//! The connection is retried with a growing delay until the group's `connect-timeout` (a
//! daemon that is restarting is not yet listening); giving up answers 503. The daemon pulls the
//! request body (`ReadBody`), so nothing is read from the client unless the application asks
//! for it (and `100 Continue` is only sent then). A daemon that goes away before its response
//! is complete gives the client a 502 if nothing was sent yet, else a cut-short response.

use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::manager::GroupInfo;
use super::protocol::{self, Frame, Incoming, MAX_PAYLOAD, ProtocolError, RequestRef};
use crate::apache::request::recv_with_fds;
use crate::apache::{Header, Request, RequestIo, sys};
use crate::wsgi::RequestSpec;

/// Relays the request described by `spec` to `group`; returns the handler's status.
///
/// With `error_override` (`WSGIErrorOverride On`), an error status (400 or more) from the
/// application is answered by Apache itself (its `ErrorDocument`), and the application's body
/// is dropped. `sendfile` (`WSGIEnableSendfile`) lets Apache send a file response from the
/// daemon (`wsgi.file_wrapper`) with the kernel's sendfile, as in embedded mode.
pub fn relay(
    r: &mut Request<'_>,
    spec: &RequestSpec<'_>,
    group: &GroupInfo,
    error_override: bool,
    sendfile: bool,
) -> i32 {
    let name = &group.config.name;
    if let Err(why) = check_script_owner(spec.script, &group.config) {
        tracing::error!(
            "WSGI0049: '{}' may not run in daemon process '{name}': {why}",
            spec.script
        );
        return sys::HTTP_FORBIDDEN as i32;
    }
    // Encoded once, for every attempt, straight from the borrowed environment.
    let request = RequestRef {
        secret: &group.secret,
        script: spec.script.as_bytes(),
        application_group: spec.application_group,
        callable: spec.callable,
        request_id: spec.request_id,
        handler: spec.request_handler,
        reloading: spec.reloading,
        header_only: spec.header_only,
        request_start_us: (spec.request_start * 1e6) as i64,
        env: &spec.cgi,
    };
    let request = match request.encoded() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!("WSGI0041: cannot send the request to daemon process '{name}': {e}");
            return sys::HTTP_SERVICE_UNAVAILABLE as i32;
        }
    };
    let rules = Rules {
        error_override,
        header_limit: match group.config.header_buffer_size {
            0 => 32_768,
            n => n,
        },
        sendfile,
    };
    let timeout = group.socket_timeout.max(Duration::from_secs(1));
    // A daemon that is restarting answers Retry before it reads anything; the request then
    // goes to its replacement.
    const MOST_RETRIES: u32 = 50;
    let deadline = std::time::Instant::now() + group.config.connect_timeout;
    let mut attempt = 0;
    while attempt <= MOST_RETRIES {
        if attempt > 0 && std::time::Instant::now() > deadline {
            break;
        }
        let (mut conn, reused) = match kept(group) {
            Some(conn) => (conn, true),
            None => match connect(group) {
                Some(stream) => {
                    let _ = stream.set_read_timeout(Some(timeout));
                    let conn = DaemonConn {
                        stream,
                        timed_writes: false,
                    };
                    (conn, false)
                }
                None => {
                    tracing::error!(
                        "WSGI0040: unable to connect to WSGI daemon process '{name}' on '{}' \
                         after {} s",
                        group.socket.display(),
                        group.config.connect_timeout.as_secs()
                    );
                    return sys::HTTP_SERVICE_UNAVAILABLE as i32;
                }
            },
        };
        // A write blocks only when the socket's buffer is full: a small request fits in it
        // (the write timeout is then set before the first body reply, see `exchange`).
        if request.len() > UNTIMED_WRITE_MAX && !conn.timed_writes {
            let _ = conn.stream.set_write_timeout(Some(timeout));
            conn.timed_writes = true;
        }
        if let Err(e) = (&conn.stream).write_all(&request) {
            let closed = matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
            if reused && closed {
                // The daemon closed the kept connection (it restarted): take a new one.
                tracing::debug!("a kept connection to daemon '{name}' was closed ({e})");
                continue;
            }
            tracing::error!(
                "WSGI0041: cannot send the request to daemon process '{name}': {}",
                ProtocolError::from(e)
            );
            return sys::HTTP_SERVICE_UNAVAILABLE as i32;
        }
        let mut clean = false;
        let link = Link {
            stream: &conn.stream,
            name,
            timeout,
            timed_writes: &mut conn.timed_writes,
            clean: &mut clean,
        };
        let relayed = r.with_io(|io| exchange(io, link, &rules));
        if clean {
            keep(group, conn);
        }
        match relayed {
            Relayed::Done(status) => return status,
            Relayed::Redirect(location) => {
                r.internal_redirect(&location);
                return sys::OK as i32;
            }
            // A kept connection that ended before the daemon took the request: the daemon
            // closed it as the request went in (it was restarting). Nothing ran.
            Relayed::Retry if reused => {
                tracing::debug!("a kept connection to daemon '{name}' was closed; reconnecting");
            }
            Relayed::Retry => {
                tracing::debug!("daemon '{name}' is restarting; sending the request again");
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt.min(10))));
                attempt += 1;
            }
        }
    }
    tracing::error!("WSGI0050: daemon process '{name}' kept restarting; request not run");
    sys::HTTP_SERVICE_UNAVAILABLE as i32
}

/// The largest request frame written without a write timeout on the socket. Writes to a Unix
/// socket block only when its send buffer (about 208 KiB by default on Linux) is full, and
/// the daemon reads a whole request frame before it asks for any body.
const UNTIMED_WRITE_MAX: usize = 16 * 1024;

/// The read buffer of a daemon connection, on the stack. One `recv` then returns all the frames
/// the daemon wrote together (Head, Data and End of a small response); a larger read bypasses
/// it. Not `std::io::BufReader`: that zeroes its whole (heap) buffer once, and a heap chunk of
/// 1 KiB or more makes glibc merge its free chunks (`malloc_consolidate`); both showed up in
/// the profile of a hello world.
const READ_BUFFER: usize = 8 * 1024;

/// The connection to the daemon for one exchange.
struct Link<'s> {
    stream: &'s UnixStream,
    /// The group's name, for messages.
    name: &'s str,
    /// The write timeout to set before the first body reply, when it is not set yet.
    timeout: Duration,
    /// Whether the write timeout is set on the socket.
    timed_writes: &'s mut bool,
    /// Set when the response ended cleanly (End or Failure, nothing left unread): the
    /// connection may then carry the next request.
    clean: &'s mut bool,
}

/// A connection to a daemon process group.
struct DaemonConn {
    stream: UnixStream,
    /// Whether the write timeout is set on it.
    timed_writes: bool,
}

/// The connections of this Apache child to groups of one daemon process, kept after a clean
/// response for the next request (the most recently used first), by socket path. A kept
/// connection saves the connect, and the daemon's accept and close; when the daemon has closed
/// it meanwhile (it restarted), the request is sent again on a new one, which is safe since
/// the daemon had not taken it (no Accepted). Groups of several processes are not kept: see
/// the daemon's side (`worker::Connections`).
static KEPT: parking_lot::Mutex<Vec<(std::path::PathBuf, Vec<DaemonConn>)>> =
    parking_lot::Mutex::new(Vec::new());

/// The most connections kept per group: more than an Apache child has threads is waste.
const MOST_KEPT: usize = 256;

/// A kept connection to `group`, if there is one.
fn kept(group: &GroupInfo) -> Option<DaemonConn> {
    if group.config.processes != 1 {
        return None;
    }
    let mut kept = KEPT.lock();
    kept.iter_mut()
        .find(|(socket, _)| *socket == group.socket)
        .and_then(|(_, conns)| conns.pop())
}

/// Keeps `conn` for the next request to `group` (or closes it).
fn keep(group: &GroupInfo, conn: DaemonConn) {
    if group.config.processes != 1 {
        return;
    }
    let mut kept = KEPT.lock();
    match kept.iter_mut().find(|(socket, _)| *socket == group.socket) {
        Some((_, conns)) if conns.len() < MOST_KEPT => conns.push(conn),
        Some(_) => {}
        None => kept.push((group.socket.clone(), vec![conn])),
    }
}

/// How the child treats a response, from the configuration.
struct Rules {
    /// `WSGIErrorOverride`.
    error_override: bool,
    /// The group's `header-buffer-size`: the longest header line accepted.
    header_limit: usize,
    /// `WSGIEnableSendfile`, for File frames.
    sendfile: bool,
}

/// Reads the daemon's bytes with `recvmsg`, keeping the descriptors that come with them (a
/// File frame's file) until the frame that uses them; any left over at the end of the exchange
/// are closed, with a log line.
struct DaemonReader<'s> {
    stream: &'s UnixStream,
    name: &'s str,
    fds: Vec<OwnedFd>,
}

impl DaemonReader<'_> {
    /// The oldest descriptor received and not yet used.
    fn take_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }
}

impl std::io::Read for DaemonReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let received = recv_with_fds(self.stream.as_fd(), buf, &mut self.fds)?;
        if received.truncated {
            tracing::error!(
                "WSGI0043: unexpected frame from daemon process '{}': descriptors that did not \
                 fit were dropped",
                self.name
            );
        }
        Ok(received.bytes)
    }
}

impl Drop for DaemonReader<'_> {
    fn drop(&mut self) {
        if !self.fds.is_empty() {
            tracing::error!(
                "WSGI0043: unexpected frame from daemon process '{}': {} descriptor(s) with no \
                 File frame, closed",
                self.name,
                self.fds.len()
            );
        }
    }
}

/// A read buffer over `inner`, in borrowed space.
struct Buffered<'b, R> {
    inner: R,
    buf: &'b mut [u8],
    /// The bytes read and not yet taken are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Buffered<'_, DaemonReader<'_>> {
    /// Whether every byte and descriptor received has been used.
    fn drained(&self) -> bool {
        self.start == self.end && self.inner.fds.is_empty()
    }
}

impl<R: std::io::Read> std::io::Read for Buffered<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.start == self.end {
            if out.len() >= self.buf.len() {
                return self.inner.read(out);
            }
            self.end = self.inner.read(self.buf)?;
            self.start = 0;
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// Checks a File frame's descriptor before Apache sends from it: a regular file, open for
/// reading, holding the whole region.
fn check_file(fd: &OwnedFd, offset: u64, len: u64) -> Result<(), String> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::stat::{SFlag, fstat};
    let stat = fstat(fd.as_raw_fd()).map_err(|e| format!("fstat: {e}"))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err("not a regular file".into());
    }
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_WRONLY {
        return Err("not open for reading".into());
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!(
            "{len} bytes from offset {offset} run past the end of the file ({size} bytes)"
        ));
    }
    Ok(())
}

/// How one exchange with a daemon ended.
enum Relayed {
    /// With this handler status.
    Done(i32),
    /// The daemon did not run the request; send it again.
    Retry,
    /// Status 200 with a local `Location`: Apache serves that URL instead (CGI rule).
    Redirect(String),
}

/// `script-user`/`script-group`: the script (and its folder) must belong to the configured
/// owner and must not be writable by others.
fn check_script_owner(script: &str, config: &crate::config::DaemonConfig) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (user, group) = (config.script_user.as_ref(), config.script_group.as_ref());
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    let path = std::path::Path::new(script);
    let file = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let folder = path
        .parent()
        .map(std::fs::metadata)
        .transpose()
        .map_err(|e| e.to_string())?;
    let writable_by_others =
        |mode: u32, group_too: bool| mode & 0o002 != 0 || (group_too && mode & 0o020 != 0);
    if let Some(user) = user {
        let uid = super::manager::resolve_user(user).ok_or("unknown script-user")?;
        if file.uid() != uid {
            return Err(format!("the script is not owned by uid {uid}"));
        }
        if writable_by_others(file.mode(), true)
            || folder
                .as_ref()
                .is_some_and(|f| writable_by_others(f.mode(), true))
        {
            return Err("the script or its folder is writable by group or others".into());
        }
    }
    if let Some(group) = group {
        let gid = super::manager::resolve_group(group).ok_or("unknown script-group")?;
        if file.gid() != gid || folder.as_ref().is_some_and(|f| f.gid() != gid) {
            return Err(format!("the script or its folder is not of group {gid}"));
        }
        if writable_by_others(file.mode(), false)
            || folder
                .as_ref()
                .is_some_and(|f| writable_by_others(f.mode(), false))
        {
            return Err("the script or its folder is writable by others".into());
        }
    }
    Ok(())
}

/// Connects, retrying while the daemon is not (yet) listening.
fn connect(group: &GroupInfo) -> Option<UnixStream> {
    let deadline = Instant::now() + group.config.connect_timeout;
    let mut delay = Duration::from_millis(20);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match UnixStream::connect(&group.socket) {
            Ok(stream) => return Some(stream),
            Err(e) if Instant::now() + delay < deadline => {
                tracing::debug!(
                    "connecting to daemon '{}' (attempt {attempts}): {e}",
                    group.config.name
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(_) => return None,
        }
    }
}

/// Serves the daemon's requests for body and relays its response until it ends.
/// The `Location` header, when it is a local URL (`/…`).
fn local_location(head: &protocol::HeadFrame) -> Option<&str> {
    head.headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("location"))
        .map(|(_, value)| value.as_str())
        .filter(|v| v.starts_with('/'))
}

/// Whether any header line (`Name: value`) exceeds the group's header-buffer-size.
fn oversized_header(head: &protocol::HeadFrame, limit: usize) -> bool {
    head.headers
        .iter()
        .any(|(name, value)| name.len() + 2 + value.len() > limit)
}

/// Passes a block of the response body (a Data frame's payload) to the client, or drops it
/// when the response is `dropped` (overridden or redirected); `Some` when the exchange ends:
/// the client went away, or the block came after a File, which ended the body.
fn relay_block(
    io: &RequestIo,
    name: &str,
    data: &[u8],
    file_sent: bool,
    dropped: bool,
) -> Option<Relayed> {
    if file_sent {
        tracing::error!(
            "WSGI0043: unexpected frame from daemon process '{name}': {} bytes of Data after a \
             File",
            data.len()
        );
        return Some(Relayed::Done(sys::OK as i32));
    }
    // A failed write: the client went away; the daemon notices when we close.
    (!dropped && io.write(data).is_err()).then_some(Relayed::Done(sys::OK as i32))
}

fn exchange(io: &RequestIo, mut link: Link<'_>, rules: &Rules) -> Relayed {
    let name = link.name;
    let (error_override, header_limit) = (rules.error_override, rules.header_limit);
    let reader = DaemonReader {
        stream: link.stream,
        name,
        fds: Vec::new(),
    };
    let mut space = [0u8; READ_BUFFER];
    let mut frames = Buffered {
        inner: reader,
        buf: &mut space,
        start: 0,
        end: 0,
    };
    let mut head_sent = false;
    // A File frame ends the body: Apache has its end-of-stream marker.
    let mut file_sent = false;
    let mut body_read = false;
    let mut accepted = false;
    // With WSGIErrorOverride: the application's error status, whose body is dropped.
    let mut overridden: Option<i32> = None;
    // A 200 response with a local Location: an internal redirect, whose body is dropped.
    let mut redirect: Option<String> = None;
    // The request body buffer, allocated on the first ReadBody only: a zeroed body buffer
    // per request showed up as memset and malloc_consolidate in the profile of hello world.
    let mut body: Vec<u8> = Vec::new();
    // The blocks of the response, one at a time (see `protocol::read_frame_in`).
    let mut data_space: Vec<u8> = Vec::new();
    loop {
        let frame = match protocol::read_frame_in(&mut frames, &mut data_space) {
            Ok(Incoming::Data(data)) => {
                let dropped = overridden.is_some() || redirect.is_some();
                match relay_block(io, name, data, file_sent, dropped) {
                    Some(done) => return done,
                    None => continue,
                }
            }
            Ok(Incoming::Frame(frame)) => frame,
            // The daemon went away before it took the request (it was exiting): nothing ran.
            Err(e) if !accepted && !matches!(e, ProtocolError::TimedOut) => {
                return Relayed::Retry;
            }
            Err(ProtocolError::TimedOut) if !accepted => {
                tracing::error!(
                    "WSGI0051: timeout waiting for daemon process '{name}' to take the request"
                );
                return Relayed::Done(sys::HTTP_SERVICE_UNAVAILABLE as i32);
            }
            Err(e) => {
                tracing::error!(
                    "WSGI0042: the daemon process '{name}' closed or broke the connection before \
                     the response was complete ({e}); it may have crashed"
                );
                if head_sent {
                    let _ = io.abort();
                    return Relayed::Done(sys::OK as i32);
                }
                return Relayed::Done(sys::HTTP_BAD_GATEWAY as i32);
            }
        };
        match frame {
            Frame::ReadBody { max } => {
                if body.is_empty() {
                    body = vec![0u8; protocol::BODY_BLOCK];
                }
                let want = (max as usize).min(body.len()).min(MAX_PAYLOAD);
                let read = io.read(&mut body[..want]);
                if !std::mem::replace(link.timed_writes, true) {
                    let _ = link.stream.set_write_timeout(Some(link.timeout));
                }
                let sent = match read {
                    Ok(0) => protocol::write_frame(&mut link.stream, &Frame::BodyEnd),
                    Ok(n) => {
                        body_read = true;
                        // Straight from the buffer: header and bytes in one write, no copy.
                        protocol::write_body(&mut link.stream, &body[..n])
                    }
                    Err(_) => protocol::write_frame(&mut link.stream, &Frame::BodyError),
                };
                if sent.is_err() {
                    return Relayed::Done(if head_sent {
                        sys::OK as i32
                    } else {
                        sys::HTTP_BAD_GATEWAY as i32
                    });
                }
            }
            Frame::Head(head) if error_override && head.status >= 400 => {
                overridden = Some(i32::from(head.status));
            }
            Frame::Head(head) if head.status == 200 && local_location(&head).is_some() => {
                redirect = local_location(&head).map(str::to_owned);
            }
            Frame::File { .. } if overridden.is_some() || redirect.is_some() => {
                drop(frames.inner.take_fd());
            }
            Frame::File { offset, len } if head_sent && !file_sent => {
                let fd = frames.inner.take_fd();
                let checked = fd
                    .ok_or_else(|| "no descriptor came with it".to_owned())
                    .and_then(|fd| check_file(&fd, offset, len).map(|()| fd));
                match checked {
                    Ok(fd) => {
                        tracing::debug!("sending {len} bytes of a file passed by the daemon");
                        if io.send_file(fd, offset, len, rules.sendfile).is_err() {
                            // The client went away; the daemon notices when we close.
                            return Relayed::Done(sys::OK as i32);
                        }
                        file_sent = true;
                    }
                    Err(why) => {
                        tracing::error!(
                            "WSGI0043: unexpected frame from daemon process '{name}': File \
                             {{ offset: {offset}, len: {len} }} ({why})"
                        );
                        let _ = io.abort();
                        return Relayed::Done(sys::OK as i32);
                    }
                }
            }
            Frame::End if redirect.is_some() => {
                *link.clean = frames.drained();
                return Relayed::Redirect(redirect.unwrap_or_default());
            }
            Frame::End if overridden.is_some() => {
                *link.clean = frames.drained();
                return Relayed::Done(overridden.unwrap_or(sys::OK as i32));
            }
            Frame::Head(head) if oversized_header(&head, header_limit) => {
                tracing::error!(
                    "WSGI0048: truncated or oversized response headers received from daemon \
                     process '{name}': a header is longer than header-buffer-size ({header_limit} \
                     bytes)"
                );
                return Relayed::Done(sys::HTTP_INTERNAL_SERVER_ERROR as i32);
            }
            Frame::Head(head) => {
                let headers: Vec<Header<'_>> = head
                    .headers
                    .iter()
                    .map(|(name, value)| Header { name, value })
                    .collect();
                if io
                    .set_head(head.status, head.reason.as_deref(), &headers)
                    .is_err()
                {
                    return Relayed::Done(sys::OK as i32);
                }
                head_sent = true;
            }
            // Larger than `read_frame_in` takes into its space.
            Frame::Data(data) => {
                let dropped = overridden.is_some() || redirect.is_some();
                if let Some(done) = relay_block(io, name, &data, file_sent, dropped) {
                    return done;
                }
            }
            Frame::Retry if !head_sent && !body_read => return Relayed::Retry,
            Frame::Accepted => accepted = true,
            Frame::End => {
                *link.clean = frames.drained();
                return Relayed::Done(sys::OK as i32);
            }
            Frame::Abort => {
                let _ = io.abort();
                return Relayed::Done(sys::OK as i32);
            }
            Frame::Failure { status } => {
                *link.clean = frames.drained();
                return Relayed::Done(if head_sent {
                    sys::OK as i32
                } else {
                    i32::from(status)
                });
            }
            other => {
                tracing::error!(
                    "WSGI0043: unexpected frame from daemon process '{name}': {other:?}"
                );
                return Relayed::Done(if head_sent {
                    sys::OK as i32
                } else {
                    sys::HTTP_BAD_GATEWAY as i32
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_reads_give_back_the_bytes_in_order() {
        let mut bytes = Vec::new();
        Frame::Accepted.encode(&mut bytes);
        Frame::Data(vec![7; 100]).encode(&mut bytes);
        Frame::Data((0..=255).cycle().take(50_000).collect()).encode(&mut bytes);
        Frame::End.encode(&mut bytes);
        let mut space = [0u8; 64];
        let mut frames = Buffered {
            inner: std::io::Cursor::new(&bytes),
            buf: &mut space,
            start: 0,
            end: 0,
        };
        assert_eq!(protocol::read_frame(&mut frames), Ok(Frame::Accepted));
        assert_eq!(
            protocol::read_frame(&mut frames),
            Ok(Frame::Data(vec![7; 100]))
        );
        let Ok(Frame::Data(large)) = protocol::read_frame(&mut frames) else {
            panic!("a Data frame");
        };
        assert!(large.iter().copied().eq((0..=255).cycle().take(50_000)));
        assert_eq!(protocol::read_frame(&mut frames), Ok(Frame::End));
        assert_eq!(
            protocol::read_frame(&mut frames),
            Err(ProtocolError::Closed)
        );
    }
}
