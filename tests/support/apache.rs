//! Apache httpd under test: generates a self-contained configuration in a fresh
//! world-readable directory, runs `/usr/sbin/apache2 -f <conf> -DFOREGROUND`, waits for it
//! to serve, and stops it (and anything it left behind) by pid.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::http::{self, Response};
use super::logs::{tail, unexpected_log_lines};
use super::process::{self, POLL, ProcessId};
use super::{TEST_ROOT, create_world_readable_dir, module_path};

/// The Apache binary.
const APACHE: &str = "/usr/sbin/apache2";
/// Where Debian keeps Apache's loadable modules.
const MODULES_DIR: &str = "/usr/lib/apache2/modules";
/// How long `start` waits for the server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a stop waits for Apache to finish closing connections (see
/// [`wait_for_closing_connections`]).
const CLOSING_LIMIT: Duration = Duration::from_secs(1);
/// How long a stop then gives the worker that closed the last connection to finish with it.
const CLOSING_SETTLE: Duration = Duration::from_millis(50);
/// How many ports `start` tries when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 3;
/// How many error-log lines failure messages show.
const TAIL_LINES: usize = 60;

/// Debian modules every test server loads (besides the MPM).
const BASE_MODULES: &[&str] = &[
    "authz_core",
    "authn_core",
    "mime",
    "alias",
    "env",
    "setenvif",
    "dir",
];

/// Apache's multi-processing module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    /// `mpm_event`: threaded, with an event loop for keep-alive connections (the default).
    Event,
    /// `mpm_worker`: threaded.
    Worker,
    /// `mpm_prefork`: one single-threaded process per connection.
    Prefork,
}

impl Mpm {
    /// The Debian module name, as in `mod_<name>.so`.
    fn module(self) -> &'static str {
        match self {
            Mpm::Event => "mpm_event",
            Mpm::Worker => "mpm_worker",
            Mpm::Prefork => "mpm_prefork",
        }
    }

    /// Process and thread sizing: small, but enough for concurrent-request tests.
    fn sizing(self) -> &'static str {
        match self {
            Mpm::Event | Mpm::Worker => {
                "StartServers 1\nServerLimit 1\nThreadsPerChild 16\nMaxRequestWorkers 16\n\
                 MinSpareThreads 1\nMaxSpareThreads 16\n"
            }
            Mpm::Prefork => {
                "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\nMaxRequestWorkers 8\n"
            }
        }
    }
}

/// Which `wsgi_module` the server loads.
#[derive(Clone, Debug)]
enum WsgiModule {
    /// The module under test, found by [`module_path`] when the server is built.
    UnderTest,
    /// This file.
    Path(PathBuf),
    /// No `LoadModule wsgi_module` line.
    Absent,
}

/// Describes a test server; [`ServerBuilder::start`] runs it.
///
/// The generated `httpd.conf` defines `TEST_DIR` (the server directory, see
/// [`Server::dir`]) and `TEST_PORT`, which snippets use as `${TEST_DIR}` and
/// `${TEST_PORT}`. The directory holds `htdocs/index.html` (the `DocumentRoot`, body
/// `ok`), `writable/` (mode 1777, for apps that must write files), the logs
/// (`error.log`, `access.log`, `stdout.log`, `stderr.log`) and whatever [`file`] added.
///
/// [`file`]: ServerBuilder::file
#[derive(Clone, Debug)]
#[must_use]
pub struct ServerBuilder {
    mpm: Mpm,
    module: WsgiModule,
    log_level: Option<String>,
    loads: Vec<String>,
    files: Vec<(PathBuf, Vec<u8>)>,
    snippets: Vec<String>,
    allow: Vec<String>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// A server with the event MPM, the module under test, and `LogLevel warn wsgi:info`
    /// (plain `warn` when no WSGI module is loaded, since Apache rejects a level for a
    /// module it does not know).
    pub fn new() -> Self {
        Self {
            mpm: Mpm::Event,
            module: WsgiModule::UnderTest,
            log_level: None,
            loads: Vec::new(),
            files: Vec::new(),
            snippets: Vec::new(),
            allow: Vec::new(),
        }
    }

    /// Uses MPM `mpm`.
    pub fn mpm(mut self, mpm: Mpm) -> Self {
        self.mpm = mpm;
        self
    }

