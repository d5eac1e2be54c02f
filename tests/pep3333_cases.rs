//! The shared real-world cases (`/work/shared/cases/NNN-*`) that concern embedded mode, one
//! test each, asserting the correct behaviour their `expected.md` describes. The apps are
//! the cases' own, inlined; the configuration is embedded-only (no daemon mounts).

mod pep3333_raw;
mod support;

use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use pep3333_raw::{Conn, get};
use support::{ServerBuilder, Stopped};

/// A server with `app` at `/mount` (plus any `extra` configuration), tolerating the log
/// lines of an application traceback whose last line matches `error`.
fn server_with(app: &str, mount: &str, extra: &str, error: Option<&str>) -> ServerBuilder {
    let mut builder = ServerBuilder::new()
        .file("case/app.wsgi", app)
        .config(&format!(
            "WSGIScriptAlias {mount} ${{TEST_DIR}}/case/app.wsgi\n{extra}"
        ));
    if let Some(error) = error {
        builder = builder
            .allow_log("WSGI0010")
            .allow_log("Traceback (most recent call last)")
            .allow_log(r"\[request [^\]]+\]   ")
            .allow_log(error);
    }
    builder
}

/// A keep-alive request (no `Connection: close`) on a new connection.
fn keep_alive(port: u16, method: &str, path: &str) -> Conn {
    let mut conn = Conn::open(port);
    let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    conn.send(request.as_bytes())
        .expect("cannot send the request");
    conn
}

/// The error log lines containing `needle`.
fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn case_001_header_value_with_a_line_break_gives_500() {
    let app = r#"
def application(environ, start_response):
    sep = '\r' if environ['PATH_INFO'] == '/cr' else '\n'
    title = 'Quarterly report%sfinal version' % sep
    headers = [
        ('Content-Type', 'text/plain'),
        ('Content-Disposition', 'attachment; filename="%s.txt"' % title),
    ]
    start_response('200 OK', headers)
    return [b'report body\n']
"#;
    let server = server_with(app, "/hdr", "", Some("ValueError")).start();
    for path in ["/hdr", "/hdr/cr"] {
        let r = get(server.port(), path, "");
        assert_eq!(r.status, 500, "{path}: {}", r.raw_text());
        assert!(
            !r.raw_text().contains("final version"),
            "{path}: header splitting: {}",
            r.raw_text()
        );
        assert!(!r.text().contains("report body"), "{path}");
    }
    let log = server.error_log();
    assert!(log_lines(&log, "ValueError").len() >= 2, "{log}");
}

#[test]
fn case_002_header_value_int_gives_500_and_a_type_error() {
    let app = r#"
def application(environ, start_response):
    body = b'{"tile": [1, 2, 3]}'
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', len(body))])
    return [body]
"#;
    let server = server_with(app, "/tile", "", Some("TypeError")).start();
    let r = get(server.port(), "/tile", "");
    assert_eq!(r.status, 500, "{}", r.raw_text());
    assert!(!r.text().contains("tile"));
    let log = server.error_log();
    let lines = log_lines(&log, "TypeError");
    assert!(
        lines.iter().any(|l| l.contains("int")),
        "no TypeError naming int: {lines:#?}"
    );
}

#[test]
fn case_003_status_without_reason_phrase() {
    let app = r#"
def application(environ, start_response):
    which = environ.get('PATH_INFO', '')
    if which == '/bare':
        status = '207'
    elif which == '/empty-phrase':
        status = '207 '
    else:
        status = '207 Partly Done'
    start_response(status, [('Content-Type', 'text/plain')])
    return [b'multi-status body\n']
"#;
    let server = server_with(app, "/dav", "", Some("ValueError")).start();
    let r = get(server.port(), "/dav/bare", "");
    assert_eq!(r.status_line, "HTTP/1.1 500 Internal Server Error");
    assert!(!r.text().contains("multi-status"));
    assert!(server.error_log().contains("ValueError"));
    let r = get(server.port(), "/dav/empty-phrase", "");
    assert_eq!(r.status, 207, "{}", r.raw_text());
    assert_eq!(r.text(), "multi-status body\n");
    let r = get(server.port(), "/dav/custom", "");
    assert_eq!(r.status_line, "HTTP/1.1 207 Partly Done");
    assert_eq!(r.text(), "multi-status body\n");
    let log = server.error_log();
    // One failure only (the bare status), reported once.
    assert_eq!(
        log_lines(&log, "ValueError: invalid status").len(),
        1,
        "{log}"
    );
}

