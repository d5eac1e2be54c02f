//! `mod_wsgi-express` end to end: runs the built program (`CARGO_BIN_EXE_mod_wsgi-express`)
//! against the real Apache on 127.0.0.1 ports, and checks what it serves, what it writes, how
//! it stops (no Apache or daemon process left behind), its one-line errors, and the module
//! commands (`install-module`, `module-config`, `module-location`).
//!
//! Every server root and application lives in a world-readable folder under
//! `/tmp/mod-wsgi-rs-test`, since Apache's children run as www-data when the tests run as
//! root. Only processes these tests started are signalled, by pid.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid};
use tempfile::TempDir;

use support::{ServerBuilder, TEST_ROOT};

/// The program under test, built by cargo as a `[[bin]]` of this package.
const EXPRESS: &str = env!("CARGO_BIN_EXE_mod_wsgi-express");
/// The Apache binary.
const APACHE: &str = "/usr/sbin/apache2";
/// How long a server gets to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A self-signed certificate for 127.0.0.1 (P-256, valid until 2126), for the HTTPS test only.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUZlbhOX7j174B7MLXZp80i8nt/2owCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMCAXDTI2MTIwMzE5MjExMloYDzIxMjYxMTA5
MTkyMTEyWjAUMRIwEAYDVQQDDAkxMjcuMC4wLjEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQFd7pW48NW3GGWqgl1TaZkwx+cxmVR86USRcUssv5OlmadGvjN1YR5
Q0RPbY3/xtSSOAfw43qLHxM0De11T7uco2EwXzAdBgNVHQ4EFgQU4rLY3TJZ/Aub
B19pu7UnRODPbCAwHwYDVR0jBBgwFoAU4rLY3TJZ/AubB19pu7UnRODPbCAwDAYD
VR0TAQH/BAIwADAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMCA0gAMEUCIQDL
8258USZLYGB9f3/DiVkxGT09M1NdGb/+3qh41hKDpQIgLj209Jz452fHvgyU4O+A
Pez5gmx+Kwh1tc9bfPrcsP0=
-----END CERTIFICATE-----
";
/// The key of [`TEST_CERT`]; it protects nothing but these tests.
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgc11F9sKOUF8keXFq
RS+WQfJUOOLYHwWoosRk0k42pbGhRANCAAQFd7pW48NW3GGWqgl1TaZkwx+cxmVR
86USRcUssv5OlmadGvjN1YR5Q0RPbY3/xtSSOAfw43qLHxM0De11T7uc
-----END PRIVATE KEY-----
";

/// A WSGI script that reports a few environ values, one `key=value` per line.
const ECHO_SCRIPT: &str = r#"
import os
def application(environ, start_response):
    keys = ['SCRIPT_NAME', 'PATH_INFO', 'mod_wsgi.process_group',
            'mod_wsgi.application_group']
    lines = ['%s=%s' % (k, environ.get(k)) for k in keys]
    lines.append('pid=%d' % os.getpid())
    body = ('\n'.join(lines) + '\n').encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A fresh world-readable folder under [`TEST_ROOT`].
fn test_dir(prefix: &str) -> TempDir {
    let root = Path::new(TEST_ROOT);
    support::create_world_readable_dir(root);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(root)
        .expect("cannot create a test folder");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Writes `contents` to `dir/rel` (creating folders), readable by everyone.
fn write(dir: &Path, rel: &str, contents: &str) -> PathBuf {
    let path = dir.join(rel);
    let mut parent = path.parent().expect("no parent").to_path_buf();
    fs::create_dir_all(&parent).expect("mkdir");
    while parent.starts_with(dir) {
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).expect("chmod");
        if !parent.pop() {
            break;
        }
    }
    fs::write(&path, contents).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// The program with `args`, without a virtualenv of the caller's leaking in.
fn express(args: &[&str]) -> Command {
    let mut command = Command::new(EXPRESS);
    command
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null());
    command
}

