//! Turns the command-line options of `start-server`/`setup-server` into a checked
//! [`Setup`] (absolute paths that exist, the user Apache's children run as, the module to load),
//! and writes the server root: `httpd.conf`, `apachectl`, `envvars`, `logs/`, `htdocs/` and the
//! generated Python scripts, all readable by everyone.

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Group, Uid, User};

use super::cli::{ApplicationType, ServerArgs};
use super::config;
use super::error::{ExpressError, Result};
use super::handler;
use super::module;

/// The user and group Apache's children run as when Apache is started as root, unless
/// `--user`/`--group` say otherwise.
pub const DEFAULT_RUN_USER: &str = "www-data";
/// See [`DEFAULT_RUN_USER`].
pub const DEFAULT_RUN_GROUP: &str = "www-data";

/// The longest Unix socket path Linux takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// What the module appends to `DefaultRuntimeDir` for a daemon socket, at most:
/// `/wsgi.<pid>.<tag>.sock` with a 7-digit pid and the 8 hex digits that stand for the group.
const SOCKET_SUFFIX: usize = "/wsgi.4194304.0123abcd.sock".len();

/// The files and folders of a server root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The server root itself.
    pub root: PathBuf,
}

impl Layout {
    /// `httpd.conf`.
    pub fn conf(&self) -> PathBuf {
        self.root.join("httpd.conf")
    }
    /// `apachectl`, the control script.
    pub fn apachectl(&self) -> PathBuf {
        self.root.join("apachectl")
    }
    /// `envvars`, sourced by `apachectl`.
    pub fn envvars(&self) -> PathBuf {
        self.root.join("envvars")
    }
    /// `handler.wsgi`, the WSGI script Apache is given.
    pub fn handler(&self) -> PathBuf {
        self.root.join("handler.wsgi")
    }
    /// `default.wsgi`, the built-in page served when no application is named.
    pub fn default_script(&self) -> PathBuf {
        self.root.join("default.wsgi")
    }
    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// `logs/error_log`.
    pub fn error_log(&self) -> PathBuf {
        self.logs().join("error_log")
    }
    /// `logs/access_log`.
    pub fn access_log(&self) -> PathBuf {
        self.logs().join("access_log")
    }
    /// `httpd.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("httpd.pid")
    }
    /// `htdocs/`, the document root when `--document-root` is not given.
    pub fn htdocs(&self) -> PathBuf {
        self.root.join("htdocs")
    }
}

/// What the server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum App {
    /// A WSGI script file (absolute path), or the built-in `default.wsgi`.
    Script(PathBuf),
    /// `module` imported and `callable` (possibly dotted) taken from it.
    Module {
        /// The dotted module name.
        module: String,
        /// The attribute path of the callable.
        callable: String,
    },
    /// A folder of static files only.
    Static(PathBuf),
}

/// HTTPS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Https {
    /// The port.
    pub port: u16,
    /// The certificate file (absolute).
    pub certificate: PathBuf,
    /// The key file (absolute).
    pub key: PathBuf,
}

/// Everything the generated files depend on, checked.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The options as given (numbers, flags and names are used from here).
    pub args: ServerArgs,
    /// Where everything is written.
    pub layout: Layout,
    /// What is served.
    pub app: App,
    /// The `ServerName`.
    pub server_name: String,
    /// HTTPS, if enabled.
    pub https: Option<Https>,
    /// The WSGI module to load (absolute); `None` for a static site.
    pub module: Option<PathBuf>,
    /// `User`/`Group` for Apache's children, when started as root.
    pub run_as: Option<(String, String)>,
    /// The Python home (virtualenv), absolute.
    pub python_home: Option<PathBuf>,
    /// Folders added to sys.path, absolute.
    pub python_paths: Vec<PathBuf>,
    /// The working folder of the daemons (`home=`), absolute.
    pub working_directory: Option<PathBuf>,
    /// `--url-alias` pairs, with absolute targets.
    pub url_aliases: Vec<(String, PathBuf)>,
    /// `--document-root`, absolute.
    pub document_root: Option<PathBuf>,
    /// The mount point, starting with `/`, without a trailing `/` unless it is `/`.
    pub mount_point: String,
    /// `--include-file` files, absolute.
    pub include_files: Vec<PathBuf>,
    /// Warnings to show the user (paths Apache's children probably cannot read).
    pub warnings: Vec<String>,
}

