//! PEP 3333, the request side: the `environ` dictionary (CGI variables, the
//! SCRIPT_NAME/PATH_INFO split, latin-1 strings, filtered request headers, `HTTPS`, the
//! `wsgi.*` and `mod_wsgi.*` keys), `wsgi.input` (every read method, truncated bodies,
//! `Expect: 100-continue`), and `wsgi.errors`/`sys.stdout`/`sys.stderr` reaching the error
//! log tagged with the request id. Every test runs twice, in embedded and in daemon mode
//! (`name::embedded`, `name::daemon`; see `pep3333_mode`).
//!
//! The response side is in `pep3333_response.rs`, the shared real-world cases in
//! `pep3333_cases.rs`.

mod pep3333_mode;
mod pep3333_raw;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use pep3333_mode::{Mode, in_both_modes};
use pep3333_raw::Conn;
use support::{Mpm, ServerBuilder};

/// Reports every environ item as `key-type TAB key TAB value-type TAB ascii(value)`, after
/// two lines of its own: the time and its pid.
const ENVIRON_APP: &str = r#"
import os, time
def application(environ, start_response):
    lines = ['str\t@now\tfloat\t%r' % time.time(), 'str\t@pid\tint\t%d' % os.getpid()]
    for key in sorted(environ, key=ascii):
        value = environ[key]
        lines.append('%s\t%s\t%s\t%s' % (type(key).__name__, key if isinstance(key, str)
                                         else ascii(key), type(value).__name__, ascii(value)))
    body = ('\n'.join(lines) + '\n').encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
"#;

/// One environ item as [`ENVIRON_APP`] reports it.
#[derive(Debug, Clone)]
struct Item {
    key_type: String,
    value_type: String,
    /// Python's `ascii()` of the value.
    repr: String,
}

/// Parses an [`ENVIRON_APP`] body.
fn parse_environ(body: &str) -> BTreeMap<String, Item> {
    body.lines()
        .map(|line| {
            let mut parts = line.splitn(4, '\t');
            let mut next = || parts.next().unwrap_or_else(|| panic!("bad line {line:?}"));
            let key_type = next().to_owned();
            let key = next().to_owned();
            let value_type = next().to_owned();
            let repr = next().to_owned();
            (
                key,
                Item {
                    key_type,
                    value_type,
                    repr,
                },
            )
        })
        .collect()
}

/// The value of a `str` item, unquoted (only for values without quotes or escapes).
fn str_value(env: &BTreeMap<String, Item>, key: &str) -> String {
    let item = env
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in environ: {env:#?}"));
    assert_eq!(item.value_type, "str", "{key}: {item:?}");
    item.repr[1..item.repr.len() - 1].to_owned()
}

/// `ascii()` of a Python `str` holding `text` (ASCII, no quotes or backslashes).
fn py_str(text: &str) -> String {
    format!("'{text}'")
}

/// Raw `GET` of [`ENVIRON_APP`] with extra header lines; returns the parsed environ and
/// the client's port.
fn environ_of(port: u16, target: &str, extra_headers: &str) -> (BTreeMap<String, Item>, u16) {
    let mut conn = Conn::open(port);
    let client_port = conn.local_port();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra_headers}\
         Connection: close\r\n\r\n"
    );
    conn.send(request.as_bytes())
        .expect("cannot send the request");
    let r = conn.read_response(Duration::from_secs(10), false);
    assert_eq!(r.status, 200, "GET {target}: {}", r.raw_text());
    (parse_environ(&r.text()), client_port)
}

