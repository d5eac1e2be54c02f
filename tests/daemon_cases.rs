//! The shared real-world cases (`/work/shared/cases/NNN-*`) that concern daemon mode, one
//! test each, asserting the correct behaviour their `expected.md` describes for the daemon
//! mounts. The apps are the cases' own, inlined; each configuration defines the case's
//! `WSGIDaemonProcess` group and mounts the script in it, with no embedded mount (the embedded
//! halves of the cases are in `pep3333_cases.rs`).

mod pep3333_raw;
mod support;

use std::time::{Duration, Instant, SystemTime};

use md5::{Digest, Md5};
use pep3333_raw::{Conn, get};
use support::{Server, ServerBuilder, Stopped};

/// A server with the case's `app` at `case/app.wsgi` and the configuration `conf` (which
/// refers to the script as `${TEST_DIR}/case/app.wsgi`).
fn case_server(app: &str, conf: &str) -> ServerBuilder {
    ServerBuilder::new().file("case/app.wsgi", app).config(conf)
}

/// Also tolerates the log lines of an application traceback whose last line matches `error`.
fn allow_traceback(builder: ServerBuilder, error: &str) -> ServerBuilder {
    builder
        .allow_log("WSGI0010")
        .allow_log("Traceback (most recent call last)")
        .allow_log(r"\[request [^\]]+\]   ")
        .allow_log(error)
}

