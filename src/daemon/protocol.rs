//! The daemon-mode wire protocol: the frames that an Apache child and a daemon process exchange
//! over a Unix socket, their encoding, and blocking helpers to read and write them.
//!
//! Both processes use this module: the child (client side) sends a [`Frame::Request`] and the
//! request body, and the daemon (server side) asks for the body and sends the response. It
//! touches neither Apache nor Python, holds no state and uses no `unsafe`, so any thread may
//! call it; a connection is read by one thread at a time.
//!
//! The codec is sans-I/O: [`Frame::encode`] appends a frame to a buffer and [`Frame::decode`]
//! takes one from the front of a buffer, reporting `Ok(None)` while the buffer holds less than
//! a whole frame. [`read_frame`] and [`write_frame`] wrap it for blocking streams. Nothing the
//! peer sends can make the decoder panic or allocate more than the [`MAX_PAYLOAD`] cap: sizes
//! are checked against the cap and against the bytes present before any allocation.
//!
//! `docs/protocol.md` describes the byte layout, the order of frames on a connection and the
//! limits.

mod codec;

use std::fmt;
use std::io::{self, Read, Write};

use codec::{Count, Reader, Sink};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"WS";

/// The protocol version this build speaks; a frame with any other version is refused.
/// Version 2 added [`Frame::File`].
pub const VERSION: u8 = 2;

/// The length of the fixed frame header: magic, version, type and payload length.
pub const HEADER_LEN: usize = 8;

/// The largest payload a frame may carry, in bytes (16 MiB). A header declaring more is refused
/// before anything is allocated; larger bodies travel as several [`Frame::Body`] or
/// [`Frame::Data`] frames.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The length of the shared secret that opens each [`RequestFrame`].
pub const SECRET_LEN: usize = 32;

/// [`MAX_PAYLOAD`] as the type of [`Frame::ReadBody`]'s `max`.
const MAX_PAYLOAD_U32: u32 = 16 * 1024 * 1024;
const _: () = assert!(MAX_PAYLOAD_U32 as usize == MAX_PAYLOAD);

/// Frame type codes, as they appear in byte 3 of the header.
const REQUEST: u8 = 1;
const READ_BODY: u8 = 2;
const BODY: u8 = 3;
const BODY_END: u8 = 4;
const BODY_ERROR: u8 = 5;
const HEAD: u8 = 6;
const DATA: u8 = 7;
const END: u8 = 8;
const ABORT: u8 = 9;
const FAILURE: u8 = 10;
const RETRY: u8 = 11;
const ACCEPTED: u8 = 12;
const FILE: u8 = 13;

/// Bits of the request's flags byte; any other bit set is an error.
const FLAG_RELOADING: u8 = 1 << 0;
const FLAG_HEADER_ONLY: u8 = 1 << 1;

/// The furthest a [`Frame::File`] region may end: file offsets are signed 64-bit.
const FILE_END: u64 = i64::MAX as u64;

/// The smallest encodings of one list item: two `bytes`/`str` fields of length 0.
const MIN_PAIR_LEN: usize = 8;

/// Body and Data frames at least this large are written as header plus borrowed payload, in one
/// vectored write, rather than copied into one buffer.
const COPY_LIMIT: usize = 64 * 1024;

/// How much of a declared payload [`read_frame`] reserves before the bytes arrive; the buffer
/// grows as they do, so a peer that declares 16 MiB and sends nothing costs little.
const READ_RESERVE: usize = 64 * 1024;

/// One message of the protocol. Variants are listed in type-code order (1 to 13).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Type 1, child to daemon, the first frame of every connection: what to run and the WSGI
    /// environment. Boxed because it is much larger than the other variants.
    Request(Box<RequestFrame>),
    /// Type 2, daemon to child: send up to `max` more bytes of the request body. `max` is in
    /// `1..=MAX_PAYLOAD`.
    ReadBody {
        /// The most body bytes the daemon wants in reply.
        max: u32,
    },
    /// Type 3, child to daemon: request body bytes, never empty.
    Body(Vec<u8>),
    /// Type 4, child to daemon: the request body is complete.
    BodyEnd,
    /// Type 5, child to daemon: reading the request body from the client failed.
    BodyError,
    /// Type 6, daemon to child: the response status and headers.
    Head(HeadFrame),
    /// Type 7, daemon to child: response body bytes, never empty.
    Data(Vec<u8>),
    /// Type 8, daemon to child: the response is complete.
    End,
    /// Type 9, daemon to child: the response was cut short; the client must be able to tell it
    /// is incomplete.
    Abort,
    /// Type 10, daemon to child: the application failed before sending a head; the child
    /// answers with this HTTP status (500, 404, ...), in `100..=999`.
    Failure {
        /// The HTTP status the child sends.
        status: u16,
    },
    /// Type 11, daemon to child: the request was not run and no body was read (the daemon is
    /// restarting, e.g. because its script changed); the child sends it again on a new
    /// connection. Empty payload.
    Retry,
    /// Type 12, daemon to child: the request will run (sent before the application is called).
    /// A connection that ends before this frame did not run the request, which can then be
    /// sent again; one that ends after it cannot. Empty payload.
    Accepted,
    /// Type 13, daemon to child: the rest of the response body is `len` bytes of a regular
    /// file from `offset`. The open file travels with the frame's bytes as an `SCM_RIGHTS`
    /// control message; the frame itself only says which part to send. At least 1 byte, and
    /// `offset + len` at most `i64::MAX`.
    File {
        /// Where the body starts in the file.
        offset: u64,
        /// How many bytes of the file to send.
        len: u64,
    },
}

/// The payload of [`Frame::Request`].
///
/// `Debug` never shows the secret, so a frame can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// The secret shared by Apache and its daemons, proving the connection comes from a
    /// child of the same server. Compare it with [`RequestFrame::secret_matches`].
    pub secret: [u8; SECRET_LEN],
    /// The WSGI script file's path, as raw bytes.
    pub script: Vec<u8>,
    /// The application group (the Python interpreter) to run the request in.
    pub application_group: String,
    /// The name of the WSGI callable in the script.
    pub callable: String,
    /// Apache's request id (`r->log_id`), for log lines on both sides.
    pub request_id: String,
    /// The Apache handler that selected the request (`r->handler`).
    pub handler: String,
    /// The child is asking for the script to be reloaded.
    pub reloading: bool,
    /// The request is a HEAD request: the response body will be discarded.
    pub header_only: bool,
    /// When Apache started the request, in microseconds since the Unix epoch.
    pub request_start_us: i64,
    /// The CGI/WSGI environment variables, in order, as raw bytes.
    pub env: Env,
}

/// The environment variables of a [`RequestFrame`]: every name and value in one buffer, so
/// that decoding a request costs two allocations instead of two per variable (they were a
/// tenth of a daemon's instructions per hello-world request in callgrind).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env {
    bytes: Vec<u8>,
    /// Per variable: where its name starts, where its value starts (the name's end) and where
    /// the value ends, in `bytes`.
    spans: Vec<(usize, usize, usize)>,
}