impl Setup {
    /// The daemon process group's name, `HOST:PORT`.
    pub fn group_name(&self) -> String {
        format!("{}:{}", self.args.host, self.args.port)
    }

    /// `http://HOST:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}:{}/", url_host(&self.args.host), self.args.port)
    }

    /// `https://HOST:PORT/`, when HTTPS is on.
    pub fn https_url(&self) -> Option<String> {
        self.https
            .as_ref()
            .map(|https| format!("https://{}:{}/", url_host(&self.args.host), https.port))
    }

    /// Whether a Python application is served (not a static site).
    pub fn has_python(&self) -> bool {
        !matches!(self.app, App::Static(_))
    }

    /// Whether mod_rewrite is needed (a document root in front of the application).
    pub fn needs_rewrite(&self) -> bool {
        self.document_root.is_some() && self.has_python()
    }

    /// The total of request threads in the daemon processes.
    pub fn capacity(&self) -> u32 {
        self.args.processes.saturating_mul(self.args.threads)
    }
}

/// `host` as written in a URL or a `Listen` line: IPv6 literals in brackets.
pub fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The server root used when `--server-root` is not given: `$TMPDIR` (or `/tmp`) and
/// `mod_wsgi-HOST:PORT:UID`.
pub fn default_server_root(host: &str, port: u16) -> PathBuf {
    let tmp = std::env::var_os("TMPDIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    tmp.join(format!("mod_wsgi-{host}:{port}:{}", Uid::current()))
}

/// Checks the options and resolves every path.
pub fn resolve(given: &ServerArgs) -> Result<Setup> {
    check_host(&given.host)?;
    check_log_level(&given.log_level)?;
    let mut args = given.clone();
    args.httpd_executable = absolute(&given.httpd_executable)?;
    if !args.httpd_executable.is_file() {
        return Err(ExpressError::ApacheMissing(args.httpd_executable));
    }
    args.modules_directory = absolute(&given.modules_directory)?;
    for name in config::BASE_MODULES {
        let so = args.modules_directory.join(format!("mod_{name}.so"));
        if !so.is_file() {
            return Err(ExpressError::ApacheModuleMissing(so));
        }
    }
    let args = &args;

    let layout = Layout {
        root: match &args.server_root {
            Some(root) => absolute(root)?,
            None => default_server_root(&args.host, args.port),
        },
    };
    if layout.root.as_os_str().len() + SOCKET_SUFFIX > MAX_SOCKET_PATH {
        return Err(ExpressError::BadOption(format!(
            "the server root {} is too long for the daemon sockets it holds; choose a shorter \
             --server-root",
            layout.root.display()
        )));
    }

    let app = resolve_app(args, &layout)?;
    let module = match app {
        App::Static(_) => None,
        _ => Some(module::module_path(&args.module)?),
    };
    let run_as = run_as(args)?;
    let mut warnings = Vec::new();
    if !Uid::effective().is_root() && (args.user.is_some() || args.group.is_some()) {
        warnings.push(
            "--user and --group only apply when started as root; Apache's children run as \
             this user"
                .to_owned(),
        );
    }
    let access = run_as
        .as_ref()
        .map(|(user, group)| Access::for_account(user, group))
        .transpose()?;

    let python_home = resolve_python_home(args.python_home.as_deref())?;
    let python_paths = args
        .python_paths
        .iter()
        .map(|dir| existing_dir("the --python-path folder", dir))
        .collect::<Result<Vec<_>>>()?;
    let working_directory = match &args.working_directory {
        Some(dir) => Some(existing_dir("the working directory", dir)?),
        // The current folder, if the daemons can enter it and it can be written into
        // httpd.conf.
        None => std::env::current_dir().ok().filter(|dir| {
            access.as_ref().is_none_or(|a| a.can_enter(dir))
                && dir
                    .to_str()
                    .is_some_and(|d| config::check_value("", d).is_ok())
        }),
    };
    let url_aliases = resolve_url_aliases(args)?;
    let document_root = args
        .document_root
        .as_deref()
        .map(|dir| existing_dir("the document root", dir))
        .transpose()?;
    let include_files = args
        .include_files
        .iter()
        .map(|file| existing_file("the include file", file))
        .collect::<Result<Vec<_>>>()?;
    let https = resolve_https(args)?;
    if https.as_ref().is_some_and(|https| https.port == args.port) {
        return Err(ExpressError::BadOption(
            "--https-port must differ from --port".to_owned(),
        ));
    }

    let mut setup = Setup {
        server_name: args
            .server_name
            .clone()
            .unwrap_or_else(|| args.host.clone()),
        mount_point: normalise_mount_point(&args.mount_point)?,
        args: args.clone(),
        layout,
        app,
        https,
        module,
        run_as,
        python_home,
        python_paths,
        working_directory,
        url_aliases,
        document_root,
        include_files,
        warnings,
    };
    config::check_paths(&setup)?;
    if let Some(access) = &access {
        setup.warnings.extend(access.warnings(&setup));
    }
    Ok(setup)
}

/// The application from the positional argument and `--application-type`.
fn resolve_app(args: &ServerArgs, layout: &Layout) -> Result<App> {
    let entry = args.entry();
    match (args.application_type, entry) {
        (ApplicationType::Script, None) => Ok(App::Script(layout.default_script())),
        (ApplicationType::Script, Some(script)) => Ok(App::Script(existing_file(
            "the WSGI script",
            Path::new(script),
        )?)),
        (ApplicationType::Module, None) => Err(ExpressError::BadOption(
            "--application-type module needs an entry point such as myapp.wsgi:application"
                .to_owned(),
        )),
        (ApplicationType::Module, Some(entry)) => {
            let (module, callable) = match entry.split_once(':') {
                Some((module, callable)) => (module, callable),
                None => (entry, args.callable_object.as_str()),
            };
            let dotted = |text: &str| {
                !text.is_empty()
                    && text.split('.').all(|part| {
                        !part.is_empty()
                            && !part.starts_with(|c: char| c.is_ascii_digit())
                            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                    })
            };
            if !dotted(module) || !dotted(callable) {
                return Err(ExpressError::BadOption(format!(
                    "'{entry}' is not an entry point of the form package.module:callable"
                )));
            }
            Ok(App::Module {
                module: module.to_owned(),
                callable: callable.to_owned(),
            })
        }
        (ApplicationType::Static, None) => Ok(App::Static(layout.htdocs())),
        (ApplicationType::Static, Some(dir)) => Ok(App::Static(existing_dir(
            "the static folder",
            Path::new(dir),
        )?)),
    }
}

/// `User` and `Group` for Apache's children: only when running as root.
fn run_as(args: &ServerArgs) -> Result<Option<(String, String)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = args.user.as_deref().unwrap_or(DEFAULT_RUN_USER).to_owned();
    let group = args
        .group
        .as_deref()
        .unwrap_or(DEFAULT_RUN_GROUP)
        .to_owned();
    Ok(Some((user, group)))
}

