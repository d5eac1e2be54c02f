//! Daemon mode (issue #5): WSGIDaemonProcess groups forked and supervised by the Apache parent,
//! reached over a Unix socket; the same WSGI behaviour as embedded mode; crash recovery.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use support::ServerBuilder;

const APP: &str = r#"
import os, sys
def application(environ, start_response):
    if environ['PATH_INFO'] == '/crash':
        import ctypes
        ctypes.string_at(0)          # a segmentation fault in the daemon
    if environ['PATH_INFO'] == '/fail':
        raise ValueError('daemon boom')
    body = environ['wsgi.input'].read()
    import mod_wsgi
    out = '\n'.join([
        'module_process_group=%s' % mod_wsgi.process_group,
        'pid=%d' % os.getpid(),
        'uid=%d' % os.getuid(),
        'process_group=%s' % environ['mod_wsgi.process_group'],
        'application_group=%s' % environ['mod_wsgi.application_group'],
        'script_name=%s' % environ['SCRIPT_NAME'],
        'path_info=%s' % environ['PATH_INFO'],
        'method=%s' % environ['REQUEST_METHOD'],
        'multithread=%s' % environ['wsgi.multithread'],
        'multiprocess=%s' % environ['wsgi.multiprocess'],
        'body=%d' % len(body),
        'request_id=%s' % environ['mod_wsgi.request_id'],
    ])
    environ['wsgi.errors'].write('daemon request %s\n' % environ['mod_wsgi.request_id'])
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Set-Cookie', 'a=1'), ('Set-Cookie', 'b=2'),
                              ('WWW-Authenticate', 'Basic realm="x"'),
                              ('WWW-Authenticate', 'Bearer')])
    return [out.encode()]
"#;

fn field(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {body:?}"))
        .to_owned()
}

fn daemon_server(extra: &str) -> ServerBuilder {
    ServerBuilder::new()
        .file("app.wsgi", APP)
        .config(&format!(
            "WSGIDaemonProcess site processes=2 threads=3\n\
             WSGIScriptAlias /d ${{TEST_DIR}}/app.wsgi process-group=site\n\
             WSGIScriptAlias /e ${{TEST_DIR}}/app.wsgi\n\
             {extra}"
        ))
        .allow_log("daemon request")
}