/// `WSGIDaemonProcess NAME OPTIONS` and `WSGIScriptAlias MOUNT` of the case script in it,
/// in the main interpreter (`application-group=%{GLOBAL}`), as most cases configure it.
fn daemon_mount(name: &str, options: &str, mount: &str) -> String {
    format!(
        "WSGIDaemonProcess {name} {options}\n\
         WSGIScriptAlias {mount} ${{TEST_DIR}}/case/app.wsgi process-group={name} \
         application-group=%{{GLOBAL}}\n"
    )
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

/// The value of `key=` in a body made of `key=value` words, e.g. `pid` in `pid=12\n`.
fn word(body: &str, key: &str) -> String {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {body:?}"))
        .to_owned()
}

/// Waits up to 5 s for the access-log line of a request whose request line starts with
/// `request_start` (e.g. `GET /daemon `) and returns it.
fn access_log_line(server: &Server, request_start: &str) -> String {
    let access = server.dir().join("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains(&format!("\"{request_start}")))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for {request_start:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status field of an access-log line in the harness format (`"%r" %>s %b ...`).
fn access_status(line: &str) -> Option<&str> {
    line.split("\" ").nth(1).and_then(|s| s.split(' ').next())
}

#[test]
fn case_006_www_authenticate_headers_stay_separate_through_the_daemon() {
    let app = r#"
def application(environ, start_response):
    start_response('401 Unauthorized', [
        ('Content-Type', 'text/plain'),
        ('WWW-Authenticate', 'Bearer realm="api"'),
        ('WWW-Authenticate',
         'Digest realm="api", qop="auth,auth-int", nonce="abc123", opaque="x,y"'),
    ])
    return [b'login required\n']
"#;
    let server = case_server(
        app,
        &daemon_mount("case006", "processes=1 threads=2", "/daemon"),
    )
    .start();
    let r = get(server.port(), "/daemon", "");
    assert_eq!(
        r.status_line,
        "HTTP/1.1 401 Unauthorized",
        "{}",
        r.raw_text()
    );
    let head = r.raw_text();
    let lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .collect();
    assert_eq!(
        lines,
        [
            "WWW-Authenticate: Bearer realm=\"api\"",
            "WWW-Authenticate: Digest realm=\"api\", qop=\"auth,auth-int\", nonce=\"abc123\", \
             opaque=\"x,y\"",
        ],
        "{head}"
    );
    assert_eq!(r.text(), "login required\n");
}

#[test]
fn case_008_oversized_response_header_from_the_daemon() {
    let app = r#"
def application(environ, start_response):
    size = int(environ.get('QUERY_STRING') or '1000')
    token = 'x' * size
    start_response('401 Unauthorized', [('Content-Type', 'text/plain'),
                                        ('WWW-Authenticate', 'Negotiate ' + token)])
    return [b'auth needed\n']
"#;
    let conf = format!(
        "{}{}",
        daemon_mount("case008small", "processes=1 threads=2", "/small"),
        daemon_mount(
            "case008big",
            "processes=1 threads=2 header-buffer-size=131072",
            "/big"
        )
    );
    let server = case_server(app, &conf).allow_log("case008small").start();
    let negotiate = |size: usize| format!("Negotiate {}", "x".repeat(size));

    // Fits the default buffer (32768): delivered intact.
    let r = get(server.port(), "/small?20000", "");
    assert_eq!(r.status, 401, "{}", server.error_log());
    assert_eq!(r.header_values("www-authenticate"), [negotiate(20000)]);

    // Too big for the default buffer: a clean 500 and a log line naming the group.
    let started = Instant::now();
    let r = get(server.port(), "/small?40000", "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        r.status,
        500,
        "a 40000-byte header through a group with the default header-buffer-size: {}",
        r.raw_text().chars().take(300).collect::<String>()
    );
    assert!(r.header("www-authenticate").is_none());
    let log = server.error_log();
    let too_large =
        regex::Regex::new(r"(?i)truncated|too large|oversized|header-buffer-size").unwrap();
    assert!(
        log.lines().any(|l| l.contains("[wsgi:error]")
            && l.contains("case008small")
            && too_large.is_match(l)),
        "no error-log line saying the headers from 'case008small' were too large:\n{log}"
    );

    // The same header through the group with header-buffer-size=131072: intact.
    let r = get(server.port(), "/big?40000", "");
    assert_eq!(r.status, 401, "{}", server.error_log());
    assert_eq!(r.header_values("www-authenticate"), [negotiate(40000)]);
}

#[test]
fn case_010_exception_mid_stream_in_the_daemon_truncates_the_chunked_response() {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/csv')])

    def rows():
        yield b'id,name\n'
        yield b'1,alpha\n'
        raise RuntimeError('cursor lost mid-export')
        yield b'2,beta\n'

    return rows()
"#;
    let server = allow_traceback(
        case_server(
            app,
            &daemon_mount("case010", "processes=1 threads=2", "/daemon"),
        ),
        "RuntimeError",
    )
    .start();
    // Keep-alive, so that the response is chunked (a closing response would end with the
    // connection whatever happened).
    let started = Instant::now();
    let mut conn = keep_alive(server.port(), "GET", "/daemon");
    let r = conn.read_response(Duration::from_secs(5), false);
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "{}",
        r.raw_text()
    );
    assert_eq!(r.text(), "id,name\n1,alpha\n", "{}", r.raw_text());
    assert!(
        !r.last_chunk,
        "the truncated response ended with the final 0 chunk: {:?}",
        r.raw_text()
    );
    assert!(
        conn.wait_closed(Duration::from_secs(3)),
        "the connection stayed open after the truncated response"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        server.wait_for_log(
            "RuntimeError: cursor lost mid-export",
            Duration::from_secs(5)
        ),
        "no traceback: {}",
        server.error_log()
    );
}

#[test]
fn case_011_exc_info_replaces_the_status_in_the_daemon_after_an_empty_first_block() {
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
    let server = case_server(
        app,
        &daemon_mount("case011", "processes=1 threads=2", "/daemon"),
    )
    .start();
    let r = get(server.port(), "/daemon", "");
    assert_eq!(
        r.status_line,
        "HTTP/1.1 503 Service Unavailable",
        "{}",
        r.raw_text()
    );
    assert_eq!(r.header_values("x-phase"), ["second"]);
    assert_eq!(r.text(), "please retry\n");
}

