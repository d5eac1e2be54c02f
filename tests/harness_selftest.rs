//! Self-tests of the integration-test harness in `tests/support`: that it starts and
//! stops Apache cleanly with each MPM, reports configuration errors, judges error logs,
//! builds usable Python venvs, and (ignored by default) that a WSGI app served by
//! Debian's C mod_wsgi works from its world-readable server directory.

mod support;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Mpm, ServerBuilder, closing_connections, python_venv, unexpected_log_lines};

#[test]
fn serves_htdocs_without_wsgi_module_and_stops_quickly() {
    let server = ServerBuilder::new().module(None).start();
    let index = server.get("/");
    assert_eq!(index.status, 200);
    assert_eq!(index.body, b"ok");
    assert_eq!(server.get("/index.html").text(), "ok");
    assert_eq!(server.get("/no/such/file").status, 404);

    let raw = server.raw(b"GET /index.html HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.starts_with("HTTP/1.1 200 OK\r\n"),
        "raw response: {raw}"
    );
    assert!(raw.ends_with("\r\n\r\nok"), "raw response: {raw}");

    assert!(server.wait_for_log("resuming normal operations", Duration::from_secs(5)));
    assert!(process_exists(server.parent_pid()));
    let parent = server.parent_pid();
    let stopped = server.stop();
    assert!(!stopped.killed);
    assert!(
        stopped.elapsed < Duration::from_secs(5),
        "stop took {:?}",
        stopped.elapsed
    );
    assert!(!process_exists(parent));
}

#[test]
fn starts_with_worker_and_prefork() {
    for mpm in [Mpm::Worker, Mpm::Prefork] {
        let server = ServerBuilder::new().module(None).mpm(mpm).start();
        assert_eq!(server.get("/").text(), "ok", "{mpm:?}");
        let stopped = server.stop();
        assert!(!stopped.killed, "{mpm:?}");
        assert!(
            stopped.elapsed < Duration::from_secs(5),
            "{mpm:?}: {:?}",
            stopped.elapsed
        );
    }
}

#[test]
fn files_snippets_and_extra_modules() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let server = ServerBuilder::new()
        .module(None)
        .load("headers")
        .file("htdocs/deep/dir/data.bin", &binary)
        .config("Header always set X-Harness-Port \"${TEST_PORT}\"")
        .config("Alias /aliased \"${TEST_DIR}/htdocs/deep\"")
        .start();
    let response = server.get("/deep/dir/data.bin");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, binary);
    let port = server.port().to_string();
    assert_eq!(response.header("x-harness-port"), Some(port.as_str()));
    assert_eq!(response.header("X-HARNESS-PORT"), Some(port.as_str()));
    assert_eq!(server.get("/aliased/dir/data.bin").body.len(), binary.len());
    assert!(server.dir().join("htdocs/deep/dir/data.bin").is_file());

    let head = server.request("HEAD", "/index.html", &[("X-Test", "1")], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("2"));
}

#[test]
fn config_test_reports_bad_directive_with_file_and_line() {
    let result = ServerBuilder::new()
        .module(None)
        .config("NoSuchDirective x")
        .config_test();
    assert!(!result.ok, "{}", result.output);
    assert!(
        result.output.contains("NoSuchDirective"),
        "{}",
        result.output
    );
    assert!(result.output.contains("httpd.conf"), "{}", result.output);
    assert!(result.output.contains("line "), "{}", result.output);

    let good = ServerBuilder::new()
        .module(None)
        .config("# nothing")
        .config_test();
    assert!(good.ok, "{}", good.output);
    assert!(good.output.contains("Syntax OK"), "{}", good.output);
}