#[test]
fn requests_run_in_the_daemon_processes() {
    let server = daemon_server("").start();
    let embedded = server.get("/e/x").text();
    assert_eq!(field(&embedded, "process_group"), "");
    let mut pids = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = server.get("/d/x/y");
        assert_eq!(r.status, 200, "{}", server.error_log());
        let body = r.text();
        assert_eq!(field(&body, "process_group"), "site");
        assert_eq!(field(&body, "module_process_group"), "site");
        assert_eq!(field(&body, "script_name"), "/d");
        assert_eq!(field(&body, "path_info"), "/x/y");
        assert_eq!(field(&body, "multithread"), "True");
        assert_eq!(field(&body, "multiprocess"), "True");
        assert_ne!(field(&body, "pid"), field(&embedded, "pid"));
        // Several Set-Cookie and WWW-Authenticate headers stay separate (case 006).
        assert_eq!(r.header_values("set-cookie"), ["a=1", "b=2"]);
        assert_eq!(
            r.header_values("www-authenticate"),
            ["Basic realm=\"x\"", "Bearer"]
        );
        pids.insert(field(&body, "pid"));
    }
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");
    // The daemon runs as Apache's user when Apache starts as root.
    let uid = field(&server.get("/d").text(), "uid");
    if nix_is_root() {
        assert_ne!(uid, "0");
    }
    // The request id reaches the daemon's log lines.
    let id = field(&server.get("/d").text(), "request_id");
    assert!(server.wait_for_log(
        &format!("[request {id}] daemon request {id}"),
        Duration::from_secs(5)
    ));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn request_bodies_are_streamed_to_the_daemon() {
    let server = daemon_server("<Location /d>\n  WSGIChunkedRequest On\n</Location>").start();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = server.request("POST", "/d/upload", &[], &body);
    assert_eq!(field(&r.text(), "body"), body.len().to_string());
    let raw = server.raw(
        b"POST /d/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("body=11"), "{raw}");
    let r = server.request("HEAD", "/d/head", &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn application_errors_in_the_daemon_give_500_with_the_traceback() {
    let server = daemon_server("")
        .allow_log("WSGI0010")
        .allow_log("Traceback")
        .allow_log("daemon boom")
        .allow_log(r"\[wsgi:error\] .*\[request [^\]]+\]   ")
        .start();
    assert_eq!(server.get("/d/fail").status, 500);
    assert!(server.wait_for_log("ValueError: daemon boom", Duration::from_secs(5)));
    assert_eq!(server.get("/d/ok").status, 200);
}

#[test]
fn a_crashed_daemon_is_replaced_and_the_client_gets_a_5xx() {
    let server = daemon_server("")
        .allow_log("WSGI0032")
        .allow_log("WSGI0042")
        .start();
    let before = field(&server.get("/d").text(), "pid");
    let crashed = server.get("/d/crash");
    assert!((500..600).contains(&crashed.status), "{}", crashed.status);
    assert!(
        server.wait_for_log("WSGI0032", Duration::from_secs(5)),
        "{}",
        server.error_log()
    );
    // The next requests are served, by the survivor or the replacement.
    for _ in 0..6 {
        assert_eq!(server.get("/d").status, 200);
    }
    let _ = before;
}

#[test]
fn a_peer_with_a_bad_secret_or_garbage_is_dropped_with_a_log_line() {
    let server = daemon_server("").allow_log("WSGI0039").start();
    assert_eq!(server.get("/d").status, 200);
    let socket = std::fs::read_dir(server.dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .expect("the daemon socket lives in the runtime folder");
    // Garbage, then a frame header declaring a huge payload.
    for bytes in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        &[b'W', b'S', 1, 1, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut peer = UnixStream::connect(&socket).unwrap();
        peer.write_all(bytes).unwrap();
        let _ = peer.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }
    assert!(server.wait_for_log("WSGI0039", Duration::from_secs(5)));
    // The daemon is still serving.
    assert_eq!(server.get("/d").status, 200);
}

#[test]
fn process_group_directive_env_and_restrictions() {
    let server = ServerBuilder::new()
        .file("app.wsgi", APP)
        .config(
            "WSGIDaemonProcess one threads=2\n\
             WSGIDaemonProcess two threads=2\n\
             WSGIScriptAlias / ${TEST_DIR}/app.wsgi\n\
             <Location /one>\n  WSGIProcessGroup one\n</Location>\n\
             <Location /env>\n  SetEnv PICK two\n  WSGIProcessGroup %{ENV:PICK}\n</Location>\n\
             <Location /restricted>\n  WSGIProcessGroup two\n  WSGIRestrictProcess one\n\
             </Location>\n\
             <Location /unknown>\n  WSGIProcessGroup nowhere\n</Location>",
        )
        .allow_log("daemon request")
        .allow_log("WSGI0045")
        .allow_log("WSGI0025")
        .start();
    assert_eq!(field(&server.get("/one").text(), "process_group"), "one");
    assert_eq!(field(&server.get("/env").text(), "process_group"), "two");
    assert_eq!(field(&server.get("/other").text(), "process_group"), "");
    assert_eq!(server.get("/restricted").status, 500);
    assert_eq!(server.get("/unknown").status, 500);
}

#[test]
fn restrict_embedded_refuses_requests_not_sent_to_a_daemon() {
    let server = daemon_server("WSGIRestrictEmbedded On")
        .allow_log("WSGI0044")
        .start();
    assert_eq!(server.get("/d").status, 200);
    assert_eq!(server.get("/e").status, 500);
}

/// How many processes have logged that Python started in them, once `expected` have (or after
/// 10 s): the 2 daemons of `daemon_server`, plus its one Apache child if Python starts there.
fn processes_with_python(server: &support::Server, expected: usize) -> usize {
    let count = || {
        server
            .error_log()
            .lines()
            .filter(|l| l.contains("Python 3.") && l.contains(" initialised ("))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count() < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Time for a line that should not come.
    std::thread::sleep(Duration::from_millis(300));
    count()
}

#[test]
fn restrict_embedded_starts_no_python_in_apache_children() {
    let server = daemon_server("WSGIRestrictEmbedded On").start();
    assert_eq!(server.get("/d").status, 200);
    assert_eq!(
        processes_with_python(&server, 2),
        2,
        "{}",
        server.error_log()
    );

    // Without it, the child starts Python for embedded requests (as the C module does).
    let server = daemon_server("").start();
    assert_eq!(server.get("/e").status, 200);
    assert_eq!(
        processes_with_python(&server, 3),
        3,
        "{}",
        server.error_log()
    );
}

#[test]
fn restrict_embedded_still_starts_python_for_scripts_that_run_in_apache_children() {
    const ACCESS: &str = "def allow_access(environ, host):\n    return True\n";
    let server = daemon_server(
        "WSGIRestrictEmbedded On\n\
         <Location /d>\n\
         WSGIAccessScript ${TEST_DIR}/access.py\n\
         </Location>",
    )
    .file("access.py", ACCESS)
    .start();
    assert_eq!(server.get("/d").status, 200, "{}", server.error_log());
    assert_eq!(
        processes_with_python(&server, 3),
        3,
        "{}",
        server.error_log()
    );
}

#[test]
fn daemons_stop_with_apache() {
    let server = daemon_server("").start();
    assert_eq!(server.get("/d").status, 200);
    let stopped = server.stop();
    assert!(!stopped.killed);
    assert!(
        stopped.elapsed < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed
    );
    assert!(
        stopped.error_log.contains("of group 'site' stopping"),
        "{}",
        stopped.error_log
    );
}

#[test]
fn bad_daemon_definitions_fail_the_config_test() {
    for (snippet, reason) in [
        ("WSGIDaemonProcess a colour=red", "unknown option 'colour'"),
        ("WSGIDaemonProcess a user=root", "may not run as root"),
        ("WSGIDaemonProcess a processes=0", "invalid processes '0'"),
        (
            "WSGIDaemonProcess a\nWSGIDaemonProcess a",
            "duplicates an earlier daemon group",
        ),
        ("WSGIProcessGroup %{BOGUS}", "use %{GLOBAL}"),
        (
            "WSGIDaemonProcess a user=no-such-user-here",
            "invalid user 'no-such-user-here': there is no such user on this system",
        ),
        (
            "WSGIDaemonProcess a group=no-such-group-here",
            "there is no such group on this system",
        ),
    ] {
        let test = ServerBuilder::new().config(snippet).config_test();
        assert!(!test.ok, "{snippet}");
        assert!(test.output.contains(reason), "{snippet}: {}", test.output);
        assert!(
            test.output.contains("Syntax error on line"),
            "{}",
            test.output
        );
    }
}

const LIFECYCLE_APP: &str = r#"
import os, time, resource, ctypes
def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/sleep':
        end = time.time() + float(environ.get('QUERY_STRING') or 10)
        while time.time() < end:
            pass                      # busy in Python: stuck, but not holding the GIL for long
    if path == '/hold-gil':
        ctypes.PyDLL(None).sleep(8)   # a C call that keeps the GIL
    if path == '/block':
        time.sleep(float(environ.get('QUERY_STRING') or 2))
    info = {
        'pid': os.getpid(),
        'uid': os.getuid(),
        'gid': os.getgid(),
        'groups': sorted(os.getgroups()),
        'data_limit': resource.getrlimit(resource.RLIMIT_DATA)[0],
        'lang': os.environ.get('LANG'),
        'comm': open('/proc/self/comm').read().strip(),
        'cwd': os.getcwd(),
        'path0': __import__('sys').path[0],
        'priority': os.getpriority(os.PRIO_PROCESS, 0),
        'cpu_limit': resource.getrlimit(resource.RLIMIT_CPU),
    }
    body = '\n'.join('%s=%s' % kv for kv in sorted(info.items()))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

fn lifecycle_server(options: &str) -> ServerBuilder {
    ServerBuilder::new()
        .file("app.wsgi", LIFECYCLE_APP)
        .config(&format!(
            "WSGIDaemonProcess life {options}\n\
             WSGIScriptAlias /l ${{TEST_DIR}}/app.wsgi process-group=life \
             application-group=%{{GLOBAL}}"
        ))
}

fn pid_of(server: &support::Server) -> String {
    let r = server.get("/l");
    assert_eq!(r.status, 200, "{}", server.error_log());
    field(&r.text(), "pid")
}

#[test]
fn maximum_requests_restarts_the_daemon() {
    let server = lifecycle_server("processes=1 threads=1 maximum-requests=3").start();
    let pids: Vec<String> = (0..6).map(|_| pid_of(&server)).collect();
    assert_eq!(pids[0], pids[2], "{pids:?}");
    assert_ne!(pids[2], pids[3], "{pids:?}");
    assert_eq!(pids[3], pids[5], "{pids:?}");
    assert!(server.error_log().contains("maximum-requests of 3 reached"));
}

#[test]
fn restart_interval_and_inactivity_timeout_restart_the_daemon() {
    let server = lifecycle_server("processes=1 threads=2 restart-interval=1").start();
    let first = pid_of(&server);
    assert!(server.wait_for_log("restart-interval of 1 s", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(pid_of(&server), first);
    drop(server);

    let server = lifecycle_server("processes=1 threads=2 inactivity-timeout=1").start();
    let first = pid_of(&server);
    assert!(server.wait_for_log("inactivity-timeout of 1 s", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(pid_of(&server), first);
}

#[test]
fn request_timeout_logs_the_stacks_and_replaces_the_daemon() {
    let server = lifecycle_server("processes=1 threads=2 request-timeout=1")
        .allow_log("WSGI0042")
        .start();
    let first = pid_of(&server);
    let started = std::time::Instant::now();
    let stuck = server.get("/l/sleep?30");
    assert!((500..600).contains(&stuck.status), "{}", stuck.status);
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = server.error_log();
    assert!(log.contains("request-timeout of 1 s exceeded"), "{log}");
    assert!(log.contains("in application"), "no stack trace: {log}");
    assert_ne!(pid_of(&server), first);
}

#[test]
fn deadlock_timeout_replaces_a_daemon_whose_interpreter_is_stuck() {
    let server = lifecycle_server("processes=1 threads=2 deadlock-timeout=2")
        .allow_log("WSGI0042")
        .allow_log("WSGI0006")
        .start();
    let first = pid_of(&server);
    let stuck = server.get("/l/hold-gil");
    assert!((500..600).contains(&stuck.status), "{}", stuck.status);
    assert!(
        server
            .error_log()
            .contains("did not respond for 2 s (deadlock-timeout)")
    );
    assert_ne!(pid_of(&server), first);
}

#[test]
fn queue_timeout_answers_504_without_running_the_application() {
    let server = lifecycle_server("processes=1 threads=1 queue-timeout=1")
        .allow_log("WSGI0047")
        .start();
    assert_eq!(server.get("/l").status, 200);
    std::thread::scope(|s| {
        let blocker = s.spawn(|| server.get("/l/block?3").status);
        std::thread::sleep(Duration::from_millis(300));
        let queued = server.get("/l");
        assert_eq!(queued.status, 504);
        assert_eq!(blocker.join().unwrap(), 200);
    });
    assert!(server.error_log().contains("queue-timeout of 1 s expired"));
}

#[test]
fn daemon_identity_limits_and_environment_are_as_configured() {
    if !nix_is_root() {
        return;
    }
    let server = lifecycle_server(
        "processes=1 threads=2 user=nobody group=nogroup memory-limit=2000000000 \
         lang=C.UTF-8 display-name=wsgi-life home=/tmp cpu-priority=-3 cpu-time-limit=1000 \
         shutdown-timeout=5",
    )
    .start();
    let body = server.get("/l").text();
    let nobody = "65534";
    assert_eq!(field(&body, "uid"), nobody, "{body}");
    assert_eq!(field(&body, "gid"), nobody, "{body}");
    assert_eq!(field(&body, "groups"), format!("[{nobody}]"), "{body}");
    assert_eq!(field(&body, "data_limit"), "2000000000");
    assert_eq!(field(&body, "lang"), "C.UTF-8");
    assert_eq!(field(&body, "comm"), "wsgi-life");
    assert_eq!(field(&body, "cwd"), "/tmp");
    assert_eq!(field(&body, "path0"), "/tmp");
    assert_eq!(field(&body, "priority"), "-3");
    assert_eq!(field(&body, "cpu_limit"), "(1000, 1006)");
}

#[test]
fn a_failing_privilege_switch_stops_the_daemon_before_python() {
    if !nix_is_root() {
        return;
    }
    let server = lifecycle_server(
        "processes=1 threads=1 supplementary-groups=no-such-group-here socket-timeout=2 \
         connect-timeout=1",
    )
    .allow_log("WSGI0034")
    .allow_log("WSGI0032")
    .allow_log("WSGI0040")
    .allow_log("WSGI0042")
    .allow_log("WSGI0051")
    .start();
    let r = server.get("/l");
    assert!((500..600).contains(&r.status), "{}", r.status);
    let log = server.error_log();
    assert!(log.contains("WSGI0034"), "{log}");
    assert!(log.contains("could not switch user"), "{log}");
    assert!(!log.contains("of group 'life' ready"), "{log}");
}

#[test]
fn queue_start_and_error_override() {
    let app = r#"
def application(environ, start_response):
    if environ['PATH_INFO'].endswith('/missing'):
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'the application body']
    body = '%r %r' % (type(environ['mod_wsgi.queue_start']), environ['mod_wsgi.queue_start'] > 0)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(
            "WSGIDaemonProcess site threads=2\n\
             WSGIScriptAlias /d ${TEST_DIR}/app.wsgi process-group=site\n\
             WSGIScriptAlias /e ${TEST_DIR}/app.wsgi\n\
             ErrorDocument 404 \"custom not found\"\n\
             <Location /d/override>\n  WSGIErrorOverride On\n</Location>",
        )
        .start();
    assert_eq!(server.get("/d").text(), "<class 'float'> True");
    assert_eq!(server.get("/e").text(), "<class 'float'> False");
    let plain = server.get("/d/missing");
    assert_eq!(
        (plain.status, plain.text().as_str()),
        (404, "the application body")
    );
    let overridden = server.get("/d/override/missing");
    assert_eq!(overridden.status, 404);
    assert_eq!(overridden.text(), "custom not found");
}

#[test]
fn the_socket_is_private_to_apaches_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let server = daemon_server("").start();
    assert_eq!(server.get("/d").status, 200);
    let socket = std::fs::read_dir(server.dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .expect("a daemon socket");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    if nix_is_root() {
        assert_eq!(meta.uid(), 33, "owned by www-data");
    }
}

#[test]
fn groups_are_visible_only_to_their_virtual_host_and_log_there() {
    let server = ServerBuilder::new()
        .file("app.wsgi", APP)
        .config(
            "<VirtualHost 127.0.0.1:${TEST_PORT}>\n  ServerName a.test\n  \
               ErrorLog ${TEST_DIR}/a-error.log\n  \
               WSGIDaemonProcess only-a threads=2\n  \
               WSGIScriptAlias /app ${TEST_DIR}/app.wsgi process-group=only-a\n\
             </VirtualHost>\n\
             <VirtualHost 127.0.0.1:${TEST_PORT}>\n  ServerName b.test\n  \
               WSGIScriptAlias /app ${TEST_DIR}/app.wsgi process-group=only-a\n\
             </VirtualHost>",
        )
        .allow_log("WSGI0025")
        .start();
    let get = |host: &str| server.request("GET", "/app", &[("Host", host)], b"");
    let a = get("a.test");
    assert_eq!(a.status, 200);
    assert_eq!(field(&a.text(), "process_group"), "only-a");
    assert_eq!(get("b.test").status, 500);
    // The daemon's own lines go to the error log of the virtual host that defined it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let vhost_log = loop {
        let log = std::fs::read_to_string(server.dir().join("a-error.log")).unwrap_or_default();
        if log.contains("daemon request") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(vhost_log.contains("daemon request"), "{vhost_log}");
    assert!(vhost_log.contains("of group 'only-a' ready"), "{vhost_log}");
}

#[test]
fn script_user_refuses_scripts_of_other_owners() {
    if !nix_is_root() {
        return;
    }
    let server = ServerBuilder::new()
        .file("app.wsgi", APP)
        .config(
            "WSGIDaemonProcess owned threads=2 script-user=nobody\n\
             WSGIScriptAlias /o ${TEST_DIR}/app.wsgi process-group=owned",
        )
        .allow_log("WSGI0049")
        .start();
    // The harness writes the script as root, not nobody.
    assert_eq!(server.get("/o").status, 403);
    assert!(server.error_log().contains("is not owned by uid 65534"));
}

#[test]
fn a_graceful_restart_lets_running_requests_finish_and_priority_applies() {
    let server = lifecycle_server("processes=1 threads=2 maximum-requests=2 cpu-priority=5")
        .file(
            "prio.wsgi",
            "import os\ndef application(e, s):\n    s('200 OK', [])\n    \
             return [str(os.getpriority(os.PRIO_PROCESS, 0)).encode()]\n",
        )
        .config("WSGIScriptAlias /prio ${TEST_DIR}/prio.wsgi process-group=life")
        .start();
    assert_eq!(server.get("/prio").text(), "5");
    std::thread::scope(|s| {
        // A slow request, then a quick one that reaches maximum-requests: the slow one still
        // completes (graceful-timeout, 15 s by default) before the process is replaced.
        let slow = s.spawn(|| server.get("/l/block?2"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(server.get("/l").status, 200);
        let slow = slow.join().unwrap();
        assert_eq!(slow.status, 200, "{}", server.error_log());
    });
    assert!(server.error_log().contains("maximum-requests of 2 reached"));
}

#[test]
fn a_graceful_apache_restart_does_not_fail_daemon_requests() {
    let server = lifecycle_server("processes=1 threads=4").start();
    let before = pid_of(&server);
    let parent = server.parent_pid();
    std::thread::scope(|s| {
        // A request under way in the daemon while Apache restarts gracefully.
        let slow = s.spawn(|| server.get("/l/block?1").status);
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signalling the Apache parent this test started (by pid).
        unsafe { libc::kill(parent as i32, libc::SIGUSR1) };
        // Requests sent while the daemons are being replaced wait and are served.
        let during: Vec<u16> = (0..10)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                server.get("/l").status
            })
            .collect();
        assert_eq!(slow.join().unwrap(), 200);
        assert!(
            during.iter().all(|&s| s == 200),
            "{during:?}\n{}",
            server.error_log()
        );
    });
    assert!(
        server.wait_for_log("AH00493", Duration::from_secs(5)),
        "{}",
        server.error_log()
    );
    let after = pid_of(&server);
    assert_ne!(after, before, "the daemon was replaced");
}

/// A script that takes `seconds` to load.
fn slow_loading_app(seconds: f64) -> String {
    format!(
        "import time\ntime.sleep({seconds})\n\
         def application(e, s):\n    s('200 OK', [])\n    return [b'loaded']\n"
    )
}

#[test]
fn startup_timeout_restarts_a_daemon_whose_script_does_not_load() {
    let server = ServerBuilder::new()
        .file("slow.wsgi", slow_loading_app(30.0))
        .config(
            "WSGIDaemonProcess slow processes=1 threads=2 startup-timeout=1\n\
             WSGIScriptAlias /slow ${TEST_DIR}/slow.wsgi process-group=slow",
        )
        .allow_log("WSGI0042")
        .start();
    let started = std::time::Instant::now();
    let r = server.get("/slow");
    assert!((500..600).contains(&r.status), "{}", r.status);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        server
            .error_log()
            .contains("startup-timeout of 1 s: the script did not load")
    );
}

#[test]
fn shutdown_and_graceful_timeouts_bound_the_wait_for_running_requests() {
    // graceful-timeout: maximum-requests is reached while a long request runs; after 1 s the
    // process goes anyway, cutting that request short.
    let server = lifecycle_server("processes=1 threads=2 maximum-requests=2 graceful-timeout=1")
        .allow_log("WSGI0042")
        .start();
    assert_eq!(server.get("/l").status, 200);
    std::thread::scope(|s| {
        let long = s.spawn(|| {
            let started = std::time::Instant::now();
            (server.get("/l/block?20").status, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(server.get("/l").status, 200);
        let (status, took) = long.join().unwrap();
        assert!((500..600).contains(&status), "{status}");
        assert!(took < Duration::from_secs(6), "{took:?}");
    });
    drop(server);

    // shutdown-timeout: Apache stops while a request runs; the daemon waits 1 s for it.
    let server = lifecycle_server("processes=1 threads=2 shutdown-timeout=1")
        .allow_log("WSGI0042")
        .start();
    assert_eq!(server.get("/l").status, 200);
    let port = server.port();
    let blocked = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET /l/block?20 HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    });
    std::thread::sleep(Duration::from_millis(300));
    let stopped = server.stop();
    assert!(!stopped.killed);
    assert!(
        stopped.elapsed < Duration::from_secs(6),
        "{:?}",
        stopped.elapsed
    );
    assert!(
        stopped
            .error_log
            .contains("still running; not finalising Python"),
        "{}",
        stopped.error_log
    );
    blocked.join().unwrap();
}

#[test]
fn locale_reaches_the_daemon() {
    let server = ServerBuilder::new()
        .file(
            "loc.wsgi",
            "import os, locale\ndef application(e, s):\n    s('200 OK', [])\n    \
             return [('%s %s' % (os.environ.get('LC_ALL'), locale.setlocale(locale.LC_CTYPE))).encode()]\n",
        )
        .config(
            "WSGIDaemonProcess loc threads=1 locale=C.UTF-8\n\
             WSGIScriptAlias /loc ${TEST_DIR}/loc.wsgi process-group=loc",
        )
        .start();
    assert_eq!(server.get("/loc").text(), "C.UTF-8 C.UTF-8");
}

#[test]
fn a_stop_signal_during_start_up_ends_the_daemon_cleanly() {
    // A Python home whose sitecustomize takes 2 s: the daemon is still starting when signalled.
    let server = ServerBuilder::new()
        .file("app.wsgi", APP)
        .file(
            "home/lib/python3.11/site-packages/sitecustomize.py",
            "import time\ntime.sleep(2)\n",
        )
        .file(
            "home/pyvenv.cfg",
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n",
        )
        .file("home/bin/python", "")
        .config(
            "WSGIDaemonProcess starting threads=1 display-name=slowstart \
             python-home=${TEST_DIR}/home\n\
             WSGIScriptAlias /s ${TEST_DIR}/app.wsgi process-group=starting",
        )
        .allow_log("daemon request")
        .start();
    // Find the daemon by its name and signal it while Python starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .find_map(|e| {
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                (comm.trim() == "slowstart").then(|| e.file_name().to_string_lossy().into_owned())
            });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no daemon named slowstart"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid: i32 = pid.parse().unwrap();
    // SAFETY: signalling a daemon process of the Apache server this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(server.wait_for_log(
        &format!("process {pid} of group 'starting' stopping"),
        Duration::from_secs(10)
    ));
    // The replacement serves.
    assert_eq!(server.get("/s").status, 200);
    let log = server.error_log();
    assert!(!log.contains("Fatal Python error"), "{log}");
    assert!(!log.contains("AH00052"), "{log}");
}

#[test]
fn umask_python_path_address_space_and_sigusr1_eviction() {
    let app = r#"
import os, sys, resource
def application(environ, start_response):
    mask = os.umask(0o022)
    os.umask(mask)
    body = 'umask=%o\nextra_first=%s\nas_limit=%d\npid=%d\n' % (
        mask, sys.path[0], resource.getrlimit(resource.RLIMIT_AS)[0], os.getpid())
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;
    let server = ServerBuilder::new()
        .file("app.wsgi", app)
        .config(
            "WSGIDaemonProcess opts processes=1 threads=2 umask=0027 \
             python-path=${TEST_DIR}/extra virtual-memory-limit=8000000000 listen-backlog=7 \
             stack-size=1048576 eviction-timeout=1\n\
             WSGIScriptAlias /o ${TEST_DIR}/app.wsgi process-group=opts",
        )
        .file("extra/marker.py", "")
        .start();
    let body = server.get("/o").text();
    assert_eq!(field(&body, "umask"), "27");
    assert_eq!(
        field(&body, "extra_first"),
        format!("{}/extra", server.dir().display())
    );
    assert_eq!(field(&body, "as_limit"), "8000000000");
    // SIGUSR1 to a daemon: a graceful restart (eviction-timeout), then a new process serves.
    let pid: i32 = field(&body, "pid").parse().unwrap();
    // SAFETY: signalling a daemon process of the Apache server this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    assert!(server.wait_for_log("(SIGUSR1, graceful restart)", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(field(&server.get("/o").text(), "pid"), pid.to_string());
}

const PRELOADED_APP: &str = r#"
import os, time
LOADED_AT = time.time()
with open(os.path.join(os.path.dirname(__file__), 'writable', 'loads-' + NAME), 'a') as f:
    f.write('%d\n' % os.getpid())
def application(environ, start_response):
    import sys
    body = 'pid=%d\nloaded_before=%s\nmodules=%d\n' % (
        os.getpid(),
        LOADED_AT < float(environ['mod_wsgi.request_start']),
        sum(1 for m in sys.modules if m.startswith('_mod_wsgi_')),
    )
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

#[test]
fn import_script_and_script_alias_preload_into_daemon_processes() {
    let app = |name: &str| format!("NAME = '{name}'\n{PRELOADED_APP}");
    let server = ServerBuilder::new()
        .file("imported.wsgi", app("imported"))
        .file("aliased.wsgi", app("aliased"))
        .file("lazy.wsgi", app("lazy"))
        .config(
            "WSGIDaemonProcess pre processes=2 threads=2\n\
             WSGIImportScript ${TEST_DIR}/imported.wsgi process-group=pre \
             application-group=%{GLOBAL}\n\
             WSGIScriptAlias /imported ${TEST_DIR}/imported.wsgi process-group=pre\n\
             WSGIScriptAlias /aliased ${TEST_DIR}/aliased.wsgi process-group=pre \
             application-group=%{GLOBAL}\n\
             WSGIScriptAlias /lazy ${TEST_DIR}/lazy.wsgi process-group=pre\n\
             WSGIApplicationGroup %{GLOBAL}",
        )
        .start();
    let dir = server.dir().to_owned();
    let loads = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(format!("writable/loads-{name}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // Both daemon processes load both scripts at start, before any request.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (loads("imported").len() < 2 || loads("aliased").len() < 2)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(loads("imported").len(), 2, "{}", server.error_log());
    assert_eq!(loads("aliased").len(), 2, "{}", server.error_log());
    assert!(
        loads("lazy").is_empty(),
        "a script without both groups is not preloaded"
    );
    // Requests use the preloaded module: no second load.
    for path in ["/imported", "/aliased"] {
        for _ in 0..6 {
            let r = server.get(path);
            assert_eq!(r.status, 200, "{}", server.error_log());
            assert_eq!(field(&r.text(), "loaded_before"), "True");
        }
    }
    let mut imported = loads("imported");
    imported.sort();
    imported.dedup();
    assert_eq!(
        imported.len(),
        2,
        "each daemon loaded the script once: {imported:?}"
    );
    assert_eq!(loads("aliased").len(), 2);
    assert_eq!(server.get("/lazy").status, 200);
    assert_eq!(loads("lazy").len(), 1);
}

/// Serves `data.bin` through `wsgi.file_wrapper`: `/whole`, `/offset` (after reading its
/// first 1000 bytes), `/limited` (a Content-Length smaller than the file) and `/block`
/// (`/offset` with a small block size). Under `/on` with `WSGIEnableSendfile On`, under `/off`
/// without.
const FILE_APP: &str = r#"
import os
def application(environ, start_response):
    f = open(os.path.join(os.path.dirname(__file__), 'data.bin'), 'rb')
    headers = [('Content-Type', 'application/octet-stream')]
    path = environ['PATH_INFO']
    if path in ('/offset', '/block'):
        f.read(1000)
    if path == '/limited':
        headers.append(('Content-Length', '5000'))
    start_response('200 OK', headers)
    return environ['wsgi.file_wrapper'](f, 100 if path == '/block' else 8192)
"#;

/// 600,000 bytes that differ at every offset that matters (more than two Data frames' worth,
/// had the file been streamed).
fn file_bytes() -> Vec<u8> {
    (0..600_000u32)
        .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect()
}

#[test]
fn file_wrapper_responses_in_daemon_mode_are_byte_exact() {
    let data = file_bytes();
    let server = ServerBuilder::new()
        .file("app.wsgi", FILE_APP)
        .file("data.bin", &data)
        .log_level("warn wsgi:debug")
        .config(
            "WSGIDaemonProcess files processes=1 threads=2\n\
             WSGIScriptAlias /on ${TEST_DIR}/app.wsgi process-group=files\n\
             WSGIScriptAlias /off ${TEST_DIR}/app.wsgi process-group=files\n\
             <Location /on>\n\
                 WSGIEnableSendfile On\n\
             </Location>\n",
        )
        .start();
    for prefix in ["/on", "/off"] {
        for _ in 0..2 {
            let r = server.get(&format!("{prefix}/whole"));
            assert_eq!(r.status, 200, "{}", server.error_log());
            assert_eq!(r.header("content-length"), Some("600000"));
            assert!(r.body == data, "{prefix}/whole: wrong bytes");
        }
        for path in ["offset", "block"] {
            let r = server.get(&format!("{prefix}/{path}"));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), Some("599000"));
            assert!(r.body == data[1000..], "{prefix}/{path}: wrong bytes");
        }
        let r = server.get(&format!("{prefix}/limited"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("5000"));
        assert!(r.body == data[..5000], "{prefix}/limited: wrong bytes");
    }
    // The file went over as a descriptor: the daemon never fell back to streaming it, and the
    // Apache child used every descriptor it was given.
    let log = server.error_log();
    let passed = log.matches("of a file passed by the daemon").count();
    assert_eq!(passed, 2 * 5, "{log}");
    assert!(!log.contains("streaming it"), "{log}");
    assert!(!log.contains("WSGI0043"), "{log}");
}

const KEEP_APP: &str = r#"
import os
stash = []
def application(environ, start_response):
    path = environ['PATH_INFO']
    out = 'pid=%d' % os.getpid()
    if path == '/stash':
        stash.append(environ['wsgi.input'])
    elif path == '/big':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return (b'b' * 262144 for _ in range(256))
    elif path == '/pipe':
        # A write to a pipe nobody reads: BrokenPipeError, as in any Python program.
        r, w = os.pipe()
        os.close(r)
        try:
            os.write(w, b'x')
            out += '\npipe=written'
        except BrokenPipeError:
            out += '\npipe=BrokenPipeError'
        os.close(w)
    elif path == '/late':
        try:
            late = stash[-1].read()
        except Exception as e:
            late = type(e).__name__.encode()
        own = environ['wsgi.input'].read()
        out += '\nlate=%r\nown=%s' % (late, own.decode())
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [out.encode()]
"#;

fn keep_server(options: &str) -> ServerBuilder {
    ServerBuilder::new()
        .file("app.wsgi", KEEP_APP)
        .config(&format!(
            "WSGIDaemonProcess keep {options}\n\
             WSGIScriptAlias /k ${{TEST_DIR}}/app.wsgi process-group=keep \
             application-group=%{{GLOBAL}}"
        ))
}

/// Connected Unix sockets named after the server's daemon sockets: the daemon's side of each
/// connection from an Apache child.
fn daemon_connections(server: &support::Server) -> usize {
    let dir = server.dir().to_string_lossy().into_owned();
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    table
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() == 8 && fields[5] == "03" && fields[7].starts_with(&dir)
        })
        .count()
}

fn keep_pid(server: &support::Server) -> String {
    let r = server.get("/k");
    assert_eq!(r.status, 200, "{}", server.error_log());
    field(&r.text(), "pid")
}

#[test]
fn a_group_of_one_process_keeps_connections_across_requests_and_restarts() {
    let server = keep_server("processes=1 threads=2 maximum-requests=4")
        .allow_log("WSGI0032")
        .start();
    // Sequential requests: each daemon process serves four over kept connections, then is
    // replaced; the requests that meet the closed connections of the old one are sent again.
    let pids: Vec<String> = (0..10).map(|_| keep_pid(&server)).collect();
    let distinct: std::collections::HashSet<&String> = pids.iter().collect();
    assert!(distinct.len() >= 2, "{pids:?}");
    let kept = daemon_connections(&server);
    assert!((1..=2).contains(&kept), "{kept} connections kept");
    // A daemon killed between requests: its kept connections are dead, and the next request
    // goes to the replacement, with no error for the client.
    let pid = keep_pid(&server);
    let target = nix::unistd::Pid::from_raw(pid.parse().expect("pid"));
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).expect("kill");
    for _ in 0..3 {
        assert_ne!(keep_pid(&server), pid);
    }
    let log = server.error_log();
    assert!(
        !log.contains("WSGI0042") && !log.contains("WSGI0039"),
        "{log}"
    );
}

#[test]
fn broken_pipes_do_not_end_the_daemon() {
    let server = keep_server("processes=1 threads=4").start();
    let pid = keep_pid(&server);
    // Each client reads 1 MiB of a 64 MiB response that the daemon writes as fast as it can,
    // in large blocks, and goes away: the daemon's next write meets a closed connection, which
    // must fail that response only (no SIGPIPE).
    for _ in 0..8 {
        let mut client =
            std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        client
            .write_all(b"GET /k/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("send");
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        while got < 1 << 20 {
            let n = client.read(&mut buf).expect("read");
            assert!(n > 0, "the response ended early");
            got += n;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(keep_pid(&server), pid, "{}", server.error_log());
    // The application's own writes to a closed pipe raise instead of killing the process.
    let r = server.get("/k/pipe");
    assert_eq!(r.status, 200, "{}", server.error_log());
    assert_eq!(field(&r.text(), "pipe"), "BrokenPipeError");
    assert_eq!(field(&r.text(), "pid"), pid);
    let log = server.error_log();
    assert!(!log.contains("Broken pipe"), "{log}");
}

#[test]
fn a_group_of_several_processes_does_not_keep_connections() {
    let server = keep_server("processes=2 threads=2").start();
    for _ in 0..6 {
        keep_pid(&server);
    }
    assert_eq!(daemon_connections(&server), 0);
}

#[test]
fn a_kept_connection_is_out_of_reach_of_earlier_requests() {
    let server = keep_server("processes=1 threads=1").start();
    let first = server.request("POST", "/k/stash", &[], b"first body");
    assert_eq!(first.status, 200, "{}", server.error_log());
    // The next request comes over the same kept connection; the first request's wsgi.input,
    // kept by the application, must not read from it.
    let second = server.request("POST", "/k/late", &[], b"second body");
    assert_eq!(second.status, 200, "{}", server.error_log());
    let text = second.text();
    assert_eq!(field(&text, "own"), "second body", "{text}");
    assert!(!field(&text, "late").contains("second"), "{text}");
    assert_eq!(field(&first.text(), "pid"), field(&text, "pid"));
    assert_eq!(daemon_connections(&server), 1);
}

const FORK_APP: &str = r#"
import os, time
def application(environ, start_response):
    if environ['PATH_INFO'] == '/fork':
        # A background worker, as multiprocessing's 'fork' start method makes: it inherits
        # every descriptor of the daemon process, and outlives it.
        child = os.fork()
        if child == 0:
            time.sleep(8)
            os._exit(0)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('pid=%d' % os.getpid()).encode()]
"#;

#[test]
fn a_forked_worker_does_not_keep_the_connections_of_a_restarted_daemon_alive() {
    let server = ServerBuilder::new()
        .file("app.wsgi", FORK_APP)
        .config(
            "WSGIDaemonProcess fork processes=1 threads=2 maximum-requests=3 socket-timeout=3\n\
             WSGIScriptAlias /f ${TEST_DIR}/app.wsgi process-group=fork \
             application-group=%{GLOBAL}",
        )
        .allow_log("WSGI0032")
        .start();
    // Three requests, each forking a worker that holds the daemon's descriptors: the daemon
    // restarts after the third, and the connections it kept for the Apache children stay open
    // in the workers.
    for _ in 0..3 {
        let r = server.get("/f/fork");
        assert_eq!(r.status, 200, "{}", server.error_log());
    }
    for _ in 0..4 {
        let started = std::time::Instant::now();
        let r = server.get("/f/");
        assert_eq!(r.status, 200, "{}", server.error_log());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}\n{}",
            started.elapsed(),
            server.error_log()
        );
    }
}

const DRAIN_APP: &str = r#"
import os, time
def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/sleep':
        time.sleep(float(environ['QUERY_STRING']))
    elif path == '/fork':
        child = os.fork()
        if child == 0:
            time.sleep(12)
            os._exit(0)
    body = ('pid=%d' % os.getpid()).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
"#;

fn drain_server(options: &str) -> ServerBuilder {
    ServerBuilder::new()
        .file("app.wsgi", DRAIN_APP)
        .config(&format!(
            "WSGIDaemonProcess drain processes=1 threads=4 {options}\n\
             WSGIScriptAlias /d ${{TEST_DIR}}/app.wsgi process-group=drain \
             application-group=%{{GLOBAL}}"
        ))
}

#[test]
fn requests_sent_while_a_daemon_drains_wait_for_its_replacement() {
    // The C module's daemons stop accepting while they drain; the new requests wait in the
    // socket's backlog. Here, they once got Retry answers until the child gave up after
    // about 9 s (503, "kept restarting"), however long the drain.
    let server = drain_server("shutdown-timeout=30 socket-timeout=30")
        .allow_log("WSGI0032")
        .start();
    let r = server.get("/d/");
    assert_eq!(r.status, 200, "{}", server.error_log());
    let old = field(&r.text(), "pid");
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| server.get("/d/sleep?11"));
        std::thread::sleep(Duration::from_millis(500));
        let target = nix::unistd::Pid::from_raw(old.parse().expect("pid"));
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM).expect("kill");
        std::thread::sleep(Duration::from_millis(300));
        // Over a kept connection, then over new ones.
        let waited = scope.spawn(|| server.get("/d/"));
        let r = server.get("/d/");
        assert_eq!(r.status, 200, "{}", server.error_log());
        assert_ne!(field(&r.text(), "pid"), old);
        let r = waited.join().expect("thread");
        assert_eq!(r.status, 200, "{}", server.error_log());
        let r = slow.join().expect("thread");
        assert_eq!(r.status, 200, "the drained request: {}", server.error_log());
        assert_eq!(field(&r.text(), "pid"), old);
    });
    let log = server.error_log();
    assert!(!log.contains("WSGI0050"), "{log}");
}

