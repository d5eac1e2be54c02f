//! Embedded and daemon mode for the PEP 3333 tests: every test takes a [`Mode`], mounts its
//! apps through [`Mode::config`], and is run once per mode by [`in_both_modes!`].

// Each PEP 3333 test binary uses only part of it.
#![allow(dead_code, unused_macros, unused_imports)]

use std::fmt::Write as _;

/// The daemon process group the daemon-mode configurations define.
pub const DAEMON_GROUP: &str = "pep";

/// Where the WSGI application runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the Apache child that serves the request.
    Embedded,
    /// In the process of a `WSGIDaemonProcess` group (one process, 4 threads).
    Daemon,
}

impl Mode {
    /// The configuration `snippet` for this mode. Embedded: unchanged. Daemon: preceded by
    /// `WSGIDaemonProcess pep threads=4`, and with `process-group=pep` added to every
    /// `WSGIScriptAlias` line (one mount per line, as the tests write them).
    pub fn config(self, snippet: &str) -> String {
        match self {
            Mode::Embedded => snippet.to_owned(),
            Mode::Daemon => {
                let mut config = format!("WSGIDaemonProcess {DAEMON_GROUP} threads=4\n");
                for line in snippet.lines() {
                    config.push_str(line);
                    if line.trim_start().starts_with("WSGIScriptAlias ") {
                        let _ = write!(config, " process-group={DAEMON_GROUP}");
                    }
                    config.push('\n');
                }
                config
            }
        }
    }

    /// `mod_wsgi.process_group` in this mode.
    pub fn process_group(self) -> &'static str {
        match self {
            Mode::Embedded => "",
            Mode::Daemon => DAEMON_GROUP,
        }
    }
}

/// `in_both_modes!(name)` turns `fn name(mode: Mode)` into two tests, `name::embedded` and
/// `name::daemon`.
macro_rules! in_both_modes {
    ($name:ident) => {
        mod $name {
            #[test]
            fn embedded() {
                super::$name($crate::pep3333_mode::Mode::Embedded);
            }

            #[test]
            fn daemon() {
                super::$name($crate::pep3333_mode::Mode::Daemon);
            }
        }
    };
}

pub(crate) use in_both_modes;
