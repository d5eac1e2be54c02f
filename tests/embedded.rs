//! Embedded mode end to end (issue #2): mounts, handlers, the Python directives, a Flask app in a
//! virtual environment, failing applications, the GIL during I/O, logging, and prompt shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Mpm, ServerBuilder};

/// An app that reports what it sees, one `key=value` per line.
const ECHO_APP: &str = r#"
import os, sys
def application(environ, start_response):
    keys = ['SCRIPT_NAME', 'PATH_INFO', 'REQUEST_URI', 'QUERY_STRING', 'REQUEST_METHOD',
            'mod_wsgi.application_group', 'mod_wsgi.request_id', 'wsgi.url_scheme']
    lines = ['%s=%s' % (k, environ.get(k)) for k in keys]
    lines.append('pid=%d' % os.getpid())
    lines.append('name=%s' % __name__)
    body = ('\n'.join(lines) + '\n').encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
"#;

/// The `key=value` lines of a response body.
fn field(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {body:?}"))
        .to_owned()
}

#[test]
fn root_and_sub_path_mounts_split_script_name_and_path_info() {
    let server = ServerBuilder::new()
        .file("app.wsgi", ECHO_APP)
        .config(
            "WSGIScriptAlias /sub ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias / ${TEST_DIR}/app.wsgi",
        )
        .start();
    let cases = [
        ("/", "", "/"),
        ("/a/b", "", "/a/b"),
        ("/sub", "/sub", ""),
        ("/sub/", "/sub", "/"),
        ("/sub/x/y", "/sub", "/x/y"),
        ("/subway", "", "/subway"),
    ];
    for (path, script_name, path_info) in cases {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}");
        let body = r.text();
        assert_eq!(field(&body, "SCRIPT_NAME"), script_name, "{path}");
        assert_eq!(field(&body, "PATH_INFO"), path_info, "{path}");
        assert_eq!(field(&body, "REQUEST_URI"), path, "{path}");
        assert!(field(&body, "name").starts_with("_mod_wsgi_"), "{body}");
    }
    let r = server.get("/sub/q?x=1&y=%20");
    assert_eq!(field(&r.text(), "QUERY_STRING"), "x=1&y=%20");
    // Two mounts of one script are two application groups (%{RESOURCE}).
    let root_group = field(&server.get("/").text(), "mod_wsgi.application_group");
    let sub_group = field(&server.get("/sub").text(), "mod_wsgi.application_group");
    assert_eq!(root_group, format!("127.0.0.1:{}|", server.port()));
    assert_eq!(sub_group, format!("127.0.0.1:{}|/sub", server.port()));
}

#[test]
fn script_alias_match_substitutes_and_mounts_the_match() {
    let server = ServerBuilder::new()
        .file("apps/one.wsgi", ECHO_APP)
        .file(
            "apps/two.wsgi",
            ECHO_APP.replace("keys = [", "keys = ['X_TWO', "),
        )
        .config("WSGIScriptAliasMatch ^/apps/([^/]+) ${TEST_DIR}/apps/$1.wsgi")
        .allow_log("WSGI0020: target WSGI script not found")
        .start();
    let body = server.get("/apps/one/more/path").text();
    assert_eq!(field(&body, "SCRIPT_NAME"), "/apps/one");
    assert_eq!(field(&body, "PATH_INFO"), "/more/path");
    let body = server.get("/apps/two").text();
    assert_eq!(field(&body, "X_TWO"), "None");
    assert_eq!(server.get("/apps/three").status, 404);
    server.stop();
}

#[test]
fn add_handler_serves_wsgi_files_only_with_exec_cgi() {
    let server = ServerBuilder::new()
        .file("cgi/app.wsgi", ECHO_APP)
        .file("plain/app.wsgi", ECHO_APP)
        .config(
            "Alias /cgi ${TEST_DIR}/cgi\n\
             Alias /plain ${TEST_DIR}/plain\n\
             AddHandler wsgi-script .wsgi\n\
             <Directory ${TEST_DIR}/cgi>\n  Options +ExecCGI\n</Directory>\n\
             <Directory ${TEST_DIR}/plain>\n  Options -ExecCGI\n</Directory>",
        )
        .allow_log("WSGI0022: Options ExecCGI is off")
        .allow_log("WSGI0020: target WSGI script not found")
        .start();
    let r = server.get("/cgi/app.wsgi/extra");
    assert_eq!(r.status, 200);
    assert_eq!(field(&r.text(), "SCRIPT_NAME"), "/cgi/app.wsgi");
    assert_eq!(field(&r.text(), "PATH_INFO"), "/extra");
    assert_eq!(server.get("/plain/app.wsgi").status, 403);
    assert!(
        server
            .error_log()
            .contains("Options ExecCGI is off in this directory")
    );
    assert_eq!(server.get("/cgi/missing.wsgi").status, 404);
}