#[test]
fn requests_that_block_run_side_by_side_up_to_the_thread_count() {
    // Only two idle request threads wait for work; another is sent to wait when the busy ones
    // have not come back for a millisecond and none of them waits for the GIL (see
    // worker::Turns). Requests that block in time.sleep must still run at once, one per
    // thread: two at a time, these eight would take six seconds.
    let server = ServerBuilder::new()
        .file("app.wsgi", DRAIN_APP)
        .config(
            "WSGIDaemonProcess side processes=1 threads=8\n\
             WSGIScriptAlias /d ${TEST_DIR}/app.wsgi process-group=side \
             application-group=%{GLOBAL}",
        )
        .start();
    let r = server.get("/d/");
    assert_eq!(r.status, 200, "{}", server.error_log());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let sleepers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| server.get("/d/sleep?1.5")))
            .collect();
        for sleeper in sleepers {
            let r = sleeper.join().expect("thread");
            assert_eq!(r.status, 200, "{}", server.error_log());
        }
    });
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2700), "took {took:?}");
}

/// Sends `GET path` on `stream` (a kept-alive connection) and returns the status and the time
/// the response took.
fn get_on(stream: &mut std::net::TcpStream, path: &str) -> (u16, Duration) {
    let started = std::time::Instant::now();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .expect("send");
    let (status, _) = read_response(stream);
    (status, started.elapsed())
}