#[test]
fn case_012_app_returning_none_in_the_daemon_gives_500_and_the_daemon_survives() {
    let app = r#"
import os

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    if environ.get('PATH_INFO') == '/pid':
        return [str(os.getpid()).encode()]
"#;
    let server = allow_traceback(
        case_server(
            app,
            &daemon_mount("case012", "processes=1 threads=1", "/app"),
        ),
        "TypeError",
    )
    .start();
    let before = server.get("/app/pid");
    assert_eq!(before.status, 200);
    let r = server.get("/app/broken");
    assert_eq!(r.status, 500);
    let after = server.get("/app/pid");
    assert_eq!(after.status, 200);
    assert_eq!(before.text(), after.text(), "the daemon process changed");
    let log = server.error_log();
    assert!(
        log_lines(&log, "TypeError")
            .iter()
            .any(|l| l.contains("None")),
        "no TypeError about None: {log}"
    );
    for sign in ["WSGI0032", "WSGI0042", "exited; restarting"] {
        assert!(!log.contains(sign), "the daemon died or restarted: {log}");
    }
}

#[test]
fn case_013_client_disconnect_from_a_daemon_stream_calls_close_once_and_logs_200() {
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
    let server = case_server(
        app,
        &daemon_mount("case013", "processes=1 threads=2", "/daemon"),
    )
    .allow_log("case013 close() called")
    .start();
    let mut conn = keep_alive(server.port(), "GET", "/daemon");
    let got = conn.read_bytes(300 * 1024, Duration::from_secs(10));
    assert_eq!(got.len(), 300 * 1024);
    drop(conn);
    assert!(
        server.wait_for_log(
            "case013 close() called for /daemon",
            Duration::from_secs(10)
        ),
        "close() was not called after the client went away: {}",
        server.error_log()
    );
    let line = access_log_line(&server, "GET /daemon ");
    assert_eq!(access_status(&line), Some("200"), "{line}");
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
fn case_014_chunked_request_body_to_the_daemon() {
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
    let server = case_server(
        app,
        "WSGIDaemonProcess case014 processes=1 threads=2\n\
         WSGIScriptAlias /daemon ${TEST_DIR}/case/app.wsgi process-group=case014 \
         application-group=%{GLOBAL}\n\
         WSGIScriptAlias /daemon-off ${TEST_DIR}/case/app.wsgi process-group=case014 \
         application-group=%{GLOBAL}\n\
         <Location /daemon>\n    WSGIChunkedRequest On\n</Location>",
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
        String::from_utf8_lossy(&server.raw(&bytes)).into_owned()
    };
    let accepted = request("/daemon");
    assert!(accepted.starts_with("HTTP/1.1 200 OK\r\n"), "{accepted}");
    assert!(
        accepted.contains("CONTENT_LENGTH=None received=100000 bytes first=b'aaaaaaaaaaaa'"),
        "{accepted}"
    );
    // Without WSGIChunkedRequest the daemon mount refuses the body like an embedded one.
    let refused = request("/daemon-off");
    assert!(
        refused.starts_with("HTTP/1.1 411 Length Required\r\n"),
        "{refused}"
    );
    assert!(
        !server
            .error_log()
            .contains("case014 app called for /daemon-off"),
        "the app ran for the refused body: {}",
        server.error_log()
    );
}

#[test]
fn case_015_expect_100_continue_through_the_daemon() {
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
    let server = case_server(
        app,
        &daemon_mount("case015", "processes=1 threads=2", "/daemon"),
    )
    .start();
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

    // The app reads: `100 Continue` first, then the whole body reaches it.
    let mut conn = Conn::open(port);
    conn.send(head("/daemon/echo").as_bytes()).unwrap();
    let interim = conn.read_head(Duration::from_secs(3)).unwrap_or_default();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim:?}");
    conn.send(&body).unwrap();
    let r = conn.read_response(Duration::from_secs(10), false);
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert_eq!(
        r.text(),
        format!(
            "declared=300000 received=300000 md5={:x}\n",
            Md5::digest(&body)
        )
    );

    // The app never reads: the 403 arrives at once and complete, without `100 Continue`.
    let started = Instant::now();
    let mut conn = Conn::open(port);
    conn.send(head("/daemon/ignore").as_bytes()).unwrap();
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
        let next = format!("GET /daemon/ignore HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
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
fn case_016_short_request_body_is_never_passed_to_a_daemon_app_as_complete() {
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
    let server = allow_traceback(
        case_server(
            app,
            &daemon_mount("case016", "processes=1 threads=2", "/daemon"),
        ),
        "OSError",
    )
    .allow_log("(?i)read error|request (data|body)")
    .start();
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
    // Uncaught: a 5xx, never the app's 200 for a short body.
    let r = send("/daemon");
    assert!((500..600).contains(&r.status), "{}", r.raw_text());
    assert!(!r.text().contains("got 10 bytes"), "{}", r.raw_text());
    // Caught: the app sees an OSError (its 200 may be replaced by a 5xx from the front end).
    let r = send("/daemon/count");
    assert!(
        (r.status == 200 && r.text().starts_with("read raised OSError: "))
            || (500..600).contains(&r.status),
        "{}",
        r.raw_text()
    );
    assert!(!r.text().contains("read returned"), "{}", r.raw_text());
}

#[test]
fn case_017_file_wrapper_over_bytes_io_with_nul_bytes_in_the_daemon() {
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
    let server = case_server(
        app,
        &daemon_mount("case017", "processes=1 threads=2", "/daemon"),
    )
    .allow_log("case017 close() called")
    .start();
    let r = server.get("/daemon");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-expected-length"), Some("4998"));
    assert_eq!(r.body.len(), 4998);
    assert_eq!(
        Some(format!("{:x}", Md5::digest(&r.body)).as_str()),
        r.header("x-expected-md5")
    );
    assert_eq!(&r.body[..3], b"\x00\x00\x01");
    assert!(server.wait_for_log("case017 close() called", Duration::from_secs(5)));
    let stopped = server.stop();
    assert_eq!(
        log_lines(&stopped.error_log, "case017 close() called").len(),
        1,
        "{}",
        stopped.error_log
    );
}

#[test]
fn case_019_authorization_header_reaches_the_daemon_with_wsgi_pass_authorization() {
    let app = r#"
def application(environ, start_response):
    auth = environ.get('HTTP_AUTHORIZATION')
    status = '200 OK' if auth == 'Bearer t0k3n' else '401 Unauthorized'
    start_response(status, [('Content-Type', 'text/plain')])
    return [('HTTP_AUTHORIZATION=%r\n' % auth).encode()]
"#;
    let server = case_server(
        app,
        "WSGIDaemonProcess case019 processes=1 threads=2\n\
         WSGIScriptAlias /daemon ${TEST_DIR}/case/app.wsgi process-group=case019 \
         application-group=%{GLOBAL}\n\
         WSGIScriptAlias /daemon-default ${TEST_DIR}/case/app.wsgi process-group=case019 \
         application-group=%{GLOBAL}\n\
         <Location /daemon>\n    WSGIPassAuthorization On\n</Location>",
    )
    .start();
    let auth = [("Authorization", "Bearer t0k3n")];
    let r = server.request("GET", "/daemon", &auth, b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "HTTP_AUTHORIZATION='Bearer t0k3n'\n")
    );
    let r = server.request("GET", "/daemon-default", &auth, b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "HTTP_AUTHORIZATION=None\n")
    );
}