/// Runs the program to completion.
fn run(args: &[&str]) -> Output {
    express(args).output().expect("cannot run mod_wsgi-express")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `output` failed with exactly one line on stderr naming the problem, and
/// returns that line.
fn assert_one_line_error(output: &Output, expected: &str) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "succeeded; stdout:\n{}",
        text(&output.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line on stderr:\n{stderr}");
    assert!(
        lines[0].starts_with("mod_wsgi-express: error: "),
        "{stderr}"
    );
    assert!(
        lines[0].contains(expected),
        "{expected:?} not in {stderr:?}"
    );
    lines[0].to_owned()
}

/// Pids of the live processes whose command line has `conf` as an argument: Apache's parent,
/// its children and its daemon processes all keep `-f <conf>`.
fn processes_using(conf: &Path) -> Vec<i32> {
    let wanted = conf.as_os_str().as_encoded_bytes();
    let own = std::process::id();
    fs::read_dir("/proc")
        .expect("cannot list /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != own))
        .filter(|pid| {
            let alive = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state != "Z" && state != "X")
            });
            alive
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| cmd.split(|&b| b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

/// Waits up to `timeout` for no process to use `conf`; returns those still there.
fn wait_no_processes(conf: &Path, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_using(conf);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.0 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0.
fn try_get(port: u16, path: &str) -> Result<Reply, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: express-test\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let raw = text(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok(Reply {
        status,
        body: body.to_owned(),
    })
}

/// A running `mod_wsgi-express start-server`, stopped (and anything it left killed) on drop.
struct Express {
    child: Child,
    root: PathBuf,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Keeps the folder holding the server root and the outputs.
    _dir: TempDir,
}

impl Express {
    /// Starts `start-server ARGS --port <free> --server-root <dir>/root` and waits until it
    /// answers HTTP.
    fn start(args: &[&str]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// Like [`Express::start`], letting `adjust` change the command (its environment).
    fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Self {
        let dir = test_dir("express-");
        let root = dir.path().join("root");
        let port = free_port();
        let stdout = dir.path().join("stdout.txt");
        let stderr = dir.path().join("stderr.txt");
        let port_text = port.to_string();
        let root_text = root.display().to_string();
        let mut all = vec!["start-server"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--port", &port_text, "--server-root", &root_text]);
        let mut command = express(&all);
        command
            .stdout(fs::File::create(&stdout).expect("stdout file"))
            .stderr(fs::File::create(&stderr).expect("stderr file"));
        adjust(&mut command);
        let child = command.spawn().expect("cannot start mod_wsgi-express");
        let mut server = Self {
            child,
            root,
            port,
            stdout,
            stderr,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mod_wsgi-express exited with {status}\n{}", self.outputs());
            }
            if try_get(self.port, "/").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no HTTP answer within {START_TIMEOUT:?}\n{}",
                self.outputs()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn conf(&self) -> PathBuf {
        self.root.join("httpd.conf")
    }

    fn get(&self, path: &str) -> Reply {
        try_get(self.port, path)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}\n{}", self.outputs()))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("cannot signal mod_wsgi-express");
    }

    /// Waits up to `timeout` for the program to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.root.join("logs/error_log")).unwrap_or_default()
    }

    fn outputs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n--- error_log ---\n{}",
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            fs::read_to_string(&self.stderr).unwrap_or_default(),
            self.error_log()
        )
    }

    /// Sends `signal`, expects the program to exit with status 0 within 5 s and no Apache
    /// or daemon process of this server to be left.
    fn stop_with(mut self, signal: Signal) {
        let started = Instant::now();
        self.signal(signal);
        let status = self.wait_exit(Duration::from_secs(5));
        let elapsed = started.elapsed();
        let outputs = self.outputs();
        let status = status.unwrap_or_else(|| panic!("still running after 5 s\n{outputs}"));
        assert!(status.success(), "exited with {status}\n{outputs}");
        let left = processes_using(&self.conf());
        assert!(
            left.is_empty(),
            "processes left behind: {left:?}\n{outputs}"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}

impl Drop for Express {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(self.pid(), Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = kill(self.pid(), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        for pid in processes_using(&self.conf()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.outputs());
        }
    }
}

/// Polls `GET path` until the body contains `needle`; the last reply otherwise.
fn wait_for_body(server: &Express, path: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let body = try_get(server.port, path).map_or_else(|e| e, |r| r.body);
        if body.contains(needle) || Instant::now() >= deadline {
            return body;
        }
        sleep(Duration::from_millis(200));
    }
}

/// `apache2 -t -f conf`: whether Apache accepts the configuration, and what it said.
fn apache_config_test(conf: &Path) -> (bool, String) {
    let output = Command::new(APACHE)
        .arg("-t")
        .arg("-f")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run apache2 -t");
    (
        output.status.success(),
        text(&output.stdout) + &text(&output.stderr),
    )
}

// ---------------------------------------------------------------------------------------------
// The command line and its errors
// ---------------------------------------------------------------------------------------------

#[test]
fn every_subcommand_has_help() {
    let output = run(&["--help"]);
    assert!(output.status.success());
    let top = text(&output.stdout);
    for sub in [
        "start-server",
        "setup-server",
        "module-config",
        "module-location",
        "install-module",
    ] {
        assert!(top.contains(sub), "{sub} not in --help:\n{top}");
        let output = run(&[sub, "--help"]);
        assert!(output.status.success(), "{sub} --help failed");
        let help = text(&output.stdout);
        assert!(
            help.contains(&format!("Usage: mod_wsgi-express {sub}")),
            "{help}"
        );
    }
    let help = text(&run(&["start-server", "--help"]).stdout);
    for option in [
        "--application-type",
        "--callable-object",
        "--host",
        "--port",
        "--processes",
        "--threads",
        "--python-path",
        "--working-directory",
        "--url-alias",
        "--document-root",
        "--mount-point",
        "--reload-on-changes",
        "--log-to-terminal",
        "--access-log",
        "--log-level",
        "--user",
        "--group",
        "--include-file",
        "--server-name",
        "--https-port",
        "--ssl-certificate-file",
        "--ssl-certificate-key-file",
        "--limit-request-body",
        "--max-clients",
        "--request-timeout",
        "--connect-timeout",
        "--socket-timeout",
        "--queue-timeout",
        "--startup-timeout",
        "--shutdown-timeout",
        "--graceful-timeout",
        "--deadlock-timeout",
        "--inactivity-timeout",
        "--maximum-requests",
        "--enable-sendfile",
        "--embedded-mode",
        "--setup-only",
        "--python-home",
        "--server-root",
        "--module",
    ] {
        assert!(help.contains(option), "{option} not in start-server --help");
    }
    for default in [
        "[default: 8000]",
        "[default: 127.0.0.1]",
        "[default: 5]",
        "[default: 10485760]",
        "[default: warn]",
        "[default: 45]",
    ] {
        assert!(
            help.contains(default),
            "{default} not in start-server --help"
        );
    }
}

#[test]
fn bad_command_lines_are_one_line_errors() {
    let line = assert_one_line_error(
        &run(&["start-server", "--no-such-option"]),
        "--no-such-option",
    );
    assert!(line.contains("start-server --help"), "{line}");
    assert_one_line_error(&run(&["start-server", "--port", "http"]), "'http'");
    assert_one_line_error(
        &run(&["start-server", "--application-type", "java"]),
        "'java'",
    );
    assert_one_line_error(&run(&["frobnicate"]), "frobnicate");
    assert_one_line_error(&run(&[]), "subcommand");
    assert_one_line_error(&run(&["start-server", "--port", "0"]), "'0'");
    assert_one_line_error(&run(&["setup-server", "--https-port", "0"]), "'0'");
    assert_one_line_error(&run(&["start-server", "--log-level", "loud"]), "loud");
    for output in [
        run(&["start-server", "--bogus"]),
        run(&["frobnicate"]),
        run(&["start-server", "--port", "0"]),
        run(&["start-server", "--log-level", "loud"]),
    ] {
        assert_eq!(output.status.code(), Some(2));
    }
}

#[test]
fn a_missing_script_is_a_one_line_error() {
    let dir = test_dir("express-missing-");
    let script = dir.path().join("nothing-here.wsgi");
    let root = dir.path().join("root");
    let port = free_port().to_string();
    let output = run(&[
        "start-server",
        &script.display().to_string(),
        "--port",
        &port,
        "--server-root",
        &root.display().to_string(),
    ]);
    assert_one_line_error(
        &output,
        &format!("the WSGI script {} does not exist", script.display()),
    );
    assert!(!root.join("httpd.conf").exists(), "a config was written");
    // So are other missing files and a bad entry point.
    assert_one_line_error(
        &run(&[
            "start-server",
            "--module",
            "/nonexistent/libmod_wsgi.so",
            "--port",
            &port,
        ]),
        "the WSGI module /nonexistent/libmod_wsgi.so does not exist",
    );
    assert_one_line_error(
        &run(&[
            "start-server",
            "--application-type",
            "module",
            "not an:entry",
        ]),
        "is not an entry point",
    );
    assert_one_line_error(
        &run(&["start-server", "--https-port", "8443", "--port", &port]),
        "HTTPS needs all three",
    );
}

#[test]
fn missing_apache_is_a_one_line_error() {
    let dir = test_dir("express-noapache-");
    let root = dir.path().join("root");
    let port = free_port().to_string();
    for sub in ["start-server", "setup-server"] {
        let output = run(&[
            sub,
            "--httpd-executable",
            "/nonexistent/sbin/apache2",
            "--port",
            &port,
            "--server-root",
            &root.display().to_string(),
        ]);
        assert_one_line_error(
            &output,
            "Apache httpd is not installed: /nonexistent/sbin/apache2 does not exist",
        );
    }
    let output = run(&[
        "start-server",
        "--modules-directory",
        "/nonexistent/modules",
        "--port",
        &port,
        "--server-root",
        &root.display().to_string(),
    ]);
    assert_one_line_error(
        &output,
        "/nonexistent/modules/mod_mpm_event.so does not exist",
    );
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let dir = test_dir("express-busy-");
    let root = dir.path().join("root");
    let started = Instant::now();
    let output = run(&[
        "start-server",
        "--port",
        &port,
        "--server-root",
        &root.display().to_string(),
    ]);
    assert_one_line_error(
        &output,
        &format!("port {port} on 127.0.0.1 is already in use"),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(processes_using(&root.join("httpd.conf")).is_empty());
    drop(listener);
}

// ---------------------------------------------------------------------------------------------
// setup-server
// ---------------------------------------------------------------------------------------------

#[test]
fn setup_server_writes_a_server_root_apache_accepts() {
    let dir = test_dir("express-setup-");
    let app = write(dir.path(), "app/app.wsgi", ECHO_SCRIPT);
    let static_dir = dir.path().join("app/static");
    write(dir.path(), "app/static/style.css", "body {}\n");
    let extra = write(
        dir.path(),
        "extra.conf",
        "# nothing\nServerAdmin nobody@example.com\n",
    );
    let cert = write(dir.path(), "cert.pem", TEST_CERT);
    let key = write(dir.path(), "key.pem", TEST_KEY);
    let root = dir.path().join("root");
    let port = free_port().to_string();
    let https_port = free_port().to_string();
    let output = run(&[
        "setup-server",
        &app.display().to_string(),
        "--port",
        &port,
        "--server-root",
        &root.display().to_string(),
        "--url-alias",
        "/static",
        &static_dir.display().to_string(),
        "--document-root",
        &static_dir.display().to_string(),
        "--include-file",
        &extra.display().to_string(),
        "--https-port",
        &https_port,
        "--ssl-certificate-file",
        &cert.display().to_string(),
        "--ssl-certificate-key-file",
        &key.display().to_string(),
        "--access-log",
        "--reload-on-changes",
        "--processes",
        "2",
        "--threads",
        "3",
        "--max-clients",
        "40",
    ]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("Server URL         : http://127.0.0.1:{port}/")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}/apachectl start", root.display())),
        "{stdout}"
    );
    // Nothing was started.
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port.parse().unwrap())).is_ok());

    // The files, all readable by Apache's children.
    for (name, mode) in [
        ("httpd.conf", 0o644),
        ("apachectl", 0o755),
        ("envvars", 0o644),
        ("handler.wsgi", 0o644),
        ("logs", 0o755),
        ("htdocs", 0o755),
        ("", 0o755),
    ] {
        let meta = fs::metadata(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    let conf = fs::read_to_string(root.join("httpd.conf")).expect("httpd.conf");
    if Uid::effective().is_root() {
        assert!(conf.contains("\nUser www-data\nGroup www-data\n"), "{conf}");
    } else {
        assert!(!conf.contains("\nUser "), "{conf}");
    }
    for needle in [
        format!("Listen 127.0.0.1:{port}\n"),
        format!("Listen 127.0.0.1:{https_port}\n"),
        format!("WSGIDaemonProcess 127.0.0.1:{port} \\\n    processes=2 \\\n    threads=3 \\"),
        "WSGIRestrictEmbedded On\n".to_owned(),
        "application-group=%{GLOBAL}\n".to_owned(),
        "LoadModule rewrite_module".to_owned(),
        "LoadModule ssl_module".to_owned(),
        format!("Include {}\n", extra.display()),
        format!("Alias /static {}\n", static_dir.display()),
        "MaxRequestWorkers 52\n".to_owned(),
    ] {
        assert!(conf.contains(&needle), "{needle:?} not in:\n{conf}");
    }
    assert!(!conf.contains("headers_module"), "{conf}");

    let (ok, said) = apache_config_test(&root.join("httpd.conf"));
    assert!(ok, "apache2 -t rejected the config:\n{said}\n{conf}");
    assert!(said.contains("Syntax OK"), "{said}");

    // The handler is valid Python for the interpreter the module embeds.
    let handler = root.join("handler.wsgi");
    let output = Command::new("/usr/bin/python3.11")
        .args([
            "-c",
            "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')",
        ])
        .arg(&handler)
        .output()
        .expect("python3.11");
    assert!(output.status.success(), "{}", text(&output.stderr));

    // apachectl checks the same configuration.
    let output = Command::new(root.join("apachectl"))
        .arg("configtest")
        .output()
        .expect("apachectl");
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn setup_server_variants_pass_apache_config_test() {
    let dir = test_dir("express-variants-");
    let site = dir.path().join("site");
    write(dir.path(), "site/index.html", "<p>static</p>\n");
    let pkg = dir.path().join("pkg");
    write(dir.path(), "pkg/mymod.py", "def application(e, s): pass\n");
    let venv = dir.path().join("venv");
    fs::create_dir(&venv).expect("mkdir");
    let variants: Vec<Vec<String>> = vec![
        vec![
            "--embedded-mode".into(),
            "--python-path".into(),
            pkg.display().to_string(),
        ],
        vec![
            "--application-type".into(),
            "static".into(),
            site.display().to_string(),
        ],
        vec![
            "--application-type".into(),
            "module".into(),
            "mymod".into(),
            "--python-path".into(),
            pkg.display().to_string(),
            "--working-directory".into(),
            pkg.display().to_string(),
            "--mount-point".into(),
            "/app/".into(),
            "--log-to-terminal".into(),
            "--access-log".into(),
            "--log-level".into(),
            "info".into(),
            "--enable-sendfile".into(),
            "--keep-alive-timeout".into(),
            "5".into(),
            "--limit-request-body".into(),
            "1000".into(),
            "--server-name".into(),
            "example.test".into(),
        ],
    ];
    for (i, variant) in variants.iter().enumerate() {
        let root = dir.path().join(format!("root{i}"));
        let port = free_port().to_string();
        let mut args = vec!["setup-server", "--port", &port];
        let root_text = root.display().to_string();
        args.extend(["--server-root", &root_text]);
        args.extend(variant.iter().map(String::as_str));
        let output = express(&args)
            .env("VIRTUAL_ENV", &venv)
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{variant:?}: {}",
            text(&output.stderr)
        );
        let conf = fs::read_to_string(root.join("httpd.conf")).expect("conf");
        let (ok, said) = apache_config_test(&root.join("httpd.conf"));
        assert!(ok, "{variant:?}: apache2 -t failed:\n{said}\n{conf}");
        match i {
            0 => {
                assert!(!conf.contains("WSGIDaemonProcess"), "{conf}");
                assert!(conf.contains("WSGIRestrictEmbedded Off\n"), "{conf}");
                assert!(
                    conf.contains(&format!("WSGIPythonHome {}\n", venv.display())),
                    "VIRTUAL_ENV is the Python home:\n{conf}"
                );
            }
            1 => {
                assert!(!conf.contains("wsgi_module"), "{conf}");
                assert!(!root.join("handler.wsgi").exists());
            }
            _ => {
                assert!(conf.contains("ErrorLog /dev/stderr\n"), "{conf}");
                assert!(conf.contains("CustomLog /dev/stdout common\n"), "{conf}");
                assert!(conf.contains("WSGIScriptAlias /app "), "{conf}");
                assert!(conf.contains(&format!("home={}", pkg.display())), "{conf}");
                assert!(conf.contains("ServerName example.test\n"), "{conf}");
                let handler = fs::read_to_string(root.join("handler.wsgi")).expect("handler");
                assert!(handler.contains("MODULE = 'mymod'"), "{handler}");
                assert!(handler.contains("CALLABLE = 'application'"), "{handler}");
            }
        }
    }
}

#[test]
fn setup_only_then_apachectl_start_and_stop() {
    let dir = test_dir("express-apachectl-");
    let app = write(dir.path(), "app.wsgi", ECHO_SCRIPT);
    let root = dir.path().join("root");
    let port = free_port();
    let output = run(&[
        "start-server",
        &app.display().to_string(),
        "--setup-only",
        "--port",
        &port.to_string(),
        "--server-root",
        &root.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("apachectl start"));
    assert!(try_get(port, "/").is_err(), "--setup-only started a server");

    let conf = root.join("httpd.conf");
    let apachectl = root.join("apachectl");
    let status = Command::new(&apachectl)
        .arg("start")
        .status()
        .expect("apachectl");
    assert!(status.success());
    let deadline = Instant::now() + START_TIMEOUT;
    let reply = loop {
        if let Ok(reply) = try_get(port, "/hello") {
            break reply;
        }
        if Instant::now() >= deadline {
            let _ = Command::new(&apachectl).arg("stop").status();
            panic!("apachectl start: no answer");
        }
        sleep(Duration::from_millis(100));
    };
    let status = Command::new(&apachectl)
        .arg("stop")
        .status()
        .expect("apachectl");
    let left = wait_no_processes(&conf, Duration::from_secs(15));
    for &pid in &left {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .body
            .contains(&format!("mod_wsgi.process_group=127.0.0.1:{port}")),
        "{reply:?}"
    );
    assert!(status.success());
    assert!(left.is_empty(), "apachectl stop left {left:?}");
}

// ---------------------------------------------------------------------------------------------
// start-server
// ---------------------------------------------------------------------------------------------

#[test]
fn flask_module_app_with_static_alias_stops_cleanly_on_ctrl_c() {
    let venv = support::python_venv(&["flask"]);
    let dir = test_dir("express-flask-");
    write(
        dir.path(),
        "src/myapp/__init__.py",
        r#"import os, sys
import flask

app = flask.Flask(__name__)


@app.route("/")
def index():
    return "Hello from Flask"


@app.route("/info")
def info():
    group = flask.request.environ["mod_wsgi.process_group"]
    return flask.jsonify(prefix=sys.prefix, group=group, pid=os.getpid())
"#,
    );
    let static_dir = dir.path().join("assets");
    write(dir.path(), "assets/hello.txt", "static hello\n");
    let src = dir.path().join("src").display().to_string();
    let server = Express::start(&[
        "myapp:app",
        "--application-type",
        "module",
        "--python-path",
        &src,
        "--python-home",
        &venv.display().to_string(),
        "--url-alias",
        "/static",
        &static_dir.display().to_string(),
    ]);
    let stdout = fs::read_to_string(&server.stdout).expect("stdout");
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{}/", server.port)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}/logs/error_log", server.root.display())),
        "{stdout}"
    );

    let reply = server.get("/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "Hello from Flask");
    let info = server.get("/info");
    assert_eq!(info.status, 200, "{info:?}");
    assert!(
        info.body
            .contains(&format!("\"prefix\":\"{}\"", venv.display())),
        "{info:?}"
    );
    assert!(
        info.body
            .contains(&format!("\"group\":\"127.0.0.1:{}\"", server.port)),
        "{info:?}"
    );
    assert_eq!(server.get("/nothing").status, 404);
    let file = server.get("/static/hello.txt");
    assert_eq!((file.status, file.body.as_str()), (200, "static hello\n"));
    assert_eq!(server.get("/static/missing.txt").status, 404);

    // Apache's parent, a worker child and the daemon are running.
    assert!(processes_using(&server.conf()).len() >= 3);
    server.stop_with(Signal::SIGINT);
}

#[test]
fn reload_on_changes_picks_up_an_edited_module() {
    let dir = test_dir("express-reload-");
    let module = write(
        dir.path(),
        "code/reloaded.py",
        "import os\n\ndef application(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'version one %d' % os.getpid()]\n",
    );
    let code = dir.path().join("code").display().to_string();
    let server = Express::start(&[
        "reloaded",
        "--application-type",
        "module",
        "--python-path",
        &code,
        "--reload-on-changes",
    ]);
    let first = server.get("/");
    assert!(first.body.starts_with("version one "), "{first:?}");
    // A different length, so that a stale .pyc of the same second cannot pass as current.
    fs::write(
        &module,
        "import os\n\ndef application(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'version number two %d' % os.getpid()]\n",
    )
    .expect("edit the module");
    let body = wait_for_body(&server, "/", "version number two", Duration::from_secs(20));
    assert!(
        body.starts_with("version number two "),
        "the edit was not picked up: {body:?}\n{}",
        server.outputs()
    );
    let old_pid = first.body.rsplit(' ').next().unwrap();
    let new_pid = body.rsplit(' ').next().unwrap();
    assert_ne!(old_pid, new_pid, "the daemon process was not replaced");
    assert!(
        server
            .error_log()
            .contains("reloaded.py changed; restarting")
    );
    server.stop_with(Signal::SIGINT);
}

#[test]
fn script_app_survives_restarts_and_stops_on_sigterm() {
    let dir = test_dir("express-script-");
    let app = write(dir.path(), "app/app.wsgi", ECHO_SCRIPT);
    let server = Express::start(&[&app.display().to_string(), "--mount-point", "/sub"]);
    let reply = server.get("/sub/x/y");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("SCRIPT_NAME=/sub\n"), "{reply:?}");
    assert!(reply.body.contains("PATH_INFO=/x/y\n"), "{reply:?}");
    assert!(
        reply.body.contains(&format!(
            "mod_wsgi.process_group=127.0.0.1:{}\n",
            server.port
        )),
        "{reply:?}"
    );
    assert!(
        reply.body.contains("mod_wsgi.application_group=\n"),
        "{reply:?}"
    );

    // An edited script is loaded again on the next request (WSGIScriptReloading).
    fs::write(&app, ECHO_SCRIPT.replace("keys = [", "keys = ['EDITED', ")).expect("edit");
    let body = wait_for_body(&server, "/sub", "EDITED=None", Duration::from_secs(10));
    assert!(
        body.contains("EDITED=None\n"),
        "the edit was not picked up: {body}"
    );

    // SIGHUP restarts Apache, SIGUSR1 restarts it gracefully; it serves on.
    for (signal, log) in [
        (Signal::SIGHUP, "SIGHUP received"),
        (Signal::SIGUSR1, "SIGUSR1"),
    ] {
        server.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !server.error_log().contains(log) {
            assert!(
                Instant::now() < deadline,
                "{log} not logged\n{}",
                server.outputs()
            );
            sleep(Duration::from_millis(100));
        }
        let body = wait_for_body(&server, "/sub", "SCRIPT_NAME=/sub", Duration::from_secs(15));
        assert!(body.contains("SCRIPT_NAME=/sub"), "{body}");
    }

    // A second start on the same port, or from the same server root, fails without
    // rewriting the running server's files.
    let other = write(dir.path(), "other/other.wsgi", ECHO_SCRIPT);
    let conf_before = fs::read(server.conf()).expect("httpd.conf");
    let root = server.root.display().to_string();
    let port = server.port.to_string();
    let free = free_port().to_string();
    let other = other.display().to_string();
    assert_one_line_error(
        &run(&[
            "start-server",
            &other,
            "--port",
            &port,
            "--server-root",
            &root,
        ]),
        &format!("port {port} on 127.0.0.1 is already in use"),
    );
    let line = assert_one_line_error(
        &run(&[
            "start-server",
            &other,
            "--port",
            &free,
            "--server-root",
            &root,
        ]),
        "is still running from the server root",
    );
    assert!(line.contains("apachectl stop"), "{line}");
    assert_eq!(fs::read(server.conf()).expect("httpd.conf"), conf_before);
    let reply = server.get("/sub/x");
    assert!(reply.body.contains("SCRIPT_NAME=/sub\n"), "{reply:?}");
    server.stop_with(Signal::SIGTERM);
}

#[test]
fn document_root_files_come_before_the_app_over_http_and_https() {
    let dir = test_dir("express-docroot-");
    let app = write(dir.path(), "app.wsgi", ECHO_SCRIPT);
    let docroot = dir.path().join("htdocs");
    write(dir.path(), "htdocs/robots.txt", "User-agent: *\n");
    let cert = write(dir.path(), "cert.pem", TEST_CERT);
    let key = write(dir.path(), "key.pem", TEST_KEY);
    let https_port = free_port();
    let server = Express::start(&[
        &app.display().to_string(),
        "--document-root",
        &docroot.display().to_string(),
        "--https-port",
        &https_port.to_string(),
        "--ssl-certificate-file",
        &cert.display().to_string(),
        "--ssl-certificate-key-file",
        &key.display().to_string(),
        "--access-log",
    ]);
    let file = server.get("/robots.txt");
    assert_eq!((file.status, file.body.as_str()), (200, "User-agent: *\n"));
    let app_reply = server.get("/anything/else");
    assert!(
        app_reply.body.contains("PATH_INFO=/anything/else\n"),
        "{app_reply:?}"
    );

    // HTTPS (curl, which scripts/deps.sh installs, as the client).
    let curl = |path: &str| {
        let output = Command::new("curl")
            .args(["-sk", "--max-time", "20"])
            .arg(format!("https://127.0.0.1:{https_port}{path}"))
            .output()
            .expect("curl");
        text(&output.stdout)
    };
    assert_eq!(curl("/robots.txt"), "User-agent: *\n");
    assert!(curl("/over/tls").contains("PATH_INFO=/over/tls\n"));
    let access_log = fs::read_to_string(server.root.join("logs/access_log")).expect("log");
    assert!(
        access_log.contains("\"GET /robots.txt HTTP/1.0\" 200"),
        "{access_log}"
    );
    server.stop_with(Signal::SIGINT);
}

#[test]
fn embedded_mode_runs_the_app_in_apache_children() {
    let dir = test_dir("express-embedded-");
    let app = write(dir.path(), "app.wsgi", ECHO_SCRIPT);
    let server = Express::start(&[&app.display().to_string(), "--embedded-mode"]);
    let reply = server.get("/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("mod_wsgi.process_group=\n"),
        "{reply:?}"
    );
    server.stop_with(Signal::SIGINT);
}

#[test]
fn static_sites_and_the_built_in_page() {
    let dir = test_dir("express-static-");
    let site = dir.path().join("site");
    write(dir.path(), "site/index.html", "<p>static site</p>\n");
    let server = Express::start(&["--application-type", "static", &site.display().to_string()]);
    let reply = server.get("/");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "<p>static site</p>\n")
    );
    server.stop_with(Signal::SIGINT);

    let server = Express::start(&[]);
    let reply = server.get("/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("It works!"), "{reply:?}");
    server.stop_with(Signal::SIGINT);
}

