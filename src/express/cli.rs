//! The command line of `mod_wsgi-express`: its subcommands and options, parsed with clap. The
//! defaults are those of the C mod_wsgi's `mod_wsgi-express`, except `--host` (127.0.0.1, not
//! every interface); docs/express.md lists them all.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default `--host`: only the local machine.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default `--httpd-executable`.
pub const DEFAULT_HTTPD: &str = "/usr/sbin/apache2";
/// Default Apache modules folder (Debian's) for `start-server` and `setup-server`.
pub const DEFAULT_APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// Runs Python WSGI applications in Apache httpd with mod_wsgi-rs, without writing any Apache
/// configuration by hand.
#[derive(Debug, Parser)]
#[command(name = "mod_wsgi-express", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a server root for the application and run Apache in the foreground until Ctrl-C.
    StartServer(ServerArgs),
    /// Write a server root for the application (httpd.conf, apachectl, envvars) without
    /// starting it; start it later with its apachectl.
    SetupServer(ServerArgs),
    /// Print the lines that load the module into an existing httpd.conf.
    ModuleConfig(ModuleConfigArgs),
    /// Print the path of the module (libmod_wsgi.so) this program uses.
    ModuleLocation(ModuleArgs),
    /// Copy the module into Apache's modules folder as mod_wsgi.so and print its LoadModule
    /// line.
    InstallModule(InstallArgs),
    /// Internal: replaces this process with PROGRAM, with no signal blocked. start-server
    /// starts Apache through it, since it blocks the signals it relays and a child would
    /// otherwise inherit that mask.
    #[command(name = "__exec", hide = true)]
    Exec {
        /// The program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<OsString>,
    },
}

/// How the positional argument of `start-server` names the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApplicationType {
    /// A WSGI script file that defines the callable (`application` unless
    /// --callable-object says otherwise).
    Script,
    /// A Python module and callable, `package.module:callable`, imported from sys.path.
    Module,
    /// A folder of static files; no Python application.
    Static,
}

/// `--module`: where the WSGI module is.
#[derive(Clone, Debug, Default, Args)]
pub struct ModuleArgs {
    /// The WSGI module to load [default: libmod_wsgi.so in this program's folder].
    #[arg(long, value_name = "FILE")]
    pub module: Option<PathBuf>,
}

/// Options of `module-config`.
#[derive(Clone, Debug, Args)]
pub struct ModuleConfigArgs {
    /// Which module.
    #[command(flatten)]
    pub module: ModuleArgs,
    /// The Python installation or virtualenv for WSGIPythonHome [default: $VIRTUAL_ENV].
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,
}

/// Options of `install-module`.
#[derive(Clone, Debug, Args)]
pub struct InstallArgs {
    /// Which module.
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Apache's modules folder to install into [default: `apxs -q LIBEXECDIR`].
    #[arg(long, value_name = "DIR")]
    pub modules_directory: Option<PathBuf>,
    /// The Python installation or virtualenv for the printed WSGIPythonHome line
    /// [default: $VIRTUAL_ENV].
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,
}

