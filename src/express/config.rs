//! The text of the generated files: `httpd.conf` (a complete standalone Apache configuration
//! that runs the application in one daemon process group), `apachectl` and `envvars`. Pure
//! functions of a [`Setup`], so that they can be tested without Apache.

use std::fmt::Write as _;
use std::path::Path;

use super::error::{ExpressError, Result};
use super::setup::{App, Setup, url_host};

/// Apache modules every generated configuration loads from the modules folder (besides the
/// WSGI module), in this order.
pub const BASE_MODULES: &[&str] = &[
    "mpm_event",
    "authz_core",
    "authn_core",
    "mime",
    "alias",
    "dir",
    "env",
    "setenvif",
];

/// Where Apache finds the MIME types.
pub const MIME_TYPES: &str = "/etc/mime.types";

/// The `LANG` Apache, its children and the daemons get.
pub const LANG: &str = "C.UTF-8";

/// Environment variables removed from Apache's environment: they would change which Python
/// the module starts, or its `sys.path`, behind the configuration's back.
pub const REMOVED_ENV: &[&str] = &["PYTHONHOME", "PYTHONPATH"];

/// `value` as one argument of an Apache directive: bare when it is made of plain characters,
/// otherwise in double quotes. Values were checked with [`check_value`] first.
pub fn arg(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%~{}".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("\"{value}\"")
    }
}

/// [`arg`] for a path.
pub fn path_arg(path: &Path) -> String {
    arg(&path.to_string_lossy())
}

