//! Raw-socket HTTP/1.1 client for the PEP 3333 tests: sends exactly the bytes a test gives,
//! sees interim `1xx` responses, keeps the response head byte for byte, tells a complete
//! response (length reached, last chunk seen) from a truncated one, and notices when the
//! server closes the connection. Every read is bounded by a deadline.

// Each PEP 3333 test binary uses only part of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// One connection to the server under test.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet consumed by a parsed response.
    buf: Vec<u8>,
    /// Whether the server closed its side.
    pub eof: bool,
}

/// A response as read from the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status lines of the interim (`1xx`) responses that came first.
    pub interim: Vec<String>,
    /// The final status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The final status code (0 if no status line arrived).
    pub status: u16,
    /// The header lines of the final response, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body: de-chunked, or as much of it as arrived.
    pub body: Vec<u8>,
    /// Whether the body's framing was satisfied: `Content-Length` bytes, the last chunk of a
    /// chunked body, or (without either) the connection closed.
    pub complete: bool,
    /// Whether a chunked body ended with its last chunk (`0\r\n\r\n`).
    pub last_chunk: bool,
    /// Everything read for this response, head and body, as it came.
    pub raw: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The head and body as read, as text.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

impl Conn {
    /// Connects to 127.0.0.1:`port`.
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("cannot set a write timeout");
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The client's own port (the server's `REMOTE_PORT`).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("no local address").port()
    }

    /// Writes all of `bytes`; errors (the server may already have closed) are returned.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-closes the connection: the server reads end-of-file after what was sent.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads once into the buffer, waiting until `deadline` at most. False on timeout, end of
    /// file (then `eof` is set) or error.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .expect("cannot set a read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => {
                    // Reset by the server: as good as closed.
                    self.eof = true;
                    return false;
                }
            }
        }
    }

    /// Reads until at least `n` bytes have been buffered, the server closes, or `timeout`
    /// passes; returns and consumes what was buffered (at most `n` bytes).
    pub fn read_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < n && self.fill(deadline) {}
        let take = n.min(self.buf.len());
        self.buf.drain(..take).collect()
    }

    /// Reads the next head (status line and headers) and returns it, consuming it; `None` if
    /// the server closed or `timeout` passed first.
    pub fn read_head(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Reads one whole response (after any interim `1xx` ones) within `timeout`. For a
    /// response to HEAD pass `head_request`, since it has no body whatever its headers say.
    /// What arrives before the deadline or the server's close is returned either way; see
    /// [`RawResponse::complete`].
    pub fn read_response(&mut self, timeout: Duration, head_request: bool) -> RawResponse {
        let deadline = Instant::now() + timeout;
        let mut interim = Vec::new();
        let mut raw = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(head) = self.read_head(remaining) else {
                raw.extend_from_slice(&self.buf);
                self.buf.clear();
                return RawResponse {
                    interim,
                    status_line: String::new(),
                    status: 0,
                    headers: Vec::new(),
                    body: Vec::new(),
                    complete: false,
                    last_chunk: false,
                    raw,
                };
            };
            raw.extend_from_slice(head.as_bytes());
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default().to_owned();
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) {
                interim.push(status_line);
                continue;
            }
            let headers: Vec<(String, String)> = lines
                .filter(|line| !line.is_empty())
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let mut response = RawResponse {
                interim,
                status_line,
                status,
                headers,
                body: Vec::new(),
                complete: false,
                last_chunk: false,
                raw,
            };
            self.read_body(&mut response, deadline, head_request);
            return response;
        }
    }

    /// Reads the body of `response` according to its framing.
    fn read_body(&mut self, response: &mut RawResponse, deadline: Instant, head_request: bool) {
        let no_body = head_request || matches!(response.status, 204 | 304);
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length: Option<usize> = response
            .header("content-length")
            .and_then(|v| v.parse().ok());
        if no_body {
            response.complete = true;
        } else if chunked {
            loop {
                let (body, consumed, done) = dechunk(&self.buf);
                if done || !self.fill(deadline) {
                    response.body = body;
                    response.complete = done;
                    response.last_chunk = done;
                    let used = if done { consumed } else { self.buf.len() };
                    response.raw.extend(self.buf.drain(..used));
                    return;
                }
            }
        } else if let Some(length) = length {
            while self.buf.len() < length && self.fill(deadline) {}
            let take = length.min(self.buf.len());
            response.body = self.buf.drain(..take).collect();
            response.raw.extend_from_slice(&response.body);
            response.complete = take == length;
        } else {
            while self.fill(deadline) {}
            response.body = std::mem::take(&mut self.buf);
            response.raw.extend_from_slice(&response.body);
            response.complete = self.eof;
        }
    }

    /// Waits up to `timeout` for the server to close the connection; bytes that arrive
    /// meanwhile are kept for the next read. True if it closed.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof && Instant::now() < deadline {
            self.fill(deadline);
        }
        self.eof
    }

    /// The bytes buffered but not consumed by a response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

/// De-chunks as much of `data` as is complete: the body so far, how many bytes of `data`
/// that used, and whether the last chunk (and the blank line after it) was seen.
fn dechunk(data: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&data[pos..], b"\r\n") else {
            return (body, pos, false);
        };
        let size_text = String::from_utf8_lossy(&data[pos..pos + line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, pos, false);
        };
        let start = pos + line_end + 2;
        if size == 0 {
            // Trailers (none expected), then the final blank line.
            return match find(&data[start..], b"\r\n") {
                Some(0) => (body, start + 2, true),
                Some(n) => match find(&data[start + n + 2..], b"\r\n") {
                    Some(0) => (body, start + n + 4, true),
                    _ => (body, pos, false),
                },
                None => (body, pos, false),
            };
        }
        if data.len() < start + size + 2 {
            // Partial chunk: keep what arrived, for tests that look at truncated bodies.
            let end = data.len().min(start + size);
            body.extend_from_slice(&data[start..end]);
            return (body, pos, false);
        }
        body.extend_from_slice(&data[start..start + size]);
        pos = start + size + 2;
    }
}

/// The position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` on a new connection to `port` and reads one response within `timeout`.
pub fn exchange(port: u16, request: &[u8], timeout: Duration) -> RawResponse {
    let mut conn = Conn::open(port);
    conn.send(request).expect("cannot send the request");
    conn.read_response(timeout, request.starts_with(b"HEAD "))
}

/// `GET path` with `Connection: close` and extra header lines (each ending in `\r\n`).
pub fn get(port: u16, path: &str, extra_headers: &str) -> RawResponse {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    exchange(port, request.as_bytes(), Duration::from_secs(10))
}