impl Env {
    /// Adds a variable after the others.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let middle = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.spans.push((start, middle, self.bytes.len()));
    }

    /// The variables, in order, as (name, value).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|&(start, middle, end)| (&self.bytes[start..middle], &self.bytes[middle..end]))
    }

    /// How many variables there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut env = Self::default();
        for (name, value) in pairs {
            env.push(name.as_ref(), value.as_ref());
        }
        env
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> From<Vec<(N, V)>> for Env {
    fn from(pairs: Vec<(N, V)>) -> Self {
        pairs.into_iter().collect()
    }
}

/// The payload of [`Frame::Head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadFrame {
    /// The HTTP status, in `100..=999`.
    pub status: u16,
    /// The reason phrase, when the application gave one.
    pub reason: Option<String>,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
}

/// Why bytes could not be read or written as frames.
///
/// After any of these the connection is out of step and must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame does not start with [`MAGIC`]: the peer does not speak this protocol.
    #[error("bad magic bytes: the peer does not speak the mod_wsgi-rs daemon protocol")]
    BadMagic,
    /// The frame's version is not [`VERSION`], as when Apache and a daemon left over from an
    /// older build meet.
    #[error("unsupported daemon protocol version {0} (this build speaks version {VERSION})")]
    UnsupportedVersion(u8),
    /// The frame's type code is not one of the thirteen the protocol defines.
    #[error("unknown daemon protocol frame type {0}")]
    UnknownType(u8),
    /// A payload of this many bytes is over [`MAX_PAYLOAD`]: declared by a received header, or
    /// found by [`Frame::check`] in a frame about to be sent.
    #[error("frame payload of {0} bytes is over the limit of {MAX_PAYLOAD} bytes")]
    TooLarge(usize),
    /// The payload ends in the middle of a field, or a length or count inside it claims more
    /// than the payload holds.
    #[error("frame payload ends in the middle of a field")]
    Truncated,
    /// This many bytes follow the frame's last field.
    #[error("{0} unexpected bytes after the last field of the frame")]
    TrailingBytes(usize),
    /// A text field is not valid UTF-8.
    #[error("a text field of the frame is not valid UTF-8")]
    InvalidUtf8,
    /// A field holds a value the protocol does not allow; the text says which.
    #[error("invalid frame: {0}")]
    InvalidValue(&'static str),
    /// A well-formed frame of this type (as named by [`Frame::name`]) that the protocol does
    /// not allow at this point of the conversation; raised by the client and server loops.
    #[error("unexpected {0} frame")]
    UnexpectedFrame(&'static str),
    /// The peer closed the connection at a frame boundary, before the first byte of a frame.
    #[error("connection closed by the peer")]
    Closed,
    /// A read or write timed out (the socket's timeout, `ErrorKind::WouldBlock` or
    /// `ErrorKind::TimedOut`).
    #[error("timed out waiting for the peer")]
    TimedOut,
    /// Any other I/O error, as text; this includes the peer closing the connection in the
    /// middle of a frame.
    #[error("daemon socket I/O error: {0}")]
    Io(String),
}

impl From<io::Error> for ProtocolError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::TimedOut,
            _ => Self::Io(error.to_string()),
        }
    }
}

impl Frame {
    /// Appends the frame, header and payload, to `out`.
    ///
    /// Never panics. A frame that [`Frame::check`] refuses still encodes, to bytes that every
    /// decoder refuses; callers that build frames from untrusted values check first (as
    /// [`write_frame`] does).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = self.payload_len();
        out.reserve(HEADER_LEN.saturating_add(len));
        out.extend_from_slice(&header(self.type_code(), len));
        self.encode_payload(out);
    }

    /// The frame's encoding, header and payload.
    #[must_use]
    pub fn encoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Appends `data` to `out` as Data frames of at most `chunk` bytes each (at least 1, at most
    /// [`MAX_PAYLOAD`]), without building a [`Frame`] that would own a copy of the bytes.
    /// Nothing is appended for empty `data`, since a Data frame is never empty.
    pub fn encode_data(data: &[u8], chunk: usize, out: &mut Vec<u8>) {
        let chunk = chunk.clamp(1, MAX_PAYLOAD);
        let frames = data.len().div_ceil(chunk);
        out.reserve(data.len() + frames * HEADER_LEN);
        for piece in data.chunks(chunk) {
            out.extend_from_slice(&header(DATA, piece.len()));
            out.extend_from_slice(piece);
        }
    }

    /// Takes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` while `buf` holds less than a whole frame, and `Ok(Some((frame,
    /// consumed)))` once it does; the bytes after `consumed` are left for the next call. A bad
    /// header (magic, version, type or declared length) is reported as soon as the first
    /// [`HEADER_LEN`] bytes are there, without waiting for the payload.
    ///
    /// # Errors
    ///
    /// Any [`ProtocolError`] but `Closed`, `TimedOut`, `Io` and `UnexpectedFrame`: the bytes
    /// are not a valid frame, and the connection they came from cannot be read any further.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (code, len) = parse_header(*header)?;
        let end = HEADER_LEN + len;
        let Some(payload) = buf.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        Ok(Some((parse_payload(code, payload)?, end)))
    }

    /// Checks that the frame is within the protocol's limits, as the receiving side will:
    /// statuses in `100..=999`, non-empty Body and Data, a ReadBody `max` in
    /// `1..=MAX_PAYLOAD`, and a payload of at most [`MAX_PAYLOAD`] bytes.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidValue`] for a field outside its range, and
    /// [`ProtocolError::TooLarge`] for a payload over the cap (split Body and Data into
    /// several frames).
    pub fn check(&self) -> Result<(), ProtocolError> {
        self.check_values()?;
        match self.payload_len() {
            len if len > MAX_PAYLOAD => Err(ProtocolError::TooLarge(len)),
            _ => Ok(()),
        }
    }

    /// The frame type's name, for log lines and [`ProtocolError::UnexpectedFrame`].
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Request(_) => "Request",
            Self::ReadBody { .. } => "ReadBody",
            Self::Body(_) => "Body",
            Self::BodyEnd => "BodyEnd",
            Self::BodyError => "BodyError",
            Self::Head(_) => "Head",
            Self::Data(_) => "Data",
            Self::End => "End",
            Self::Abort => "Abort",
            Self::Failure { .. } => "Failure",
            Self::Retry => "Retry",
            Self::Accepted => "Accepted",
            Self::File { .. } => "File",
        }
    }

    fn type_code(&self) -> u8 {
        match self {
            Self::Request(_) => REQUEST,
            Self::ReadBody { .. } => READ_BODY,
            Self::Body(_) => BODY,
            Self::BodyEnd => BODY_END,
            Self::BodyError => BODY_ERROR,
            Self::Head(_) => HEAD,
            Self::Data(_) => DATA,
            Self::End => END,
            Self::Abort => ABORT,
            Self::Failure { .. } => FAILURE,
            Self::Retry => RETRY,
            Self::Accepted => ACCEPTED,
            Self::File { .. } => FILE,
        }
    }

    /// The payload's length, counted by encoding it into a [`Count`].
    fn payload_len(&self) -> usize {
        let mut count = Count::default();
        self.encode_payload(&mut count);
        count.0
    }

    fn encode_payload(&self, out: &mut impl Sink) {
        match self {
            Self::Request(request) => request.encode(out),
            Self::ReadBody { max } => out.put_u32(*max),
            Self::Body(bytes) | Self::Data(bytes) => out.put(bytes),
            Self::BodyEnd
            | Self::BodyError
            | Self::End
            | Self::Abort
            | Self::Retry
            | Self::Accepted => {}
            Self::Head(head) => head.encode(out),
            Self::Failure { status } => out.put_u16(*status),
            Self::File { offset, len } => {
                out.put_u64(*offset);
                out.put_u64(*len);
            }
        }
    }

    /// The checks on field values that both [`Frame::check`] and the decoder make.
    fn check_values(&self) -> Result<(), ProtocolError> {
        let invalid = |what| Err(ProtocolError::InvalidValue(what));
        match self {
            Self::ReadBody { max } if !(1..=MAX_PAYLOAD_U32).contains(max) => {
                invalid("ReadBody max is not between 1 and MAX_PAYLOAD")
            }
            Self::Body(bytes) if bytes.is_empty() => invalid("empty Body frame"),
            Self::Data(bytes) if bytes.is_empty() => invalid("empty Data frame"),
            Self::Head(head) if !valid_status(head.status) => {
                invalid("Head status is not between 100 and 999")
            }
            Self::Failure { status } if !valid_status(*status) => {
                invalid("Failure status is not between 100 and 999")
            }
            Self::File { len: 0, .. } => invalid("empty File frame"),
            Self::File { offset, len } if offset.checked_add(*len).is_none_or(|e| e > FILE_END) => {
                invalid("File region ends after i64::MAX")
            }
            _ => Ok(()),
        }
    }
}