    /// Loads `wsgi_module` from `path` instead of the module under test; `None` loads no
    /// WSGI module at all.
    pub fn module(mut self, path: Option<PathBuf>) -> Self {
        self.module = match path {
            Some(path) => WsgiModule::Path(path),
            None => WsgiModule::Absent,
        };
        self
    }

    /// Sets the whole `LogLevel` value, e.g. `"info wsgi:trace1"`.
    pub fn log_level(mut self, spec: &str) -> Self {
        self.log_level = Some(spec.to_owned());
        self
    }

    /// Loads Debian's module `name`: `load("headers")` adds
    /// `LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so`.
    pub fn load(mut self, apache_module_name: &str) -> Self {
        self.loads.push(apache_module_name.to_owned());
        self
    }

    /// Writes `contents` to `rel_path` inside the server directory before the server
    /// starts, creating parent directories; everything is made world-readable.
    ///
    /// Panics if `rel_path` is absolute or contains `..`.
    pub fn file(mut self, rel_path: &str, contents: impl AsRef<[u8]>) -> Self {
        let path = PathBuf::from(rel_path);
        assert!(
            !rel_path.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_))),
            "file path {rel_path:?} must be relative, without `..` or `.`"
        );
        self.files.push((path, contents.as_ref().to_vec()));
        self
    }

    /// Appends `snippet` to the configuration, after the base configuration and the
    /// `LoadModule wsgi_module` line, in the order given. It may use `${TEST_DIR}` and
    /// `${TEST_PORT}`.
    pub fn config(mut self, snippet: &str) -> Self {
        self.snippets.push(snippet.to_owned());
        self
    }

    /// Error-log lines that contain `regex_or_substring`, or match it as a regular
    /// expression, do not fail the test (see [`unexpected_log_lines`]).
    pub fn allow_log(mut self, regex_or_substring: &str) -> Self {
        self.allow.push(regex_or_substring.to_owned());
        self
    }

    /// Starts the server and waits until it answers HTTP on its port.
    ///
    /// Panics, showing Apache's stdout, stderr and error log, if Apache exits or does not
    /// answer within 20 s. A port found taken is replaced by another, twice at most.
    pub fn start(self) -> Server {
        let prepared = self.prepare();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let conf = prepared.write_conf(&self, port);
            for name in [
                "error.log",
                "access.log",
                "stdout.log",
                "stderr.log",
                "httpd.pid",
            ] {
                let _ = fs::remove_file(prepared.path.join(name));
            }
            // Its own process group: at shutdown Apache signals its whole group, which
            // would otherwise include the test runner.
            let mut child = Command::new(APACHE)
                .process_group(0)
                .arg("-f")
                .arg(&conf)
                .arg("-DFOREGROUND")
                .current_dir(&prepared.path)
                .stdin(Stdio::null())
                .stdout(log_file(&prepared.path.join("stdout.log")))
                .stderr(log_file(&prepared.path.join("stderr.log")))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {APACHE}: {e}"));
            match wait_ready(&mut child, &prepared.path, port) {
                Ok(()) => {
                    return Server {
                        dir: Some(prepared.dir),
                        path: prepared.path,
                        conf,
                        port,
                        child: Some(child),
                        allow: self.allow,
                        checked: false,
                    };
                }
                Err(problem) => {
                    let children = process::children_of(child.id());
                    process::terminate(&mut child, Duration::from_secs(5));
                    process::kill_leftovers(&conf, &children);
                    let outputs = server_outputs(&prepared.path);
                    if attempt < START_ATTEMPTS && outputs.contains("Address already in use") {
                        continue;
                    }
                    let kept = prepared.dir.keep();
                    panic!(
                        "Apache did not start: {problem}\nserver directory kept at {}\n{outputs}",
                        kept.display()
                    );
                }
            }
        }
        unreachable!("the last start attempt always returns or panics")
    }

    /// Checks the configuration with `apache2 -t` without starting a server.
    pub fn config_test(self) -> ConfigTest {
        let prepared = self.prepare();
        let conf = prepared.write_conf(&self, free_port());
        let output = Command::new(APACHE)
            .arg("-t")
            .arg("-f")
            .arg(&conf)
            .current_dir(&prepared.path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {APACHE}: {e}"));
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        ConfigTest {
            ok: output.status.success(),
            output: text,
        }
    }

    /// Makes the server directory with its standard contents and the requested files.
    fn prepare(&self) -> Prepared {
        let module = match &self.module {
            WsgiModule::UnderTest => Some(module_path()),
            WsgiModule::Path(path) => Some(
                std::path::absolute(path)
                    .unwrap_or_else(|e| panic!("bad module path {}: {e}", path.display())),
            ),
            WsgiModule::Absent => None,
        };
        let root = Path::new(TEST_ROOT);
        create_world_readable_dir(root);
        let dir = tempfile::Builder::new()
            .prefix("srv-")
            .tempdir_in(root)
            .unwrap_or_else(|e| panic!("cannot create a server directory in {TEST_ROOT}: {e}"));
        let path = dir.path().to_path_buf();
        create_world_readable_dir(&path);
        write_world_readable(&path, Path::new("htdocs/index.html"), b"ok");
        let writable = path.join("writable");
        fs::create_dir(&writable)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", writable.display()));
        fs::set_permissions(&writable, fs::Permissions::from_mode(0o1777))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", writable.display()));
        for (rel, contents) in &self.files {
            write_world_readable(&path, rel, contents);
        }
        Prepared { dir, path, module }
    }
}