#[test]
fn case_021_non_ascii_path_is_latin1_decoded_in_the_daemon() {
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
    let server = case_server(
        app,
        &daemon_mount("case021", "processes=1 threads=2", "/daemon"),
    )
    .start();
    let target = "/daemon/T%C3%B3picos%20y%20m%C3%A1s?q=%C3%B1";
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
        r#""REQUEST_URI": "/daemon/T%C3%B3picos%20y%20m%C3%A1s?q=%C3%B1""#,
        r#""QUERY_STRING": "q=%C3%B1""#,
        r#""HTTP_X_NAME_bytes": "636166c3a9""#,
    ] {
        assert!(text.contains(expected), "missing {expected} in {text}");
    }
}

/// Case 023. The case's configuration gives both `process-group=` and `application-group=`
/// on `WSGIScriptAlias`, which makes C mod_wsgi preload `/shop` when the daemon starts.
/// This module does not preload from the alias (docs/directives.md), so the test does not
/// rely on it: with one daemon thread, the thread's first request goes to the named group
/// `shop` anyway, and `%{GLOBAL}` must still mean the main interpreter afterwards.
#[test]
fn case_023_global_after_a_named_group_on_the_same_daemon_thread() {
    let app = r#"
import ctypes

api = ctypes.pythonapi
api.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
api.PyThreadState_Get.restype = ctypes.c_void_p

try:
    import _xxsubinterpreters as _interp      # CPython 3.8 - 3.12
except ImportError:
    try:
        import _interpreters as _interp       # CPython 3.13+
    except ImportError:
        _interp = None

def interp_id():
    """0 is the main interpreter; -1 means this Python cannot tell."""
    if _interp is None:
        return -1
    cur = _interp.get_current()
    return int(cur[0] if isinstance(cur, tuple) else cur)

calls = {'n': 0}   # module state: shared only within one interpreter

def application(environ, start_response):
    calls['n'] += 1
    gilstate_ok = api.PyGILState_GetThisThreadState() == api.PyThreadState_Get()
    body = ('group=%r interpreter_id=%d gilstate_consistent=%s module_calls=%d\n'
            % (environ['mod_wsgi.application_group'], interp_id(),
               gilstate_ok, calls['n']))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = case_server(
        app,
        "WSGIDaemonProcess case023 processes=1 threads=1\n\
         WSGIScriptAlias /shop ${TEST_DIR}/case/app.wsgi process-group=case023 \
         application-group=shop\n\
         WSGIScriptAlias /global ${TEST_DIR}/case/app.wsgi process-group=case023 \
         application-group=%{GLOBAL}",
    )
    .start();
    let (mut shop_calls, mut global_calls) = (0, 0);
    let mut shop_interp = None;
    for path in ["/shop", "/global", "/global", "/shop", "/global"] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}: {}", server.error_log());
        let body = r.text();
        let interp: i64 = word(&body, "interpreter_id").parse().unwrap();
        assert_ne!(
            interp, -1,
            "this Python cannot tell interpreters apart: {body}"
        );
        if path == "/shop" {
            shop_calls += 1;
            assert_eq!(word(&body, "group"), "'shop'", "{path}: {body}");
            assert_ne!(interp, 0, "{path}: {body}");
            assert_eq!(*shop_interp.get_or_insert(interp), interp, "{path}: {body}");
            assert_eq!(
                word(&body, "module_calls"),
                shop_calls.to_string(),
                "{body}"
            );
        } else {
            global_calls += 1;
            assert_eq!(word(&body, "group"), "''", "{path}: {body}");
            assert_eq!(interp, 0, "{path} not in the main interpreter: {body}");
            assert_eq!(word(&body, "gilstate_consistent"), "True", "{path}: {body}");
            assert_eq!(
                word(&body, "module_calls"),
                global_calls.to_string(),
                "{path} shares module state with another interpreter: {body}"
            );
        }
    }
}