/// `--python-home`, else `$VIRTUAL_ENV`, as an absolute folder that exists.
pub fn resolve_python_home(given: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(dir) = given {
        return existing_dir("the Python home", dir).map(Some);
    }
    match std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        Some(venv) => existing_dir("the virtualenv in VIRTUAL_ENV", Path::new(&venv)).map(Some),
        None => Ok(None),
    }
}

fn resolve_url_aliases(args: &ServerArgs) -> Result<Vec<(String, PathBuf)>> {
    args.url_alias_pairs()
        .map(|(url, target)| {
            if !url.starts_with('/') {
                return Err(ExpressError::BadOption(format!(
                    "--url-alias {url} {target}: the URL path must start with '/'"
                )));
            }
            let path = absolute(Path::new(target))?;
            if !path.exists() {
                return Err(ExpressError::NotFound {
                    what: "the --url-alias target",
                    path,
                });
            }
            Ok((url.to_owned(), path))
        })
        .collect()
}

fn resolve_https(args: &ServerArgs) -> Result<Option<Https>> {
    match (
        args.https_port,
        &args.ssl_certificate_file,
        &args.ssl_certificate_key_file,
    ) {
        (None, None, None) => Ok(None),
        (Some(port), Some(certificate), Some(key)) => Ok(Some(Https {
            port,
            certificate: existing_file("the SSL certificate file", certificate)?,
            key: existing_file("the SSL certificate key file", key)?,
        })),
        _ => Err(ExpressError::BadOption(
            "HTTPS needs all three of --https-port, --ssl-certificate-file and \
             --ssl-certificate-key-file"
                .to_owned(),
        )),
    }
}