#[test]
fn callable_object_directive_and_option() {
    let app = "def application(e, s):\n    s('200 OK', [])\n    return [b'default']\n\
               def other(e, s):\n    s('200 OK', [])\n    return [b'other']\n\
               def third(e, s):\n    s('200 OK', [])\n    return [b'third']\n";
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(
            "WSGIScriptAlias /default ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /other ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /third ${TEST_DIR}/app.wsgi callable-object=third\n\
             WSGIScriptAlias /missing ${TEST_DIR}/app.wsgi callable-object=nothing\n\
             <Location /other>\n  WSGICallableObject other\n</Location>",
        )
        .allow_log("does not contain WSGI application 'nothing'")
        .start();
    assert_eq!(server.get("/default").text(), "default");
    assert_eq!(server.get("/other").text(), "other");
    assert_eq!(server.get("/third").text(), "third");
    assert_eq!(server.get("/missing").status, 404);
    assert!(
        server
            .error_log()
            .contains("does not contain WSGI application 'nothing'")
    );
}

#[test]
fn flask_app_in_a_virtualenv_through_python_home() {
    let venv = support::python_venv(&["flask"]);
    let app = r#"
import sys, flask
application = flask.Flask(__name__)

@application.route('/')
def index():
    return 'prefix=%s flask=%s' % (sys.prefix, flask.__name__)

@application.route('/json/<name>')
def json(name):
    return flask.jsonify(hello=name, args=dict(flask.request.args))

@application.route('/echo', methods=['POST'])
def echo():
    return flask.request.get_data()
"#;
    let server = ServerBuilder::new()
        .file("flask.wsgi", app)
        .config(&format!(
            "WSGIPythonHome {}\nWSGIScriptAlias /flask ${{TEST_DIR}}/flask.wsgi",
            venv.display()
        ))
        .start();
    let r = server.get("/flask/");
    assert_eq!(r.status, 200, "{}", server.error_log());
    assert_eq!(r.text(), format!("prefix={} flask=flask", venv.display()));
    let r = server.get("/flask/json/world?a=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.text().replace([' ', '\n'], ""),
        r#"{"args":{"a":"1"},"hello":"world"}"#
    );
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = server.request("POST", "/flask/echo", &[], &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    assert_eq!(server.get("/flask/nope").status, 404);
    server.stop();
}

#[test]
fn python_path_optimize_and_bytecode_directives() {
    let app = r#"
import sys, helper_mod
def application(environ, start_response):
    body = 'helper=%s first=%s optimize=%d nobytecode=%s argv=%s' % (
        helper_mod.VALUE, sys.path[0], sys.flags.optimize, sys.dont_write_bytecode, sys.argv)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .file("lib/helper_mod.py", "VALUE = 'from-lib'\n")
        .config(
            "WSGIPythonPath ${TEST_DIR}/lib\n\
             WSGIPythonOptimize 2\n\
             WSGIDontWriteBytecode On\n\
             WSGIScriptAlias / ${TEST_DIR}/app.wsgi",
        )
        .start();
    let body = server.get("/").text();
    let lib = server.dir().join("lib");
    assert_eq!(
        body,
        format!(
            "helper=from-lib first={} optimize=2 nobytecode=True argv=['mod_wsgi']",
            lib.display()
        )
    );
    assert!(!lib.join("__pycache__").exists(), "bytecode was written");
}

const STREAMS_APP: &str = r#"
import sys, signal
def handler(signum, frame):
    pass
def application(environ, start_response):
    out = []
    for name in ('stdout', 'stdin'):
        try:
            stream = getattr(sys, name)
            if name == 'stdout':
                stream.write('written to stdout marker-out\n')
                stream.flush()
            else:
                stream.read
            out.append('%s=ok' % name)
        except OSError as e:
            out.append('%s=%s' % (name, e))
    try:
        signal.signal(signal.SIGUSR1, handler)
        out.append('installed=%s' % (signal.getsignal(signal.SIGUSR1) is handler))
    except ValueError as e:
        out.append('signal=%s' % e)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(out).encode()]
