//! The module under each of Apache's multi-processing modules (event, worker, prefork):
//!
//! - a tiny WSGI app serves 20 requests (some concurrently) from Apache's children, never
//!   from the parent, and sees `wsgi.multithread`/`wsgi.multiprocess` matching the MPM and
//!   the harness's sizing; the server then stops quickly, without SIGKILL, with a clean log;
//! - Python is initialised in each child (the module's info line `Python <version>
//!   initialised` carries a child's pid), never in the Apache parent, and the app runs in a
//!   process that initialised it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use regex::Regex;
use support::{Mpm, Server, ServerBuilder, unexpected_log_lines};

const MPMS: [Mpm; 3] = [Mpm::Event, Mpm::Worker, Mpm::Prefork];

/// Reports the serving process and the WSGI process model flags.
const APP: &str = r#"
import os
def application(environ, start_response):
    body = 'pid=%d multithread=%r multiprocess=%r path=%s' % (
        os.getpid(), environ['wsgi.multithread'], environ['wsgi.multiprocess'],
        environ['PATH_INFO'])
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

/// A server for `mpm` with [`APP`] at `/hello`.
fn builder(mpm: Mpm) -> ServerBuilder {
    ServerBuilder::new()
        .mpm(mpm)
        .file("app.wsgi", APP)
        .config("WSGIScriptAlias /hello ${TEST_DIR}/app.wsgi")
}

/// One parsed response of [`APP`].
#[derive(Debug, PartialEq, Eq)]
struct Report {
    pid: u32,
    multithread: bool,
    multiprocess: bool,
    path: String,
}

fn parse_report(body: &str) -> Report {
    let re =
        Regex::new(r"^pid=(\d+) multithread=(True|False) multiprocess=(True|False) path=(.*)$")
            .expect("valid pattern");
    let caps = re
        .captures(body)
        .unwrap_or_else(|| panic!("unexpected body: {body:?}"));
    Report {
        pid: caps[1].parse().expect("a pid"),
        multithread: &caps[2] == "True",
        multiprocess: &caps[3] == "True",
        path: caps[4].to_owned(),
    }
}

/// The parent pid of process `pid`, from `/proc/<pid>/stat`.
fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Asserts that the processes `pids` are children of `parent`. Prefork may already have
/// stopped an idle child (MaxSpareServers), so a process that is gone is accepted, but at
/// least one must still be there to show its parent.
fn assert_children_of(parent: u32, pids: &BTreeSet<u32>, mpm: Mpm) {
    let mut seen = 0;
    for &pid in pids {
        match ppid_of(pid) {
            Some(ppid) => {
                assert_eq!(
                    ppid, parent,
                    "{mpm:?}: {pid} is not a child of the Apache parent"
                );
                seen += 1;
            }
            None => assert_eq!(mpm, Mpm::Prefork, "{mpm:?}: process {pid} is gone"),
        }
    }
    assert!(seen > 0, "{mpm:?}: none of {pids:?} is running");
}

/// Sends 20 requests to `/hello/<n>`, 4 clients at a time, and returns the parsed reports
/// in request order.
fn twenty_requests(server: &Server) -> Vec<Report> {
    let mut reports: Vec<(usize, Report)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|client| {
                scope.spawn(move || {
                    (0..5)
                        .map(|i| {
                            let n = client * 5 + i;
                            let response = server.get(&format!("/hello/{n}"));
                            assert_eq!(response.status, 200, "request {n}: {}", response.text());
                            assert_eq!(response.header("content-type"), Some("text/plain"));
                            (n, parse_report(&response.text()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("a client thread panicked"))
            .collect()
    });
    reports.sort_by_key(|(n, _)| *n);
    reports.into_iter().map(|(_, report)| report).collect()
}

#[test]
fn serves_requests_and_stops_quickly_under_each_mpm() {
    for mpm in MPMS {
        let server = builder(mpm).start();
        let parent = server.parent_pid();
        let reports = twenty_requests(&server);
        assert_eq!(reports.len(), 20);
        // The harness runs event and worker as one child of 16 threads (ServerLimit 1), and
        // prefork as up to 8 single-threaded children: like C mod_wsgi, multithread means
        // more than one thread per process and multiprocess more than one process at most.
        let threaded = mpm != Mpm::Prefork;
        for (n, report) in reports.iter().enumerate() {
            assert_eq!(report.path, format!("/{n}"), "{mpm:?}");
            assert_eq!(report.multithread, threaded, "{mpm:?}: {report:?}");
            assert_eq!(report.multiprocess, !threaded, "{mpm:?}: {report:?}");
            assert_ne!(report.pid, parent, "{mpm:?}: served by the Apache parent");
        }
        let pids: BTreeSet<u32> = reports.iter().map(|r| r.pid).collect();
        assert_children_of(parent, &pids, mpm);
        if threaded {
            assert_eq!(pids.len(), 1, "{mpm:?}: one child expected, got {pids:?}");
        }
        let stopped = server.stop();
        assert!(!stopped.killed, "{mpm:?}: Apache had to be killed");
        assert!(
            stopped.elapsed < Duration::from_secs(3),
            "{mpm:?}: stopping took {:?}",
            stopped.elapsed
        );
        assert_eq!(
            unexpected_log_lines(&stopped.error_log, &[]),
            Vec::<String>::new(),
            "{mpm:?}"
        );
        assert!(
            stopped.error_log.contains("caught SIGTERM, shutting down"),
            "{mpm:?}: {}",
            stopped.error_log
        );
    }
}

/// The pids of the processes that logged `Python <version> initialised`.
fn python_init_pids(log: &str) -> Vec<u32> {
    let re =
        Regex::new(r"\[wsgi:info\] \[pid (\d+)(?::tid \d+)?\] .*Python 3\.\d+\.\d+\S* initialised")
            .expect("valid pattern");
    log.lines()
        .filter_map(|line| re.captures(line))
        .map(|caps| caps[1].parse().expect("a pid"))
        .collect()
}

#[test]
fn python_is_initialised_in_children_not_in_the_parent() {
    for mpm in MPMS {
        let server = builder(mpm).log_level("info wsgi:info").start();
        let parent = server.parent_pid();
        let app_pids: BTreeSet<u32> = (0..4)
            .map(|n| parse_report(&server.get(&format!("/hello/{n}")).text()).pid)
            .collect();
        assert!(
            server.wait_for_log(" initialised", Duration::from_secs(5)),
            "{mpm:?}: no `Python ... initialised` line:\n{}",
            server.error_log()
        );
        let log = server.error_log();
        let init_pids = python_init_pids(&log);
        assert!(
            !init_pids.is_empty(),
            "{mpm:?}: cannot parse the init line:\n{log}"
        );
        assert!(
            !init_pids.contains(&parent),
            "{mpm:?}: Python was initialised in the Apache parent {parent}:\n{log}"
        );
        let unique: BTreeSet<u32> = init_pids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            init_pids.len(),
            "{mpm:?}: a process initialised Python twice:\n{log}"
        );
        assert_children_of(parent, &unique, mpm);
        assert!(
            app_pids.iter().all(|pid| unique.contains(pid)),
            "{mpm:?}: the app ran in {app_pids:?}, Python was initialised in {unique:?}:\n{log}"
        );
        server.stop();
    }
}
