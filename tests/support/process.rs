//! Process control for the servers the harness starts: signals by pid, bounded waits,
//! and clean-up of leftover Apache processes (children, WSGI daemons) found through
//! `/proc/<pid>/cmdline`.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How often the harness polls a condition it is waiting for.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Sends `signal` to the process `pid`; errors (e.g. the process is gone) are ignored.
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is positive,
    // so it names exactly one process, never a process group.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether this process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Waits up to `timeout` for `child` to exit, reaping it; `None` if it is still running.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for process {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Stops `child` with SIGTERM, waiting up to `grace` before SIGKILL. Returns how long it
/// took and whether SIGKILL was needed.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> (Duration, bool) {
    let start = Instant::now();
    if matches!(child.try_wait(), Ok(Some(_))) {
        return (start.elapsed(), false);
    }
    send_signal(child.id(), libc::SIGTERM);
    if wait_child(child, grace).is_some() {
        return (start.elapsed(), false);
    }
    send_signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    (start.elapsed(), true)
}

/// A process identified by pid and start time, so that a recycled pid is never mistaken
/// for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pub(crate) pid: u32,
    start_time: u64,
}

/// The live direct children of `parent`, e.g. an Apache parent's workers and WSGI
/// daemon processes (whose command line the daemons may have rewritten).
pub(crate) fn children_of(parent: u32) -> Vec<ProcessId> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = Stat::read(pid)?;
            (stat.ppid == parent && stat.alive()).then_some(ProcessId {
                pid,
                start_time: stat.start_time,
            })
        })
        .collect()
}

/// SIGKILLs the processes in `known` that still run (same pid and start time) and every
/// process whose command line has `conf` as one of its arguments (the `-f <conf>` of the
/// server we started, inherited by its children), then waits briefly for them to go.
/// Returns the pids it killed.
pub(crate) fn kill_leftovers(conf: &Path, known: &[ProcessId]) -> Vec<u32> {
    let mut pids: Vec<u32> = known
        .iter()
        .filter(|p| Stat::read(p.pid).is_some_and(|s| s.alive() && s.start_time == p.start_time))
        .map(|p| p.pid)
        .collect();
    for pid in processes_using(conf) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    for &pid in &pids {
        send_signal(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    pids
}

/// Pids of the live processes (other than this one) whose command line has `conf` as an
/// argument.
pub(crate) fn processes_using(conf: &Path) -> Vec<u32> {
    let own = std::process::id();
    let wanted = conf.as_os_str().as_encoded_bytes();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != own && is_alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

/// Every pid listed in `/proc`.
fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    Stat::read(pid).is_some_and(|s| s.alive())
}

/// The fields of `/proc/<pid>/stat` the harness needs.
struct Stat {
    state: char,
    ppid: u32,
    start_time: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields follow the parenthesised command name, which may itself hold ')'.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state); ppid is field 4, starttime field 22.
        Some(Stat {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}