/// Reads one response with a Content-Length from `stream`: its status and body.
fn read_response(stream: &mut std::net::TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read");
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(n > 0, "connection closed: {text}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("length"))
                })
                .expect("a Content-Length");
            if got.len() >= end + 4 + length {
                let status = text[9..12].parse().expect("status");
                return (status, text[end + 4..].to_owned());
            }
        }
    }
}

#[test]
fn request_timeout_ends_a_request_whose_connection_a_forked_worker_holds() {
    let server = drain_server("socket-timeout=20 request-timeout=2")
        .allow_log("WSGI0032")
        .allow_log("WSGI0042")
        .allow_log("request-timeout")
        .allow_log(r"\[request [^\]]+\]")
        .allow_log("File \"")
        .start();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // A worker forked during a request holds the daemon's end of the connection it came on,
    // which the Apache child keeps and uses for the next request.
    assert_eq!(
        get_on(&mut stream, "/d/fork").0,
        200,
        "{}",
        server.error_log()
    );
    let (status, took) = get_on(&mut stream, "/d/sleep?15");
    assert_eq!(status, 502, "{}", server.error_log());
    assert!(
        took < Duration::from_secs(8),
        "502 after {took:?}, not at the request-timeout\n{}",
        server.error_log()
    );
}

const GROUP_APP: &str = r#"
def application(environ, start_response):
    body = ('group=%s' % environ['mod_wsgi.process_group']).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