#[test]
fn case_004_str_body_items_give_500() {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if environ.get('PATH_INFO') == '/ok':
        return [b'Hello World!']
    return ['Hello World!']
"#;
    let server = server_with(app, "/hello", "", Some("TypeError")).start();
    let r = get(server.port(), "/hello/str", "");
    assert_eq!(r.status, 500, "{}", r.raw_text());
    assert!(r.complete, "not a clean 500 page: {}", r.raw_text());
    assert!(!r.text().contains("Hello World!"));
    let log = server.error_log();
    let lines = log_lines(&log, "TypeError");
    assert!(
        lines.iter().any(|l| l.contains("str")),
        "no TypeError naming str: {log}"
    );
    let r = get(server.port(), "/hello/ok", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello World!");
}

#[test]
fn case_005_content_length_disagreeing_with_the_body() {
    let app = r#"
def application(environ, start_response):
    if environ.get('PATH_INFO') == '/long':
        declared, chunks = '5', [b'abcdefghijklm', b'nopqrstuvwxyz']
    elif environ.get('PATH_INFO') == '/short':
        declared, chunks = '100', [b'0123456789']
    else:
        declared, chunks = '2', [b'ok']
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', declared)])
    return chunks
"#;
    // A long keep-alive timeout: a server that keeps the connection open after a short
    // body would stall the client for 10 s.
    let server = server_with(app, "/cl", "KeepAliveTimeout 10", None)
        .allow_log("(?i)content.length")
        .start();
    let port = server.port();

    // Too long: cut to the declared length, and nothing extra leaks into the next response
    // on the same connection.
    let mut conn = keep_alive(port, "GET", "/cl/long");
    let r = conn.read_response(Duration::from_secs(5), false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.text(), "abcde");
    let next = format!("GET /cl/ok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if conn.send(next.as_bytes()).is_ok() {
        let r = conn.read_response(Duration::from_secs(5), false);
        assert!(
            r.raw.is_empty() || r.raw.starts_with(b"HTTP/1.1 200 "),
            "the extra bytes leaked into the next response: {:?}",
            r.raw_text()
        );
        if !r.raw.is_empty() {
            assert_eq!(r.text(), "ok");
        }
    }

    // Too short: the 10 bytes, then the connection closed at once.
    let started = Instant::now();
    let mut conn = keep_alive(port, "GET", "/cl/short");
    let r = conn.read_response(Duration::from_secs(5), false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.text(), "0123456789");
    assert!(!r.complete);
    assert!(
        conn.eof,
        "connection still open {:?} after a short body",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[test]
fn case_011_exc_info_replaces_the_status_after_an_empty_first_block() {
    let app = r#"
import sys

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('X-Phase', 'first')])

    def body():
        yield b''
        try:
            raise LookupError('backend unavailable')
        except LookupError:
            start_response('503 Service Unavailable',
                           [('Content-Type', 'text/plain'),
                            ('X-Phase', 'second')],
                           sys.exc_info())
        yield b'please retry\n'

    return body()
"#;
    let server = server_with(app, "/embedded", "", None).start();
    let r = get(server.port(), "/embedded", "");
    assert_eq!(r.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(r.header_values("x-phase"), ["second"]);
    assert_eq!(r.text(), "please retry\n");
}

#[test]
fn case_012_app_returning_none_gives_500_and_the_process_survives() {
    let app = r#"
import os

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if environ.get('PATH_INFO') == '/pid':
        return [str(os.getpid()).encode()]
"#;
    let server = server_with(app, "/app", "", Some("TypeError")).start();
    let before = server.get("/app/pid").text();
    let r = server.get("/app/broken");
    assert_eq!(r.status, 500);
    let after = server.get("/app/pid").text();
    assert_eq!(before, after, "the process serving the app changed");
    let log = server.error_log();
    assert!(
        log_lines(&log, "TypeError")
            .iter()
            .any(|l| l.contains("None")),
        "{log}"
    );
    assert!(!log.contains("AH00052"), "a child crashed: {log}");
}

#[test]
fn case_013_client_disconnect_calls_close_once_and_logs_200() {
    let app = r#"
import sys
import time

class Stream:
    def __init__(self, label):
        self.label = label
        self.sent = 0

    def __iter__(self):
        for _ in range(200):
            self.sent += 1
            yield b'z' * 65536
            time.sleep(0.05)

    def close(self):
        print('case013 close() called for %s after %d chunks'
              % (self.label, self.sent), file=sys.stderr, flush=True)

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return Stream(environ['SCRIPT_NAME'])
"#;
    let server = server_with(app, "/embedded", "", None)
        .allow_log("case013 close() called")
        .start();
    let mut conn = keep_alive(server.port(), "GET", "/embedded");
    let got = conn.read_bytes(300 * 1024, Duration::from_secs(10));
    assert_eq!(got.len(), 300 * 1024);
    drop(conn);
    assert!(
        server.wait_for_log("case013 close() called", Duration::from_secs(10)),
        "close() was not called after the client went away"
    );
    let access = server.dir().join("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("\"GET /embedded ")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no access-log line:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = line.split("\" ").nth(1).and_then(|s| s.split(' ').next());
    assert_eq!(status, Some("200"), "{line}");
    let Stopped { error_log, .. } = server.stop();
    let closes = log_lines(&error_log, "case013 close() called");
    assert_eq!(closes.len(), 1, "{closes:#?}");
    let chunks: u32 = closes[0]
        .rsplit("after ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(chunks < 200, "iterated to the end: {}", closes[0]);
    assert!(!error_log.contains("Traceback"), "{error_log}");
}

/// `body` in chunked transfer coding, in chunks of up to `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn case_014_chunked_request_body() {
    let app = r#"
import sys
def application(environ, start_response):
    print('case014 app called for %s' % environ['SCRIPT_NAME'], file=sys.stderr, flush=True)
    data = environ['wsgi.input'].read()
    body = ('CONTENT_LENGTH=%r received=%d bytes first=%r\n'
            % (environ.get('CONTENT_LENGTH'), len(data), data[:12])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;
    let server = ServerBuilder::new()
        .file("case/app.wsgi", app)
        .config(
            "WSGIScriptAlias /refused ${TEST_DIR}/case/app.wsgi\n\
             WSGIScriptAlias /off ${TEST_DIR}/case/app.wsgi\n\
             WSGIScriptAlias /embedded ${TEST_DIR}/case/app.wsgi\n\
             <Location /off>\n    WSGIChunkedRequest Off\n</Location>\n\
             <Location /embedded>\n    WSGIChunkedRequest On\n</Location>",
        )
        .allow_log("case014 app called")
        .allow_log("(?i)chunked")
        .start();
    let body = vec![b'a'; 100_000];
    let request = |path: &str| {
        let mut bytes = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(&chunked(&body, 7000));
        server.raw(&bytes)
    };
    // Off, by default or explicitly: 411 and the app is not called.
    for path in ["/refused", "/off"] {
        let refused = String::from_utf8_lossy(&request(path)).into_owned();
        assert!(
            refused.starts_with("HTTP/1.1 411 Length Required\r\n"),
            "{path}: {refused}"
        );
    }
    let log = server.error_log();
    assert!(!log.contains("case014 app called"), "the app ran: {log}");
    assert!(
        log.to_ascii_lowercase().contains("chunked"),
        "no log line about the refused chunked body: {log}"
    );
    let accepted = String::from_utf8_lossy(&request("/embedded")).into_owned();
    assert!(accepted.starts_with("HTTP/1.1 200 OK\r\n"), "{accepted}");
    assert!(
        accepted.contains("CONTENT_LENGTH=None received=100000 bytes first=b'aaaaaaaaaaaa'"),
        "{accepted}"
    );
}

#[test]
fn case_015_expect_100_continue_with_and_without_reading() {
    let app = r#"
import hashlib

def application(environ, start_response):
    if environ.get('PATH_INFO') == '/ignore':
        start_response('403 Forbidden', [('Content-Type', 'text/plain')])
        return [b'not accepting uploads\n']
    length = int(environ.get('CONTENT_LENGTH') or 0)
    data = environ['wsgi.input'].read(length)
    digest = hashlib.md5(data).hexdigest()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('declared=%d received=%d md5=%s\n' % (length, len(data), digest)).encode()]
"#;
    let server = server_with(app, "/embedded", "", None).start();
    let port = server.port();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let body: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nExpect: 100-continue\r\n\
             Content-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n",
            body.len()
        )
    };

    let mut conn = Conn::open(port);
    conn.send(head("/embedded/echo").as_bytes()).unwrap();
    let interim = conn.read_head(Duration::from_secs(3)).unwrap_or_default();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim:?}");
    conn.send(&body).unwrap();
    let r = conn.read_response(Duration::from_secs(10), false);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!(
            "declared=300000 received=300000 md5={:x}\n",
            Md5::digest(&body)
        )
    );

    // The app never reads: the 403 arrives at once and complete, without `100 Continue`,
    // and the server does not then wait for the body it never asked for.
    let started = Instant::now();
    let mut conn = Conn::open(port);
    conn.send(head("/embedded/ignore").as_bytes()).unwrap();
    let r = conn.read_response(Duration::from_secs(3), false);
    assert_eq!(r.status, 403, "nothing within 3 s: {:?}", r.raw_text());
    assert!(r.interim.is_empty(), "{:?}", r.interim);
    assert!(r.complete, "403 incomplete after 3 s: {:?}", r.raw_text());
    assert_eq!(r.text(), "not accepting uploads\n");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    if !conn.wait_closed(Duration::from_millis(500)) {
        // Kept alive: the connection must be ready for the next request right away.
        let next = format!("GET /embedded/ignore HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        conn.send(next.as_bytes()).unwrap();
        let r = conn.read_response(Duration::from_secs(3), false);
        assert!(
            r.status == 403 || (r.raw.is_empty() && conn.eof),
            "the next request on the connection got {:?}",
            r.raw_text()
        );
    }
}