/// `/`, or `/path` without a trailing slash.
fn normalise_mount_point(mount: &str) -> Result<String> {
    if !mount.starts_with('/') {
        return Err(ExpressError::BadOption(format!(
            "--mount-point {mount}: it must start with '/'"
        )));
    }
    let trimmed = mount.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn check_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ExpressError::BadOption(format!(
            "--host '{host}' is not an IP address or host name"
        )))
    }
}

/// Apache's log levels, with optional per-module levels (`info wsgi:debug`) not allowed: one
/// word.
fn check_log_level(level: &str) -> Result<()> {
    const LEVELS: &[&str] = &[
        "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug", "trace1", "trace2",
        "trace3", "trace4", "trace5", "trace6", "trace7", "trace8",
    ];
    if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(ExpressError::BadOption(format!(
            "--log-level '{level}' is not one of: {}",
            LEVELS.join(", ")
        )))
    }
}

/// `path` made absolute (not resolving symbolic links).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| ExpressError::io("resolve", path, e))
}

fn existing_file(what: &'static str, path: &Path) -> Result<PathBuf> {
    let path = absolute(path)?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExpressError::NotFound { what, path })
    }
}

fn existing_dir(what: &'static str, path: &Path) -> Result<PathBuf> {
    let path = absolute(path)?;
    if path.is_dir() {
        Ok(path)
    } else if path.exists() {
        Err(ExpressError::BadOption(format!(
            "{what} {} is not a folder",
            path.display()
        )))
    } else {
        Err(ExpressError::NotFound { what, path })
    }
}

/// Fails with [`ExpressError::ServerRootInUse`] when the server root's pid file names a live
/// Apache started from it, whose files must not be rewritten under it.
pub fn check_root_not_running(setup: &Setup) -> Result<()> {
    let pid_file = setup.layout.pid_file();
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    // A live process whose command line names this server root (pids are reused).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let root = setup.layout.root.as_os_str().as_encoded_bytes();
    let names_root = !root.is_empty() && cmdline.windows(root.len()).any(|w| w == root);
    if pid > 0 && names_root {
        return Err(ExpressError::ServerRootInUse {
            root: setup.layout.root.clone(),
            pid,
        });
    }
    Ok(())
}