"#;

#[test]
fn requests_of_the_previous_generation_reach_their_group_after_groups_are_reordered() {
    let server = ServerBuilder::new()
        .file("app.wsgi", GROUP_APP)
        .config(
            "WSGIDaemonProcess first processes=1 threads=2\n\
             WSGIDaemonProcess second processes=1 threads=2\n\
             WSGIScriptAlias /a ${TEST_DIR}/app.wsgi process-group=first \
             application-group=%{GLOBAL}\n\
             WSGIScriptAlias /b ${TEST_DIR}/app.wsgi process-group=second \
             application-group=%{GLOBAL}",
        )
        .start();
    assert_eq!(server.get("/a/").text(), "group=first");
    // Two requests held by the Apache child of this generation: all but their last line.
    let held: Vec<(&str, std::net::TcpStream)> = ["first", "second"]
        .into_iter()
        .map(|group| {
            let mut stream =
                std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
            let path = if group == "first" { "/a/" } else { "/b/" };
            write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").expect("send");
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            (group, stream)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The new configuration defines the groups the other way round.
    let conf = server.dir().join("httpd.conf");
    let text = std::fs::read_to_string(&conf).expect("httpd.conf");
    let swapped = text
        .replace("WSGIDaemonProcess first", "WSGIDaemonProcess @")
        .replace("WSGIDaemonProcess second", "WSGIDaemonProcess first")
        .replace("WSGIDaemonProcess @", "WSGIDaemonProcess second");
    std::fs::write(&conf, swapped).expect("httpd.conf");
    let parent = nix::unistd::Pid::from_raw(server.parent_pid() as i32);
    nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGUSR1).expect("kill");
    assert!(
        server.wait_for_log("AH00493", Duration::from_secs(10)),
        "{}",
        server.error_log()
    );
    std::thread::sleep(Duration::from_millis(500));
    for (group, mut stream) in held {
        let started = std::time::Instant::now();
        stream.write_all(b"\r\n").expect("send");
        let (status, body) = read_response(&mut stream);
        assert_eq!(status, 200, "{}", server.error_log());
        assert_eq!(body, format!("group={group}"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}\n{}",
            started.elapsed(),
            server.error_log()
        );
    }
    assert_eq!(server.get("/b/").text(), "group=second");
}

const STRESS_APP: &str = r#"
import os, hashlib
def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/fds':
        body = str(len(os.listdir('/proc/self/fd'))).encode()
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [body]
    if path == '/redirect':
        start_response('200 OK', [('Location', '/s/echo')])
        return [b'x' * 100000]
    if path == '/error':
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'y' * 300000]
    if path == '/partial':
        environ['wsgi.input'].read(10)
    data = environ['wsgi.input'].read() if path == '/echo' else b''
    out = ('%d %s' % (len(data), hashlib.md5(data).hexdigest())).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [out, b'z' * 200000]
