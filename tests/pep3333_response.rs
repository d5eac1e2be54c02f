//! PEP 3333, the response side: `start_response` validation and repeated calls, `write()`,
//! body items, `close()`, when headers go out, truncated responses after errors, HEAD and
//! `WSGIMapHEADToGET`, `wsgi.file_wrapper`, and the Content-Type use-after-free of
//! CVE-2014-0242 under concurrency. Every test runs twice, in embedded and in daemon mode
//! (`name::embedded`, `name::daemon`; see `pep3333_mode`).

mod pep3333_mode;
mod pep3333_raw;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pep3333_mode::{Mode, in_both_modes};
use pep3333_raw::{Conn, get};
use support::ServerBuilder;

/// A keep-alive `GET` (no `Connection: close`), so that only the module can end the
/// connection early.
fn keep_alive_get(port: u16, path: &str) -> Conn {
    let mut conn = Conn::open(port);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    conn.send(request.as_bytes())
        .expect("cannot send the request");
    conn
}

in_both_modes!(start_response_rejects_invalid_statuses_and_headers);
fn start_response_rejects_invalid_statuses_and_headers(mode: Mode) {
    let app = r#"
CASES = {
    '/status-no-space': ('200OK', []),
    '/status-two-digits': ('20 OK', []),
    '/status-four-digits': ('2000 OK', []),
    '/status-letters': ('2x0 OK', []),
    '/status-bytes': (b'200 OK', []),
    '/status-control-char': ('200 O\nK', []),
    '/header-name-space': ('200 OK', [('X Bad', 'v')]),
    '/header-name-colon': ('200 OK', [('X-Bad:', 'v')]),
    '/header-name-bytes': ('200 OK', [(b'X-Bad', 'v')]),
    '/header-value-crlf': ('200 OK', [('X-Bad', 'a\r\nX-Injected: 1')]),
    '/header-value-lf': ('200 OK', [('X-Bad', 'a\nX-Injected: 1')]),
    '/header-value-cr': ('200 OK', [('X-Bad', 'a\rX-Injected: 1')]),
    '/header-value-int': ('200 OK', [('Content-Length', 12)]),
    '/header-value-bytes': ('200 OK', [('X-Bad', b'v')]),
    '/header-not-a-pair': ('200 OK', [('X-Bad', 'v', 'w')]),
    '/headers-tuple': ('200 OK', (('Content-Type', 'text/plain'),)),
    '/valid': ('299 Whatever You Like', [('X-Good', 'yes')]),
}

def application(environ, start_response):
    status, headers = CASES[environ['PATH_INFO']]
    try:
        start_response(status, headers)
        outcome = 'accepted'
    except (TypeError, ValueError) as e:
        outcome = type(e).__name__
    except Exception as e:
        outcome = 'unexpected %s: %s' % (type(e).__name__, e)
    if outcome != 'accepted':
        start_response('200 OK', [('Content-Type', 'text/plain')])
    return [outcome.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /sr ${TEST_DIR}/app.wsgi"))
        .start();
    let cases = [
        ("/status-no-space", "ValueError"),
        ("/status-two-digits", "ValueError"),
        ("/status-four-digits", "ValueError"),
        ("/status-letters", "ValueError"),
        ("/status-bytes", "TypeError"),
        ("/status-control-char", "ValueError"),
        ("/header-name-space", "ValueError"),
        ("/header-name-colon", "ValueError"),
        ("/header-name-bytes", "TypeError"),
        ("/header-value-crlf", "ValueError"),
        ("/header-value-lf", "ValueError"),
        ("/header-value-cr", "ValueError"),
        ("/header-value-int", "TypeError"),
        ("/header-value-bytes", "TypeError"),
        // A tuple of the wrong length: either is a fair description.
        ("/header-not-a-pair", "TypeError|ValueError"),
        ("/headers-tuple", "TypeError"),
    ];
    let mut wrong = Vec::new();
    for (path, want) in cases {
        let r = get(server.port(), &format!("/sr{path}"), "");
        let seen = r.text();
        if r.status != 200
            || !want.split('|').any(|w| w == seen)
            || r.raw_text().contains("X-Injected")
        {
            wrong.push(format!(
                "{path}: expected 200 {want:?}, got {} {:?}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let r = get(server.port(), "/sr/valid", "");
    assert_eq!(r.status_line, "HTTP/1.1 299 Whatever You Like");
    assert_eq!(r.header("x-good"), Some("yes"));
    assert_eq!(r.text(), "accepted");
}

in_both_modes!(start_response_repeated_calls_and_exc_info);
fn start_response_repeated_calls_and_exc_info(mode: Mode) {
    let app = r#"
import sys

def replace(environ, start_response):
    start_response('500 Oops', [('X-Phase', 'first'), ('Content-Type', 'text/plain')])
    start_response('201 Created', [('X-Phase', 'second'), ('Content-Type', 'text/plain')])
    return [b'replaced']

def empty_then_switch(environ, start_response):
    start_response('200 OK', [('X-Phase', 'first')])
    def body():
        yield b''
        yield b''
        try:
            raise LookupError('pep3333 switch')
        except LookupError:
            start_response('503 Service Unavailable', [('X-Phase', 'second')], sys.exc_info())
        yield b'switched'
    return body()

def after_write(environ, start_response):
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    write(b'first;')
    try:
        start_response('500 Oops', [])
        write(b'accepted')
    except RuntimeError:
        write(b'RuntimeError')
    except Exception as e:
        write(('unexpected %s' % type(e).__name__).encode())
    return []

def after_yield(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    def body():
        yield b'first;'
        try:
            start_response('500 Oops', [])
            yield b'accepted'
        except RuntimeError:
            yield b'RuntimeError'
        except Exception as e:
            yield ('unexpected %s' % type(e).__name__).encode()
    return body()

def exc_info_after_output(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    def body():
        yield b'first;'
        original = KeyError('pep3333 original')
        try:
            raise original
        except KeyError:
            try:
                start_response('500 Oops', [], sys.exc_info())
                yield b'accepted'
            except KeyError as e:
                yield b'reraised-same=%r' % (e is original)
            except Exception as e:
                yield ('unexpected %s' % type(e).__name__).encode()
    return body()

def application(environ, start_response):
    return globals()[environ['PATH_INFO'][1:].replace('-', '_')](environ, start_response)
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /sr ${TEST_DIR}/app.wsgi"))
        .start();
    let r = get(server.port(), "/sr/replace", "");
    assert_eq!(r.status, 201, "{}", r.raw_text());
    assert_eq!(r.header_values("x-phase"), ["second"]);
    assert_eq!(r.text(), "replaced");

    // Empty blocks do not send the headers: exc_info may still replace them.
    let r = get(server.port(), "/sr/empty-then-switch", "");
    assert_eq!(r.status, 503, "{}", r.raw_text());
    assert_eq!(r.header_values("x-phase"), ["second"]);
    assert_eq!(r.text(), "switched");

    for path in ["/sr/after-write", "/sr/after-yield"] {
        let r = get(server.port(), path, "");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), "first;RuntimeError", "{path}");
    }
    let r = get(server.port(), "/sr/exc-info-after-output", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "first;reraised-same=True");
}

in_both_modes!(write_rejects_non_bytes_without_leaking_memory);
/// The app measures its own RSS, so the check holds in both modes: it is the Apache child's
/// in embedded mode, the daemon process's in daemon mode.
fn write_rejects_non_bytes_without_leaking_memory(mode: Mode) {
    let app = r#"
import gc, os

def rss_kib():
    with open('/proc/%d/status' % os.getpid()) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])

def hammer(write, n):
    errors = 0
    for _ in range(n):
        try:
            write('str is not bytes')
        except TypeError:
            errors += 1
    return errors

def application(environ, start_response):
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    kinds = []
    for value in ('text', 12, None, bytearray(b'x'), memoryview(b'x')):
        try:
            write(value)
            kinds.append('%s:accepted' % type(value).__name__)
        except TypeError:
            kinds.append('%s:TypeError' % type(value).__name__)
    hammer(write, 2000)
    gc.collect()
    before = rss_kib()
    errors = hammer(write, 20000)
    gc.collect()
    after = rss_kib()
    write(b'')
    return [('%s errors=%d growth_kib=%d' % (' '.join(kinds), errors, after - before)).encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /w ${TEST_DIR}/app.wsgi"))
        .start();
    for _ in 0..3 {
        let r = server.get("/w");
        assert_eq!(r.status, 200);
        let text = r.text();
        // bytearray and memoryview are not bytes either (PEP 3333: "bytestrings").
        assert!(
            text.starts_with(
                "str:TypeError int:TypeError NoneType:TypeError bytearray:TypeError \
                 memoryview:TypeError errors=20000 growth_kib="
            ),
            "{text}"
        );
        let growth: i64 = text
            .rsplit('=')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no growth in {text:?}"));
        assert!(
            growth < 2048,
            "RSS grew by {growth} KiB over 20000 failed writes"
        );
    }
}

in_both_modes!(body_items_must_be_bytes_and_none_is_not_an_iterable);
fn body_items_must_be_bytes_and_none_is_not_an_iterable(mode: Mode) {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    path = environ['PATH_INFO']
    if path == '/str-first':
        return ['pep3333 str body']
    if path == '/str-later':
        def body():
            yield b'first-part;'
            yield 'pep3333 str body'
            yield b'never'
        return body()
    if path == '/none':
        return None
    if path == '/int':
        return 42
    return [b'ok']
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /b ${TEST_DIR}/app.wsgi"))
        .allow_log("WSGI0010")
        .allow_log("Traceback (most recent call last)")
        .allow_log(r"\[request [^\]]+\]   ")
        .allow_log("TypeError")
        .allow_log(r"\[request [^\]]+\] \s*\^")
        .start();
    for path in ["/b/str-first", "/b/none", "/b/int"] {
        let r = get(server.port(), path, "");
        assert_eq!(r.status, 500, "{path}: {}", r.raw_text());
        assert!(!r.text().contains("pep3333 str body"), "{path}");
    }
    // After the headers went out, the client sees a truncated response: what was sent
    // before, no last chunk, and the connection closed promptly.
    let mut conn = keep_alive_get(server.port(), "/b/str-later");
    let r = conn.read_response(Duration::from_secs(5), false);
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert_eq!(r.text(), "first-part;", "{}", r.raw_text());
    assert!(
        !r.last_chunk,
        "a truncated response ended normally: {}",
        r.raw_text()
    );
    assert!(
        conn.wait_closed(Duration::from_secs(3)),
        "connection left open"
    );
    assert_eq!(get(server.port(), "/b/ok", "").text(), "ok");
    let log = server.error_log();
    assert!(log.contains("TypeError"), "{log}");
}

in_both_modes!(exception_after_headers_truncates_a_chunked_response);
fn exception_after_headers_truncates_a_chunked_response(mode: Mode) {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    def body():
        yield b'part-one;'
        yield b'part-two;'
        raise RuntimeError('pep3333 mid-stream failure')
    return body()
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /x ${TEST_DIR}/app.wsgi"))
        .allow_log("WSGI0010")
        .allow_log("Traceback (most recent call last)")
        .allow_log(r"\[request [^\]]+\]   ")
        .allow_log("RuntimeError: pep3333 mid-stream failure")
        .start();
    let started = Instant::now();
    let mut conn = keep_alive_get(server.port(), "/x");
    let r = conn.read_response(Duration::from_secs(5), false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "part-one;part-two;");
    assert!(
        !r.last_chunk,
        "the final 0-length chunk was sent: {:?}",
        r.raw_text()
    );
    assert!(conn.wait_closed(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(server.wait_for_log(
        "RuntimeError: pep3333 mid-stream failure",
        Duration::from_secs(5)
    ));
}

/// An iterable whose `close()` logs one line carrying the `tag` query parameter.
const CLOSE_APP: &str = r#"
import sys

class Body:
    def __init__(self, environ, mode, tag):
        self.environ, self.mode, self.tag, self.sent = environ, mode, tag, 0

    def __iter__(self):
        if self.mode == 'raise-before':
            raise ValueError('pep3333 raise-before')
        count = 2000 if self.mode == 'stream' else 3
        for _ in range(count):
            self.sent += 1
            yield b'z' * 65536 if self.mode == 'stream' else b'chunk;'
            if self.mode == 'raise-after':
                raise ValueError('pep3333 raise-after')

    def close(self):
        line = 'pep3333-close tag=%s sent=%d\n' % (self.tag, self.sent)
        if self.mode == 'ok':
            self.environ['wsgi.errors'].write(line)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()

def application(environ, start_response):
    mode = environ['PATH_INFO'][1:]
    tag = environ['QUERY_STRING']
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return Body(environ, mode, tag)
"#;

in_both_modes!(close_is_called_exactly_once_also_on_errors_and_disconnects);
fn close_is_called_exactly_once_also_on_errors_and_disconnects(mode: Mode) {
    let server = ServerBuilder::new()
        .file("app.wsgi", CLOSE_APP)
        .config(&mode.config("WSGIScriptAlias /c ${TEST_DIR}/app.wsgi"))
        .allow_log("pep3333-close")
        .allow_log("WSGI0010")
        .allow_log("Traceback (most recent call last)")
        .allow_log(r"\[request [^\]]+\]   ")
        .allow_log("ValueError: pep3333 raise-")
        .start();
    let r = get(server.port(), "/c/ok?t-ok", "");
    assert_eq!(r.text(), "chunk;chunk;chunk;");
    let r = get(server.port(), "/c/raise-before?t-before", "");
    assert_eq!(r.status, 500);
    let r = get(server.port(), "/c/raise-after?t-after", "");
    assert!(!r.last_chunk);

    // A client that reads 200 KiB of a 125 MiB response and goes away.
    let mut conn = keep_alive_get(server.port(), "/c/stream?t-gone");
    let got = conn.read_bytes(200 * 1024, Duration::from_secs(10));
    assert_eq!(got.len(), 200 * 1024);
    drop(conn);
    assert!(
        server.wait_for_log("pep3333-close tag=t-gone", Duration::from_secs(10)),
        "close() not called after the client went away:\n{}",
        server.error_log()
    );
    let stopped = server.stop();
    for tag in ["t-ok", "t-before", "t-after", "t-gone"] {
        let needle = format!("pep3333-close tag={tag} ");
        let lines: Vec<&str> = stopped
            .error_log
            .lines()
            .filter(|l| l.contains(&needle))
            .collect();
        assert_eq!(lines.len(), 1, "close() for {tag}: {lines:#?}");
        if tag == "t-gone" {
            let sent: u32 = lines[0]
                .rsplit('=')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no count in {:?}", lines[0]));
            assert!(
                sent < 2000,
                "iterated to the end for a gone client: {}",
                lines[0]
            );
        }
    }
}

in_both_modes!(head_request_method_follows_wsgi_map_head_to_get);
/// The same expectations in both modes: in daemon mode the Apache child still decides whether
/// to map HEAD to GET (it knows the output filters, DEFLATE here) before it forwards the
/// request.
fn head_request_method_follows_wsgi_map_head_to_get(mode: Mode) {
    let app = r#"
def application(environ, start_response):
    body = b'method body'
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('X-Method', environ['REQUEST_METHOD'])])
    return [body]
"#;
    let server = ServerBuilder::new()
        .load("filter")
        .load("deflate")
        .file("app.wsgi", app)
        .config(&mode.config(
            "WSGIScriptAlias /on ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /off ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /auto ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /default ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /deflated ${TEST_DIR}/app.wsgi\n\
             <Location /on>\n  WSGIMapHEADToGET On\n</Location>\n\
             <Location /off>\n  WSGIMapHEADToGET Off\n</Location>\n\
             <Location /auto>\n  WSGIMapHEADToGET Auto\n</Location>\n\
             <Location /deflated>\n  SetOutputFilter DEFLATE\n</Location>",
        ))
        .start();
    let cases = [
        ("/on", "GET"),
        ("/off", "HEAD"),
        ("/auto", "HEAD"),
        ("/default", "HEAD"),
        ("/deflated", "GET"),
    ];
    for (path, seen) in cases {
        let r = server.request("HEAD", path, &[("Accept-Encoding", "gzip")], b"");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("x-method"), Some(seen), "HEAD {path}");
        assert!(r.body.is_empty(), "HEAD {path} got a body");
        let r = server.get(path);
        assert_eq!(r.header("x-method"), Some("GET"), "GET {path}");
    }
}

/// Serves `data.txt` through `wsgi.file_wrapper` after skipping its first line; `/limited`
/// declares a Content-Length shorter than the rest of the file, `/toolong` one longer.
const FILE_APP: &str = r#"
import os
OPENED = []

def application(environ, start_response):
    path = os.path.join(os.path.dirname(__file__), 'data.txt')
    if environ['PATH_INFO'] == '/closed':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [('closed=%d/%d' % (sum(f.closed for f in OPENED), len(OPENED))).encode()]
    f = open(path, 'rb')
    OPENED.append(f)
    f.readline()
    headers = [('Content-Type', 'application/octet-stream')]
    if environ['PATH_INFO'] == '/limited':
        headers.append(('Content-Length', '1000'))
    if environ['PATH_INFO'] == '/toolong':
        headers.append(('Content-Length', str(os.path.getsize(path) * 2)))
    start_response('200 OK', headers)
    return environ['wsgi.file_wrapper'](f, 8192)
"#;

/// The file [`FILE_APP`] serves: a first line, then 300 000 bytes of numbered lines.
fn file_data() -> (Vec<u8>, Vec<u8>) {
    let first = b"FIRST LINE, SKIPPED\n".to_vec();
    let mut rest = Vec::new();
    let mut n = 0;
    while rest.len() < 300_000 {
        rest.extend_from_slice(format!("line {n:08}\n").as_bytes());
        n += 1;
    }
    (first, rest)
}

/// Serves [`FILE_APP`] with `WSGIEnableSendfile` on or off. The checks are on the bytes only
/// (in daemon mode the daemon passes the open file to the Apache child, which sends it as in
/// embedded mode).
fn check_file_wrapper(mode: Mode, sendfile: bool) {
    let (first, rest) = file_data();
    let mut data = first.clone();
    data.extend_from_slice(&rest);
    let mut config = String::from("WSGIScriptAlias /f ${TEST_DIR}/app/app.wsgi\n");
    if sendfile {
        config.push_str("WSGIEnableSendfile On\n");
    }
    let server = ServerBuilder::new()
        .file("app/app.wsgi", FILE_APP)
        .file("app/data.txt", &data)
        .config(&mode.config(&config))
        .allow_log("WSGI0013")
        .start();
    let r = server.get("/f/whole");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), rest.len(), "sendfile={sendfile}");
    // Apache counts the file (it is the whole response) when the application gave no length.
    let counted = rest.len().to_string();
    assert_eq!(r.header("content-length"), Some(counted.as_str()));
    assert!(r.body == rest, "sendfile={sendfile}: wrong content");
    let r = get(server.port(), "/f/limited", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.complete);
    assert!(
        r.body == rest[..1000],
        "sendfile={sendfile}: {:?}",
        r.text()
    );
    // A file shorter than its Content-Length: the client must be able to tell (the declared
    // length kept, the connection closed early), as for any other short body.
    let r = get(server.port(), "/f/toolong", "");
    assert_eq!(r.status, 200);
    let declared = (data.len() * 2).to_string();
    assert_eq!(r.header("content-length"), Some(declared.as_str()));
    assert!(
        !r.complete,
        "sendfile={sendfile}: a short file looked complete"
    );
    assert!(r.body == rest, "sendfile={sendfile}: wrong content");
    assert!(
        server.wait_for_log("WSGI0013", Duration::from_secs(5)),
        "no WSGI0013 for the short file:\n{}",
        server.error_log()
    );
    assert_eq!(
        server.get("/f/closed").text(),
        "closed=3/3",
        "sendfile={sendfile}"
    );
}

in_both_modes!(file_wrapper_sends_a_file_from_its_current_offset);
fn file_wrapper_sends_a_file_from_its_current_offset(mode: Mode) {
    check_file_wrapper(mode, false);
}

in_both_modes!(file_wrapper_with_sendfile_enabled);
fn file_wrapper_with_sendfile_enabled(mode: Mode) {
    check_file_wrapper(mode, true);
}

in_both_modes!(content_type_survives_concurrency_cve_2014_0242);
fn content_type_survives_concurrency_cve_2014_0242(mode: Mode) {
    let app = r#"
import random, threading, time

STOP = threading.Event()
STARTED = []
LOCK = threading.Lock()

def churn():
    deadline = time.time() + 60
    while not STOP.is_set() and time.time() < deadline:
        junk = ['x' * random.randint(1, 400) for _ in range(200)]
        junk = {i: s + 'y' for i, s in enumerate(junk)}
        del junk
        time.sleep(0)

def body(data):
    junk = ['q' * random.randint(1, 300) for _ in range(50)]
    del junk
    yield data

def application(environ, start_response):
    if environ['PATH_INFO'] == '/stop':
        STOP.set()
        for t in STARTED:
            t.join(10)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'stopped']
    with LOCK:
        if not STARTED:
            for _ in range(2):
                t = threading.Thread(target=churn)
                t.start()
                STARTED.append(t)
    n = int(environ['QUERY_STRING'])
    ctype = 'text/x-%d-%s' % (n, 'y' * random.randint(0, 500))
    data = ctype.encode()
    start_response('200 OK', [('Content-Type', ctype), ('Content-Length', str(len(data)))])
    del ctype
    return body(data)
"#;
    let server = Arc::new(
        ServerBuilder::new()
            .file("app.wsgi", app)
            .config(&mode.config("WSGIScriptAlias /ct ${TEST_DIR}/app.wsgi"))
            .start(),
    );
    // One request first, so that the load of the script is not part of this test (see
    // `concurrent_first_requests_wait_for_the_script_to_load`).
    assert_eq!(server.get("/ct?0").status, 200);
    let next = Arc::new(AtomicUsize::new(0));
    let total = 2400;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let server = Arc::clone(&server);
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return bad;
                    }
                    let r = server.get(&format!("/ct?{n}"));
                    let ctype = r.header("content-type").unwrap_or_default().to_owned();
                    let prefix = format!("text/x-{n}-");
                    if r.status != 200 || ctype != r.text() || !ctype.starts_with(&prefix) {
                        bad.push(format!(
                            "#{n}: {} {ctype:?} vs body {:?}",
                            r.status,
                            r.text()
                        ));
                    }
                }
            })
        })
        .collect();
    let bad: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("client thread panicked"))
        .collect();
    assert_eq!(server.get("/ct/stop").text(), "stopped");
    assert!(
        bad.is_empty(),
        "{} of {total} responses had the wrong Content-Type:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

in_both_modes!(concurrent_first_requests_wait_for_the_script_to_load);
fn concurrent_first_requests_wait_for_the_script_to_load(mode: Mode) {
    // The script takes a while to import; requests arriving meanwhile must wait for it
    // rather than find a half-initialised module without `application`.
    let app = r#"
import time
time.sleep(0.5)

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'loaded']
"#;
    let server = Arc::new(
        ServerBuilder::new()
            .file("app.wsgi", app)
            .config(&mode.config("WSGIScriptAlias /slow ${TEST_DIR}/app.wsgi"))
            .start(),
    );
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let r = server.get("/slow");
                (r.status, r.text())
            })
        })
        .collect();
    let results: Vec<(u16, String)> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread panicked"))
        .collect();
    let bad: Vec<&(u16, String)> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of 8 concurrent first requests failed: {bad:?}\n{}",
        bad.len(),
        server.error_log()
    );
    assert!(
        results.iter().all(|(_, body)| body == "loaded"),
        "{results:?}"
    );
}