#[test]
fn case_016_short_request_body_raises_instead_of_returning_short_data() {
    let app = r#"
def application(environ, start_response):
    length = int(environ.get('CONTENT_LENGTH') or 0)
    if environ.get('PATH_INFO') == '/count':
        try:
            data = environ['wsgi.input'].read(length)
            msg = 'read returned %d of %d bytes' % (len(data), length)
        except Exception as exc:
            msg = 'read raised %s: %s' % (type(exc).__name__, exc)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [msg.encode() + b'\n']
    data = environ['wsgi.input'].read(length)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'got %d bytes\n' % len(data)]
"#;
    let server = server_with(app, "/embedded", "", Some("OSError")).start();
    let send = |path: &str| {
        let started = Instant::now();
        let mut conn = Conn::open(server.port());
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\
             Content-Type: application/octet-stream\r\n\r\n0123456789"
        );
        conn.send(request.as_bytes()).unwrap();
        conn.shutdown_write();
        let r = conn.read_response(Duration::from_secs(5), false);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: no answer within 5 s"
        );
        r
    };
    let r = send("/embedded");
    assert_eq!(r.status, 500, "{}", r.raw_text());
    assert!(!r.text().contains("got 10 bytes"));
    let r = send("/embedded/count");
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert!(
        r.text().starts_with("read raised OSError: "),
        "{}",
        r.text()
    );
    assert!(server.error_log().contains("OSError"));
}