"#;

#[test]
fn restrict_directives_on() {
    let server = ServerBuilder::new()
        .file("app.wsgi", STREAMS_APP)
        .config(
            "WSGIRestrictStdout On\nWSGIRestrictStdin On\nWSGIRestrictSignal On\n\
             WSGIScriptAlias / ${TEST_DIR}/app.wsgi",
        )
        .allow_log("signal.signal(")
        .allow_log("File \"")
        .allow_log("signal.signal(signal.SIGUSR1, handler)")
        .start();
    let body = server.get("/").text();
    assert!(
        body.contains("stdout=sys.stdout access restricted by mod_wsgi"),
        "{body}"
    );
    assert!(
        body.contains("stdin=sys.stdin access restricted by mod_wsgi"),
        "{body}"
    );
    assert!(body.contains("installed=False"), "{body}");
    assert!(
        server
            .error_log()
            .contains("ignored: the Apache process owns its signals")
    );
}

#[test]
fn restrict_directives_off() {
    let server = ServerBuilder::new()
        .file("app.wsgi", STREAMS_APP)
        .config("WSGIRestrictSignal Off\nWSGIScriptAlias / ${TEST_DIR}/app.wsgi")
        .allow_log("marker-out")
        .start();
    let body = server.get("/").text();
    assert!(body.contains("stdout=ok"), "{body}");
    // Not intercepted: Python's own signal.signal, which refuses non-main threads.
    assert!(
        body.contains("signal=signal only works in main thread"),
        "{body}"
    );
    assert!(server.wait_for_log("written to stdout marker-out", Duration::from_secs(5)));
}

#[test]
fn failing_application_gives_500_with_traceback_and_the_child_keeps_serving() {
    let app = r#"
import os
def application(environ, start_response):
    if environ['PATH_INFO'] == '/fail':
        raise ValueError('boom-1234')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
"#;
    let server = ServerBuilder::new()
        .mpm(Mpm::Prefork)
        .file("app.wsgi", app)
        .file("broken.wsgi", "def application(:\n")
        .config(
            "WSGIScriptAlias /broken ${TEST_DIR}/broken.wsgi\n\
             WSGIScriptAlias / ${TEST_DIR}/app.wsgi",
        )
        .allow_log("WSGI0010")
        .allow_log("Traceback (most recent call last)")
        .allow_log(r"^\[[^\]]*\] \[wsgi:error\] .*\[request [^\]]+\]   ")
        .allow_log("ValueError: boom-1234")
        .allow_log("SyntaxError")
        .allow_log("def application(:")
        .allow_log(r"\^")
        .start();
    let pid_before = server.get("/ok").text();
    for _ in 0..5 {
        let r = server.get("/fail");
        assert_eq!(r.status, 500);
    }
    assert_eq!(server.get("/broken").status, 500);
    let log = server.error_log();
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(log.contains("ValueError: boom-1234"), "{log}");
    assert!(log.contains("SyntaxError"), "{log}");
    assert!(log.contains("raised while processing WSGI script"), "{log}");
    // Prefork with one busy child at a time: the same processes keep serving.
    let pids: Vec<String> = (0..10).map(|_| server.get("/ok").text()).collect();
    assert!(pids.iter().all(|p| p.parse::<u32>().is_ok()), "{pids:?}");
    assert!(!log.contains("AH00052"), "a child crashed: {log}");
    assert!(pids.contains(&pid_before) || pids.len() == 10);
}

#[test]
fn gil_is_released_while_apache_writes_to_a_slow_client() {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    if environ['PATH_INFO'] == '/big':
        block = b'x' * 65536
        return (block for _ in range(1600))   # 100 MiB, far more than socket buffers hold
    return [b'fast']
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIApplicationGroup %{GLOBAL}\nWSGIScriptAlias / ${TEST_DIR}/app.wsgi")
        .start();
    // A client that asks for the big response and never reads it: Apache blocks in write.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    slow.write_all(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1];
    slow.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile, other requests in the same interpreter are served promptly.
    for _ in 0..5 {
        let started = Instant::now();
        let r = server.get("/fast");
        assert_eq!(r.text(), "fast");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a request waited for the GIL"
        );
    }
    drop(slow);
}