/// A server directory made by [`ServerBuilder::prepare`].
struct Prepared {
    dir: TempDir,
    path: PathBuf,
    module: Option<PathBuf>,
}

impl Prepared {
    /// Writes `httpd.conf` for `port` and returns its path.
    fn write_conf(&self, builder: &ServerBuilder, port: u16) -> PathBuf {
        let conf = self.path.join("httpd.conf");
        let text = render_conf(builder, &self.path, port, self.module.as_deref());
        write_world_readable(&self.path, Path::new("httpd.conf"), text.as_bytes());
        conf
    }
}

/// The whole `httpd.conf` of a test server.
fn render_conf(builder: &ServerBuilder, dir: &Path, port: u16, module: Option<&Path>) -> String {
    let mut c = String::new();
    let dir = dir.display();
    let line = |c: &mut String, text: &str| {
        c.push_str(text);
        c.push('\n');
    };
    line(
        &mut c,
        "# Generated by the mod_wsgi-rs integration-test harness.",
    );
    let _ = writeln!(c, "Define TEST_DIR \"{dir}\"");
    let _ = writeln!(c, "Define TEST_PORT {port}");
    line(&mut c, "ServerRoot \"${TEST_DIR}\"");
    line(&mut c, "ServerName 127.0.0.1");
    line(&mut c, "Listen 127.0.0.1:${TEST_PORT}");
    line(&mut c, "PidFile \"${TEST_DIR}/httpd.pid\"");
    line(&mut c, "DefaultRuntimeDir \"${TEST_DIR}\"");
    line(&mut c, "Mutex file:${TEST_DIR} default");
    line(&mut c, "ErrorLog \"${TEST_DIR}/error.log\"");
    line(
        &mut c,
        "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b %D \\\"%{User-Agent}i\\\"\" harness",
    );
    line(&mut c, "CustomLog \"${TEST_DIR}/access.log\" harness");
    if process::is_root() {
        line(&mut c, "User www-data");
        line(&mut c, "Group www-data");
    }
    line(&mut c, "Timeout 30");
    let mpm = builder.mpm.module();
    let _ = writeln!(c, "LoadModule {mpm}_module {MODULES_DIR}/mod_{mpm}.so");
    c.push_str(builder.mpm.sizing());
    for name in BASE_MODULES
        .iter()
        .copied()
        .chain(builder.loads.iter().map(String::as_str))
    {
        let _ = writeln!(c, "LoadModule {name}_module {MODULES_DIR}/mod_{name}.so");
    }
    line(&mut c, "TypesConfig /etc/mime.types");
    line(&mut c, "DocumentRoot \"${TEST_DIR}/htdocs\"");
    line(&mut c, "<Directory \"${TEST_DIR}\">");
    line(&mut c, "    Require all granted");
    line(&mut c, "</Directory>");
    if let Some(module) = module {
        let _ = writeln!(c, "LoadModule wsgi_module \"{}\"", module.display());
    }
    // After the WSGI module's LoadModule: a per-module level needs the module loaded.
    let default_level = if module.is_some() {
        "warn wsgi:info"
    } else {
        "warn"
    };
    let level = builder.log_level.as_deref().unwrap_or(default_level);
    let _ = writeln!(c, "LogLevel {level}");
    for snippet in &builder.snippets {
        line(&mut c, "");
        line(&mut c, snippet);
    }
    c
}