#[test]
fn case_017_file_wrapper_over_bytes_io_with_nul_bytes() {
    let app = r#"
import hashlib
import io
import sys

DATA = b'\x00\x00\x01binary' + bytes(range(256)) * 19 + b'\x00' * 125

class Data(io.BytesIO):
    def close(self):
        print('case017 close() called', file=sys.stderr, flush=True)
        super().close()

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                              ('X-Expected-MD5', hashlib.md5(DATA).hexdigest()),
                              ('X-Expected-Length', str(len(DATA)))])
    return environ['wsgi.file_wrapper'](Data(DATA), 1024)
"#;
    let server = server_with(app, "/embedded", "", None)
        .allow_log("case017 close() called")
        .start();
    let r = server.get("/embedded");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-expected-length"), Some("4998"));
    assert_eq!(r.body.len(), 4998);
    assert_eq!(
        Some(format!("{:x}", Md5::digest(&r.body)).as_str()),
        r.header("x-expected-md5")
    );
    assert_eq!(&r.body[..3], b"\x00\x00\x01");
    let stopped = server.stop();
    assert_eq!(
        log_lines(&stopped.error_log, "case017 close() called").len(),
        1
    );
}

#[test]
fn case_019_authorization_header_needs_wsgi_pass_authorization() {
    let app = r#"
def application(environ, start_response):
    auth = environ.get('HTTP_AUTHORIZATION')
    status = '200 OK' if auth == 'Bearer t0k3n' else '401 Unauthorized'
    start_response(status, [('Content-Type', 'text/plain')])
    return [('HTTP_AUTHORIZATION=%r\n' % auth).encode()]
"#;
    let server = ServerBuilder::new()
        .file("case/app.wsgi", app)
        .config(
            "WSGIScriptAlias /default ${TEST_DIR}/case/app.wsgi\n\
             WSGIScriptAlias /passed ${TEST_DIR}/case/app.wsgi\n\
             <Location /passed>\n    WSGIPassAuthorization On\n</Location>",
        )
        .start();
    let auth = [("Authorization", "Bearer t0k3n")];
    let r = server.request("GET", "/default", &auth, b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "HTTP_AUTHORIZATION=None\n")
    );
    let r = server.request("GET", "/passed", &auth, b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "HTTP_AUTHORIZATION='Bearer t0k3n'\n")
    );
}