/// Options of `start-server` and `setup-server`.
#[derive(Clone, Debug, Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct ServerArgs {
    /// The application: a WSGI script file (script), `package.module:callable` (module) or a
    /// folder (static). Without it, a built-in page is served.
    #[arg(value_name = "SCRIPT|MODULE|FOLDER")]
    pub entry: Option<String>,

    /// The same as the positional argument.
    #[arg(long, value_name = "SCRIPT|MODULE|FOLDER", conflicts_with = "entry")]
    pub entry_point: Option<String>,

    /// How the application is named.
    #[arg(long, value_enum, default_value_t = ApplicationType::Script)]
    pub application_type: ApplicationType,

    /// The name of the WSGI callable in the script or module.
    #[arg(long, value_name = "NAME", default_value = "application")]
    pub callable_object: String,

    /// The address to listen on (127.0.0.1; the C mod_wsgi-express listens on every interface).
    #[arg(long, value_name = "ADDRESS", default_value = DEFAULT_HOST)]
    pub host: String,

    /// The HTTP port.
    #[arg(long, value_name = "NUMBER", default_value_t = 8000,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Also serve HTTPS on this port (needs --ssl-certificate-file and
    /// --ssl-certificate-key-file).
    #[arg(long, value_name = "NUMBER", value_parser = clap::value_parser!(u16).range(1..))]
    pub https_port: Option<u16>,

    /// The PEM certificate for HTTPS.
    #[arg(long, value_name = "FILE")]
    pub ssl_certificate_file: Option<PathBuf>,

    /// The PEM private key for HTTPS.
    #[arg(long, value_name = "FILE")]
    pub ssl_certificate_key_file: Option<PathBuf>,

    /// The ServerName of the server [default: the --host].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// Number of daemon processes running the application.
    #[arg(long, value_name = "NUMBER", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub processes: u32,

    /// Request threads in each daemon process.
    #[arg(long, value_name = "NUMBER", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=65533))]
    pub threads: u32,

    /// Concurrent connections Apache accepts [default: 10 + max(10, 1.5 x processes x
    /// threads)].
    #[arg(long, value_name = "NUMBER",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_clients: Option<u32>,

    /// A folder to add to the application's sys.path (repeatable).
    #[arg(long = "python-path", value_name = "DIR")]
    pub python_paths: Vec<PathBuf>,

    /// The Python installation or virtualenv to run in [default: $VIRTUAL_ENV, else the
    /// Python the module is linked against].
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,

    /// The application's working folder, also first on sys.path [default: the current
    /// folder, when Apache's children can enter it].
    #[arg(long, value_name = "DIR")]
    pub working_directory: Option<PathBuf>,

    /// Serve a file or a folder at a URL path (repeatable).
    #[arg(long = "url-alias", num_args = 2, value_names = ["URL-PATH", "FILE-OR-DIR"])]
    pub url_aliases: Vec<String>,

    /// A folder of static files served at / before the application: a URL that names a
    /// file in it is served from it, any other goes to the application.
    #[arg(long, value_name = "DIR")]
    pub document_root: Option<PathBuf>,

    /// The URL path the application is mounted at.
    #[arg(long, value_name = "URL-PATH", default_value = "/")]
    pub mount_point: String,

    /// Restart the daemon processes when a Python file the application loaded changes.
    #[arg(long)]
    pub reload_on_changes: bool,

    /// Send the error log to stderr (and the access log, with --access-log, to stdout).
    #[arg(long)]
    pub log_to_terminal: bool,

    /// Write an access log.
    #[arg(long)]
    pub access_log: bool,

    /// Apache's LogLevel.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    pub log_level: String,

    /// The user Apache's children and the daemons run as, when started as root
    /// [default: www-data].
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// The group Apache's children and the daemons run as, when started as root
    /// [default: www-data].
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// An Apache configuration file included at the end of httpd.conf (repeatable).
    #[arg(long = "include-file", value_name = "FILE")]
    pub include_files: Vec<PathBuf>,

    /// The largest request body accepted, in bytes (LimitRequestBody; 0: no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 10_485_760)]
    pub limit_request_body: u64,

    /// Seconds a request may run before its daemon process is restarted (0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub request_timeout: u32,

    /// Seconds an Apache child tries to connect to the daemon processes.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub connect_timeout: u32,

    /// Seconds of silence allowed on the connection to a daemon process, and Apache's Timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub socket_timeout: u32,

    /// Seconds a request may wait for a daemon thread before it is answered 504.
    #[arg(long, value_name = "SECONDS", default_value_t = 45)]
    pub queue_timeout: u32,

    /// Seconds a daemon process may take to load the application.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub startup_timeout: u32,

    /// Seconds requests under way get when a daemon process is stopped.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub shutdown_timeout: u32,

    /// Seconds requests under way get on a planned restart of a daemon process.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub graceful_timeout: u32,

    /// Seconds a daemon process's Python may be stuck before the process is restarted.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub deadlock_timeout: u32,

    /// Restart a daemon process idle for this many seconds (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub inactivity_timeout: u32,

    /// Restart a daemon process after this many requests (0: never).
    #[arg(long, value_name = "NUMBER", default_value_t = 0)]
    pub maximum_requests: u32,

    /// Seconds a client connection is kept open between requests (0: no keep-alive).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub keep_alive_timeout: u32,

    /// Let Apache send wsgi.file_wrapper files with sendfile (EnableSendfile,
    /// WSGIEnableSendfile).
    #[arg(long)]
    pub enable_sendfile: bool,

    /// Run the application inside Apache's own processes instead of daemon processes.
    #[arg(long)]
    pub embedded_mode: bool,

    /// Write the server root and print how to start it, but do not start it.
    #[arg(long)]
    pub setup_only: bool,

    /// Where to write httpd.conf, apachectl, envvars, the logs and the generated scripts
    /// [default: $TMPDIR or /tmp, then /mod_wsgi-HOST:PORT:UID].
    #[arg(long, value_name = "DIR")]
    pub server_root: Option<PathBuf>,

    /// Which module.
    #[command(flatten)]
    pub module: ModuleArgs,

    /// The Apache httpd binary.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_HTTPD)]
    pub httpd_executable: PathBuf,

    /// Apache's folder of loadable modules (mod_mpm_event.so, ...).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_APACHE_MODULES)]
    pub modules_directory: PathBuf,
}

impl ServerArgs {
    /// The application's entry point, from the positional argument or --entry-point.
    pub fn entry(&self) -> Option<&str> {
        self.entry.as_deref().or(self.entry_point.as_deref())
    }

    /// The --url-alias pairs.
    pub fn url_alias_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.url_aliases
            .chunks_exact(2)
            .map(|pair| (pair[0].as_str(), pair[1].as_str()))
    }
}