impl RequestFrame {
    /// Whether the frame's secret equals `expected`, compared in constant time.
    #[must_use]
    pub fn secret_matches(&self, expected: &[u8; SECRET_LEN]) -> bool {
        let difference = self
            .secret
            .iter()
            .zip(expected)
            .fold(0, |acc, (a, b)| acc | (a ^ b));
        difference == 0
    }

    fn encode(&self, out: &mut impl Sink) {
        let env: Vec<_> = self.env.iter().collect();
        self.borrowed(&env).encode_payload(out);
    }

    fn borrowed<'a>(&'a self, env: &'a [(&'a [u8], &'a [u8])]) -> RequestRef<'a> {
        RequestRef {
            secret: &self.secret,
            script: &self.script,
            application_group: &self.application_group,
            callable: &self.callable,
            request_id: &self.request_id,
            handler: &self.handler,
            reloading: self.reloading,
            header_only: self.header_only,
            request_start_us: self.request_start_us,
            env,
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let secret = r.array()?;
        let script = r.bytes()?.to_vec();
        let application_group = r.str()?.to_owned();
        let callable = r.str()?.to_owned();
        let request_id = r.str()?.to_owned();
        let handler = r.str()?.to_owned();

        let flags = r.u8()?;
        if flags & !(FLAG_RELOADING | FLAG_HEADER_ONLY) != 0 {
            return Err(ProtocolError::InvalidValue(
                "unknown Request flag bits are set",
            ));
        }

        let request_start_us = r.i64()?;
        let mut env = Env {
            // The names and values are most of what is left of the payload.
            bytes: Vec::with_capacity(r.remaining()),
            spans: Vec::new(),
        };
        r.each(MIN_PAIR_LEN, |r| {
            env.push(r.bytes()?, r.bytes()?);
            Ok(())
        })?;
        Ok(Self {
            secret,
            script,
            application_group,
            callable,
            request_id,
            handler,
            reloading: flags & FLAG_RELOADING != 0,
            header_only: flags & FLAG_HEADER_ONLY != 0,
            request_start_us,
            env,
        })
    }
}

/// A [`RequestFrame`] whose fields are borrowed, so that a request can be encoded without
/// copying the environment first. Encodes to exactly the bytes of the owned frame.
#[derive(Clone, Copy)]
pub struct RequestRef<'a> {
    /// See [`RequestFrame::secret`].
    pub secret: &'a [u8; SECRET_LEN],
    /// See [`RequestFrame::script`].
    pub script: &'a [u8],
    /// See [`RequestFrame::application_group`].
    pub application_group: &'a str,
    /// See [`RequestFrame::callable`].
    pub callable: &'a str,
    /// See [`RequestFrame::request_id`].
    pub request_id: &'a str,
    /// See [`RequestFrame::handler`].
    pub handler: &'a str,
    /// See [`RequestFrame::reloading`].
    pub reloading: bool,
    /// See [`RequestFrame::header_only`].
    pub header_only: bool,
    /// See [`RequestFrame::request_start_us`].
    pub request_start_us: i64,
    /// See [`RequestFrame::env`].
    pub env: &'a [(&'a [u8], &'a [u8])],
}

impl RequestRef<'_> {
    /// The encoded Request frame, header and payload.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::TooLarge`] when the payload is over [`MAX_PAYLOAD`] (a Request frame
    /// has no other limit).
    pub fn encoded(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut count = Count::default();
        self.encode_payload(&mut count);
        let len = count.0;
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        let mut out = Vec::with_capacity(HEADER_LEN + len);
        out.extend_from_slice(&header(REQUEST, len));
        self.encode_payload(&mut out);
        Ok(out)
    }

    fn encode_payload(&self, out: &mut impl Sink) {
        let mut flags = 0;
        if self.reloading {
            flags |= FLAG_RELOADING;
        }
        if self.header_only {
            flags |= FLAG_HEADER_ONLY;
        }

        out.put(self.secret);
        out.put_bytes(self.script);
        out.put_str(self.application_group);
        out.put_str(self.callable);
        out.put_str(self.request_id);
        out.put_str(self.handler);
        out.put_u8(flags);
        out.put_i64(self.request_start_us);
        out.put_len(self.env.len());
        for (key, value) in self.env {
            out.put_bytes(key);
            out.put_bytes(value);
        }
    }
}

impl fmt::Debug for RequestFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<_> = self
            .env
            .iter()
            .map(|(key, value)| (ByteStr(key), ByteStr(value)))
            .collect();
        f.debug_struct("RequestFrame")
            .field("secret", &format_args!("<{SECRET_LEN} bytes, not shown>"))
            .field("script", &ByteStr(&self.script))
            .field("application_group", &self.application_group)
            .field("callable", &self.callable)
            .field("request_id", &self.request_id)
            .field("handler", &self.handler)
            .field("reloading", &self.reloading)
            .field("header_only", &self.header_only)
            .field("request_start_us", &self.request_start_us)
            .field("env", &env)
            .finish()
    }
}