#[test]
fn case_021_non_ascii_path_is_latin1_decoded() {
    let app = r#"
import json

def application(environ, start_response):
    path = environ['PATH_INFO']
    out = {
        'PATH_INFO': path,
        'PATH_INFO_latin1_bytes': path.encode('latin-1').hex(),
        'decoded_as_utf8': path.encode('latin-1').decode('utf-8', 'replace'),
        'REQUEST_URI': environ.get('REQUEST_URI'),
        'QUERY_STRING': environ.get('QUERY_STRING'),
        'HTTP_X_NAME_bytes': environ.get('HTTP_X_NAME', '').encode('latin-1').hex(),
    }
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(out, ensure_ascii=True, indent=1).encode()]
"#;
    let server = server_with(app, "/embedded", "", None).start();
    let target = "/embedded/T%C3%B3picos%20y%20m%C3%A1s?q=%C3%B1";
    let mut request =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Name: caf").into_bytes();
    request.extend_from_slice(b"\xc3\xa9\r\nConnection: close\r\n\r\n");
    let mut conn = Conn::open(server.port());
    conn.send(&request).unwrap();
    let r = conn.read_response(Duration::from_secs(10), false);
    assert_eq!(r.status, 200, "{}", r.raw_text());
    let text = r.text();
    for expected in [
        r#""PATH_INFO": "/T\u00c3\u00b3picos y m\u00c3\u00a1s""#,
        r#""PATH_INFO_latin1_bytes": "2f54c3b37069636f732079206dc3a173""#,
        r#""decoded_as_utf8": "/T\u00f3picos y m\u00e1s""#,
        r#""REQUEST_URI": "/embedded/T%C3%B3picos%20y%20m%C3%A1s?q=%C3%B1""#,
        r#""QUERY_STRING": "q=%C3%B1""#,
        r#""HTTP_X_NAME_bytes": "636166c3a9""#,
    ] {
        assert!(text.contains(expected), "missing {expected} in {text}");
    }
}

#[test]
fn case_030_signal_registration_is_ignored_with_a_warning() {
    let app = r#"
import signal

def handler(signum, frame):
    pass

def application(environ, start_response):
    previous = signal.signal(signal.SIGTERM, handler)
    now = signal.getsignal(signal.SIGTERM)
    body = ('signal.signal returned %r; handler installed: %s\n'
            % (previous, now is handler))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = server_with(app, "/embedded", "", None)
        .allow_log("(?i)signal")
        .allow_log(r"\[request [^\]]+\]   ")
        .start();
    let r = server.get("/embedded");
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with("handler installed: False\n"),
        "{}",
        r.text()
    );
    let log = server.error_log();
    let warning = log
        .lines()
        .find(|l| l.contains("ignored") && (l.contains("15") || l.contains("SIGTERM")))
        .unwrap_or_else(|| panic!("no warning about ignoring signal 15: {log}"));
    assert!(
        warning.contains(":warn]"),
        "not logged as a warning: {warning}"
    );
    assert!(
        log.contains("app.wsgi\""),
        "no stack of the caller in the log: {log}"
    );
    let stopped = server.stop();
    assert!(!stopped.killed);
    assert!(
        stopped.elapsed < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed
    );
}

#[test]
fn case_036_stop_is_prompt_after_an_embedded_request() {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'Hello World!\n']
"#;
    let server = server_with(app, "/hello", "", None).start();
    assert_eq!(server.get("/hello").text(), "Hello World!\n");
    let stopped = server.stop();
    assert!(!stopped.killed, "SIGKILL needed");
    assert!(
        stopped.elapsed < Duration::from_secs(2),
        "stopped after {:?}",
        stopped.elapsed
    );
    for id in ["AH00045", "AH00046"] {
        assert!(!stopped.error_log.contains(id), "{}", stopped.error_log);
    }
    assert!(
        regex::Regex::new(r"(?i)destroy\w* .*interpreter|Python finali[sz]ed")
            .unwrap()
            .is_match(&stopped.error_log),
        "no sign of the interpreter being destroyed: {}",
        stopped.error_log
    );
}
