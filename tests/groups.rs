//! Application groups (issue #4): one interpreter per group, thread states per thread and
//! interpreter, script loading and reloading, preloading, shutdown, and a concurrency run.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{Mpm, ServerBuilder};

/// Reports the group, the interpreter id (0: main), whether the PyGILState API agrees with the
/// thread state in use, a per-interpreter call counter and a per-thread one.
const PROBE_APP: &str = r#"
import ctypes, threading, os
import _xxsubinterpreters as _interp
api = ctypes.pythonapi
api.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
api.PyThreadState_Get.restype = ctypes.c_void_p
lock = threading.Lock()
calls = {'n': 0}
local = threading.local()

def application(environ, start_response):
    with lock:
        calls['n'] += 1
        n = calls['n']
    local.n = getattr(local, 'n', 0) + 1
    gil_ok = api.PyGILState_GetThisThreadState() == api.PyThreadState_Get()
    import mod_wsgi
    body = ('group=%s\nid=%d\ngilstate=%s\ncalls=%d\nthread_calls=%d\npid=%d\nmod_group=%s' % (
        environ['mod_wsgi.application_group'], int(_interp.get_current()), gil_ok, n, local.n,
        os.getpid(), mod_wsgi.application_group))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.lines()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
}

#[test]
fn group_expansions_choose_the_interpreter() {
    let server = ServerBuilder::new()
        .file("app.wsgi", PROBE_APP)
        .file("d/app.wsgi", PROBE_APP)
        .config(
            "WSGIScriptAlias /global ${TEST_DIR}/app.wsgi application-group=%{GLOBAL}\n\
             WSGIScriptAlias /server ${TEST_DIR}/app.wsgi application-group=%{SERVER}\n\
             WSGIScriptAlias /host ${TEST_DIR}/app.wsgi application-group=%{HOST}\n\
             WSGIScriptAlias /resource ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /env ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /literal ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /dir ${TEST_DIR}/d/app.wsgi\n\
             <Location /env>\n  SetEnv GROUP_NAME from-env\n  \
               WSGIApplicationGroup %{ENV:GROUP_NAME}\n</Location>\n\
             <Location /literal>\n  WSGIApplicationGroup my-group\n</Location>\n\
             <Directory ${TEST_DIR}/d>\n  WSGIApplicationGroup dir-group\n</Directory>",
        )
        .start();
    let port = server.port();
    let cases = [
        ("/global", String::new()),
        ("/server", format!("127.0.0.1:{port}")),
        ("/host", format!("127.0.0.1:{port}")),
        ("/resource", format!("127.0.0.1:{port}|/resource")),
        ("/env", "from-env".to_owned()),
        ("/literal", "my-group".to_owned()),
        ("/dir", "dir-group".to_owned()),
    ];
    for (path, group) in &cases {
        let body = server.get(path).text();
        assert_eq!(field(&body, "group"), group, "{path}: {body}");
        assert_eq!(field(&body, "mod_group"), group, "{path}: {body}");
        let main = field(&body, "id") == "0";
        assert_eq!(main, group.is_empty(), "{path}: {body}");
        assert_eq!(
            field(&body, "gilstate"),
            if main { "True" } else { "False" },
            "{body}"
        );
    }
    // The Host header picks %{HOST}'s interpreter.
    let r = server.request("GET", "/host", &[("Host", "other.example:99")], b"");
    assert_eq!(field(&r.text(), "group"), format!("other.example:{port}"));
}

#[test]
fn two_virtual_hosts_serving_one_script_get_two_interpreters() {
    let server = ServerBuilder::new()
        .file("app.wsgi", PROBE_APP)
        .config(
            "<VirtualHost 127.0.0.1:${TEST_PORT}>\n  ServerName a.test\n  \
               WSGIScriptAlias /app ${TEST_DIR}/app.wsgi\n</VirtualHost>\n\
             <VirtualHost 127.0.0.1:${TEST_PORT}>\n  ServerName b.test\n  \
               WSGIScriptAlias /app ${TEST_DIR}/app.wsgi\n</VirtualHost>\n\
             <VirtualHost 127.0.0.1:${TEST_PORT}>\n  ServerName c.test\n  \
               WSGIApplicationGroup vhost-wide\n  \
               WSGIScriptAlias /app ${TEST_DIR}/app.wsgi\n</VirtualHost>",
        )
        .start();
    let get = |host: &str| server.request("GET", "/app", &[("Host", host)], b"").text();
    let a1 = get("a.test");
    let b1 = get("b.test");
    let a2 = get("a.test");
    assert_eq!(
        field(&a1, "group"),
        format!("a.test:{}|/app", server.port())
    );
    assert_eq!(
        field(&b1, "group"),
        format!("b.test:{}|/app", server.port())
    );
    assert_ne!(field(&a1, "id"), field(&b1, "id"));
    assert_eq!(field(&a1, "calls"), "1");
    assert_eq!(field(&b1, "calls"), "1");
    assert_eq!(field(&a2, "calls"), "2");
    // WSGIApplicationGroup in virtual-host context.
    assert_eq!(field(&get("c.test"), "group"), "vhost-wide");
}