#[test]
fn case_024_daemon_request_threads_are_not_the_main_thread() {
    let app = r#"
import signal
import threading

def application(environ, start_response):
    is_main = threading.current_thread() is threading.main_thread()
    if is_main:
        try:
            old = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(old)
            guarded = 'set_wakeup_fd ok'
        except ValueError as exc:
            guarded = 'set_wakeup_fd raised ValueError: %s' % exc
    else:
        guarded = 'guard skipped set_wakeup_fd'
    body = 'request thread reported as main_thread: %s; %s\n' % (is_main, guarded)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = case_server(
        app,
        "WSGIDaemonProcess case024 processes=1 threads=2\n\
         WSGIScriptAlias /daemon-sub ${TEST_DIR}/case/app.wsgi process-group=case024\n\
         WSGIScriptAlias /daemon-global ${TEST_DIR}/case/app.wsgi process-group=case024 \
         application-group=%{GLOBAL}",
    )
    .start();
    // Several rounds, so that both daemon threads serve each interpreter.
    for _ in 0..4 {
        for path in ["/daemon-sub", "/daemon-global"] {
            let r = server.get(path);
            assert_eq!(r.status, 200, "{path}: {}", server.error_log());
            assert_eq!(
                r.text(),
                "request thread reported as main_thread: False; guard skipped set_wakeup_fd\n",
                "{path}"
            );
        }
    }
}