/// Refuses what cannot be written into `httpd.conf` as a (quoted) argument: double quotes,
/// backslashes, control characters, `${` (Apache would expand it) and text that is not UTF-8.
pub fn check_value(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.contains('"') {
        Some("it contains a double quote")
    } else if value.contains('\\') {
        Some("it contains a backslash")
    } else if value.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if value.contains("${") {
        Some("it contains '${'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ExpressError::BadPath {
            what,
            path: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_path(what: &'static str, path: &Path) -> Result<()> {
    let Some(text) = path.to_str() else {
        return Err(ExpressError::BadPath {
            what,
            path: path.to_string_lossy().into_owned(),
            reason: "it is not valid UTF-8",
        });
    };
    check_value(what, text)
}

/// Checks every path and name that goes into the generated files.
pub fn check_paths(setup: &Setup) -> Result<()> {
    check_path("the server root", &setup.layout.root)?;
    check_path("the Apache binary", &setup.args.httpd_executable)?;
    check_path("the Apache modules folder", &setup.args.modules_directory)?;
    check_value("the server name", &setup.server_name)?;
    check_value("the mount point", &setup.mount_point)?;
    if let Some(module) = &setup.module {
        check_path("the WSGI module", module)?;
    }
    match &setup.app {
        App::Script(path) => check_path("the WSGI script", path)?,
        App::Static(path) => check_path("the static folder", path)?,
        App::Module { .. } => {}
    }
    if let Some(home) = &setup.python_home {
        check_path("the Python home", home)?;
    }
    for dir in &setup.python_paths {
        check_path("the --python-path folder", dir)?;
        if dir.to_string_lossy().contains(':') {
            return Err(ExpressError::BadPath {
                what: "the --python-path folder",
                path: dir.to_string_lossy().into_owned(),
                reason: "it contains ':', the separator of python-path=",
            });
        }
    }
    if let Some(dir) = &setup.working_directory {
        check_path("the working directory", dir)?;
    }
    if let Some(dir) = &setup.document_root {
        check_path("the document root", dir)?;
    }
    for (url, target) in &setup.url_aliases {
        check_value("the --url-alias URL path", url)?;
        check_path("the --url-alias target", target)?;
    }
    for file in &setup.include_files {
        check_path("the include file", file)?;
    }
    if let Some(https) = &setup.https {
        check_path("the SSL certificate file", &https.certificate)?;
        check_path("the SSL certificate key file", &https.key)?;
    }
    if let Some((user, group)) = &setup.run_as {
        check_value("the user", user)?;
        check_value("the group", group)?;
    }
    Ok(())
}

/// Apache's process and thread sizing for the event MPM, from `--max-clients` or from the
/// daemons' capacity (the C mod_wsgi-express's rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// `MaxRequestWorkers`: concurrent connections.
    pub max_request_workers: u32,
    /// `ServerLimit`: child processes at most.
    pub server_limit: u32,
    /// `ThreadsPerChild` (and `ThreadLimit`).
    pub threads_per_child: u32,
    /// `StartServers`.
    pub start_servers: u32,
    /// `MinSpareThreads`.
    pub min_spare_threads: u32,
    /// `MaxSpareThreads`.
    pub max_spare_threads: u32,
}

impl Sizing {
    /// The sizing for `capacity` request threads (processes x threads) and an optional
    /// `--max-clients`.
    pub fn new(capacity: u32, max_clients: Option<u32>) -> Self {
        let clients = match max_clients {
            Some(max) => max.max(capacity),
            None => 10 + 10u32.max(capacity.saturating_mul(3) / 2),
        };
        let threads_per_child = if clients > 20 {
            clients / (clients / 20 + 1)
        } else {
            10
        };
        let server_limit = clients.div_ceil(threads_per_child);
        Self {
            max_request_workers: server_limit * threads_per_child,
            server_limit,
            threads_per_child,
            start_servers: (server_limit / 5).max(1),
            min_spare_threads: threads_per_child.max(server_limit / 5 * threads_per_child),
            max_spare_threads: threads_per_child.max(server_limit * 3 / 5 * threads_per_child),
        }
    }
}

/// The complete `httpd.conf`.
pub fn httpd_conf(setup: &Setup) -> String {
    let mut c = String::new();
    let args = &setup.args;
    let layout = &setup.layout;
    let root = path_arg(&layout.root);
    let modules = &args.modules_directory;
    let load = |c: &mut String, name: &str| {
        let so = modules.join(format!("mod_{name}.so"));
        let _ = writeln!(c, "LoadModule {name}_module {}", path_arg(&so));
    };

    c.push_str(
        "# Generated by mod_wsgi-express (mod_wsgi-rs); written again at each start-server or\n\
         # setup-server, so edit the options, not this file. See docs/express.md.\n\n",
    );
    let _ = writeln!(c, "ServerRoot {root}");
    let _ = writeln!(c, "ServerName {}", arg(&setup.server_name));
    let _ = writeln!(c, "Listen {}:{}", url_host(&args.host), args.port);
    let _ = writeln!(c, "PidFile {}", path_arg(&layout.pid_file()));
    let _ = writeln!(c, "DefaultRuntimeDir {root}");
    let _ = writeln!(
        c,
        "Mutex {} default",
        arg(&format!("file:{}", layout.root.display()))
    );
    match &setup.run_as {
        Some((user, group)) => {
            let _ = writeln!(c, "User {}\nGroup {}", arg(user), arg(group));
        }
        None => c.push_str("# Not started as root: Apache's children run as the same user.\n"),
    }
    let error_log = if args.log_to_terminal {
        "/dev/stderr".to_owned()
    } else {
        path_arg(&layout.error_log())
    };
    let _ = writeln!(c, "ErrorLog {error_log}");
    let _ = writeln!(c, "LogLevel {}", args.log_level.to_ascii_lowercase());
    if args.access_log {
        let access_log = if args.log_to_terminal {
            "/dev/stdout".to_owned()
        } else {
            path_arg(&layout.access_log())
        };
        c.push_str("LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b\" common\n");
        let _ = writeln!(c, "CustomLog {access_log} common");
    }
    c.push_str("ServerSignature Off\nServerTokens Prod\nHostnameLookups Off\n");
    let _ = writeln!(c, "Timeout {}", args.socket_timeout.max(1));
    if args.keep_alive_timeout == 0 {
        c.push_str("KeepAlive Off\n");
    } else {
        let _ = writeln!(
            c,
            "KeepAlive On\nKeepAliveTimeout {}",
            args.keep_alive_timeout
        );
    }
    let _ = writeln!(c, "LimitRequestBody {}", args.limit_request_body);
    if args.enable_sendfile {
        c.push_str("EnableSendfile On\n");
    }

    c.push_str("\n# Apache's own modules.\n");
    for name in BASE_MODULES {
        load(&mut c, name);
    }
    if setup.needs_rewrite() {
        load(&mut c, "rewrite");
    }
    if setup.https.is_some() {
        load(&mut c, "socache_shmcb");
        load(&mut c, "ssl");
    }

    let sizing = Sizing::new(setup.capacity(), args.max_clients);
    let _ = write!(
        c,
        "\n# The event MPM: up to {} concurrent connections.\n\
         StartServers {}\nServerLimit {}\nThreadLimit {}\nThreadsPerChild {}\n\
         MaxRequestWorkers {}\nMinSpareThreads {}\nMaxSpareThreads {}\n\
         MaxConnectionsPerChild 0\n",
        sizing.max_request_workers,
        sizing.start_servers,
        sizing.server_limit,
        sizing.threads_per_child,
        sizing.threads_per_child,
        sizing.max_request_workers,
        sizing.min_spare_threads,
        sizing.max_spare_threads,
    );

    let _ = writeln!(c, "\nTypesConfig {MIME_TYPES}");
    c.push_str("\n<Directory />\n    AllowOverride None\n    Require all denied\n</Directory>\n");
    document_root(&mut c, setup);
    url_aliases(&mut c, setup);
    if setup.has_python() {
        wsgi(&mut c, setup);
    }
    https(&mut c, setup);
    if !setup.include_files.is_empty() {
        c.push_str("\n# --include-file\n");
        for file in &setup.include_files {
            let _ = writeln!(c, "Include {}", path_arg(file));
        }
    }
    c
}

/// `DocumentRoot`, and for `--document-root` in front of an application, the rewrite rule
/// that serves the files it has.
fn document_root(c: &mut String, setup: &Setup) {
    let docroot = match (&setup.app, &setup.document_root) {
        (App::Static(dir), _) => dir.clone(),
        (_, Some(dir)) => dir.clone(),
        _ => setup.layout.htdocs(),
    };
    let dir = path_arg(&docroot);
    let _ = write!(
        c,
        "\nDocumentRoot {dir}\n<Directory {dir}>\n    Options FollowSymLinks\n    \
         Require all granted\n</Directory>\n"
    );
    if matches!(setup.app, App::Static(_)) {
        c.push_str("DirectoryIndex index.html\n");
    }
    if setup.needs_rewrite() {
        // mod_rewrite maps the URL before mod_alias and the WSGI module do (its
        // translate_name hook runs first): a URL naming a file in the document root is served
        // from there, any other URL goes on to WSGIScriptAlias.
        let target = arg(&format!("{}%{{REQUEST_URI}}", docroot.display()));
        let _ = write!(
            c,
            "\n# --document-root: files that exist there are served as they are.\n\
             RewriteEngine On\nRewriteCond {target} -f\nRewriteRule ^ {target} [L]\n"
        );
    }
}

/// `Alias` and access for each `--url-alias`.
fn url_aliases(c: &mut String, setup: &Setup) {
    for (url, target) in &setup.url_aliases {
        let _ = write!(c, "\nAlias {} {}\n", arg(url), path_arg(target));
        if target.is_dir() {
            let _ = write!(
                c,
                "<Directory {}>\n    Require all granted\n</Directory>\n",
                path_arg(target)
            );
        } else {
            let parent = target.parent().unwrap_or(Path::new("/"));
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = write!(
                c,
                "<Directory {}>\n    <Files {}>\n        Require all granted\n    </Files>\n\
                 </Directory>\n",
                path_arg(parent),
                arg(&name)
            );
        }
    }
}

/// The WSGI module, its daemon process group and the mount of `handler.wsgi`.
fn wsgi(c: &mut String, setup: &Setup) {
    let args = &setup.args;
    let Some(module) = &setup.module else {
        return;
    };
    c.push_str("\n# The WSGI application, through mod_wsgi-rs.\n");
    let _ = writeln!(c, "LoadModule wsgi_module {}", path_arg(module));
    if let Some(home) = &setup.python_home {
        let _ = writeln!(c, "WSGIPythonHome {}", path_arg(home));
    }
    let process_group = if args.embedded_mode {
        c.push_str("WSGIRestrictEmbedded Off\n");
        if !setup.python_paths.is_empty() {
            let _ = writeln!(c, "WSGIPythonPath {}", arg(&python_path(setup)));
        }
        String::new()
    } else {
        c.push_str("WSGIRestrictEmbedded On\n");
        let mut options = vec![
            format!("processes={}", args.processes),
            format!("threads={}", args.threads),
            "display-name=%{GROUP}".to_owned(),
        ];
        if let Some(dir) = &setup.working_directory {
            options.push(format!("home={}", dir.display()));
        }
        if let Some(home) = &setup.python_home {
            options.push(format!("python-home={}", home.display()));
        }
        if !setup.python_paths.is_empty() {
            options.push(format!("python-path={}", python_path(setup)));
        }
        options.extend([
            format!("maximum-requests={}", args.maximum_requests),
            format!("request-timeout={}", args.request_timeout),
            format!("connect-timeout={}", args.connect_timeout),
            format!("socket-timeout={}", args.socket_timeout),
            format!("queue-timeout={}", args.queue_timeout),
            format!("startup-timeout={}", args.startup_timeout),
            format!("shutdown-timeout={}", args.shutdown_timeout),
            format!("graceful-timeout={}", args.graceful_timeout),
            format!("deadlock-timeout={}", args.deadlock_timeout),
            format!("inactivity-timeout={}", args.inactivity_timeout),
        ]);
        let _ = write!(c, "WSGIDaemonProcess {}", arg(&setup.group_name()));
        for option in options {
            let _ = write!(c, " \\\n    {}", arg(&option));
        }
        c.push('\n');
        format!(" process-group={}", arg(&setup.group_name()))
    };
    c.push_str("WSGIScriptReloading On\nWSGIMapHEADToGET Auto\nWSGIPassAuthorization On\n");
    if args.enable_sendfile {
        c.push_str("WSGIEnableSendfile On\n");
    }
    let handler = setup.layout.handler();
    let _ = writeln!(
        c,
        "WSGIScriptAlias {} {}{process_group} application-group=%{{GLOBAL}}",
        arg(&setup.mount_point),
        path_arg(&handler),
    );
    let _ = write!(
        c,
        "<Directory {}>\n    <Files handler.wsgi>\n        Require all granted\n    </Files>\n\
         </Directory>\n",
        path_arg(&setup.layout.root)
    );
}

/// The `python-path=` value: the `--python-path` folders joined with `:`.
fn python_path(setup: &Setup) -> String {
    setup
        .python_paths
        .iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The HTTPS listener and virtual host (which shares the main server's mounts and aliases).
fn https(c: &mut String, setup: &Setup) {
    let Some(https) = &setup.https else {
        return;
    };
    let cache = setup.layout.root.join("ssl_scache(512000)");
    let _ = write!(
        c,
        "\n# HTTPS (--https-port).\nListen {}:{}\nSSLSessionCache {}\n\
         <VirtualHost *:{}>\n    ServerName {}\n    SSLEngine On\n    \
         SSLCertificateFile {}\n    SSLCertificateKeyFile {}\n",
        url_host(&setup.args.host),
        https.port,
        arg(&format!("shmcb:{}", cache.display())),
        https.port,
        arg(&format!("{}:{}", url_host(&setup.server_name), https.port)),
        path_arg(&https.certificate),
        path_arg(&https.key),
    );
    if setup.needs_rewrite() {
        c.push_str("    RewriteEngine On\n    RewriteOptions Inherit\n");
    }
    c.push_str("</VirtualHost>\n");
}

/// `envvars`: the environment `apachectl` gives Apache (start-server gives it the same).
pub fn envvars() -> String {
    format!(
        "# Generated by mod_wsgi-express: the environment Apache is started with, sourced by\n\
         # apachectl. mod_wsgi-express start-server applies the same settings.\n\
         unset {}\nLANG={LANG}\nexport LANG\n",
        REMOVED_ENV.join(" ")
    )
}

/// `value` quoted for a POSIX shell.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `apachectl`: starts, stops and checks this configuration.
pub fn apachectl(setup: &Setup) -> String {
    format!(
        r#"#!/bin/sh
# Generated by mod_wsgi-express: controls the Apache httpd configured in this folder.
#
#   apachectl start          start it in the background
#   apachectl stop           stop it (graceful-stop: let requests under way finish)
#   apachectl restart        restart it (graceful: let requests under way finish)
#   apachectl configtest     check httpd.conf
#   apachectl foreground     run it in the foreground until Ctrl-C
HTTPD={httpd}
SERVER_ROOT={root}

. "$SERVER_ROOT/envvars"

case "$1" in
start | stop | restart | graceful | graceful-stop)
    exec "$HTTPD" -f "$SERVER_ROOT/httpd.conf" -k "$1"
    ;;
configtest)
    exec "$HTTPD" -f "$SERVER_ROOT/httpd.conf" -t
    ;;
foreground)
    exec "$HTTPD" -f "$SERVER_ROOT/httpd.conf" -DFOREGROUND
    ;;
*)
    echo "usage: $0 start|stop|restart|graceful|graceful-stop|configtest|foreground" >&2
    exit 2
    ;;
esac
"#,
        httpd = shell_quote(&setup.args.httpd_executable.to_string_lossy()),
        root = shell_quote(&setup.layout.root.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::super::cli::{Cli, Command};
    use super::super::setup::{Https, Layout};
    use super::*;

    /// A setup as `resolve` would make it from `args`, without touching the file system.
    fn setup(extra: &[&str]) -> Setup {
        let mut argv = vec!["mod_wsgi-express", "setup-server"];
        argv.extend_from_slice(extra);
        let Command::SetupServer(args) = Cli::parse_from(argv).command else {
            unreachable!()
        };
        Setup {
            server_name: "127.0.0.1".to_owned(),
            mount_point: args.mount_point.clone(),
            layout: Layout {
                root: PathBuf::from("/tmp/mod_wsgi-127.0.0.1:8000:0"),
            },
            app: App::Module {
                module: "myapp".to_owned(),
                callable: "app".to_owned(),
            },
            https: None,
            module: Some(PathBuf::from("/opt/libmod_wsgi.so")),
            run_as: None,
            python_home: None,
            python_paths: Vec::new(),
            working_directory: None,
            url_aliases: Vec::new(),
            document_root: None,
            include_files: Vec::new(),
            warnings: Vec::new(),
            args,
        }
    }

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(arg("/tmp/a:b/c.so"), "/tmp/a:b/c.so");
        assert_eq!(arg("/tmp/with space"), "\"/tmp/with space\"");
        assert_eq!(arg(""), "\"\"");
        assert!(check_value("x", "/ok/path").is_ok());
        assert!(check_value("x", "/a\"b").is_err());
        assert!(check_value("x", "/a${B}").is_err());
        assert!(check_value("x", "/a\nb").is_err());
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn sizing_follows_the_c_express_rules() {
        // 1 process x 5 threads: 10 + max(10, 7) = 20 clients, in 2 children of 10 threads.
        let s = Sizing::new(5, None);
        assert_eq!(s.max_request_workers, 20);
        assert_eq!((s.server_limit, s.threads_per_child), (2, 10));
        assert_eq!(s.start_servers, 1);
        // --max-clients 100: 100 / (100 / 20 + 1) = 16 per child, 7 children.
        let s = Sizing::new(5, Some(100));
        assert_eq!((s.server_limit, s.threads_per_child), (7, 16));
        assert_eq!(s.max_request_workers, 112);
        // --max-clients never goes below the daemons' capacity.
        let s = Sizing::new(40, Some(10));
        assert!(s.max_request_workers >= 40);
    }

    #[test]
    fn defaults_give_one_daemon_group_with_the_c_express_timeouts() {
        let conf = httpd_conf(&setup(&[]));
        for line in [
            "ServerRoot /tmp/mod_wsgi-127.0.0.1:8000:0",
            "Listen 127.0.0.1:8000",
            "PidFile /tmp/mod_wsgi-127.0.0.1:8000:0/httpd.pid",
            "DefaultRuntimeDir /tmp/mod_wsgi-127.0.0.1:8000:0",
            "Mutex file:/tmp/mod_wsgi-127.0.0.1:8000:0 default",
            "ErrorLog /tmp/mod_wsgi-127.0.0.1:8000:0/logs/error_log",
            "LogLevel warn",
            "LimitRequestBody 10485760",
            "Timeout 60",
            "KeepAlive Off",
            "TypesConfig /etc/mime.types",
            "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so",
            "LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so",
            "MaxRequestWorkers 20",
            "LoadModule wsgi_module /opt/libmod_wsgi.so",
            "WSGIRestrictEmbedded On",
            "WSGIDaemonProcess 127.0.0.1:8000 \\",
            "    processes=1 \\",
            "    threads=5 \\",
            "    request-timeout=60 \\",
            "    connect-timeout=15 \\",
            "    socket-timeout=60 \\",
            "    queue-timeout=45 \\",
            "    startup-timeout=15 \\",
            "    shutdown-timeout=5 \\",
            "    graceful-timeout=15 \\",
            "    deadlock-timeout=60 \\",
            "    maximum-requests=0 \\",
            "    inactivity-timeout=0",
            "WSGIScriptReloading On",
            "WSGIMapHEADToGET Auto",
            "WSGIScriptAlias / /tmp/mod_wsgi-127.0.0.1:8000:0/handler.wsgi \
             process-group=127.0.0.1:8000 application-group=%{GLOBAL}",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "no line {line:?} in:\n{conf}"
            );
        }
        for absent in [
            "User ",
            "CustomLog",
            "rewrite_module",
            "ssl_module",
            "headers_module",
            "WSGIPythonHome",
            "home=",
            "EnableSendfile",
        ] {
            assert!(!conf.contains(absent), "{absent:?} in:\n{conf}");
        }
    }

    #[test]
    fn options_change_the_config() {
        let mut s = setup(&[
            "--port",
            "8123",
            "--processes",
            "3",
            "--threads",
            "7",
            "--log-level",
            "info",
            "--access-log",
            "--enable-sendfile",
            "--limit-request-body",
            "5",
            "--keep-alive-timeout",
            "2",
            "--maximum-requests",
            "100",
            "--request-timeout",
            "30",
            "--mount-point",
            "/app",
        ]);
        s.mount_point = "/app".to_owned();
        s.run_as = Some(("www-data".to_owned(), "www-data".to_owned()));
        s.python_home = Some(PathBuf::from("/srv/venv"));
        s.python_paths = vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")];
        s.working_directory = Some(PathBuf::from("/srv/work dir"));
        s.include_files = vec![PathBuf::from("/etc/extra.conf")];
        let conf = httpd_conf(&s);
        for line in [
            "Listen 127.0.0.1:8123",
            "User www-data",
            "Group www-data",
            "LogLevel info",
            "CustomLog /tmp/mod_wsgi-127.0.0.1:8000:0/logs/access_log common",
            "EnableSendfile On",
            "WSGIEnableSendfile On",
            "LimitRequestBody 5",
            "KeepAlive On",
            "KeepAliveTimeout 2",
            "WSGIPythonHome /srv/venv",
            "    processes=3 \\",
            "    threads=7 \\",
            "    \"home=/srv/work dir\" \\",
            "    python-home=/srv/venv \\",
            "    python-path=/srv/a:/srv/b \\",
            "    maximum-requests=100 \\",
            "    request-timeout=30 \\",
            "Include /etc/extra.conf",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "no line {line:?} in:\n{conf}"
            );
        }
        assert!(conf.contains("WSGIScriptAlias /app "), "{conf}");
    }

    #[test]
    fn log_to_terminal_uses_the_standard_streams() {
        let conf = httpd_conf(&setup(&["--log-to-terminal", "--access-log"]));
        assert!(conf.lines().any(|l| l == "ErrorLog /dev/stderr"), "{conf}");
        assert!(
            conf.lines().any(|l| l == "CustomLog /dev/stdout common"),
            "{conf}"
        );
    }

    #[test]
    fn embedded_mode_has_no_daemon_group() {
        let mut s = setup(&["--embedded-mode"]);
        s.python_paths = vec![PathBuf::from("/srv/a")];
        let conf = httpd_conf(&s);
        assert!(!conf.contains("WSGIDaemonProcess"), "{conf}");
        assert!(!conf.contains("process-group="), "{conf}");
        assert!(conf.contains("WSGIRestrictEmbedded Off\n"), "{conf}");
        assert!(conf.contains("WSGIPythonPath /srv/a\n"), "{conf}");
    }

    #[test]
    fn document_root_and_url_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("robots.txt");
        std::fs::write(&file, "x").unwrap();
        let mut s = setup(&[]);
        s.document_root = Some(PathBuf::from("/srv/htdocs"));
        s.url_aliases = vec![
            ("/static".to_owned(), dir.path().to_path_buf()),
            ("/robots.txt".to_owned(), file.clone()),
        ];
        let conf = httpd_conf(&s);
        assert!(conf.contains("LoadModule rewrite_module"), "{conf}");
        assert!(conf.contains("DocumentRoot /srv/htdocs\n"), "{conf}");
        assert!(
            conf.contains(
                "RewriteCond /srv/htdocs%{REQUEST_URI} -f\n\
                 RewriteRule ^ /srv/htdocs%{REQUEST_URI} [L]\n"
            ),
            "{conf}"
        );
        let d = dir.path().display();
        assert!(
            conf.contains(&format!(
                "Alias /static {d}\n<Directory {d}>\n    Require all granted\n"
            )),
            "{conf}"
        );
        assert!(
            conf.contains(&format!(
                "Alias /robots.txt {}\n<Directory {d}>\n    <Files robots.txt>\n",
                file.display()
            )),
            "{conf}"
        );
    }

    #[test]
    fn https_adds_a_virtual_host_with_mod_ssl() {
        let mut s = setup(&[]);
        s.https = Some(Https {
            port: 8443,
            certificate: PathBuf::from("/srv/cert.pem"),
            key: PathBuf::from("/srv/key.pem"),
        });
        let conf = httpd_conf(&s);
        for line in [
            "LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so",
            "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so",
            "Listen 127.0.0.1:8443",
            "<VirtualHost *:8443>",
            "    SSLEngine On",
            "    SSLCertificateFile /srv/cert.pem",
            "    SSLCertificateKeyFile /srv/key.pem",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "no line {line:?} in:\n{conf}"
            );
        }
    }

    #[test]
    fn static_sites_load_no_wsgi_module() {
        let mut s = setup(&["--application-type", "static"]);
        s.app = App::Static(PathBuf::from("/srv/site"));
        s.module = None;
        let conf = httpd_conf(&s);
        assert!(!conf.contains("wsgi_module"), "{conf}");
        assert!(conf.contains("DocumentRoot /srv/site\n"), "{conf}");
        assert!(conf.contains("DirectoryIndex index.html\n"), "{conf}");
    }

    #[test]
    fn apachectl_and_envvars() {
        let script = apachectl(&setup(&[]));
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("HTTPD='/usr/sbin/apache2'\n"), "{script}");
        assert!(
            script.contains("SERVER_ROOT='/tmp/mod_wsgi-127.0.0.1:8000:0'\n"),
            "{script}"
        );
        assert!(script.contains("-k \"$1\""), "{script}");
        let env = envvars();
        assert!(env.contains("unset PYTHONHOME PYTHONPATH\n"), "{env}");
        assert!(env.contains("LANG=C.UTF-8\n"), "{env}");
    }
}