/// The result of [`ServerBuilder::config_test`].
#[derive(Clone, Debug)]
pub struct ConfigTest {
    /// Whether `apache2 -t` accepted the configuration.
    pub ok: bool,
    /// Its stdout followed by its stderr.
    pub output: String,
}

/// A running Apache. Dropping it stops it like [`Server::stop`] does, including the
/// error-log check (skipped when the test is already failing).
#[derive(Debug)]
pub struct Server {
    /// `None` once the directory was kept for inspection.
    dir: Option<TempDir>,
    path: PathBuf,
    conf: PathBuf,
    port: u16,
    /// `None` once Apache was stopped.
    child: Option<Child>,
    allow: Vec<String>,
    /// Whether the error log was already checked at stop.
    checked: bool,
}

/// What [`Server::stop`] observed.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// Time from SIGTERM until the Apache parent exited.
    pub elapsed: Duration,
    /// The whole error log.
    pub error_log: String,
    /// Whether Apache had to be SIGKILLed after 15 s.
    pub killed: bool,
}

impl Server {
    /// The server directory, `TEST_DIR` in the configuration.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The port Apache listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends `GET path`. Panics on a transport error, not on an error status.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], &[])
    }

    /// Sends one request and returns the response whatever its status. Panics, showing
    /// the error log, on a transport error (refused, reset, timed out after 30 s).
    /// See [`Server::try_request`] for the rules on bodies and added headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| {
                panic!(
                    "request failed: {e}\nerror log:\n{}",
                    tail(&self.error_log(), TAIL_LINES)
                )
            })
    }

    /// Like [`Server::request`], but returns transport errors instead of panicking.
    ///
    /// A body is sent, with `Content-Length` unless `headers` set `Content-Length` or
    /// `Transfer-Encoding`, when it is not empty or the method is POST, PUT or PATCH.
    /// `Host`, `User-Agent` and `Accept` are added unless `headers` have them. Redirects
    /// are not followed and responses are never decompressed.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        http::send(&self.url(path), method, headers, body)
    }

    /// Writes `bytes` to a new connection and returns everything read back until the
    /// server closes it or 10 s have passed. Send `Connection: close` (or use HTTP/1.0)
    /// unless the test wants to wait for the keep-alive timeout.
    pub fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("cannot set a write timeout");
        // The server may answer and close before taking everything (e.g. a 413); what it
        // sent is still worth reading.
        let _ = stream.write_all(bytes);
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            stream
                .set_read_timeout(Some(remaining))
                .expect("cannot set a read timeout");
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        out
    }

    /// The whole error log so far.
    pub fn error_log(&self) -> String {
        read_lossy(&self.path.join("error.log"))
    }

    /// Polls the error log until it contains `needle`; false if `timeout` passes first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.error_log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL);
        }
    }

    /// The pid of the Apache parent process (the one the harness spawned).
    pub fn parent_pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("the server was already stopped")
            .id()
    }

    /// Stops Apache with SIGTERM (SIGKILL after 15 s), kills any process it left behind,
    /// and checks the error log: panics if it holds unexpected lines (see
    /// [`unexpected_log_lines`]).
    pub fn stop(mut self) -> Stopped {
        let (elapsed, killed) = self.shutdown();
        let error_log = self.error_log();
        self.check_log(&error_log);
        Stopped {
            elapsed,
            error_log,
            killed,
        }
    }

    /// Stops the Apache parent and everything it started. Returns how long the parent
    /// took to exit and whether it had to be killed; zero and false if already stopped.
    fn shutdown(&mut self) -> (Duration, bool) {
        let Some(mut child) = self.child.take() else {
            return (Duration::ZERO, false);
        };
        let children: Vec<ProcessId> = process::children_of(child.id());
        if matches!(child.try_wait(), Ok(None)) {
            wait_for_closing_connections(self.port);
        }
        let (elapsed, killed) = process::terminate(&mut child, STOP_GRACE);
        process::kill_leftovers(&self.conf, &children);
        (elapsed, killed)
    }

    /// Panics if `log` has unexpected lines, keeping the server directory for inspection.
    fn check_log(&mut self, log: &str) {
        self.checked = true;
        let unexpected = unexpected_log_lines(log, &self.allow);
        if unexpected.is_empty() {
            return;
        }
        let kept = self.keep_dir();
        panic!(
            "unexpected lines in the error log of the server in {}:\n{}\n\
             --- last {TAIL_LINES} lines of the error log ---\n{}",
            kept.display(),
            unexpected.join("\n"),
            tail(log, TAIL_LINES)
        );
    }

    /// Stops the temporary directory from being deleted; returns its path.
    fn keep_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
        if std::thread::panicking() {
            let kept = self.keep_dir();
            eprintln!(
                "test failed; server directory kept at {}\n--- last {TAIL_LINES} lines of \
                 its error log ---\n{}",
                kept.display(),
                tail(&self.error_log(), TAIL_LINES)
            );
            return;
        }
        if !self.checked {
            let log = self.error_log();
            self.check_log(&log);
        }
    }
}