#[test]
fn global_after_a_preloaded_named_group_on_the_same_thread() {
    // Prefork: one thread per process, and the preload runs on it (case 023, embedded).
    let server = ServerBuilder::new()
        .mpm(Mpm::Prefork)
        .file("app.wsgi", PROBE_APP)
        .config(
            "WSGIImportScript ${TEST_DIR}/app.wsgi process-group=%{GLOBAL} application-group=shop\n\
             WSGIScriptAlias /shop ${TEST_DIR}/app.wsgi application-group=shop\n\
             WSGIScriptAlias /global ${TEST_DIR}/app.wsgi application-group=%{GLOBAL}",
        )
        .start();
    for path in ["/shop", "/global", "/global", "/shop", "/global"] {
        let body = server.get(path).text();
        if path == "/global" {
            assert_eq!(field(&body, "group"), "", "{body}");
            assert_eq!(field(&body, "id"), "0", "{body}");
            assert_eq!(field(&body, "gilstate"), "True", "{body}");
        } else {
            assert_eq!(field(&body, "group"), "shop", "{body}");
            assert_ne!(field(&body, "id"), "0", "{body}");
        }
    }
}

#[test]
fn thread_local_data_persists_per_thread_and_interpreter() {
    let server = ServerBuilder::new()
        .mpm(Mpm::Prefork)
        .file("app.wsgi", PROBE_APP)
        .config("WSGIScriptAlias /a ${TEST_DIR}/app.wsgi application-group=a")
        .start();
    // Per process: thread_calls counts this thread's requests in this interpreter; with one
    // thread per process, it equals the per-interpreter count.
    for _ in 0..10 {
        let body = server.get("/a").text();
        assert_eq!(
            field(&body, "thread_calls"),
            field(&body, "calls"),
            "{body}"
        );
    }
}

#[test]
fn extension_modules_and_codecs_work_in_every_interpreter() {
    let app = r#"
import json, decimal, sqlite3, ssl, ctypes, codecs, hashlib, datetime
def application(environ, start_response):
    out = [
        json.dumps({'a': decimal.Decimal('1.5').as_integer_ratio()}),
        str(sqlite3.connect(':memory:').execute('select 40 + 2').fetchone()[0]),
        str(ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED),
        str(ctypes.sizeof(ctypes.c_int)),
        'caf\u00e9'.encode('latin-1').decode('latin-1'),
        codecs.lookup('idna').name,
        hashlib.sha256(b'x').hexdigest()[:8],
    ]
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8')])
    return [' '.join(out).encode('utf-8')]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(
            "WSGIScriptAlias /one ${TEST_DIR}/app.wsgi application-group=one\n\
             WSGIScriptAlias /two ${TEST_DIR}/app.wsgi application-group=two\n\
             WSGIScriptAlias /main ${TEST_DIR}/app.wsgi application-group=%{GLOBAL}",
        )
        .start();
    for path in ["/one", "/two", "/main", "/one"] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}: {}", server.error_log());
        assert_eq!(
            r.text(),
            "{\"a\": [3, 2]} 42 True 4 café idna 2d711642",
            "{path}"
        );
    }
}

#[test]
fn numpy_runs_in_the_main_interpreter() {
    let venv = support::python_venv(&["numpy"]);
    let app = r#"
import numpy
def application(environ, start_response):
    a = numpy.arange(12).reshape(3, 4)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(int(a.sum())).encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(&format!(
            "WSGIPythonHome {}\nWSGIApplicationGroup %{{GLOBAL}}\n\
             WSGIScriptAlias /np ${{TEST_DIR}}/app.wsgi",
            venv.display()
        ))
        .start();
    for _ in 0..3 {
        assert_eq!(server.get("/np").text(), "66");
    }
}