#[test]
fn case_026_a_daemon_crash_gives_a_prompt_5xx_and_a_new_daemon() {
    let app = r#"
import ctypes
import os

def application(environ, start_response):
    if environ.get('PATH_INFO') == '/crash':
        ctypes.string_at(0)          # SIGSEGV, like a buggy C extension
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'pid=%d\n' % os.getpid()]
"#;
    let server = case_server(
        app,
        &daemon_mount("case026", "processes=1 threads=2", "/app"),
    )
    .allow_log("WSGI0032")
    .allow_log("WSGI0042")
    .start();
    let before = server.get("/app/");
    assert_eq!(before.status, 200);
    let before = word(&before.text(), "pid");

    let started = Instant::now();
    let crashed = server
        .try_request("GET", "/app/crash", &[], b"")
        .unwrap_or_else(|e| panic!("no HTTP answer for the crashing request: {e}"));
    assert!(
        (500..600).contains(&crashed.status),
        "crashing request got {}",
        crashed.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let after = server.get("/app/");
    assert_eq!(after.status, 200, "{}", server.error_log());
    let after = word(&after.text(), "pid");
    assert_ne!(before, after, "the same daemon answered after the crash");

    let log = server.error_log();
    // The front end saw the daemon go away before any header.
    assert!(log.contains("WSGI0042"), "{log}");
    // The death (reported once), by signal 11, and a restart.
    let death = log_lines(&log, "WSGI0032");
    assert_eq!(death.len(), 1, "{log}");
    assert!(death[0].contains(&before), "{death:?}");
    let signal = regex::Regex::new(r"(?i)signal 11\b|SIGSEGV|segmentation fault").unwrap();
    assert!(
        log_lines(&log, &before)
            .iter()
            .any(|line| signal.is_match(line)),
        "the log does not say daemon {before} died from signal 11: {log}"
    );
    assert!(
        log.contains(&format!("daemon process {after} of group 'case026' ready")),
        "no log line about the new daemon {after}: {log}"
    );
}

#[test]
fn case_027_request_timeout_recycles_a_stuck_daemon() {
    let app = r#"
import os
import time

def application(environ, start_response):
    if environ.get('PATH_INFO') == '/hang':
        time.sleep(30)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'pid=%d\n' % os.getpid()]
"#;
    let server = case_server(
        app,
        &daemon_mount("case027", "processes=1 threads=1 request-timeout=2", "/app"),
    )
    .allow_log("WSGI0042")
    .start();
    let before = word(&server.get("/app/").text(), "pid");
    let started = Instant::now();
    let stuck = server.get("/app/hang");
    let took = started.elapsed();
    assert!((500..600).contains(&stuck.status), "{}", stuck.status);
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert!(took >= Duration::from_secs(2), "answered after {took:?}");
    let log = server.error_log();
    assert!(
        log.contains("request-timeout of 2 s exceeded"),
        "no log line about the time limit: {log}"
    );
    assert!(
        log.contains(&format!(
            "daemon process {before} of group 'case027' stopping"
        )),
        "no log line about the daemon restarting: {log}"
    );
    let after = server.get("/app/");
    assert_eq!(after.status, 200, "{}", server.error_log());
    assert_ne!(word(&after.text(), "pid"), before);
}