impl HeadFrame {
    fn encode(&self, out: &mut impl Sink) {
        out.put_u16(self.status);
        match &self.reason {
            None => out.put_u8(0),
            Some(reason) => {
                out.put_u8(1);
                out.put_str(reason);
            }
        }
        out.put_len(self.headers.len());
        for (name, value) in &self.headers {
            out.put_str(name);
            out.put_str(value);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let status = r.u16()?;
        let reason = match r.u8()? {
            0 => None,
            1 => Some(r.str()?.to_owned()),
            _ => {
                return Err(ProtocolError::InvalidValue(
                    "Head reason marker is not 0 or 1",
                ));
            }
        };
        let headers = r.list(MIN_PAIR_LEN, |r| {
            Ok((r.str()?.to_owned(), r.str()?.to_owned()))
        })?;
        Ok(Self {
            status,
            reason,
            headers,
        })
    }
}

/// Reads one frame from a blocking stream: the header, which is checked before anything else
/// is read, then exactly the payload it declares.
///
/// A stream that ends before the first byte of a frame gives [`ProtocolError::Closed`]; one that
/// ends inside a frame gives [`ProtocolError::Io`]. Interrupted reads are retried.
///
/// # Errors
///
/// [`ProtocolError::Closed`], [`ProtocolError::TimedOut`] (the stream's read timeout expired)
/// or [`ProtocolError::Io`] when the stream fails, and the errors of [`Frame::decode`] when the
/// bytes are not a valid frame. After any error the connection must be closed.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, ProtocolError> {
    let (code, len) = read_header(r)?;
    read_rest(r, code, len)
}

/// A frame read by [`read_frame_in`]: a Data payload in the caller's space, or any other frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'s> {
    /// The payload of a Data frame of at most [`DATA_SPACE`] bytes.
    Data(&'s [u8]),
    /// Any other frame (and a larger Data frame).
    Frame(Frame),
}

/// The size of the Apache child's buffer for the request body, and so the most a Body frame
/// holds in practice: the daemon asks for this much even when the application reads less,
/// and keeps the rest for its next read, which halves the ReadBody exchanges of an upload
/// read in 64 KiB blocks (its p99 latency went down by a seventh, see docs/performance.md,
/// "Sixth pass"). Just under glibc's 128 KiB mmap threshold, so that these buffers come from
/// the heap and freeing them does not raise the threshold.
pub const BODY_BLOCK: usize = 128 * 1024 - 64;

/// The room [`read_frame_in`] gives a Data payload: the daemon's Data frames are at most this
/// large.
pub const DATA_SPACE: usize = 64 * 1024;

/// Reads one frame as [`read_frame`] does, but a Data payload of at most [`DATA_SPACE`] bytes
/// goes into `space`, which grows to the largest such payload and is reused for the frames
/// after: a streamed response then costs no allocation, nor the zeroing of a new buffer, per
/// block.
///
/// # Errors
///
/// Those of [`read_frame`].
pub fn read_frame_in<'s>(
    r: &mut impl Read,
    space: &'s mut Vec<u8>,
) -> Result<Incoming<'s>, ProtocolError> {
    let (code, len) = read_header(r)?;
    if code != DATA || len > DATA_SPACE {
        return read_rest(r, code, len).map(Incoming::Frame);
    }
    if len == 0 {
        return Err(ProtocolError::InvalidValue("empty Data frame"));
    }
    if space.len() < len {
        space.resize(len, 0);
    }
    let payload = &mut space[..len];
    let got = read_full(r, payload)?;
    if got < len {
        return Err(ProtocolError::Io(format!(
            "connection closed after {got} of the {len} payload bytes of a frame"
        )));
    }
    Ok(Incoming::Data(payload))
}

/// Reads and checks a frame header: the frame's type code and payload length.
fn read_header(r: &mut impl Read) -> Result<(u8, usize), ProtocolError> {
    let mut header = [0; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Err(ProtocolError::Closed),
        HEADER_LEN => {}
        got => {
            return Err(ProtocolError::Io(format!(
                "connection closed after {got} of the {HEADER_LEN} bytes of a frame header"
            )));
        }
    }
    parse_header(header)
}

/// Reads the payload of a frame whose header was read, and decodes it.
fn read_rest(r: &mut impl Read, code: u8, len: usize) -> Result<Frame, ProtocolError> {
    let payload = read_payload(r, len)?;

    // Body and Data keep the buffer just read instead of copying it.
    match code {
        BODY | DATA => {
            let frame = if code == BODY {
                Frame::Body(payload)
            } else {
                Frame::Data(payload)
            };
            frame.check_values()?;
            Ok(frame)
        }
        _ => parse_payload(code, &payload),
    }
}

/// Reads a payload of `len` bytes into a buffer of exactly that size.
///
/// The buffer starts at [`READ_RESERVE`] bytes and doubles as the bytes arrive, never past
/// `len`. (`read_to_end` on the whole payload doubled a full buffer once more to look for the
/// end: a 256 KiB Data frame took a 512 KiB buffer, over glibc's mmap threshold, and freeing it
/// raised the thresholds with which every malloc arena of the process keeps free memory.)
fn read_payload(r: &mut impl Read, len: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut payload = Vec::new();
    while payload.len() < len {
        let step = (len - payload.len()).min(payload.len().max(READ_RESERVE));
        payload.reserve_exact(step);
        let limit = u64::try_from(step).unwrap_or(u64::MAX);
        // With exactly `step` bytes of room, `read_to_end` stops at the limit without growing
        // the buffer.
        let got = r.by_ref().take(limit).read_to_end(&mut payload)?;
        if got < step {
            return Err(ProtocolError::Io(format!(
                "connection closed after {} of the {len} payload bytes of a frame",
                payload.len()
            )));
        }
    }
    Ok(payload)
}

/// Writes one frame to a blocking stream and flushes it.
///
/// The frame is checked first ([`Frame::check`]); a frame outside the limits is refused and
/// nothing is written.
///
/// # Errors
///
/// The errors of [`Frame::check`], with nothing written; [`ProtocolError::TimedOut`] or
/// [`ProtocolError::Io`] when the stream fails, after which the connection must be closed.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> Result<(), ProtocolError> {
    frame.check()?;
    match frame {
        Frame::Body(bytes) | Frame::Data(bytes) if bytes.len() >= COPY_LIMIT => {
            write_parts(w, &header(frame.type_code(), bytes.len()), bytes)?;
        }
        _ => w.write_all(&frame.encoded())?,
    }
    w.flush()?;
    Ok(())
}

/// Writes `data` as one Data frame, header then the borrowed payload, without copying it, and
/// flushes.
///
/// # Errors
///
/// [`ProtocolError::InvalidValue`] for empty `data` and [`ProtocolError::TooLarge`] over
/// [`MAX_PAYLOAD`], with nothing written; [`ProtocolError::TimedOut`] or [`ProtocolError::Io`]
/// when the stream fails.
pub fn write_data(w: &mut impl Write, data: &[u8]) -> Result<(), ProtocolError> {
    write_borrowed(w, DATA, data, "empty Data frame")
}

/// Writes `data` as one Body frame, as [`write_data`] writes a Data frame.
///
/// # Errors
///
/// Those of [`write_data`].
pub fn write_body(w: &mut impl Write, data: &[u8]) -> Result<(), ProtocolError> {
    write_borrowed(w, BODY, data, "empty Body frame")
}

fn write_borrowed(
    w: &mut impl Write,
    code: u8,
    data: &[u8],
    empty: &'static str,
) -> Result<(), ProtocolError> {
    if data.is_empty() {
        return Err(ProtocolError::InvalidValue(empty));
    }
    if data.len() > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge(data.len()));
    }
    write_parts(w, &header(code, data.len()), data)?;
    w.flush()?;
    Ok(())
}