"#;

#[test]
fn kept_connections_under_concurrency_bodies_redirects_and_overrides() {
    let server = ServerBuilder::new()
        .file("app.wsgi", STRESS_APP)
        .config(
            "WSGIDaemonProcess st processes=1 threads=4\nWSGIChunkedRequest On\n\
             WSGIScriptAlias /s ${TEST_DIR}/app.wsgi process-group=st \
             application-group=%{GLOBAL}\n\
             <Location /s/error>\n WSGIErrorOverride On\n</Location>",
        )
        .start();
    let fds = |server: &support::Server| -> usize {
        let r = server.get("/s/fds");
        r.text().trim().parse().expect("count")
    };
    let before = fds(&server);
    std::thread::scope(|scope| {
        for t in 0..6u8 {
            let server = &server;
            scope.spawn(move || {
                for i in 0..15usize {
                    let body: Vec<u8> = (0..(i * 90_001) % 700_000)
                        .map(|n| (n % 251) as u8)
                        .collect();
                    let digest = format!("{:x}", <md5::Md5 as md5::Digest>::digest(&body));
                    let chunked = [("Transfer-Encoding", "chunked")];
                    let headers: &[(&str, &str)] = if (i + t as usize).is_multiple_of(2) {
                        &chunked
                    } else {
                        &[]
                    };
                    let r = server.request("POST", "/s/echo", headers, &body);
                    assert_eq!(r.status, 200, "{}", server.error_log());
                    let text = r.text();
                    let first = text.split('z').next().unwrap_or("");
                    assert_eq!(first, format!("{} {digest}", body.len()));
                    let r = server.request("POST", "/s/partial", &[], &body);
                    assert_eq!(r.status, 200);
                    let r = server.get("/s/redirect");
                    assert_eq!(r.status, 200);
                    let r = server.get("/s/error");
                    assert_eq!(r.status, 404);
                }
            });
        }
    });
    let after = fds(&server);
    let kept = daemon_connections(&server);
    assert!(
        after <= before + kept + 2,
        "before {before} after {after} kept {kept}"
    );
}