#[test]
fn case_029_touching_the_script_restarts_the_daemon_with_the_new_code() {
    let app = r#"
import os

VERSION = 'one'

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('version=%s pid=%d\n' % (VERSION, os.getpid())).encode()]
"#;
    let server = case_server(
        app,
        &format!(
            "WSGIScriptReloading On\n{}",
            daemon_mount("case029", "processes=1 threads=2", "/daemon")
        ),
    )
    .start();
    let before = server.get("/daemon").text();
    assert_eq!(word(&before, "version"), "one");
    let old_pid = word(&before, "pid");

    // Edit the deployed script and move its mtime on (no sleep needed for a new mtime).
    let script = server.dir().join("case/app.wsgi");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, text.replace("VERSION = 'one'", "VERSION = 'two'")).unwrap();
    let file = std::fs::File::options().write(true).open(&script).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(2))
        .unwrap();
    drop(file);

    let started = Instant::now();
    let after = server.get("/daemon");
    let took = started.elapsed();
    assert_eq!(after.status, 200, "{}", server.error_log());
    let after = after.text();
    assert_eq!(word(&after, "version"), "two", "old code after the change");
    let new_pid = word(&after, "pid");
    assert_ne!(
        new_pid, old_pid,
        "the script was reloaded in the same daemon process instead of a restarted one"
    );
    assert!(took < Duration::from_secs(3), "the restart took {took:?}");
    let again = server.get("/daemon").text();
    assert_eq!(word(&again, "version"), "two");
    assert_eq!(word(&again, "pid"), new_pid);
}

#[test]
fn case_030_signal_registration_in_the_daemon_is_ignored_with_a_warning() {
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
    let server = case_server(
        app,
        &daemon_mount("case030", "processes=1 threads=2", "/daemon"),
    )
    .allow_log("(?i)signal")
    .allow_log(r"\[request [^\]]+\]   ")
    .start();
    let r = server.get("/daemon");
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with("handler installed: False\n"),
        "{}",
        r.text()
    );
    assert!(server.wait_for_log("app.wsgi\"", Duration::from_secs(5)));
    let log = server.error_log();
    let warning = log
        .lines()
        .find(|l| l.contains("ignored") && (l.contains("15") || l.contains("SIGTERM")))
        .unwrap_or_else(|| panic!("no warning about ignoring signal 15: {log}"));
    assert!(
        warning.contains(":warn]"),
        "not logged as a warning: {warning}"
    );
    // The daemon still stops on SIGTERM, promptly.
    let stopped = server.stop();
    assert!(!stopped.killed);
    assert!(
        stopped.elapsed < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed
    );
    assert!(
        stopped.error_log.contains("of group 'case030' stopping"),
        "{}",
        stopped.error_log
    );
    assert!(
        !stopped.error_log.contains("WSGI0033"),
        "{}",
        stopped.error_log
    );
}

#[test]
fn case_032_daemon_200_with_a_local_location_is_an_internal_redirect() {
    let app = r#"
def application(environ, start_response):
    which = environ.get('PATH_INFO', '')
    if which == '/internal':
        start_response('200 OK', [('Location', '/static/report.txt'),
                                  ('Content-Type', 'text/plain')])
        return [b'this body must be discarded\n']
    if which == '/absolute':
        start_response('200 OK', [('Location', 'http://files.example.test/report.txt'),
                                  ('Content-Type', 'text/plain')])
        return [b'absolute location body\n']
    start_response('302 Found', [('Location', '/static/report.txt'),
                                 ('Content-Type', 'text/plain')])
    return [b'redirecting\n']
"#;
    let server = case_server(
        app,
        &format!(
            "Alias /static ${{TEST_DIR}}/static\n{}",
            daemon_mount("case032", "processes=1 threads=2", "/daemon")
        ),
    )
    .file("static/report.txt", "static file served by Apache\n")
    .start();

    // An absolute URL, or a status other than 200, passes through unchanged.
    let r = get(server.port(), "/daemon/absolute", "");
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert_eq!(
        r.header("location"),
        Some("http://files.example.test/report.txt")
    );
    assert_eq!(r.text(), "absolute location body\n");

    let r = get(server.port(), "/daemon/found", "");
    assert_eq!(r.status_line, "HTTP/1.1 302 Found", "{}", r.raw_text());
    assert_eq!(r.header("location"), Some("/static/report.txt"));
    assert_eq!(r.text(), "redirecting\n");

    // 200 with a local path: Apache serves that path itself, as a GET.
    let r = get(server.port(), "/daemon/internal", "");
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert_eq!(
        r.text(),
        "static file served by Apache\n",
        "{}",
        r.raw_text()
    );
    assert_eq!(r.header("content-length"), Some("29"), "{}", r.raw_text());
    assert!(r.header("location").is_none(), "{}", r.raw_text());
}
