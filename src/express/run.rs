//! Running Apache for `start-server`: checks that the ports are free, starts
//! `apache2 -f <root>/httpd.conf -DFOREGROUND` as a child in a process group of its own, and
//! relays signals to it until it exits.
//!
//! The signals are blocked in this (single-threaded) process and taken with `sigwait`, so no
//! signal handler is needed: SIGINT and SIGTERM become SIGTERM for Apache (which then stops its
//! children and daemon processes and exits), SIGHUP and SIGUSR1 are passed on as they are
//! (restart, graceful restart), and SIGCHLD says Apache has exited. A child inherits the
//! signal mask, and Apache does not clear it, so Apache is started through this same program
//! (`mod_wsgi-express __exec apache2 ...`), which unblocks every signal and then replaces
//! itself with Apache: the child's pid is Apache's. Once Apache's parent has exited, any
//! process of its group still running with this configuration is killed.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use super::config::{LANG, REMOVED_ENV};
use super::error::{ExpressError, Result};
use super::setup::{Setup, check_port_free};

/// The signals relayed to Apache, plus SIGCHLD.
const SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGCHLD,
];

/// How long Apache's children and daemons get to exit after Apache's parent has.
const SWEEP_GRACE: Duration = Duration::from_secs(2);

/// Starts Apache and waits for it. Returns when Apache has exited after a stop signal; an
/// exit that nobody asked for is an error.
pub fn run(setup: &Setup) -> Result<()> {
    check_port_free(&setup.args.host, setup.args.port)?;
    if let Some(https) = &setup.https {
        check_port_free(&setup.args.host, https.port)?;
    }

    let mut mask = SigSet::empty();
    for signal in SIGNALS {
        mask.add(signal);
    }
    mask.thread_block().map_err(|source| ExpressError::Sys {
        action: "blocking signals",
        source,
    })?;

    let mut child = spawn(setup)?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    println!(
        "Apache started (pid {pid}); press Ctrl-C or send SIGINT/SIGTERM to pid {} to stop it.",
        std::process::id()
    );
    let _ = std::io::stdout().flush();

    let mut stopping = false;
    let status = loop {
        let signal = mask.wait().map_err(|source| ExpressError::Sys {
            action: "waiting for signals",
            source,
        })?;
        match signal {
            Signal::SIGINT | Signal::SIGTERM => {
                if !stopping {
                    println!("Stopping Apache (pid {pid}).");
                    let _ = std::io::stdout().flush();
                }
                stopping = true;
                let _ = kill(pid, Signal::SIGTERM);
            }
            Signal::SIGHUP | Signal::SIGUSR1 => {
                let _ = kill(pid, signal);
            }
            _ => {}
        }
        if let Some(status) = reap(&mut child)? {
            break status;
        }
    };
    let killed = sweep(&setup.layout.conf(), pid);
    if !killed.is_empty() {
        eprintln!(
            "mod_wsgi-express: warning: killed {} process(es) Apache left behind: {killed:?}",
            killed.len()
        );
    }
    if stopping {
        println!("Apache has stopped.");
        Ok(())
    } else {
        Err(ExpressError::ApacheExited {
            status: describe(status),
            log: if setup.args.log_to_terminal {
                "(on this terminal)".to_owned()
            } else {
                setup.layout.error_log().display().to_string()
            },
        })
    }
}

/// `apache2 -f <conf> -DFOREGROUND` in its own process group (Apache signals its whole group
/// when it stops, which must not include us), with the environment of `envvars`, started
/// through [`exec_unblocked`].
fn spawn(setup: &Setup) -> Result<Child> {
    let httpd = &setup.args.httpd_executable;
    let exe = std::env::current_exe()
        .map_err(|e| ExpressError::io("find the path of", "mod_wsgi-express", e))?;
    let mut command = Command::new(exe);
    command
        .arg("__exec")
        .arg("--")
        .arg(httpd)
        .arg("-f")
        .arg(setup.layout.conf())
        .arg("-DFOREGROUND")
        .process_group(0)
        .current_dir(
            setup
                .working_directory
                .as_deref()
                .unwrap_or(&setup.layout.root),
        )
        .stdin(Stdio::null())
        .env("LANG", LANG);
    for name in REMOVED_ENV {
        command.env_remove(name);
    }
    command.spawn().map_err(|source| ExpressError::Spawn {
        path: httpd.clone(),
        source,
    })
}

/// Unblocks every signal and replaces this process with `argv[0]` run with the rest of
/// `argv`. Returns only if that fails.
pub fn exec_unblocked(argv: &[OsString]) -> ExpressError {
    let Some((program, args)) = argv.split_first() else {
        return ExpressError::BadOption("__exec needs a program to run".to_owned());
    };
    if let Err(source) = SigSet::empty().thread_set_mask() {
        return ExpressError::Sys {
            action: "unblocking signals",
            source,
        };
    }
    let source = Command::new(program).args(args).exec();
    ExpressError::Spawn {
        path: PathBuf::from(program),
        source,
    }
}

/// After Apache's parent has exited: waits up to [`SWEEP_GRACE`] for the processes of its
/// process group that still run with `-f <conf>` (children, daemon processes) to exit, then
/// kills those that remain. Returns their pids. Normally there are none: Apache stops its
/// children and daemons itself, unless it was stopped before it had set up its signal
/// handlers.
fn sweep(conf: &Path, group: Pid) -> Vec<i32> {
    let deadline = Instant::now() + SWEEP_GRACE;
    loop {
        let left = leftovers(conf, group);
        if left.is_empty() {
            return left;
        }
        if Instant::now() >= deadline {
            for &pid in &left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes in process group `group` with `conf` among their arguments.
fn leftovers(conf: &Path, group: Pid) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = conf.as_os_str().as_encoded_bytes();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the parenthesised name: state, ppid, pgrp, ...
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            state.is_some_and(|s| s != "Z" && s != "X") && pgrp == Some(group.as_raw())
        })
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

/// The child's exit status if it has exited.
fn reap(child: &mut Child) -> Result<Option<ExitStatus>> {
    child
        .try_wait()
        .map_err(|e| ExpressError::io("wait for", "Apache", e))
}

/// "exit status 1" or "killed by signal 9".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