#[test]
fn stop_is_prompt_after_requests_and_runs_atexit() {
    let app = r#"
import atexit, os, sys
def at_exit():
    sys.stderr.write('atexit ran in %d\n' % os.getpid())
atexit.register(at_exit)
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
"#;
    for mpm in [Mpm::Event, Mpm::Worker, Mpm::Prefork] {
        let server = ServerBuilder::new()
            .mpm(mpm)
            .file("app.wsgi", app)
            .config("WSGIScriptAlias / ${TEST_DIR}/app.wsgi")
            .allow_log("atexit ran in")
            .start();
        let pids: Vec<String> = (0..5).map(|_| server.get("/").text()).collect();
        let stopped = server.stop();
        assert!(!stopped.killed);
        assert!(
            stopped.elapsed < Duration::from_secs(3),
            "{mpm:?}: {:?}",
            stopped.elapsed
        );
        assert!(
            !stopped.error_log.contains("AH00045"),
            "{}",
            stopped.error_log
        );
        assert!(
            stopped.error_log.contains("Python finalised"),
            "{}",
            stopped.error_log
        );
        for pid in &pids {
            let line = format!("atexit ran in {pid}");
            assert!(stopped.error_log.contains(&line), "{mpm:?}: no '{line}'");
        }
    }
}

#[test]
fn log_lines_carry_the_request_id_and_follow_log_level() {
    let app = r#"
def application(environ, start_response):
    environ['wsgi.errors'].write('errors-line\n')
    print('stdout-line')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [environ['mod_wsgi.request_id'].encode()]
"#;
    let server = ServerBuilder::new()
        .log_level("warn wsgi:info")
        .file("app.wsgi", app)
        .config("WSGIScriptAlias / ${TEST_DIR}/app.wsgi")
        .allow_log("errors-line")
        .allow_log("stdout-line")
        .start();
    let id = server.get("/").text();
    assert!(!id.is_empty());
    let log = server.error_log();
    let tagged = format!("[request {id}]");
    let created = log
        .lines()
        .find(|l| l.contains("creating sub-interpreter"))
        .unwrap_or_default();
    assert!(created.contains("[request "), "{log}");
    // (The harness's readiness probe ran the app too, under another id.)
    for needle in ["errors-line", "stdout-line"] {
        let line = log
            .lines()
            .find(|l| l.contains(needle) && l.contains(&tagged));
        let line = line.unwrap_or_else(|| panic!("no {needle} line with {tagged}: {log}"));
        assert!(line.contains("[wsgi:error]"), "{line}");
    }
    server.stop();

    let quiet = ServerBuilder::new()
        .log_level("warn wsgi:warn")
        .file("app.wsgi", app)
        .config("WSGIScriptAlias / ${TEST_DIR}/app.wsgi")
        .allow_log("errors-line")
        .allow_log("stdout-line")
        .start();
    assert_eq!(quiet.get("/").status, 200);
    let log = quiet.error_log();
    assert!(!log.contains("creating sub-interpreter"), "{log}");
    assert!(log.contains("errors-line"), "{log}");
}

#[test]
fn request_threads_are_not_the_main_thread_in_sub_interpreters() {
    let app = r#"
import threading, signal
def application(environ, start_response):
    is_main = threading.current_thread() is threading.main_thread()
    if is_main:
        signal.set_wakeup_fd(-1)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('main=%s' % is_main).encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIScriptAlias / ${TEST_DIR}/app.wsgi")
        .start();
    for _ in 0..5 {
        assert_eq!(server.get("/").text(), "main=False");
    }
}

#[test]
fn alias_inside_a_root_mount_serves_static_files() {
    let server = ServerBuilder::new()
        .file("app.wsgi", ECHO_APP)
        .file("static/style.css", "body {}\n")
        .config(
            "Alias /static/ ${TEST_DIR}/static/\n\
             WSGIScriptAlias / ${TEST_DIR}/app.wsgi",
        )
        .start();
    assert_eq!(server.get("/static/style.css").text(), "body {}\n");
    assert_eq!(field(&server.get("/other").text(), "PATH_INFO"), "/other");
}