const FD_LIMIT_APP: &str = r#"
import os, resource, time
# Few descriptors to spare: ten more than the daemon has open once the script is loaded.
spare = len(os.listdir('/proc/self/fd')) + 10
resource.setrlimit(resource.RLIMIT_NOFILE,
                   (spare, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
def application(environ, start_response):
    time.sleep(0.2)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
"#;

#[test]
fn idle_kept_connections_do_not_use_up_the_daemons_descriptors() {
    let server = ServerBuilder::new()
        .file("app.wsgi", FD_LIMIT_APP)
        .config(
            "WSGIDaemonProcess lim processes=1 threads=4 socket-timeout=4\n\
             WSGIScriptAlias /n ${TEST_DIR}/app.wsgi process-group=lim \
             application-group=%{GLOBAL}",
        )
        .start();
    assert_eq!(server.get("/n").status, 200, "{}", server.error_log());
    // More requests at once than the daemon has descriptors to spare: each takes a connection
    // of its own, which both sides then keep.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| scope.spawn(|| server.get("/n").status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|&s| s == 200),
        "{statuses:?}\n{}",
        server.error_log()
    );
}

/// Reads the body in blocks of several sizes, or only its first block (see
/// `reads_of_mixed_sizes_and_unread_bodies_keep_every_byte_and_the_connection`).
const BLOCKS_APP: &str = r#"
import hashlib
def application(environ, start_response):
    inp = environ['wsgi.input']
    if environ['PATH_INFO'] == '/mixed':
        parts = [inp.read(65536), inp.read(65536), inp.read(10), inp.readline(),
                 inp.read(100000), inp.read(), inp.read(1)]
    else:
        parts = [inp.read(65536)]
    data = b''.join(parts)
    sizes = ','.join(str(len(p)) for p in parts)
    body = ('%d %s %s' % (len(data), hashlib.md5(data).hexdigest(), sizes)).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
"#;

#[test]
fn reads_of_mixed_sizes_and_unread_bodies_keep_every_byte_and_the_connection() {
    use md5::{Digest, Md5};
    // Direct reads into new bytes objects (python::bytes) and buffered ones (readline, small
    // reads) take turns on the same body and must see it in order; a body left mostly
    // unread must not spoil the kept daemon connection: with one thread, every request
    // below goes over the same one.
    let server = ServerBuilder::new()
        .file("app.wsgi", BLOCKS_APP)
        .config(
            "WSGIDaemonProcess ahead processes=1 threads=1\n\
             WSGIScriptAlias /d ${TEST_DIR}/app.wsgi process-group=ahead \
             application-group=%{GLOBAL}",
        )
        .start();
    let body = support::noise(1_000_000, 99);
    let md5 = |b: &[u8]| format!("{:x}", Md5::digest(b));
    let line_end = 131_082 + body[131_082..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let rest = body.len() - line_end - 100_000;
    let mixed = format!(
        "{} {} 65536,65536,10,{},100000,{rest},0",
        body.len(),
        md5(&body),
        line_end - 131_082
    );
    let first = format!("65536 {} 65536", md5(&body[..65536]));
    for round in 0..3 {
        let r = server.request("POST", "/d/mixed", &[], &body);
        assert_eq!(r.text(), mixed, "round {round}: {}", server.error_log());
        for _ in 0..3 {
            let r = server.request("POST", "/d/first", &[], &body);
            assert_eq!(r.text(), first, "round {round}: {}", server.error_log());
        }
    }
    let log = server.error_log();
    assert!(!log.contains("WSGI00"), "{log}");
}