#[test]
fn log_to_terminal_writes_the_logs_to_stdout_and_stderr() {
    let dir = test_dir("express-terminal-");
    let app = write(dir.path(), "app.wsgi", ECHO_SCRIPT);
    let server = Express::start(&[
        &app.display().to_string(),
        "--log-to-terminal",
        "--access-log",
    ]);
    assert_eq!(server.get("/to/terminal").status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stdout = fs::read_to_string(&server.stdout).unwrap_or_default();
        if stdout.contains("\"GET /to/terminal HTTP/1.0\" 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no access line:\n{}",
            server.outputs()
        );
        sleep(Duration::from_millis(100));
    }
    let stderr = fs::read_to_string(&server.stderr).unwrap_or_default();
    assert!(stderr.contains("resuming normal operations"), "{stderr}");
    assert!(!server.root.join("logs/error_log").exists());
    server.stop_with(Signal::SIGINT);
}

// ---------------------------------------------------------------------------------------------
// The module commands
// ---------------------------------------------------------------------------------------------

/// `libmod_wsgi.so` next to the program, which the module commands use by default.
fn built_module() -> PathBuf {
    Path::new(EXPRESS)
        .parent()
        .expect("the program has a folder")
        .join("libmod_wsgi.so")
}

#[test]
fn module_location_and_module_config() {
    let module = built_module();
    let output = run(&["module-location"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("{}\n", module.display()));

    let output = run(&["module-config"]);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        format!("LoadModule wsgi_module {}\n", module.display())
    );
    let venv = test_dir("express-venv-");
    let output = express(&["module-config"])
        .env("VIRTUAL_ENV", venv.path())
        .output()
        .expect("run");
    assert_eq!(
        text(&output.stdout),
        format!(
            "LoadModule wsgi_module {}\nWSGIPythonHome {}\n",
            module.display(),
            venv.path().display()
        )
    );
    assert_one_line_error(
        &run(&["module-location", "--module", "/nonexistent/x.so"]),
        "/nonexistent/x.so does not exist",
    );
    assert_one_line_error(
        &run(&["module-config", "--python-home", "/nonexistent/venv"]),
        "the Python home /nonexistent/venv does not exist",
    );
}