#[test]
fn scripts_load_once_per_interpreter_under_concurrent_first_requests() {
    let app = r#"
import sys, os, time, hashlib
sys.stderr.write('loading %s in %d\n' % (__name__, os.getpid()))
time.sleep(0.3)
def application(environ, start_response):
    expected = '_mod_wsgi_' + hashlib.md5(__file__.encode()).hexdigest()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('%s %s' % (__name__ == expected, __name__)).encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIScriptAlias /once ${TEST_DIR}/app.wsgi application-group=once")
        .allow_log("loading _mod_wsgi_")
        .start();
    let bodies: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| s.spawn(|| server.get("/once").text()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        bodies.iter().all(|b| b.starts_with("True _mod_wsgi_")),
        "{bodies:?}"
    );
    let loads = server.error_log().matches("loading _mod_wsgi_").count();
    assert_eq!(loads, 1, "{}", server.error_log());
}

#[test]
fn scripts_reload_on_change_and_on_reload_required() {
    let app = |version: &str| {
        format!(
            r#"
import os
here = os.path.dirname(__file__)
def flag():
    try:
        with open(os.path.join(here, 'writable', 'generation')) as f:
            return f.read()
    except OSError:
        return ''
seen = flag()
def reload_required(path):
    if os.path.exists(os.path.join(here, 'writable', 'raise')):
        raise RuntimeError('reload check failed on purpose')
    return flag() != seen
loaded = {{'n': 0}}
def application(environ, start_response):
    loaded['n'] += 1
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('{version} %d' % loaded['n']).encode()]
"#
        )
    };
    let server = ServerBuilder::new()
        .file("app.wsgi", app("v1"))
        .file("fixed.wsgi", app("fixed"))
        .config(
            "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi\n\
             WSGIScriptAlias /fixed ${TEST_DIR}/fixed.wsgi\n\
             <Location /fixed>\n  WSGIScriptReloading Off\n</Location>",
        )
        .allow_log("reload check failed on purpose")
        .allow_log("reload_required")
        .allow_log("Traceback")
        .allow_log(r"^\[[^\]]*\] \[wsgi:error\] .*\[request [^\]]+\]   ")
        .start();
    let dir = server.dir().to_path_buf();
    assert_eq!(server.get("/app").text(), "v1 1");
    assert_eq!(server.get("/app").text(), "v1 2");

    // An edited file (new mtime) is loaded again.
    std::fs::write(dir.join("app.wsgi"), app("v2")).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(dir.join("app.wsgi"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(server.get("/app").text(), "v2 1");
    assert_eq!(server.get("/app").text(), "v2 2");

    // reload_required(path) returning True reloads once.
    std::fs::write(dir.join("writable/generation"), b"2").unwrap();
    assert_eq!(server.get("/app").text(), "v2 1");
    assert_eq!(server.get("/app").text(), "v2 2");

    // An exception in reload_required is logged and does not reload.
    std::fs::write(dir.join("writable/raise"), b"").unwrap();
    assert_eq!(server.get("/app").text(), "v2 3");
    assert!(
        server
            .error_log()
            .contains("reload check failed on purpose")
    );
    std::fs::remove_file(dir.join("writable/raise")).unwrap();

    // WSGIScriptReloading Off: edits are not picked up.
    assert_eq!(server.get("/fixed").text(), "fixed 1");
    std::fs::write(dir.join("fixed.wsgi"), app("changed")).unwrap();
    assert_eq!(server.get("/fixed").text(), "fixed 2");
}

#[test]
fn import_script_preloads_at_child_start() {
    let app = r#"
import sys, os
sys.stderr.write('preloaded in %d\n' % os.getpid())
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
"#;
    let server = ServerBuilder::new()
        .log_level("warn wsgi:debug")
        .file("app.wsgi", app)
        .config(
            "WSGIImportScript ${TEST_DIR}/app.wsgi process-group=%{GLOBAL} \
             application-group=early\n\
             WSGIScriptAlias /early ${TEST_DIR}/app.wsgi application-group=early",
        )
        .allow_log("preloaded in")
        .start();
    assert!(server.wait_for_log("preloaded in", Duration::from_secs(5)));
    // The readiness probe did not touch /early; the script was loaded before any request there,
    // and serving it does not load it again.
    assert_eq!(server.get("/early").text(), "ok");
    assert_eq!(server.get("/early").text(), "ok");
    assert_eq!(server.error_log().matches("preloaded in").count(), 1);
}

#[test]
fn a_script_alias_naming_both_groups_preloads_at_child_start() {
    let app = r#"
import sys, os
sys.stderr.write('alias preloaded in %d\n' % os.getpid())
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .file("lazy.wsgi", app.replace("alias preloaded", "lazy loaded"))
        .config(
            "WSGIScriptAlias /early ${TEST_DIR}/app.wsgi process-group=%{GLOBAL} \
             application-group=early\n\
             WSGIScriptAlias /lazy ${TEST_DIR}/lazy.wsgi application-group=early",
        )
        .allow_log("alias preloaded in")
        .allow_log("lazy loaded in")
        .start();
    assert!(server.wait_for_log("alias preloaded in", Duration::from_secs(5)));
    assert!(!server.error_log().contains("lazy loaded in"));
    assert_eq!(server.get("/early").text(), "ok");
    assert_eq!(server.get("/early").text(), "ok");
    assert_eq!(server.error_log().matches("alias preloaded in").count(), 1);
    assert_eq!(server.get("/lazy").text(), "ok");
    assert!(server.error_log().contains("lazy loaded in"));
}

#[test]
fn mod_wsgi_module_describes_the_process() {
    let app = r#"
import mod_wsgi, apache
def application(environ, start_response):
    body = '%r %r %r %d %d %r' % (mod_wsgi.version, mod_wsgi.process_group,
        mod_wsgi.application_group, mod_wsgi.maximum_processes, mod_wsgi.threads_per_process,
        apache.version[:2])
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIScriptAlias /m ${TEST_DIR}/app.wsgi application-group=named")
        .start();
    // The harness's event MPM: one child of 16 threads.
    assert_eq!(server.get("/m").text(), "(5, 0, 0) '' 'named' 1 16 (2, 4)");
}

#[test]
fn destroy_interpreter_off_skips_teardown() {
    let app = r#"
import atexit, sys
atexit.register(lambda: sys.stderr.write('atexit ran\n'))
def application(environ, start_response):
    start_response('200 OK', [])
    return [b'ok']
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config("WSGIDestroyInterpreter Off\nWSGIScriptAlias /a ${TEST_DIR}/app.wsgi")
        .start();
    assert_eq!(server.get("/a").text(), "ok");
    let stopped = server.stop();
    assert!(stopped.elapsed < Duration::from_secs(3));
    assert!(
        stopped.error_log.contains("WSGIDestroyInterpreter Off"),
        "{}",
        stopped.error_log
    );
    assert!(!stopped.error_log.contains("atexit ran"));
    assert!(!stopped.error_log.contains("Python finalised"));
}

#[test]
fn three_groups_sixteen_threads_thirty_thousand_requests() {
    let app = r#"
import threading
lock = threading.Lock()
count = {'n': 0}
def application(environ, start_response):
    if environ['PATH_INFO'] == '/count':
        body = str(count['n'])
    else:
        with lock:
            count['n'] += 1
        body = 'ok'
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(
            "ThreadsPerChild 24\nMaxRequestWorkers 24\nMaxSpareThreads 24\n\
             KeepAlive On\nMaxKeepAliveRequests 0\nKeepAliveTimeout 120\n\
             WSGIScriptAlias /g1 ${TEST_DIR}/app.wsgi application-group=g1\n\
             WSGIScriptAlias /g2 ${TEST_DIR}/app.wsgi application-group=g2\n\
             WSGIScriptAlias /g3 ${TEST_DIR}/app.wsgi application-group=%{GLOBAL}",
        )
        .start();
    const TOTAL: usize = 30_000;
    const CLIENTS: usize = 16;
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let first_failure = std::sync::Mutex::new(None::<String>);
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                // Keep-alive connections that the server never closes (see the config: more
                // threads than clients, no request limit), so no request is lost to a connection
                // closed under it.
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        break;
                    }
                    let url = server.url(&format!("/g{}", i % 3 + 1));
                    let outcome = agent
                        .get(&url)
                        .call()
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| r.body_mut().read_to_string().map_err(|e| e.to_string()));
                    if outcome.as_deref() != Ok("ok") {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_failure
                            .lock()
                            .unwrap()
                            .get_or_insert(format!("{outcome:?}"));
                    }
                }
            });
        }
    });
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "first: {:?}",
        first_failure.lock()
    );
    for g in 1..=3 {
        let count: usize = server.get(&format!("/g{g}/count")).text().parse().unwrap();
        // The harness's readiness probe does not touch these mounts.
        assert_eq!(count, TOTAL / 3, "group {g}");
    }
}