/// Writes a frame header and its payload with one vectored write where the stream takes both:
/// two writes woke the reader for the 8 header bytes alone, and cost a system call more per
/// block of a streamed response.
fn write_parts(w: &mut impl Write, header: &[u8], payload: &[u8]) -> io::Result<()> {
    let mut parts = [io::IoSlice::new(header), io::IoSlice::new(payload)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The header of a frame of type `code` with a payload of `len` bytes (`u32::MAX` when `len`
/// does not fit, which no decoder accepts).
fn header(code: u8, len: usize) -> [u8; HEADER_LEN] {
    let [m0, m1] = MAGIC;
    let [l0, l1, l2, l3] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [m0, m1, VERSION, code, l0, l1, l2, l3]
}

/// Checks a header and returns the frame's type code and payload length.
fn parse_header(header: [u8; HEADER_LEN]) -> Result<(u8, usize), ProtocolError> {
    let [m0, m1, version, code, l0, l1, l2, l3] = header;
    if [m0, m1] != MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    if version != VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    if !(REQUEST..=FILE).contains(&code) {
        return Err(ProtocolError::UnknownType(code));
    }
    let len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok((code, len))
}

/// Decodes the payload of a frame whose header said type `code`.
fn parse_payload(code: u8, payload: &[u8]) -> Result<Frame, ProtocolError> {
    let mut r = Reader::new(payload);
    let frame = match code {
        REQUEST => Frame::Request(Box::new(RequestFrame::decode(&mut r)?)),
        READ_BODY => Frame::ReadBody { max: r.u32()? },
        BODY => Frame::Body(r.rest().to_vec()),
        BODY_END => Frame::BodyEnd,
        BODY_ERROR => Frame::BodyError,
        HEAD => Frame::Head(HeadFrame::decode(&mut r)?),
        DATA => Frame::Data(r.rest().to_vec()),
        END => Frame::End,
        ABORT => Frame::Abort,
        FAILURE => Frame::Failure { status: r.u16()? },
        RETRY => Frame::Retry,
        ACCEPTED => Frame::Accepted,
        FILE => Frame::File {
            offset: r.u64()?,
            len: r.u64()?,
        },
        other => return Err(ProtocolError::UnknownType(other)),
    };
    r.finish()?;
    frame.check_values()?;
    Ok(frame)
}

fn valid_status(status: u16) -> bool {
    (100..=999).contains(&status)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ProtocolError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// Shows a byte string as `b"..."` with non-ASCII bytes escaped.
struct ByteStr<'a>(&'a [u8]);

impl fmt::Debug for ByteStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::os::unix::net::UnixStream;
    use std::thread;

    use super::*;

    fn request() -> RequestFrame {
        RequestFrame {
            secret: [0xa5; SECRET_LEN],
            script: b"/srv/app/\xffwsgi.py".to_vec(),
            application_group: "example.org|/app".into(),
            callable: "application".into(),
            request_id: "aBcD-1234".into(),
            handler: "wsgi-script".into(),
            reloading: true,
            header_only: false,
            request_start_us: 1_700_000_000_123_456,
            env: vec![
                (b"REQUEST_METHOD".to_vec(), b"GET".to_vec()),
                (b"PATH_INFO".to_vec(), b"/caf\xe9".to_vec()),
                (b"\x00\xff".to_vec(), Vec::new()),
                (Vec::new(), b"\x80".to_vec()),
            ]
            .into(),
        }
    }

    fn head() -> HeadFrame {
        HeadFrame {
            status: 200,
            reason: Some("OK".into()),
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        }
    }

    /// One frame of every type, several shapes for the structured ones.
    fn samples() -> Vec<Frame> {
        let empty_request = RequestFrame {
            secret: [0; SECRET_LEN],
            script: Vec::new(),
            application_group: String::new(),
            callable: String::new(),
            request_id: String::new(),
            handler: String::new(),
            reloading: false,
            header_only: true,
            request_start_us: i64::MIN,
            env: Env::default(),
        };
        vec![
            Frame::Request(Box::new(request())),
            Frame::Request(Box::new(empty_request)),
            Frame::ReadBody { max: 1 },
            Frame::ReadBody { max: 65536 },
            Frame::ReadBody {
                max: MAX_PAYLOAD_U32,
            },
            Frame::Body(vec![0]),
            Frame::Body(b"name=value&\xff".to_vec()),
            Frame::BodyEnd,
            Frame::BodyError,
            Frame::Head(head()),
            Frame::Head(HeadFrame {
                status: 999,
                reason: None,
                headers: Vec::new(),
            }),
            Frame::Head(HeadFrame {
                status: 100,
                reason: Some(String::new()),
                headers: vec![],
            }),
            Frame::Data(b"hello, world\n".to_vec()),
            Frame::End,
            Frame::Abort,
            Frame::Failure { status: 500 },
            Frame::Failure { status: 404 },
            Frame::Retry,
            Frame::Accepted,
            Frame::File { offset: 0, len: 1 },
            Frame::File {
                offset: 1 << 40,
                len: FILE_END - (1 << 40),
            },
        ]
    }

    /// A header for `code` declaring `len` payload bytes, followed by `payload`.
    fn raw(code: u8, len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b'W', b'S', VERSION, code];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A frame of type `code` whose header declares exactly `payload`.
    fn framed(code: u8, payload: &[u8]) -> Vec<u8> {
        raw(code, u32::try_from(payload.len()).unwrap(), payload)
    }

    /// Where the env count of [`request`]'s encoding starts: it is the last field before the
    /// pairs.
    fn env_count_offset() -> usize {
        let no_env = RequestFrame {
            env: Env::default(),
            ..request()
        };
        Frame::Request(Box::new(no_env)).encoded().len() - 4
    }

    fn decode_err(bytes: &[u8]) -> ProtocolError {
        Frame::decode(bytes).expect_err("the bytes must be refused")
    }

    #[test]
    fn every_frame_type_round_trips() {
        let mut seen = std::collections::BTreeSet::new();
        for frame in samples() {
            let bytes = frame.encoded();
            assert_eq!(&bytes[..2], b"WS");
            assert_eq!(bytes[2], VERSION);
            seen.insert(bytes[3]);
            assert_eq!(bytes.len(), HEADER_LEN + frame.payload_len(), "{frame:?}");
            assert_eq!(frame.check(), Ok(()));
            assert_eq!(
                Frame::decode(&bytes),
                Ok(Some((frame.clone(), bytes.len())))
            );
        }
        assert_eq!(seen, (1..=13).collect());
    }

    #[test]
    fn file_layout_and_limits() {
        let frame = Frame::File {
            offset: 5,
            len: 0x0102,
        };
        let expected = b"WS\x02\x0d\0\0\0\x10\0\0\0\0\0\0\0\x05\0\0\0\0\0\0\x01\x02";
        assert_eq!(frame.encoded(), expected);
        assert_eq!(Frame::decode(expected), Ok(Some((frame, expected.len()))));

        let empty = Frame::File { offset: 7, len: 0 };
        let past_end = Frame::File {
            offset: FILE_END,
            len: 1,
        };
        let overflow = Frame::File {
            offset: u64::MAX,
            len: 2,
        };
        for bad in [empty, past_end, overflow] {
            assert!(
                matches!(bad.check(), Err(ProtocolError::InvalidValue(_))),
                "{bad:?}"
            );
            assert!(matches!(
                Frame::decode(&bad.encoded()),
                Err(ProtocolError::InvalidValue(_))
            ));
        }
        assert_eq!(
            decode_err(&framed(FILE, &[0; 15])),
            ProtocolError::Truncated
        );
    }

    #[test]
    fn encode_data_matches_data_frames() {
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let mut out = b"before".to_vec();
        Frame::encode_data(&data, 300, &mut out);
        let mut expected = b"before".to_vec();
        for piece in data.chunks(300) {
            Frame::Data(piece.to_vec()).encode(&mut expected);
        }
        assert_eq!(out, expected);

        let mut empty = Vec::new();
        Frame::encode_data(&[], 300, &mut empty);
        Frame::encode_data(b"x", 0, &mut empty);
        assert_eq!(empty, Frame::Data(b"x".to_vec()).encoded());
    }

    #[test]
    fn a_borrowed_request_encodes_like_the_owned_one() {
        for owned in [
            request(),
            RequestFrame {
                env: Env::default(),
                ..request()
            },
        ] {
            let env: Vec<_> = owned.env.iter().collect();
            let frame = Frame::Request(Box::new(owned.clone()));
            assert_eq!(owned.borrowed(&env).encoded(), Ok(frame.encoded()));
        }
        let big = vec![0; MAX_PAYLOAD];
        let env = [(big.as_slice(), &b""[..])];
        let owned = request();
        assert!(matches!(
            owned.borrowed(&env).encoded(),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn request_layout_is_as_documented() {
        let frame = Frame::Request(Box::new(RequestFrame {
            env: vec![(b"K".to_vec(), b"\xff".to_vec())].into(),
            ..RequestFrame {
                secret: [7; SECRET_LEN],
                script: b"/s".to_vec(),
                application_group: "g".into(),
                callable: "c".into(),
                request_id: "r".into(),
                handler: "h".into(),
                reloading: true,
                header_only: true,
                request_start_us: -1,
                env: Env::default(),
            }
        }));
        let mut expected = vec![b'W', b'S', 2, 1, 0, 0, 0, 81];
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(b"\0\0\0\x02/s\0\0\0\x01g\0\0\0\x01c\0\0\0\x01r\0\0\0\x01h");
        expected.push(0b11);
        expected.extend_from_slice(&[0xff; 8]);
        expected.extend_from_slice(b"\0\0\0\x01\0\0\0\x01K\0\0\0\x01\xff");
        assert_eq!(frame.encoded(), expected);
    }

    #[test]
    fn head_layout_is_as_documented() {
        let frame = Frame::Head(HeadFrame {
            status: 404,
            reason: Some("Gone".into()),
            headers: vec![("A".into(), "b".into())],
        });
        let expected =
            b"WS\x02\x06\0\0\0\x19\x01\x94\x01\0\0\0\x04Gone\0\0\0\x01\0\0\0\x01A\0\0\0\x01b";
        assert_eq!(frame.encoded(), expected);
        assert_eq!(
            Frame::ReadBody { max: 258 }.encoded(),
            b"WS\x02\x02\0\0\0\x04\0\0\x01\x02"
        );
        assert_eq!(Frame::End.encoded(), b"WS\x02\x08\0\0\0\0");
        assert_eq!(
            Frame::Failure { status: 503 }.encoded(),
            b"WS\x02\x0a\0\0\0\x02\x01\xf7"
        );
    }

    #[test]
    fn longest_reason_and_largest_body_round_trip() {
        // The longest reason a Head can carry: the rest of the payload after status, marker,
        // reason length and header count.
        let reason = "r".repeat(MAX_PAYLOAD - 2 - 1 - 4 - 4);
        let frame = Frame::Head(HeadFrame {
            status: 200,
            reason: Some(reason),
            headers: vec![],
        });
        assert_eq!(frame.check(), Ok(()));
        let bytes = frame.encoded();
        assert_eq!(bytes.len(), HEADER_LEN + MAX_PAYLOAD);
        assert_eq!(Frame::decode(&bytes), Ok(Some((frame, bytes.len()))));

        let body = Frame::Data(vec![0x5a; MAX_PAYLOAD]);
        assert_eq!(body.check(), Ok(()));
        assert_eq!(
            Frame::decode(&body.encoded()),
            Ok(Some((body, HEADER_LEN + MAX_PAYLOAD)))
        );
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        for frame in samples() {
            let bytes = frame.encoded();
            for len in 0..bytes.len() {
                assert_eq!(
                    Frame::decode(&bytes[..len]),
                    Ok(None),
                    "{frame:?} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn decodes_frames_one_after_another() {
        let frames = samples();
        let mut stream = Vec::new();
        for frame in &frames {
            frame.encode(&mut stream);
        }
        stream.extend_from_slice(b"WS\x02");

        let mut rest = &stream[..];
        let mut decoded = Vec::new();
        while let Some((frame, used)) = Frame::decode(rest).unwrap() {
            decoded.push(frame);
            rest = &rest[used..];
        }
        assert_eq!(decoded, frames);
        assert_eq!(rest, b"WS\x02");
    }

    #[test]
    fn header_errors_need_only_the_header() {
        assert_eq!(decode_err(b"XS\x02\x08\0\0\0\0"), ProtocolError::BadMagic);
        assert_eq!(decode_err(b"GET / HTTP/1.1\r\n"), ProtocolError::BadMagic);
        assert_eq!(
            decode_err(b"WS\x01\x08\0\0\0\0"),
            ProtocolError::UnsupportedVersion(1)
        );
        assert_eq!(
            decode_err(b"WS\x02\xc8\0\0\0\0"),
            ProtocolError::UnknownType(200)
        );
        assert_eq!(
            decode_err(b"WS\x02\x00\0\0\0\0"),
            ProtocolError::UnknownType(0)
        );
        assert_eq!(
            decode_err(b"WS\x02\x0e\0\0\0\0"),
            ProtocolError::UnknownType(14)
        );

        // Declared one byte over the cap, with only the header present.
        let over = raw(DATA, MAX_PAYLOAD_U32 + 1, &[]);
        assert_eq!(decode_err(&over), ProtocolError::TooLarge(MAX_PAYLOAD + 1));
        let huge = raw(REQUEST, u32::MAX, &[]);
        assert_eq!(decode_err(&huge), ProtocolError::TooLarge(4_294_967_295));
        // Exactly the cap is fine: it waits for the payload.
        assert_eq!(Frame::decode(&raw(DATA, MAX_PAYLOAD_U32, &[])), Ok(None));
    }

    #[test]
    fn truncated_fields_and_counts() {
        // A header count of u32::MAX in a Head whose payload holds nothing after it.
        let head = framed(HEAD, b"\0\xc8\0\xff\xff\xff\xff");
        assert_eq!(decode_err(&head), ProtocolError::Truncated);
        // An env count of 2 with room for one pair only.
        let mut frame = Frame::Request(Box::new(request())).encoded();
        let count_at = env_count_offset();
        assert_eq!(&frame[count_at..count_at + 4], &[0, 0, 0, 4]);
        frame[count_at + 3] = 5;
        assert_eq!(decode_err(&frame), ProtocolError::Truncated);
        // Payloads too short for their fixed fields.
        assert_eq!(
            decode_err(&framed(READ_BODY, b"\0\0\x01")),
            ProtocolError::Truncated
        );
        assert_eq!(
            decode_err(&framed(FAILURE, b"\x01")),
            ProtocolError::Truncated
        );
        assert_eq!(
            decode_err(&framed(REQUEST, &[0; 31])),
            ProtocolError::Truncated
        );
        assert_eq!(
            decode_err(&framed(HEAD, b"\0\xc8\x01\0\0\0\x09short")),
            ProtocolError::Truncated
        );
    }

    #[test]
    fn trailing_bytes() {
        assert_eq!(
            decode_err(&framed(END, b"x")),
            ProtocolError::TrailingBytes(1)
        );
        assert_eq!(
            decode_err(&framed(READ_BODY, b"\0\0\0\x01\0\0")),
            ProtocolError::TrailingBytes(2)
        );
        let mut head = Frame::Head(head()).encoded();
        head.extend_from_slice(b"abc");
        head[7] += 3;
        assert_eq!(decode_err(&head), ProtocolError::TrailingBytes(3));
    }

    #[test]
    fn invalid_utf8_in_text_fields() {
        let bad_reason = framed(HEAD, b"\0\xc8\x01\0\0\0\x02\xc3\x28\0\0\0\0");
        assert_eq!(decode_err(&bad_reason), ProtocolError::InvalidUtf8);
        let bad_header = framed(HEAD, b"\0\xc8\0\0\0\0\x01\0\0\0\x01\xff\0\0\0\0");
        assert_eq!(decode_err(&bad_header), ProtocolError::InvalidUtf8);
        let mut bytes = Frame::Request(Box::new(request())).encoded();
        let group_at = HEADER_LEN + SECRET_LEN + 4 + request().script.len() + 4;
        assert_eq!(bytes[group_at], b'e');
        bytes[group_at] = 0xfe;
        assert_eq!(decode_err(&bytes), ProtocolError::InvalidUtf8);
    }

    #[test]
    fn invalid_values() {
        let mut bytes = Frame::Request(Box::new(request())).encoded();
        let flags_at = env_count_offset() - 8 - 1;
        assert_eq!(bytes[flags_at], FLAG_RELOADING);
        for flags in [0b100, 0x80, 0xff] {
            bytes[flags_at] = flags;
            assert_eq!(
                decode_err(&bytes),
                ProtocolError::InvalidValue("unknown Request flag bits are set")
            );
        }

        let status_42 = framed(HEAD, b"\0\x2a\0\0\0\0\0");
        assert!(matches!(
            decode_err(&status_42),
            ProtocolError::InvalidValue(_)
        ));
        assert!(matches!(
            decode_err(&framed(FAILURE, b"\0\x2a")),
            ProtocolError::InvalidValue(_)
        ));
        let status_1000 = framed(FAILURE, &1000u16.to_be_bytes());
        assert!(matches!(
            decode_err(&status_1000),
            ProtocolError::InvalidValue(_)
        ));
        let marker_2 = framed(HEAD, b"\0\xc8\x02\0\0\0\0");
        assert!(matches!(
            decode_err(&marker_2),
            ProtocolError::InvalidValue(_)
        ));
        assert!(matches!(
            decode_err(&framed(BODY, b"")),
            ProtocolError::InvalidValue(_)
        ));
        assert!(matches!(
            decode_err(&framed(DATA, b"")),
            ProtocolError::InvalidValue(_)
        ));
        assert!(matches!(
            decode_err(&framed(READ_BODY, &[0; 4])),
            ProtocolError::InvalidValue(_)
        ));
        let max_over = framed(READ_BODY, &(MAX_PAYLOAD_U32 + 1).to_be_bytes());
        assert!(matches!(
            decode_err(&max_over),
            ProtocolError::InvalidValue(_)
        ));
    }

    #[test]
    fn check_refuses_what_decoders_refuse() {
        let invalid = [
            Frame::Head(HeadFrame {
                status: 42,
                reason: None,
                headers: vec![],
            }),
            Frame::Failure { status: 1000 },
            Frame::Body(Vec::new()),
            Frame::Data(Vec::new()),
            Frame::ReadBody { max: 0 },
            Frame::ReadBody { max: u32::MAX },
            Frame::Data(vec![1; MAX_PAYLOAD + 1]),
        ];
        for frame in invalid {
            assert!(frame.check().is_err(), "{frame:?}");
            // Encoding still works, and what it gives is refused on the other side.
            assert!(Frame::decode(&frame.encoded()).is_err(), "{frame:?}");
            let mut sink = Vec::new();
            assert!(write_frame(&mut sink, &frame).is_err());
            assert!(sink.is_empty());
        }

        let reason = "r".repeat(MAX_PAYLOAD);
        let too_long = Frame::Head(HeadFrame {
            status: 200,
            reason: Some(reason),
            headers: vec![],
        });
        assert_eq!(
            too_long.check(),
            Err(ProtocolError::TooLarge(MAX_PAYLOAD + 11))
        );
    }

    #[test]
    fn error_messages_read_as_log_lines() {
        let messages = [
            (
                ProtocolError::UnsupportedVersion(1),
                "version 1 (this build speaks version 2)",
            ),
            (
                ProtocolError::TooLarge(20_000_000),
                "20000000 bytes is over the limit of 16777216",
            ),
            (ProtocolError::TrailingBytes(3), "3 unexpected bytes"),
            (
                ProtocolError::UnexpectedFrame("Body"),
                "unexpected Body frame",
            ),
        ];
        for (error, text) in messages {
            assert!(error.to_string().contains(text), "{error}");
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(matches!(ProtocolError::from(eof), ProtocolError::Io(_)));
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(ProtocolError::from(timeout), ProtocolError::TimedOut);
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", Frame::Request(Box::new(request())));
        assert!(text.contains("<32 bytes, not shown>"), "{text}");
        assert!(!text.contains("165"), "{text}");
        assert!(text.contains(r#"b"/srv/app/\xffwsgi.py""#), "{text}");
        assert!(text.contains(r#"(b"PATH_INFO", b"/caf\xe9")"#), "{text}");
    }

    #[test]
    fn secret_comparison() {
        let frame = request();
        assert!(frame.secret_matches(&[0xa5; SECRET_LEN]));
        let mut other = [0xa5; SECRET_LEN];
        other[31] = 0xa4;
        assert!(!frame.secret_matches(&other));
    }

    #[test]
    fn read_and_write_over_a_cursor() {
        let frames = samples();
        let mut buf = Vec::new();
        for frame in &frames {
            write_frame(&mut buf, frame).unwrap();
        }
        let large = Frame::Body(vec![0xee; COPY_LIMIT + 1]);
        write_frame(&mut buf, &large).unwrap();

        let mut cursor = Cursor::new(&buf);
        for frame in frames.iter().chain([&large]) {
            assert_eq!(&read_frame(&mut cursor).unwrap(), frame);
        }
        assert_eq!(read_frame(&mut cursor), Err(ProtocolError::Closed));
        assert_eq!(read_frame(&mut cursor), Err(ProtocolError::Closed));
    }

    /// A stream that takes at most `step` bytes per write, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.step;
            for buf in bufs {
                let n = buf.len().min(room);
                self.out.extend_from_slice(&buf[..n]);
                room -= n;
            }
            Ok(self.step - room)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn large_frames_survive_short_vectored_writes() {
        let data = (0..=255).cycle().take(COPY_LIMIT + 3).collect::<Vec<u8>>();
        // Steps that end inside the header, at its end, and inside the payload.
        for step in [3, HEADER_LEN, 1000, COPY_LIMIT] {
            let mut stream = Trickle {
                out: Vec::new(),
                step,
            };
            write_data(&mut stream, &data).unwrap();
            write_frame(&mut stream, &Frame::Body(data.clone())).unwrap();
            let mut cursor = Cursor::new(&stream.out);
            assert_eq!(read_frame(&mut cursor).unwrap(), Frame::Data(data.clone()));
            assert_eq!(read_frame(&mut cursor).unwrap(), Frame::Body(data.clone()));
            assert_eq!(read_frame(&mut cursor), Err(ProtocolError::Closed));
        }
    }

    #[test]
    fn large_payloads_are_read_into_buffers_of_their_own_size() {
        for len in [
            READ_RESERVE - 1,
            READ_RESERVE,
            4 * READ_RESERVE,
            3 * READ_RESERVE + 5,
        ] {
            let data: Vec<u8> = (0..=255).cycle().take(len).collect();
            let bytes = Frame::Data(data.clone()).encoded();
            let Frame::Data(read) = read_frame(&mut Cursor::new(&bytes)).unwrap() else {
                panic!("not a Data frame");
            };
            assert_eq!(read, data);
            assert_eq!(read.capacity(), len, "buffer for a payload of {len} bytes");

            let cut = read_frame(&mut Cursor::new(&bytes[..bytes.len() - 1])).unwrap_err();
            assert!(matches!(cut, ProtocolError::Io(_)), "{cut:?}");
        }
    }

    #[test]
    fn read_frame_reports_a_stream_cut_inside_a_frame() {
        let bytes = Frame::Head(head()).encoded();
        for cut in [1, HEADER_LEN - 1] {
            let error = read_frame(&mut Cursor::new(&bytes[..cut])).unwrap_err();
            let ProtocolError::Io(text) = error else {
                panic!("{error:?}")
            };
            assert!(text.contains("frame header"), "{text}");
        }
        for cut in [HEADER_LEN, bytes.len() - 1] {
            let error = read_frame(&mut Cursor::new(&bytes[..cut])).unwrap_err();
            let ProtocolError::Io(text) = error else {
                panic!("{error:?}")
            };
            assert!(text.contains("payload bytes"), "{text}");
        }
    }

    /// An [`Incoming`] as an owned frame, and whether its payload was in the space.
    fn own(incoming: Incoming<'_>) -> (Frame, bool) {
        match incoming {
            Incoming::Data(data) => (Frame::Data(data.to_vec()), true),
            Incoming::Frame(frame) => (frame, false),
        }
    }

    #[test]
    fn read_frame_in_reuses_its_space_for_data_and_reads_other_frames_whole() {
        let mut bytes = Vec::new();
        Frame::Head(head()).encode(&mut bytes);
        Frame::Data(vec![1; DATA_SPACE]).encode(&mut bytes);
        Frame::Data(b"tail".to_vec()).encode(&mut bytes);
        Frame::Data(vec![2; DATA_SPACE + 1]).encode(&mut bytes);
        Frame::End.encode(&mut bytes);
        let mut stream = Cursor::new(&bytes);
        let mut space = Vec::new();
        let mut next = || read_frame_in(&mut stream, &mut space).map(own);
        assert_eq!(next().unwrap(), (Frame::Head(head()), false));
        assert_eq!(next().unwrap(), (Frame::Data(vec![1; DATA_SPACE]), true));
        assert_eq!(next().unwrap(), (Frame::Data(b"tail".to_vec()), true));
        // Larger than the space: an owned frame, as `read_frame` gives.
        assert_eq!(
            next().unwrap(),
            (Frame::Data(vec![2; DATA_SPACE + 1]), false)
        );
        assert_eq!(next().unwrap(), (Frame::End, false));
        assert!(matches!(next(), Err(ProtocolError::Closed)));
        assert_eq!(
            space.len(),
            DATA_SPACE,
            "the space grew once, to the largest block"
        );
    }

    #[test]
    fn read_frame_in_refuses_empty_and_cut_data() {
        let mut space = Vec::new();
        let empty = header(DATA, 0);
        let error = read_frame_in(&mut Cursor::new(&empty), &mut space).unwrap_err();
        assert!(matches!(error, ProtocolError::InvalidValue(_)), "{error:?}");
        let bytes = Frame::Data(vec![3; 1000]).encoded();
        let error = read_frame_in(&mut Cursor::new(&bytes[..500]), &mut space).unwrap_err();
        let ProtocolError::Io(text) = error else {
            panic!("{error:?}")
        };
        assert!(
            text.contains("after 492 of the 1000 payload bytes"),
            "{text}"
        );
    }

    #[test]
    fn read_frame_checks_the_header_before_reading_on() {
        // The declared 4 GiB is refused from the header; the bytes after it are not touched.
        let mut cursor = Cursor::new(raw(DATA, u32::MAX, b"more"));
        assert_eq!(
            read_frame(&mut cursor),
            Err(ProtocolError::TooLarge(4_294_967_295))
        );
        assert_eq!(cursor.position(), 8);
        let mut cursor = Cursor::new(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(read_frame(&mut cursor), Err(ProtocolError::BadMagic));
    }

    #[test]
    fn read_and_write_over_a_socket_pair() {
        let (mut child, mut daemon) = UnixStream::pair().unwrap();
        // Larger than a socket buffer, so both sides see partial reads and writes.
        let body = (0..3 * 1024 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>();
        let mut sent = samples();
        sent.push(Frame::Body(body));
        sent.push(Frame::Data(vec![1; MAX_PAYLOAD]));

        let writer = {
            let sent = sent.clone();
            thread::spawn(move || {
                for frame in &sent {
                    write_frame(&mut child, frame).unwrap();
                }
                // Dropping the stream closes it at a frame boundary.
            })
        };
        for frame in &sent {
            assert_eq!(&read_frame(&mut daemon).unwrap(), frame);
        }
        assert_eq!(read_frame(&mut daemon), Err(ProtocolError::Closed));
        writer.join().unwrap();
    }

    #[test]
    fn socket_timeout_is_reported_as_such() {
        let (_child, mut daemon) = UnixStream::pair().unwrap();
        daemon
            .set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        assert_eq!(read_frame(&mut daemon), Err(ProtocolError::TimedOut));
    }
}