/// List and tuple responses, whose items the module holds back and sends in one piece after
/// the application returns (up to a limit, past which it writes as it goes).
const LIST_APP: &str = r#"
def application(environ, start_response):
    path = environ['PATH_INFO']
    query = environ['QUERY_STRING']
    if path == '/many':
        items = [b'%04d;' % i for i in range(2000)] + [b'']
    elif path == '/large':
        items = [bytes([65 + i]) * (100 * 1024 + i) for i in range(6)]
    else:
        items = [b'ab', b'', b'cd', b'ef']
    body_len = sum(len(i) for i in items)
    headers = [('Content-Type', 'application/octet-stream')]
    if 'short' in query:
        headers.append(('Content-Length', str(body_len - 3)))
    elif 'nolength' not in query:
        headers.append(('Content-Length', str(body_len)))
    start_response('200 OK', headers)
    return tuple(items) if 'tuple' in query else items
"#;

in_both_modes!(list_and_tuple_responses_are_sent_whole);
fn list_and_tuple_responses_are_sent_whole(mode: Mode) {
    let server = ServerBuilder::new()
        .file("app.wsgi", LIST_APP)
        .config(&mode.config("WSGIScriptAlias /l ${TEST_DIR}/app.wsgi"))
        .allow_log("WSGI0014")
        .start();
    let many: Vec<u8> = (0..2000)
        .flat_map(|i| format!("{i:04};").into_bytes())
        .collect();
    let large: Vec<u8> = (0..6u8)
        .flat_map(|i| vec![65 + i; 100 * 1024 + usize::from(i)])
        .collect();
    for query in ["", "tuple", "nolength", "tuple&nolength"] {
        for (path, want) in [
            ("/l/small", b"abcdef".to_vec()),
            ("/l/many", many.clone()),
            ("/l/large", large.clone()),
        ] {
            let r = get(server.port(), &format!("{path}?{query}"), "");
            assert_eq!(r.status, 200, "{path}?{query}");
            assert!(r.complete, "{path}?{query}: incomplete");
            assert_eq!(r.body.len(), want.len(), "{path}?{query}");
            assert!(r.body == want, "{path}?{query}: wrong bytes");
            if query.contains("nolength") {
                // Either framing is right without a declared length, as long as it ends.
                assert!(
                    r.header("Content-Length").is_some() || r.last_chunk,
                    "{path}?{query}"
                );
            } else {
                let length = want.len().to_string();
                assert_eq!(r.header("Content-Length"), Some(length.as_str()));
            }
        }
    }
    // A Content-Length shorter than the items: the excess is not sent, and is logged.
    let r = get(server.port(), "/l/large?short", "");
    assert_eq!(r.status, 200);
    assert!(r.body == large[..large.len() - 3], "short: wrong bytes");
    let r = get(server.port(), "/l/small?short&tuple", "");
    assert_eq!(r.text(), "abc");
    assert!(
        server.wait_for_log("WSGI0014", Duration::from_secs(5)),
        "no WSGI0014 for the excess:\n{}",
        server.error_log()
    );
}