#[test]
fn install_module_keeps_the_old_file_and_the_copy_serves_requests() {
    let dir = test_dir("express-install-");
    let modules = dir.path().join("modules");
    fs::create_dir(&modules).expect("mkdir");
    fs::set_permissions(&modules, fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = modules.join("mod_wsgi.so");
    fs::write(&target, "the C module").expect("write");

    let output = run(&[
        "install-module",
        "--modules-directory",
        &modules.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!("LoadModule wsgi_module {}\n", target.display())
    );
    assert!(text(&output.stderr).contains("mod_wsgi.so.orig"));
    assert_eq!(
        fs::read(&target).expect("installed"),
        fs::read(built_module()).expect("built")
    );
    assert_eq!(
        fs::read_to_string(modules.join("mod_wsgi.so.orig")).expect("backup"),
        "the C module"
    );
    assert_eq!(
        fs::metadata(&target).expect("meta").permissions().mode() & 0o777,
        0o644
    );

    // Installing the same file again keeps no backup; a different one gets a numbered one.
    assert!(
        run(&[
            "install-module",
            "--modules-directory",
            &modules.display().to_string()
        ])
        .status
        .success()
    );
    assert!(!modules.join("mod_wsgi.so.orig.1").exists());
    fs::write(&target, "another module").expect("write");
    // The default folder comes from `apxs -q LIBEXECDIR` (here a stand-in named by APXS).
    let apxs = write(
        dir.path(),
        "bin/apxs",
        &format!("#!/bin/sh\necho {}\n", modules.display()),
    );
    fs::set_permissions(&apxs, fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = express(&["install-module"])
        .env("APXS", &apxs)
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        fs::read_to_string(modules.join("mod_wsgi.so.orig.1")).expect("backup"),
        "another module"
    );
    assert_one_line_error(
        &run(&[
            "install-module",
            "--modules-directory",
            "/nonexistent/modules",
        ]),
        "/nonexistent/modules does not exist",
    );

    // An Apache configuration that loads the installed copy serves requests.
    let server = ServerBuilder::new()
        .module(Some(target.clone()))
        .file("app.wsgi", ECHO_SCRIPT)
        .config("WSGIScriptAlias /app ${TEST_DIR}/app.wsgi")
        .start();
    let reply = server.get("/app/x");
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("PATH_INFO=/x\n"), "{}", reply.text());
    server.stop();
}

#[test]
fn ctrl_c_during_start_up_leaves_no_process() {
    for delay in [Duration::from_millis(50), Duration::from_millis(300)] {
        let dir = test_dir("express-early-");
        let root = dir.path().join("root");
        let mut child = express(&[
            "start-server",
            "--port",
            &free_port().to_string(),
            "--server-root",
            &root.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
        sleep(delay);
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        kill(pid, Signal::SIGINT).expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            sleep(Duration::from_millis(20));
        };
        let left = wait_no_processes(&root.join("httpd.conf"), Duration::from_secs(2));
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let status = status.unwrap_or_else(|| panic!("{delay:?}: still running after 10 s"));
        assert!(status.success(), "{delay:?}: {status}");
        assert!(left.is_empty(), "{delay:?}: left {left:?}");
    }
}

#[test]
fn run_as_options_and_unreadable_paths_when_root() {
    if !Uid::effective().is_root() {
        eprintln!("skipped: --user/--group and the readability warnings apply to root only");
        return;
    }
    let dir = test_dir("express-root-");
    let root = dir.path().join("root").display().to_string();
    let port = free_port().to_string();
    let base = ["setup-server", "--port", &port, "--server-root", &root];

    let mut args = base.to_vec();
    args.extend(["--user", "no-such-user-here"]);
    assert_one_line_error(&run(&args), "there is no user called 'no-such-user-here'");

    let mut args = base.to_vec();
    args.extend(["--user", "nobody", "--group", "nogroup"]);
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let conf = fs::read_to_string(Path::new(&root).join("httpd.conf")).expect("conf");
    assert!(conf.contains("\nUser nobody\nGroup nogroup\n"), "{conf}");

    // A script www-data cannot read: set up all the same, with a warning.
    let private = dir.path().join("private");
    let script = write(&private, "app.wsgi", ECHO_SCRIPT);
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut args = base.to_vec();
    let script_text = script.display().to_string();
    args.push(&script_text);
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "mod_wsgi-express: warning: the WSGI script {} is not readable by www-data",
            script.display()
        )),
        "{stderr}"
    );
}