#[test]
fn head_with_content_length_and_no_body_is_answered_normally() {
    let app = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '11')])
    if environ['REQUEST_METHOD'] == 'HEAD':
        return []
    return [b'hello world']
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIScriptAlias /h ${TEST_DIR}/app.wsgi")
        .start();
    let r = server.request("HEAD", "/h", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(server.get("/h").text(), "hello world");
    assert!(!server.error_log().contains("WSGI0013"));
}

#[test]
fn unknown_process_group_fails_the_request_instead_of_running_embedded() {
    let server = ServerBuilder::new()
        .file("app.wsgi", ECHO_APP)
        .config("WSGIScriptAlias /d ${TEST_DIR}/app.wsgi process-group=nowhere")
        .allow_log("WSGI0025")
        .start();
    assert_eq!(server.get("/d").status, 500);
    assert!(
        server
            .error_log()
            .contains("no WSGI daemon process called 'nowhere'")
    );
}

#[test]
fn request_handler_and_request_start_describe_the_request() {
    let app = r#"
import time
def application(environ, start_response):
    age = time.time() - environ['mod_wsgi.request_start']
    body = '%s %s' % (environ['mod_wsgi.request_handler'], 0 <= age < 5)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = ServerBuilder::new()
        .file("h/app.py", app)
        .config(
            "Alias /h ${TEST_DIR}/h\n\
             <Directory ${TEST_DIR}/h>\n  Options +ExecCGI\n  \
               AddHandler application/x-httpd-wsgi .py\n</Directory>",
        )
        .start();
    assert_eq!(
        server.get("/h/app.py").text(),
        "application/x-httpd-wsgi True"
    );
}

#[test]
fn application_threads_do_not_break_the_child_exit() {
    let app = r#"
import atexit, sys, threading, time
def tick():
    while True:
        time.sleep(0.05)
threading.Thread(target=tick, daemon=True).start()
atexit.register(lambda: sys.stderr.write('threads app atexit ran\n'))
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIScriptAlias /t ${TEST_DIR}/app.wsgi")
        .allow_log("threads app atexit ran")
        .start();
    assert_eq!(server.get("/t").text(), "ok");
    let stopped = server.stop();
    assert!(!stopped.killed);
    assert!(
        stopped.elapsed < Duration::from_secs(3),
        "{:?}",
        stopped.elapsed
    );
    assert!(
        !stopped.error_log.contains("Fatal Python error"),
        "{}",
        stopped.error_log
    );
    assert!(
        !stopped.error_log.contains("AH00052"),
        "{}",
        stopped.error_log
    );
    assert!(
        stopped.error_log.contains("threads app atexit ran"),
        "{}",
        stopped.error_log
    );
    assert!(
        stopped
            .error_log
            .contains("thread(s) running; not ending it"),
        "{}",
        stopped.error_log
    );
}

#[test]
fn byte_ranges_apply_to_file_wrapper_responses() {
    let app = r#"
import os
def application(environ, start_response):
    path = os.path.join(os.path.dirname(__file__), 'data.bin')
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    return environ['wsgi.file_wrapper'](open(path, 'rb'))
"#;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .file("data.bin", &data)
        .config("WSGIScriptAlias /f ${TEST_DIR}/app.wsgi")
        .start();
    let whole = server.get("/f");
    assert_eq!(whole.body, data);
    let part = server.request("GET", "/f", &[("Range", "bytes=100-199")], b"");
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/100000"));
    assert_eq!(part.body, &data[100..200]);
}

#[test]
fn a_virtualenv_of_another_python_version_is_reported() {
    // A fake environment that claims another Python: the module warns (and Python still
    // starts, from the system prefix the environment points to).
    let server = ServerBuilder::new()
        .file("venv/pyvenv.cfg", "home = /usr/bin\nversion = 3.12.1\n")
        .file("venv/bin/python", "")
        .file("app.wsgi", ECHO_APP)
        .config("WSGIPythonHome ${TEST_DIR}/venv\nWSGIScriptAlias /a ${TEST_DIR}/app.wsgi")
        .allow_log("WSGI0008")
        .start();
    assert!(server.wait_for_log("was made with Python 3.12.1", Duration::from_secs(5)));
}