/// Before an ungraceful stop: waits (at most [`CLOSING_LIMIT`]) until Apache has finished
/// closing the connections to `port` that are closing, then [`CLOSING_SETTLE`] more.
///
/// This works around a race in Apache's event MPM. At an ungraceful stop (SIGTERM) the
/// child's main thread closes the socket of every connection a worker thread is handling,
/// taken from the workers' socket table (`close_worker_sockets`); a worker that is closing
/// a connection at that moment destroys the connection's pool, socket included, before it
/// clears its table entry. Debian's APR unmaps the memory of a destroyed pool, so the main
/// thread reads an unmapped `apr_socket_t` and the child dies with SIGSEGV, before any
/// module's child-exit cleanup runs. A test that stops the server right after its last
/// response is in exactly that state: the client has closed its side, and a worker is
/// closing the server's side (docs/known-issues.md, "A child crash at stop").
fn wait_for_closing_connections(port: u16) {
    let deadline = Instant::now() + CLOSING_LIMIT;
    while closing_connections(port) > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
    }
    // The socket is closed before the rest of the pool is freed and the table entry cleared.
    sleep(CLOSING_SETTLE);
}

/// How many TCP sockets of a process on local port `port` (the server's side of a
/// connection to it) are closing: FIN_WAIT1, FIN_WAIT2, CLOSE, CLOSE_WAIT, LAST_ACK or
/// CLOSING. Sockets no process owns any more (inode 0: TIME_WAIT, orphans) are not counted.
pub fn closing_connections(port: u16) -> usize {
    const CLOSING: &[&str] = &["04", "05", "07", "08", "09", "0B"];
    let local_suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 9
                        && fields[1].ends_with(&local_suffix)
                        && CLOSING.contains(&fields[3])
                        && fields[9] != "0"
                })
                .count()
        })
        .sum()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
        .port()
}

/// Waits until the Apache we spawned has written its pid file (so it bound the port)
/// and answers an HTTP request for `/`.
fn wait_ready(child: &mut Child, dir: &Path, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let pid = child.id().to_string();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("apache2 exited with {status}"));
        }
        let pid_written = fs::read_to_string(dir.join("httpd.pid")).is_ok_and(|t| t.trim() == pid);
        if pid_written && answers_http(port, deadline) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no HTTP answer within {START_TIMEOUT:?}"));
        }
        sleep(POLL);
    }
}

/// Whether an HTTP/1.0 `GET /` on `port` gets a status line back before `deadline`.
fn answers_http(port: u16, deadline: Instant) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let wait = remaining.clamp(Duration::from_millis(100), Duration::from_secs(5));
    if stream.set_read_timeout(Some(wait)).is_err() || stream.set_write_timeout(Some(wait)).is_err()
    {
        return false;
    }
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while head.len() < 5 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head.starts_with(b"HTTP/")
}

/// Creates (truncating) a log file for Apache's stdout or stderr.
fn log_file(path: &Path) -> fs::File {
    let file =
        fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o644));
    file
}

/// Writes `contents` to `dir/rel`, creating world-readable parent directories and a
/// world-readable file.
fn write_world_readable(dir: &Path, rel: &Path, contents: &[u8]) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        create_world_readable_dir(parent);
    }
    fs::write(&path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// A file's contents as text (empty if it cannot be read).
fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Apache's stdout and stderr and the tail of its error log, for failure messages.
fn server_outputs(dir: &Path) -> String {
    format!(
        "--- apache2 stdout ---\n{}\n--- apache2 stderr ---\n{}\n--- error.log (last {TAIL_LINES} \
         lines) ---\n{}",
        read_lossy(&dir.join("stdout.log")),
        read_lossy(&dir.join("stderr.log")),
        tail(&read_lossy(&dir.join("error.log")), TAIL_LINES)
    )
}