/// Fails with [`ExpressError::PortInUse`] when something listens on `host:port`: binds it for
/// a moment (as Apache will) and lets it go.
pub fn check_port_free(host: &str, port: u16) -> Result<()> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|source| ExpressError::CannotListen {
            host: host.to_owned(),
            port,
            source,
        })?
        .collect();
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(listener) => drop(listener),
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                return Err(ExpressError::PortInUse {
                    host: host.to_owned(),
                    port,
                });
            }
            Err(source) => {
                return Err(ExpressError::CannotListen {
                    host: host.to_owned(),
                    port,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Writes the server root: the folder (mode 0755), `logs/`, `htdocs/`, `httpd.conf`,
/// `apachectl` (0755), `envvars` and the Python scripts, every file readable by everyone.
pub fn write_server_root(setup: &Setup) -> Result<()> {
    let root = &setup.layout.root;
    make_dir(root)?;
    make_dir(&setup.layout.logs())?;
    make_dir(&setup.layout.htdocs())?;
    if let App::Script(script) = &setup.app
        && *script == setup.layout.default_script()
    {
        write_file(script, handler::DEFAULT_SCRIPT.as_bytes(), 0o644)?;
    }
    if let Some(text) = handler::render(setup) {
        write_file(&setup.layout.handler(), text.as_bytes(), 0o644)?;
    }
    write_file(&setup.layout.envvars(), config::envvars().as_bytes(), 0o644)?;
    write_file(
        &setup.layout.apachectl(),
        config::apachectl(setup).as_bytes(),
        0o755,
    )?;
    write_file(
        &setup.layout.conf(),
        config::httpd_conf(setup).as_bytes(),
        0o644,
    )
}

/// Creates `dir` if needed; refuses a symbolic link or a folder owned by someone else (the
/// default server root is in the shared `/tmp`); makes it `rwxr-xr-x`.
fn make_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() {
                return Err(ExpressError::ServerRootNotOurs(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| ExpressError::io("create", dir, e))?;
        }
        Err(e) => return Err(ExpressError::io("inspect", dir, e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| ExpressError::io("change the mode of", dir, e))
}

/// Writes `contents` to `path` through a temporary file renamed into place, with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::File::create(&tmp).map_err(|e| ExpressError::io("write", &tmp, e))?;
    file.write_all(contents)
        .map_err(|e| ExpressError::io("write", &tmp, e))?;
    drop(file);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| ExpressError::io("change the mode of", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| ExpressError::io("write", path, e))
}

/// Who Apache's children run as, to tell whether they can read a path.
struct Access {
    user: String,
    uid: u32,
    gid: u32,
}

impl Access {
    fn for_account(user: &str, group: &str) -> Result<Self> {
        let account =
            User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(|| ExpressError::UnknownAccount {
                    kind: "user",
                    name: user.to_owned(),
                })?;
        let group =
            Group::from_name(group)
                .ok()
                .flatten()
                .ok_or_else(|| ExpressError::UnknownAccount {
                    kind: "group",
                    name: group.to_owned(),
                })?;
        Ok(Self {
            user: user.to_owned(),
            uid: account.uid.as_raw(),
            gid: group.gid.as_raw(),
        })
    }

    /// Whether the permission `bit` (4 read, 1 search) is granted to this account on `meta`.
    fn allowed(&self, meta: &fs::Metadata, bit: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let shift = if meta.uid() == self.uid {
            6
        } else if meta.gid() == self.gid {
            3
        } else {
            0
        };
        mode & (bit << shift) != 0
    }

    /// Whether every folder above `path` can be searched and `path` itself read (and, for a
    /// folder, searched).
    fn can_read(&self, path: &Path) -> bool {
        let Ok(meta) = fs::metadata(path) else {
            return false;
        };
        let own = if meta.is_dir() { 5 } else { 4 };
        self.allowed(&meta, own) && self.ancestors_searchable(path)
    }

    fn can_enter(&self, dir: &Path) -> bool {
        fs::metadata(dir).is_ok_and(|meta| meta.is_dir() && self.allowed(&meta, 5))
            && self.ancestors_searchable(dir)
    }

    fn ancestors_searchable(&self, path: &Path) -> bool {
        path.ancestors()
            .skip(1)
            .all(|dir| fs::metadata(dir).is_ok_and(|meta| self.allowed(&meta, 1)))
    }

    /// One warning per path that Apache's children or the daemons must read but cannot.
    fn warnings(&self, setup: &Setup) -> Vec<String> {
        let mut paths: Vec<(&str, &Path)> = Vec::new();
        match &setup.app {
            App::Script(script) if *script != setup.layout.default_script() => {
                paths.push(("the WSGI script", script));
            }
            App::Static(dir) => paths.push(("the static folder", dir)),
            _ => {}
        }
        if let Some(home) = &setup.python_home {
            paths.push(("the Python home", home));
        }
        for dir in &setup.python_paths {
            paths.push(("the --python-path folder", dir));
        }
        if setup.args.working_directory.is_some()
            && let Some(dir) = &setup.working_directory
        {
            paths.push(("the working directory", dir));
        }
        if let Some(dir) = &setup.document_root {
            paths.push(("the document root", dir));
        }
        for (_, target) in &setup.url_aliases {
            paths.push(("the --url-alias target", target));
        }
        let mut warnings: Vec<String> = paths
            .into_iter()
            .filter(|(_, path)| !self.can_read(path))
            .map(|(what, path)| {
                format!(
                    "{what} {} is not readable by {}, the user Apache's children run as",
                    path.display(),
                    self.user
                )
            })
            .collect();
        if !self.ancestors_searchable(&setup.layout.root) {
            warnings.push(format!(
                "the folders above the server root {} cannot be entered by {}, the user \
                 Apache's children run as",
                setup.layout.root.display(),
                self.user
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_normalised() {
        assert_eq!(normalise_mount_point("/").unwrap(), "/");
        assert_eq!(normalise_mount_point("/app/").unwrap(), "/app");
        assert_eq!(normalise_mount_point("//").unwrap(), "/");
        assert!(normalise_mount_point("app").is_err());
    }

    #[test]
    fn hosts_and_levels_are_checked() {
        assert!(check_host("127.0.0.1").is_ok());
        assert!(check_host("::1").is_ok());
        assert!(check_host("my host").is_err());
        assert!(check_host("").is_err());
        assert!(check_log_level("warn").is_ok());
        assert!(check_log_level("TRACE8").is_ok());
        assert!(check_log_level("loud").is_err());
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_urls() {
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn default_server_root_names_host_port_and_uid() {
        let root = default_server_root("127.0.0.1", 8000);
        let name = root.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name, format!("mod_wsgi-127.0.0.1:8000:{}", Uid::current()));
    }
}