/// One request's thread waits in `wsgi.input.read` for a client that is slow to send its body
/// while another thread of the same request answers: other requests of the process must not
/// wait for that client.
const RACER_APP: &str = r#"
import threading, time
def application(environ, start_response):
    if environ['PATH_INFO'] == '/racer':
        body = environ['wsgi.input']
        threading.Thread(target=lambda: body.read(100), daemon=True).start()
        time.sleep(0.3)
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'racer done']
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'tick']
"#;

in_both_modes!(a_thread_blocked_reading_the_body_does_not_stall_other_requests);
fn a_thread_blocked_reading_the_body_does_not_stall_other_requests(mode: Mode) {
    let server = ServerBuilder::new()
        .file("app.wsgi", RACER_APP)
        .config(&mode.config("WSGIScriptAlias /r ${TEST_DIR}/app.wsgi"))
        .start();
    let mut racer = Conn::open(server.port());
    let head = format!(
        "POST /r/racer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\
         Connection: close\r\n\r\n{}",
        "x".repeat(10)
    );
    racer.send(head.as_bytes()).expect("send the racer");
    std::thread::sleep(Duration::from_millis(1000));
    let start = Instant::now();
    let r = get(server.port(), "/r/tick", "");
    let waited = start.elapsed();
    assert_eq!(r.text(), "tick");
    // The rest of the racer's body comes 5 s after its start; before the fix the tick waited
    // for it with the GIL held.
    assert!(
        waited < Duration::from_millis(2500),
        "a request waited {waited:?} for another request's slow client"
    );
    std::thread::sleep(Duration::from_millis(4000).saturating_sub(waited));
    racer.send(&[b'x'; 90]).expect("send the rest");
    let done = racer.read_response(Duration::from_secs(10), false);
    assert_eq!(done.text(), "racer done");
}