in_both_modes!(environ_has_the_cgi_variables_with_the_right_values);
fn environ_has_the_cgi_variables_with_the_right_values(mode: Mode) {
    let server = ServerBuilder::new()
        .file("app/env.wsgi", ENVIRON_APP)
        .config(&mode.config("WSGIScriptAlias /sub ${TEST_DIR}/app/env.wsgi"))
        .start();
    let dir = server.dir().display().to_string();
    let target = "/sub/a%20b/c?x=%41&y=caf%C3%A9";
    let (env, client_port) = environ_of(server.port(), target, "");
    assert!(str_value(&env, "SERVER_SOFTWARE").starts_with("Apache"));
    assert_eq!(str_value(&env, "SERVER_NAME"), "127.0.0.1");
    assert_eq!(str_value(&env, "SERVER_ADDR"), "127.0.0.1");
    assert_eq!(str_value(&env, "SERVER_PORT"), server.port().to_string());
    assert_eq!(str_value(&env, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(str_value(&env, "REMOTE_PORT"), client_port.to_string());
    assert_eq!(str_value(&env, "DOCUMENT_ROOT"), format!("{dir}/htdocs"));
    assert_eq!(str_value(&env, "REQUEST_SCHEME"), "http");
    // Present as Apache's core computes them (mod_wsgi sets no context of its own).
    str_value(&env, "CONTEXT_PREFIX");
    assert!(
        str_value(&env, "CONTEXT_DOCUMENT_ROOT").starts_with(&dir),
        "{:?}",
        env.get("CONTEXT_DOCUMENT_ROOT")
    );
    assert_eq!(
        str_value(&env, "SCRIPT_FILENAME"),
        format!("{dir}/app/env.wsgi")
    );
    assert_eq!(str_value(&env, "SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(str_value(&env, "REQUEST_METHOD"), "GET");
    assert_eq!(str_value(&env, "QUERY_STRING"), "x=%41&y=caf%C3%A9");
    assert_eq!(str_value(&env, "REQUEST_URI"), target);
    assert_eq!(str_value(&env, "SCRIPT_NAME"), "/sub");
    assert_eq!(str_value(&env, "PATH_INFO"), "/a b/c");
    assert_eq!(
        str_value(&env, "HTTP_HOST"),
        format!("127.0.0.1:{}", server.port())
    );
    assert!(
        !env.contains_key("PATH"),
        "PATH leaked: {:?}",
        env.get("PATH")
    );
    assert!(
        !env.contains_key("CONTENT_LENGTH"),
        "{:?}",
        env.get("CONTENT_LENGTH")
    );

    // QUERY_STRING is there, empty, when the URL has no query.
    let (env, _) = environ_of(server.port(), "/sub/", "");
    assert_eq!(env["QUERY_STRING"].repr, "''");
    assert_eq!(str_value(&env, "PATH_INFO"), "/");
}

in_both_modes!(environ_drops_unsafe_request_headers_and_keeps_the_others);
fn environ_drops_unsafe_request_headers_and_keeps_the_others(mode: Mode) {
    let server = ServerBuilder::new()
        .file("env.wsgi", ENVIRON_APP)
        .config(&mode.config(
            "WSGIScriptAlias /plain ${TEST_DIR}/env.wsgi\n\
             WSGIScriptAlias /passed ${TEST_DIR}/env.wsgi\n\
             <Location /passed>\n  WSGIPassAuthorization On\n</Location>",
        ))
        .start();
    let headers = "X-Foo_Bar: 1\r\nX-Dot.Name: 2\r\nProxy: x\r\nX-Good-One: yes\r\n\
                   Authorization: Bearer t0k3n\r\n";
    let (env, _) = environ_of(server.port(), "/plain", headers);
    assert_eq!(str_value(&env, "HTTP_X_GOOD_ONE"), "yes");
    for key in env.keys() {
        assert!(
            !key.contains("FOO") && !key.contains("DOT"),
            "a header with `_` or `.` in its name reached the environ as {key}"
        );
    }
    assert!(
        !env.contains_key("HTTP_PROXY"),
        "httpoxy: HTTP_PROXY is set"
    );
    assert!(
        !env.contains_key("HTTP_AUTHORIZATION"),
        "Authorization passed without WSGIPassAuthorization"
    );
    let (env, _) = environ_of(server.port(), "/passed", headers);
    assert_eq!(str_value(&env, "HTTP_AUTHORIZATION"), "Bearer t0k3n");
    assert!(!env.contains_key("HTTP_PROXY"));
}

in_both_modes!(environ_splits_script_name_and_path_info_collapsing_slashes_and_decoding_latin1);
fn environ_splits_script_name_and_path_info_collapsing_slashes_and_decoding_latin1(mode: Mode) {
    let server = ServerBuilder::new()
        .file("env.wsgi", ENVIRON_APP)
        .config(&mode.config(
            "WSGIScriptAlias /sub ${TEST_DIR}/env.wsgi\n\
             WSGIScriptAlias / ${TEST_DIR}/env.wsgi",
        ))
        .start();
    // (request target, SCRIPT_NAME, ascii(PATH_INFO))
    let cases = [
        ("/", "", "'/'"),
        ("//a//b", "", "'/a/b'"),
        ("/x///y/", "", "'/x/y/'"),
        ("/sub", "/sub", "''"),
        ("/sub//", "/sub", "'/'"),
        ("/sub//x///y", "/sub", "'/x/y'"),
        ("//sub/x", "/sub", "'/x'"),
        ("/caf%C3%A9", "", r"'/caf\xc3\xa9'"),
        ("/sub/caf%C3%A9%20%ff", "/sub", r"'/caf\xc3\xa9 \xff'"),
    ];
    for (target, script_name, path_info) in cases {
        let (env, _) = environ_of(server.port(), target, "");
        assert_eq!(env["SCRIPT_NAME"].repr, py_str(script_name), "{target}");
        assert_eq!(env["PATH_INFO"].repr, path_info, "{target}");
        assert_eq!(env["PATH_INFO"].value_type, "str", "{target}");
        assert_eq!(env["REQUEST_URI"].repr, py_str(target), "{target}: not raw");
        assert_eq!(env["mod_wsgi.script_name"].repr, env["SCRIPT_NAME"].repr);
        assert_eq!(env["mod_wsgi.path_info"].repr, env["PATH_INFO"].repr);
    }
}

in_both_modes!(environ_https_sets_the_url_scheme_and_is_removed);
fn environ_https_sets_the_url_scheme_and_is_removed(mode: Mode) {
    let server = ServerBuilder::new()
        .file("env.wsgi", ENVIRON_APP)
        .config(&mode.config(
            "WSGIScriptAlias /plain ${TEST_DIR}/env.wsgi\n\
             WSGIScriptAlias /secure ${TEST_DIR}/env.wsgi\n\
             <Location /secure>\n  SetEnv HTTPS on\n</Location>",
        ))
        .start();
    let (env, _) = environ_of(server.port(), "/secure", "");
    assert_eq!(env["wsgi.url_scheme"].repr, "'https'");
    assert!(
        !env.contains_key("HTTPS"),
        "HTTPS key kept: {:?}",
        env["HTTPS"]
    );
    let (env, _) = environ_of(server.port(), "/plain", "");
    assert_eq!(env["wsgi.url_scheme"].repr, "'http'");
    assert!(!env.contains_key("HTTPS"));
}

in_both_modes!(environ_wsgi_and_mod_wsgi_keys_have_the_right_types_and_values);
fn environ_wsgi_and_mod_wsgi_keys_have_the_right_types_and_values(mode: Mode) {
    let version_re = regex::Regex::new(r"^\(\d+, \d+(, \d+)*\)$").expect("valid pattern");
    for mpm in [Mpm::Event, Mpm::Prefork] {
        let server = ServerBuilder::new()
            .mpm(mpm)
            .file("env.wsgi", ENVIRON_APP)
            .config(&mode.config("WSGIScriptAlias /sub ${TEST_DIR}/env.wsgi"))
            .start();
        let (env, _) = environ_of(server.port(), "/sub/p", "");
        for (key, item) in &env {
            assert_eq!(item.key_type, "str", "{mpm:?}: key {key} is not a str");
            if !key.contains('.') && !key.starts_with('@') {
                assert_eq!(item.value_type, "str", "{mpm:?}: CGI value {key}: {item:?}");
            }
        }
        let repr = |key: &str| {
            env.get(key)
                .unwrap_or_else(|| panic!("{mpm:?}: no {key}"))
                .repr
                .clone()
        };
        let kind = |key: &str| env[key].value_type.clone();
        assert_eq!(repr("wsgi.version"), "(1, 0)");
        assert_eq!(kind("wsgi.version"), "tuple");
        assert_eq!(repr("wsgi.url_scheme"), "'http'");
        let (multithread, multiprocess) = match mode {
            Mode::Embedded => (mpm != Mpm::Prefork, mpm == Mpm::Prefork),
            // The daemon group's sizing decides, not the MPM: threads=4, and no `processes=`
            // option, hence a single process.
            Mode::Daemon => (true, false),
        };
        let py_bool = |b: bool| if b { "True" } else { "False" };
        assert_eq!(repr("wsgi.multithread"), py_bool(multithread), "{mpm:?}");
        assert_eq!(repr("wsgi.multiprocess"), py_bool(multiprocess), "{mpm:?}");
        assert_eq!(repr("wsgi.run_once"), "False");
        assert_eq!(repr("wsgi.input_terminated"), "True");
        for key in ["wsgi.input", "wsgi.errors", "wsgi.file_wrapper"] {
            assert!(env.contains_key(key), "{mpm:?}: no {key}");
        }
        assert_eq!(kind("mod_wsgi.version"), "tuple");
        assert!(
            version_re.is_match(&repr("mod_wsgi.version")),
            "{}",
            repr("mod_wsgi.version")
        );
        assert_eq!(
            repr("mod_wsgi.process_group"),
            py_str(mode.process_group()),
            "{mpm:?}"
        );
        assert_eq!(
            repr("mod_wsgi.application_group"),
            format!("'127.0.0.1:{}|/sub'", server.port())
        );
        assert_eq!(repr("mod_wsgi.callable_object"), "'application'");
        assert_eq!(repr("mod_wsgi.request_handler"), "'wsgi-script'");
        assert_eq!(repr("mod_wsgi.script_name"), "'/sub'");
        assert_eq!(repr("mod_wsgi.path_info"), "'/p'");
        assert_eq!(kind("mod_wsgi.request_id"), "str");
        assert!(repr("mod_wsgi.request_id").len() > 2, "empty request id");
        assert_eq!(kind("mod_wsgi.thread_id"), "int");
        assert_eq!(kind("mod_wsgi.request_start"), "float");
        let start: f64 = repr("mod_wsgi.request_start")
            .parse()
            .expect("request_start is a float");
        let now: f64 = repr("@now").parse().expect("@now is a float");
        assert!(
            start <= now && now - start < 30.0,
            "{mpm:?}: request_start {start} vs time.time() {now}"
        );
        // Every request has its own id.
        let (again, _) = environ_of(server.port(), "/sub/p", "");
        assert_ne!(
            again["mod_wsgi.request_id"].repr,
            repr("mod_wsgi.request_id")
        );
    }
}

/// Runs a sequence of `wsgi.input` operations chosen by PATH_INFO and reports each result's
/// `repr`, one per line.
const INPUT_APP: &str = r#"
import hashlib
LINES = [b'alpha\n', b'beta\n', b'gamma delta epsilon\n', b'\n', b'last line without newline']

def run(inp, op):
    if op == '/lines':
        return [inp.readline(), inp.readline(3), inp.readline(100), inp.readline(),
                inp.readline(), inp.readline(), inp.readline(), inp.read(), inp.read(5)]
    if op == '/sized':
        return [inp.read(0), inp.read(4), inp.read(4), inp.read(1), inp.read(10000),
                inp.read(3), inp.read()]
    if op == '/all':
        return [inp.read(), inp.read(), inp.read(1), inp.readline()]
    if op == '/readlines':
        return [inp.readlines(), inp.readlines(), inp.read()]
    if op == '/iter':
        return [[line for line in inp], inp.read(1), inp.readline()]
    if op == '/hint':
        first = inp.readlines(8)
        rest = inp.readlines()
        return ['together=%s' % (first + rest == LINES),
                'size=%d' % sum(map(len, first)), first, rest]
    if op == '/big':
        whole = inp.read()
        return ['%d %s' % (len(whole), hashlib.md5(whole).hexdigest())]
    if op == '/big-pieces':
        digest, total, sizes = hashlib.md5(), 0, [1, 7, 4096, 65536, 100000]
        n = 0
        while True:
            piece = inp.read(sizes[n % len(sizes)])
            n += 1
            if not piece:
                break
            if len(piece) > sizes[(n - 1) % len(sizes)]:
                return ['read(%d) returned %d bytes' % (sizes[(n - 1) % len(sizes)], len(piece))]
            digest.update(piece)
            total += len(piece)
        return ['%d %s' % (total, digest.hexdigest()), inp.read()]
    return ['unknown op %r' % op]

def application(environ, start_response):
    results = run(environ['wsgi.input'], environ['PATH_INFO'])
    body = '\n'.join(r if isinstance(r, str) else repr(r) for r in results).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;

/// The request body [`INPUT_APP`]'s line operations expect.
const LINES_BODY: &[u8] = b"alpha\nbeta\ngamma delta epsilon\n\nlast line without newline";

in_both_modes!(wsgi_input_read_readline_readlines_and_iteration);
fn wsgi_input_read_readline_readlines_and_iteration(mode: Mode) {
    let server = ServerBuilder::new()
        .file("input.wsgi", INPUT_APP)
        .config(&mode.config("WSGIScriptAlias /in ${TEST_DIR}/input.wsgi"))
        .start();
    let post = |op: &str| {
        let r = server.request("POST", &format!("/in{op}"), &[], LINES_BODY);
        assert_eq!(r.status, 200, "{op}: {}", r.text());
        r.text()
    };
    let expected = [
        (
            "/lines",
            "b'alpha\\n'\nb'bet'\nb'a\\n'\nb'gamma delta epsilon\\n'\nb'\\n'\n\
             b'last line without newline'\nb''\nb''\nb''",
        ),
        (
            "/sized",
            "b''\nb'alph'\nb'a\\nbe'\nb't'\n\
             b'a\\ngamma delta epsilon\\n\\nlast line without newline'\nb''\nb''",
        ),
        (
            "/all",
            "b'alpha\\nbeta\\ngamma delta epsilon\\n\\nlast line without newline'\nb''\nb''\nb''",
        ),
        (
            "/readlines",
            "[b'alpha\\n', b'beta\\n', b'gamma delta epsilon\\n', b'\\n', \
             b'last line without newline']\n[]\nb''",
        ),
        (
            "/iter",
            "[b'alpha\\n', b'beta\\n', b'gamma delta epsilon\\n', b'\\n', \
             b'last line without newline']\nb''\nb''",
        ),
    ];
    for (op, want) in expected {
        assert_eq!(post(op), want, "{op}");
    }
    // readlines(hint) may stop early (at least `hint` bytes) or ignore the hint; either way
    // no line is lost or split, and readlines() returns the rest.
    let hint = post("/hint");
    assert!(hint.starts_with("together=True\n"), "{hint}");
    let size: usize = hint
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("size="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{hint}"));
    assert!(size >= 8, "readlines(8) returned {size} bytes: {hint}");

    // An empty body: every read is b"".
    let r = server.request("POST", "/in/lines", &[], b"");
    assert_eq!(
        r.text(),
        ["b''"; 9].join("\n"),
        "reads of an empty body must return b''"
    );
}

in_both_modes!(wsgi_input_large_body_read_whole_and_in_pieces);
fn wsgi_input_large_body_read_whole_and_in_pieces(mode: Mode) {
    let server = ServerBuilder::new()
        .file("input.wsgi", INPUT_APP)
        .config(&mode.config("WSGIScriptAlias /in ${TEST_DIR}/input.wsgi"))
        .start();
    let body = support::noise(3_000_000, 12345);
    let digest = format!("{} {:x}", body.len(), Md5::digest(&body));
    let r = server.request("POST", "/in/big", &[], &body);
    assert_eq!(r.text(), digest);
    let r = server.request("POST", "/in/big-pieces", &[], &body);
    assert_eq!(r.text(), format!("{digest}\nb''"));
}

in_both_modes!(truncated_request_body_gives_the_app_an_os_error_promptly);
fn truncated_request_body_gives_the_app_an_os_error_promptly(mode: Mode) {
    let app = r#"
def application(environ, start_response):
    length = int(environ.get('CONTENT_LENGTH') or 0)
    try:
        if environ['PATH_INFO'] == '/sized':
            data = environ['wsgi.input'].read(length)
        else:
            data = environ['wsgi.input'].read()
        msg = 'read returned %d bytes' % len(data)
    except OSError as e:
        environ['wsgi.errors'].write('pep3333-truncated: %s: %s\n' % (type(e).__name__, e))
        # Later reads keep failing, also for the bytes that came before the failure.
        later = []
        for _ in range(2):
            try:
                later.append(repr(environ['wsgi.input'].read(3)))
            except OSError:
                later.append('OSError')
        try:
            later.append(repr(environ['wsgi.input'].readline()))
        except OSError:
            later.append('OSError')
        msg = 'read raised OSError, then ' + ' '.join(later)
    except Exception as e:
        msg = 'read raised %s, not an OSError' % type(e).__name__
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [msg.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /t ${TEST_DIR}/app.wsgi"))
        .allow_log("pep3333-truncated")
        .start();
    for path in ["/t/sized", "/t/all"] {
        let started = Instant::now();
        let mut conn = Conn::open(server.port());
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\
             Content-Type: application/octet-stream\r\n\r\n0123456789"
        );
        conn.send(head.as_bytes()).expect("cannot send the request");
        conn.shutdown_write();
        let r = conn.read_response(Duration::from_secs(5), false);
        assert_eq!(
            r.status,
            200,
            "{path}: no response within 5 s: {:?}",
            r.raw_text()
        );
        assert_eq!(
            r.text(),
            "read raised OSError, then OSError OSError OSError",
            "{path}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    assert!(server.error_log().contains("pep3333-truncated: "));
}

in_both_modes!(expect_100_continue_only_when_the_app_reads_the_body);
fn expect_100_continue_only_when_the_app_reads_the_body(mode: Mode) {
    let app = r#"
import hashlib
def application(environ, start_response):
    if environ['PATH_INFO'] == '/ignore':
        start_response('403 Forbidden', [('Content-Type', 'text/plain')])
        return [b'not accepting uploads\n']
    length = int(environ.get('CONTENT_LENGTH') or 0)
    data = environ['wsgi.input'].read(length)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('declared=%d received=%d md5=%s' % (length, len(data),
                                                hashlib.md5(data).hexdigest())).encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /up ${TEST_DIR}/app.wsgi"))
        .start();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };

    // The app reads: the interim response comes first, then the body is sent.
    let mut conn = Conn::open(server.port());
    conn.send(head("/up/echo").as_bytes())
        .expect("cannot send the request head");
    let interim = conn.read_head(Duration::from_secs(3));
    let interim = interim.expect("no `100 Continue` within 3 s although the app reads the body");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim:?}"
    );
    conn.send(&body).expect("cannot send the body");
    let r = conn.read_response(Duration::from_secs(10), false);
    assert_eq!(r.status, 200, "{}", r.raw_text());
    assert_eq!(
        r.text(),
        format!(
            "declared={0} received={0} md5={1:x}",
            body.len(),
            Md5::digest(&body)
        )
    );

    // The app answers without reading: the final response at once, complete, and no
    // `100 Continue` (the client is never asked to send the body).
    let started = Instant::now();
    let mut conn = Conn::open(server.port());
    conn.send(head("/up/ignore").as_bytes())
        .expect("cannot send the request head");
    let r = conn.read_response(Duration::from_secs(3), false);
    assert_eq!(
        r.status,
        403,
        "no final response within 3 s: {:?}",
        r.raw_text()
    );
    assert!(r.interim.is_empty(), "interim responses: {:?}", r.interim);
    assert!(
        r.complete,
        "the 403 was not complete within 3 s: {:?}",
        r.raw_text()
    );
    assert_eq!(r.text(), "not accepting uploads\n");
    assert!(started.elapsed() < Duration::from_secs(3));
}

in_both_modes!(wsgi_errors_and_std_streams_reach_the_error_log_tagged_with_the_request_id);
fn wsgi_errors_and_std_streams_reach_the_error_log_tagged_with_the_request_id(mode: Mode) {
    let app = r#"
import sys
def application(environ, start_response):
    errors = environ['wsgi.errors']
    errors.write('pep3333-log errors-write\n')
    errors.writelines(['pep3333-log errors-writelines-1\n', 'pep3333-log errors-writelines-2\n'])
    errors.write('pep3333-log errors-partial')
    errors.flush()
    errors.write('pep3333-log errors-after-flush\n')
    print('pep3333-log stdout-print')
    sys.stdout.writelines(['pep3333-log stdout-writelines\n'])
    sys.stderr.write('pep3333-log stderr-write\n')
    sys.stdout.buffer.write(b'pep3333-log stdout-bytes\n')
    sys.stdout.flush()
    sys.stderr.buffer.write(b'pep3333-log stderr-bytes\n')
    sys.stderr.write('pep3333-log stderr-partial')
    sys.stderr.flush()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [environ['mod_wsgi.request_id'].encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&mode.config("WSGIScriptAlias /log ${TEST_DIR}/app.wsgi"))
        .allow_log("pep3333-log")
        .start();
    let r = server.get("/log");
    assert_eq!(r.status, 200);
    let id = r.text();
    assert!(!id.is_empty());
    let tag = format!("[request {id}]");
    let markers = [
        "errors-write",
        "errors-writelines-1",
        "errors-writelines-2",
        "errors-partial",
        "errors-after-flush",
        "stdout-print",
        "stdout-writelines",
        "stderr-write",
        "stdout-bytes",
        "stderr-bytes",
        "stderr-partial",
    ];
    for marker in markers {
        let needle = format!("pep3333-log {marker}");
        assert!(
            server.wait_for_log(&needle, Duration::from_secs(5)),
            "{needle} never logged:\n{}",
            server.error_log()
        );
        let log = server.error_log();
        // Each marker is a line of its own (a flushed partial line too), tagged.
        let line = log
            .lines()
            .find(|l| l.trim_end().ends_with(&needle))
            .unwrap_or_else(|| panic!("no line ending in {needle:?}:\n{log}"));
        assert!(line.contains(&tag), "{needle}: no {tag} in {line:?}");
    }
}