#[test]
fn unexpected_log_lines_flags_problems_only() {
    let log = "\
[Thu Dec 03 17:48:55.345094 2026] [mpm_event:notice] [pid 1:tid 1] AH00489: Apache configured
[Thu Dec 03 17:48:55.345094 2026] [core:error] [pid 2:tid 3] AH00999: something broke
[Thu Dec 03 17:48:55.345094 2026] [wsgi:error] [pid 2:tid 4] known noise 42
[Thu Dec 03 17:48:55.345094 2026] [wsgi:info] [pid 2:tid 4] an info line
[Thu Dec 03 17:48:55.345094 2026] [core:warn] [pid 2:tid 4] AH00558: no FQDN
[Thu Dec 03 17:48:55.345094 2026] [mpm_prefork:crit] [pid 2] crit line
[Thu Dec 03 17:48:55.345094 2026] [core:alert] [pid 2] AH00001: oops (unbalanced
Traceback (most recent call last): raw stderr is not judged
";
    let allow = vec!["known noise \\d+".to_owned()];
    let unexpected = unexpected_log_lines(log, &allow);
    assert_eq!(unexpected.len(), 3, "{unexpected:#?}");
    assert!(unexpected[0].contains("[core:error]"));
    assert!(unexpected[0].contains("AH00999"));
    assert!(unexpected[1].contains("[mpm_prefork:crit]"));
    assert!(unexpected[2].contains("[core:alert]"));

    // Patterns match as substrings too, even when they are not valid regular expressions.
    let allow = vec![
        "AH00999: something broke".to_owned(),
        "[mpm_prefork:crit] [pid 2]".to_owned(),
        "oops (unbalanced".to_owned(),
    ];
    let unexpected = unexpected_log_lines(log, &allow);
    assert_eq!(unexpected.len(), 1, "{unexpected:#?}");
    assert!(unexpected[0].contains("known noise"));
}

#[test]
fn stop_fails_on_unexpected_error_line() {
    let server = ServerBuilder::new()
        .module(None)
        .config("<Location /denied>\n    Require all denied\n</Location>")
        .start();
    assert_eq!(server.get("/denied").status, 403);
    assert!(server.wait_for_log("AH01630", Duration::from_secs(5)));
    let dir = server.dir().to_path_buf();
    let panic = std::panic::catch_unwind(AssertUnwindSafe(|| server.stop()))
        .expect_err("stop must fail on an unexpected [authz_core:error] line");
    let message = panic
        .downcast_ref::<String>()
        .expect("the harness panics with a formatted message");
    assert!(message.contains("AH01630"), "{message}");
    assert!(message.contains(&dir.display().to_string()), "{message}");
    // A failing server's directory is kept for inspection; this failure was the point.
    assert!(dir.join("error.log").is_file());
    std::fs::remove_dir_all(&dir).expect("cannot remove the kept server directory");
}

#[test]
fn allowed_error_lines_do_not_fail() {
    let server = ServerBuilder::new()
        .module(None)
        .config("<Location /denied>\n    Require all denied\n</Location>")
        .allow_log(r"AH01630: client denied by server configuration: .*/denied")
        .start();
    assert_eq!(server.get("/denied").status, 403);
    assert!(server.wait_for_log("AH01630", Duration::from_secs(5)));
    // Dropped without `stop`: the drop does the same check.
}

#[test]
fn python_venv_can_import_flask() {
    let venv = python_venv(&["flask"]);
    assert_eq!(
        venv,
        python_venv(&["flask", "flask"]),
        "the same package list, the same venv"
    );
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", "import flask, sys; print(sys.prefix)"])
        .output()
        .expect("cannot run the venv's python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = String::from_utf8_lossy(&output.stdout);
    assert_eq!(PathBuf::from(prefix.trim()), venv);

    // Apache's children (www-data) must be able to read it; `runuser` shows that they can.
    if is_root() {
        let status = Command::new("runuser")
            .args(["-u", "www-data", "--"])
            .arg(venv.join("bin/python"))
            .args(["-c", "import flask"])
            .status()
            .expect("cannot run runuser");
        assert!(
            status.success(),
            "www-data cannot import flask from {}",
            venv.display()
        );
    }
}

#[test]
#[ignore = "slow: uses Debian's C mod_wsgi"]
fn debian_c_mod_wsgi_serves_a_wsgi_app() {
    let app = r#"
import os

def application(environ, start_response):
    body = environ["wsgi.input"].read()
    if not body:
        body = b"hello from " + environ["mod_wsgi.process_group"].encode() + b"|"
    start_response("200 OK", [
        ("Content-Type", "application/octet-stream"),
        ("X-Uid", str(os.getuid())),
        ("X-Method", environ["REQUEST_METHOD"]),
        ("X-Echo", environ.get("HTTP_X_ECHO", "")),
    ])
    return [body]
"#;
    let server = ServerBuilder::new()
        .module(Some(PathBuf::from("/usr/lib/apache2/modules/mod_wsgi.so")))
        .file("app.wsgi", app)
        .config("WSGIScriptAlias /hello ${TEST_DIR}/app.wsgi")
        // Debian's mod_wsgi 4.9.4 leaves its child hanging at shutdown after Python ran,
        // until Apache escalates to SIGKILL about 10 s later.
        .allow_log(r"AH0004[56]: child process \d+ still did not exit")
        .start();
    let hello = server.get("/hello");
    assert_eq!(hello.status, 200, "{}", hello.text());
    assert_eq!(hello.text(), "hello from |");
    if is_root() {
        assert_eq!(
            hello.header("x-uid"),
            Some("33"),
            "children run as www-data"
        );
    }

    let body: Vec<u8> = (0..=255u8).rev().cycle().take(70_000).collect();
    let echo = server.request("PUT", "/hello", &[("X-Echo", "yes")], &body);
    assert_eq!(echo.status, 200);
    assert_eq!(echo.header("x-method"), Some("PUT"));
    assert_eq!(echo.header("x-echo"), Some("yes"));
    assert_eq!(echo.body, body);

    let stopped = server.stop();
    assert!(!stopped.killed);
}

/// Whether a live (non-zombie) process `pid` exists.
/// Polls `condition` for up to 5 s.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn closing_connections_sees_the_server_side_of_a_connection_until_it_is_closed() {
    // What a stop waits for (see `wait_for_closing_connections` in support/apache.rs).
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    assert_eq!(
        closing_connections(port),
        0,
        "an open connection is not closing"
    );
    drop(client);
    assert!(
        eventually(|| closing_connections(port) == 1),
        "the server side of a connection the client closed is closing (CLOSE_WAIT)"
    );
    drop(server_side);
    assert!(eventually(|| closing_connections(port) == 0));
}

fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

/// Whether the tests run as root (and Apache's children hence as www-data).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            Some(uids.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}
