//! The errors `mod_wsgi-express` reports. Each one renders as a single line that says what is
//! wrong and, where it helps, what to do about it; `main` prints it on stderr and exits
//! non-zero.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Everything that can stop a `mod_wsgi-express` command.
#[derive(Debug, Error)]
pub enum ExpressError {
    /// The Apache httpd binary is missing.
    #[error(
        "Apache httpd is not installed: {} does not exist (install Debian's apache2 package, or \
         give its path with --httpd-executable)",
        .0.display()
    )]
    ApacheMissing(PathBuf),

    /// Apache's modules folder lacks a module the configuration needs.
    #[error(
        "the Apache module {} does not exist (install Debian's apache2 package, or give the \
         modules folder with --modules-directory)",
        .0.display()
    )]
    ApacheModuleMissing(PathBuf),

    /// The WSGI module (`libmod_wsgi.so`) is missing.
    #[error(
        "the WSGI module {} does not exist (run `cargo build`, or give its path with --module)",
        .0.display()
    )]
    ModuleMissing(PathBuf),

    /// The WSGI script, static folder or another named file is missing.
    #[error("{what} {} does not exist", .path.display())]
    NotFound {
        /// What the path was meant to be, e.g. "the WSGI script".
        what: &'static str,
        /// The path as given.
        path: PathBuf,
    },

    /// Another process accepts connections on the port.
    #[error(
        "port {port} on {host} is already in use; stop what listens there or choose another \
         port with --port"
    )]
    PortInUse {
        /// The address.
        host: String,
        /// The port.
        port: u16,
    },

    /// The listening address cannot be used at all.
    #[error("cannot listen on {host}:{port}: {source}")]
    CannotListen {
        /// The address.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        source: io::Error,
    },

    /// A combination or value of options that cannot work.
    #[error("{0}")]
    BadOption(String),

    /// A path that cannot be written into `httpd.conf`.
    #[error("{what} {path:?} cannot be used in an Apache configuration: {reason}")]
    BadPath {
        /// What the path is.
        what: &'static str,
        /// The path.
        path: String,
        /// Why not.
        reason: &'static str,
    },

    /// The server root exists but is not a folder we own.
    #[error(
        "the server root {} exists but is not a folder owned by this user; remove it or choose \
         another with --server-root",
        .0.display()
    )]
    ServerRootNotOurs(PathBuf),

    /// An Apache started from this server root still runs.
    #[error(
        "Apache (pid {pid}) is still running from the server root {}; stop it first ({}/apachectl \
         stop, or Ctrl-C where it runs) or choose another --server-root or --port",
        .root.display(),
        .root.display()
    )]
    ServerRootInUse {
        /// The server root.
        root: PathBuf,
        /// The running Apache's pid.
        pid: i32,
    },

    /// A user or group named with `--user`/`--group` does not exist.
    #[error("there is no {kind} called '{name}' on this system")]
    UnknownAccount {
        /// "user" or "group".
        kind: &'static str,
        /// The name.
        name: String,
    },

    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },

    /// `apxs` could not tell Apache's modules folder.
    #[error(
        "cannot find Apache's modules folder with `apxs -q LIBEXECDIR` ({0}); install Debian's \
         apache2-dev package or give the folder with --modules-directory"
    )]
    Apxs(String),

    /// Starting Apache failed.
    #[error("cannot start {}: {source}", .path.display())]
    Spawn {
        /// The httpd binary.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// Apache ended without being asked to.
    #[error("Apache exited unexpectedly ({status}); see its error log {log}")]
    ApacheExited {
        /// How it ended.
        status: String,
        /// Where to look.
        log: String,
    },

    /// A system call about signals or processes failed.
    #[error("{action} failed: {source}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The error number.
        source: nix::Error,
    },
}

impl ExpressError {
    /// Whether the command line itself is at fault (a bad option value or combination), which
    /// exits with status 2 like the errors the argument parser finds.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::BadOption(_) | Self::BadPath { .. } | Self::UnknownAccount { .. }
        )
    }
}

impl ExpressError {
    /// An [`ExpressError::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The result type of the express commands.
pub type Result<T, E = ExpressError> = std::result::Result<T, E>;
