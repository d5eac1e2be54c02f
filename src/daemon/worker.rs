//! The daemon process: forked from the Apache parent, it drops privileges (before any Python
//! runs, exiting if any step fails), applies the group's limits, starts Python, and serves
//! requests from Apache's children on its group's socket with one thread per `threads`.
//!
//! Threads: the main thread only waits for signals (SIGTERM/SIGINT stop the process, after
//! the requests under way finish or `shutdown-timeout` passes); each request thread waits for
//! a new connection or the next request on a kept one ([`Connections`]), reads the request
//! frame, checks its secret and runs the application through the same WSGI code as embedded
//! mode, with a [`DaemonBackend`] over the connection.

use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Gid, Uid, User};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

use super::manager::{GroupInfo, resolve_group, resolve_user};
use super::protocol::{self, Frame, HeadFrame, MAX_PAYLOAD, RequestFrame};
use crate::apache::process::{self, ProcessInfo};
use crate::config::{DaemonConfig, Principal, PythonSettings};
use crate::python::runtime;
use crate::wsgi::response::ResponseHead;
use crate::wsgi::{self, Backend, BackendError, Outcome, RequestSpec, Taken};

/// Runs the daemon process; never returns.
pub fn run(info: &GroupInfo, listener: UnixListener, settings: PythonSettings, index: usize) -> ! {
    let config = &info.config;
    let name = &config.name;
    info.log_target.make_default();
    // Before any thread starts: 16 request threads would otherwise make up to 8 arenas per CPU.
    if let Some(arenas) = process::limit_malloc_arenas() {
        tracing::debug!("malloc arenas limited to {arenas} (one per CPU)");
    }
    // Signals are handled by the main thread alone, from the start: a stop request that
    // arrives while the daemon is still starting waits for it, and is then honoured.
    let signals = stop_signals();
    if let Err(e) = signals.thread_block() {
        tracing::error!("WSGI0035: daemon '{name}' cannot block signals: {e}");
        process::exit_now(1);
    }
    if let Some(title) = &config.display_name {
        set_process_name(title, name);
    }
    // Limits first: a negative cpu-priority needs the privileges about to be dropped.
    apply_limits(config);
    if let Err(e) = drop_privileges(config) {
        tracing::error!(
            "WSGI0034: daemon process of group '{name}' could not switch user ({e}); it exits \
             without running Python"
        );
        process::exit_now(1);
    }

    // `home`: the working folder, and first on sys.path.
    if let Some(home) = &config.home
        && let Err(e) = std::env::set_current_dir(home)
    {
        tracing::warn!("WSGI0037: cannot apply home={}: {e}", home.display());
    }
    let path = config
        .home
        .iter()
        .chain(&config.python_path)
        .cloned()
        .collect();
    let settings = PythonSettings {
        home: config.python_home.clone().or(settings.home),
        path,
        ..settings
    };
    let info_for_python = ProcessInfo {
        threads_per_process: config.threads,
        maximum_processes: config.processes,
        process_group: name.clone(),
        ..ProcessInfo::query()
    };
    runtime::start(&settings, &info_for_python);
    crate::handler::preload(name, &info.preload);
    tracing::info!(
        "daemon process {} of group '{name}' ready ({})",
        std::process::id(),
        index + 1
    );

    let connections = match Connections::new(listener, config.processes == 1) {
        Ok(connections) => connections,
        Err(e) => {
            tracing::error!("WSGI0036: daemon '{name}' cannot watch its socket: {e}");
            process::exit_now(1);
        }
    };
    let shared = Arc::new(Shared {
        info: GroupSnapshot {
            name: name.clone(),
            secret: info.secret,
            threads: config.threads,
            multiprocess: config.processes_given,
            queue_timeout: config.queue_timeout,
        },
        config: Arc::clone(config),
        started: Instant::now(),
        stopping: AtomicBool::new(false),
        ending: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        served: AtomicU64::new(0),
        first_request_ms: AtomicU64::new(0),
        loaded: AtomicBool::new(false),
        last_activity_ms: AtomicU64::new(0),
        heartbeat_ms: AtomicU64::new(0),
        slots: (0..config.threads).map(|_| Slot::default()).collect(),
        turns: Turns::new(config.threads as usize),
        connections,
        restart: Mutex::new(None),
        scripts: Mutex::new(std::collections::HashMap::new()),
    });
    // A preloaded script counts as first seen now, so that a later change restarts the daemon.
    for import in &info.preload {
        if let Ok(modified) = std::fs::metadata(&import.script).and_then(|m| m.modified()) {
            script_changed(&shared, &import.script, modified);
        }
    }
    for n in 0..config.threads {
        let shared = Arc::clone(&shared);
        let mut builder = std::thread::Builder::new().name(format!("wsgi-{n}"));
        if let Some(size) = config.stack_size {
            builder = builder.stack_size(size);
        }
        if let Err(e) = builder.spawn(move || request_loop(&shared, n as usize)) {
            tracing::error!("WSGI0036: daemon '{name}' cannot start a thread: {e}");
        }
    }
    let watcher = Arc::clone(&shared);
    if let Err(e) = std::thread::Builder::new()
        .name("wsgi-turns".into())
        .spawn(move || {
            watcher
                .turns
                .watch(|| runtime::threads_waiting_for_gil() > 0)
        })
    {
        tracing::error!("WSGI0036: daemon '{name}' cannot start its watcher thread: {e}");
    }
    let monitor = Arc::clone(&shared);
    if let Err(e) = std::thread::Builder::new()
        .name("wsgi-monitor".into())
        .spawn(move || monitor_loop(&monitor))
    {
        tracing::error!("WSGI0036: daemon '{name}' cannot start its monitor thread: {e}");
    }

    let signal = signals
        .wait()
        .map_or_else(|_| "an error".to_owned(), |s| s.to_string());
    // Looked at, not taken: request threads check it to stop accepting.
    let restart = shared
        .restart
        .lock()
        .as_ref()
        .map(|r| (r.reason.clone(), r.drain));
    let (why, limit) = match restart {
        Some(r) => r,
        // SIGUSR1 asks for a graceful restart: requests under way get eviction-timeout (or
        // graceful-timeout) to finish.
        None if signal == "SIGXCPU" => {
            ("cpu-time-limit reached".to_owned(), config.graceful_timeout)
        }
        None if signal == "SIGUSR1" => (
            "SIGUSR1, graceful restart".to_owned(),
            config.eviction_timeout.unwrap_or(config.graceful_timeout),
        ),
        None => (signal.clone(), config.shutdown_timeout),
    };
    tracing::info!(
        "daemon process {} of group '{name}' stopping ({why})",
        std::process::id()
    );
    // New connections wait for the other processes of the group or the replacement (see
    // Connections::stop_listening). Threads waiting in epoll_wait() end with the process.
    shared.stop_taking_work();
    shared.stopping.store(true, Ordering::Release);
    let deadline = Instant::now() + limit;
    while shared.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let still_running = shared.active.load(Ordering::Acquire);
    if still_running == 0 {
        runtime::stop();
    } else {
        // Finalising Python under running threads would abort the process; they end with it.
        tracing::info!("{still_running} request(s) still running; not finalising Python");
    }
    shared.connections.close_idle();
    shared.shut_running();
    process::exit_now(0)
}

/// Names the process (`display-name`): `%{GROUP}` stands for `(wsgi:NAME)`. Shown by `ps -o
/// comm` and `top` (the kernel keeps 15 bytes).
fn set_process_name(title: &str, group: &str) {
    let title = title.replace("%{GROUP}", &format!("(wsgi:{group})"));
    if let Ok(title) = std::ffi::CString::new(title) {
        let _ = nix::sys::prctl::set_name(&title);
    }
}

impl Shared {
    /// Whether the process is on its way out (stopping, or a restart was asked for): its
    /// request threads then take no more connections or requests, which wait for the
    /// replacement process (in the listening socket's backlog, or on their kept connection,
    /// which is shut down when this process exits, so that the child sends the request again).
    fn ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Takes the listening socket out of the epoll set, then marks the process as ending
    /// (in that order: see [`Connections::stop_listening`]).
    fn stop_taking_work(&self) {
        self.connections.stop_listening();
        self.ending.store(true, Ordering::Release);
    }

    /// Shuts down the connections of the requests still running as the process exits: a
    /// process forked by the application holds copies of them, and the Apache child would
    /// otherwise wait its socket-timeout for the rest of a response that will never come.
    fn shut_running(&self) {
        for slot in &self.slots {
            if let Some(fd) = *slot.socket.lock() {
                let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
            }
        }
    }
}

/// Why the daemon restarts itself, and how long requests under way may take to finish.
struct Restart {
    reason: String,
    drain: Duration,
}

/// Asks the main thread to stop the process (it is restarted by the Apache parent).
fn request_restart(shared: &Shared, reason: String, drain: Duration) {
    let mut restart = shared.restart.lock();
    if restart.is_none() {
        shared.stop_taking_work();
        *restart = Some(Restart { reason, drain });
        drop(restart);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGTERM);
    }
}

/// Milliseconds since the daemon started (0 is reserved for "never").
fn now_ms(shared: &Shared) -> u64 {
    u64::try_from(shared.started.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Watches the limits of the group: restart-interval, inactivity-timeout, request-timeout and
/// deadlock-timeout.
fn monitor_loop(shared: &Arc<Shared>) {
    let config = &shared.config;
    let graceful = config.graceful_timeout;
    // A thread that takes the GIL once a second: when its heartbeat stops, the interpreter is
    // wedged (deadlock-timeout). The start of the monitor counts as the first beat.
    shared.heartbeat_ms.store(now_ms(shared), Ordering::Release);
    if config.deadlock_timeout.is_some() {
        let probe = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("wsgi-heartbeat".into())
            .spawn(move || {
                while !probe.stopping.load(Ordering::Acquire) {
                    if runtime::run_in("", |_| ()).is_ok() {
                        probe.heartbeat_ms.store(now_ms(&probe), Ordering::Release);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if let Err(e) = spawned {
            tracing::error!("WSGI0036: cannot start the heartbeat thread: {e}");
        }
    }
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let now = now_ms(shared);
        if let Some(limit) = config.startup_timeout {
            let first = shared.first_request_ms.load(Ordering::Acquire);
            let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            if first != 0
                && !shared.loaded.load(Ordering::Acquire)
                && now.saturating_sub(first) >= limit_ms
            {
                request_restart(
                    shared,
                    format!(
                        "startup-timeout of {} s: the script did not load",
                        limit.as_secs()
                    ),
                    Duration::ZERO,
                );
            }
        }
        if let Some(interval) = config.restart_interval
            && shared.started.elapsed() >= interval
        {
            request_restart(
                shared,
                format!("restart-interval of {} s", interval.as_secs()),
                graceful,
            );
        }
        if let Some(idle) = config.inactivity_timeout {
            let last = shared.last_activity_ms.load(Ordering::Acquire);
            let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
            if shared.active.load(Ordering::Acquire) == 0 && now.saturating_sub(last) >= idle_ms {
                request_restart(
                    shared,
                    format!("inactivity-timeout of {} s", idle.as_secs()),
                    graceful,
                );
            }
        }
        if let Some(limit) = config.request_timeout {
            let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            if let Some(slot) = shared.slots.iter().find(|slot| {
                let started = slot.started_ms.load(Ordering::Acquire);
                started != 0 && now.saturating_sub(started) >= limit_ms
            }) {
                let group = slot.group.lock().clone();
                // On its own thread: taking the GIL may block, and the monitor must go on
                // (deadlock-timeout). It is waited for, up to 2 s, before the restart (the
                // first dump imports `traceback`, which takes a while on a busy machine).
                let (done, dumped) = std::sync::mpsc::channel();
                let _ = std::thread::Builder::new()
                    .name("wsgi-stacks".into())
                    .spawn(move || {
                        log_stacks(&group);
                        let _ = done.send(());
                    });
                let _ = dumped.recv_timeout(Duration::from_secs(2));
                request_restart(
                    shared,
                    format!("request-timeout of {} s exceeded", limit.as_secs()),
                    Duration::ZERO,
                );
            }
        }
        if let Some(limit) = config.deadlock_timeout {
            let beat_ms = shared.heartbeat_ms.load(Ordering::Acquire);
            let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            if now.saturating_sub(beat_ms) >= limit_ms {
                request_restart(
                    shared,
                    format!(
                        "the Python interpreter did not respond for {} s (deadlock-timeout)",
                        limit.as_secs()
                    ),
                    Duration::ZERO,
                );
            }
        }
    }
}

/// Logs the Python stack of every thread of interpreter `group` (request-timeout).
fn log_stacks(group: &str) {
    let dump = runtime::run_in(group, |py| {
        let code = c"import sys, traceback\nstacks = ['Thread %d:\\n%s' % (tid, ''.join(traceback.format_stack(frame))) for tid, frame in sys._current_frames().items()]";
        let globals = pyo3::types::PyDict::new(py);
        py.run(code, Some(&globals), None)
            .and_then(|()| {
                globals
                    .get_item("stacks")
                    .and_then(|s| s.map(|s| s.extract::<Vec<String>>()).transpose())
            })
            .ok()
            .flatten()
            .unwrap_or_default()
    });
    for stack in dump.unwrap_or_default() {
        for line in stack.lines() {
            tracing::info!("{line}");
        }
    }
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGXCPU,
    ] {
        set.add(signal);
    }
    set
}

/// A user or group as written in the configuration, for messages.
fn principal(p: &Principal) -> String {
    match p {
        Principal::Name(name) => format!("'{name}'"),
        Principal::Id(id) => format!("#{id}"),
    }
}

/// Switches to the configured user and groups, in the safe order (groups, then user), and
/// checks the result; only when started as root.
fn drop_privileges(config: &DaemonConfig) -> Result<(), String> {
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let identity = process::apache_identity();
    let uid = match &config.user {
        Some(user) => {
            resolve_user(user).ok_or_else(|| format!("unknown user {}", principal(user)))?
        }
        None => identity.uid,
    };
    let gid = match &config.group {
        Some(group) => {
            resolve_group(group).ok_or_else(|| format!("unknown group {}", principal(group)))?
        }
        None => identity.gid,
    };
    if uid == 0 {
        return Err("refusing to run as root".into());
    }
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    if config.supplementary_groups.is_empty() {
        match User::from_uid(uid).ok().flatten() {
            Some(user) => {
                let name = std::ffi::CString::new(user.name).map_err(|e| e.to_string())?;
                nix::unistd::initgroups(&name, gid).map_err(|e| format!("initgroups: {e}"))?;
            }
            None => nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?,
        }
    } else {
        let mut groups = vec![gid];
        for group in &config.supplementary_groups {
            let id = resolve_group(group).ok_or_else(|| format!("unknown group {group:?}"))?;
            groups.push(Gid::from_raw(id));
        }
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    }
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    if Uid::current() != uid || Uid::effective() != uid || Gid::current() != gid {
        return Err("the switch did not take effect".into());
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("root privileges could be regained".into());
    }
    if config.home.is_some() {
        // Applied after the switch, by the caller.
    } else if let Some(user) = User::from_uid(uid)
        .ok()
        .flatten()
        .filter(|_| uid.as_raw() != identity.uid)
    {
        let _ = std::env::set_current_dir(user.dir);
    }
    Ok(())
}

/// umask and resource limits; failures are logged and ignored.
fn apply_limits(config: &DaemonConfig) {
    if config.cpu_priority != 0
        && let Err(e) = process::set_priority(config.cpu_priority)
    {
        tracing::warn!(
            "WSGI0037: cannot apply cpu-priority={}: {e}",
            config.cpu_priority
        );
    }
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let limits = [
        (Resource::RLIMIT_DATA, config.memory_limit, "memory-limit"),
        (
            Resource::RLIMIT_AS,
            config.virtual_memory_limit,
            "virtual-memory-limit",
        ),
        (
            Resource::RLIMIT_CPU,
            config.cpu_time_limit,
            "cpu-time-limit",
        ),
    ];
    for (resource, limit, option) in limits {
        // The CPU limit's hard value leaves room for a graceful stop after SIGXCPU.
        let hard = |soft: u64| match resource {
            Resource::RLIMIT_CPU => soft + 1 + config.shutdown_timeout.as_secs(),
            _ => soft,
        };
        if let Some(limit) = limit
            && let Err(e) = setrlimit(resource, limit, hard(limit))
        {
            tracing::warn!("WSGI0037: cannot apply {option}={limit}: {e}");
        }
    }
}

/// What request threads need to know about their group.
struct GroupSnapshot {
    name: String,
    secret: [u8; protocol::SECRET_LEN],
    threads: u32,
    multiprocess: bool,
    queue_timeout: Option<Duration>,
}

/// One request thread's current request, for request-timeout.
#[derive(Default)]
struct Slot {
    /// When the request started (`now_ms`), or 0 when idle.
    started_ms: AtomicU64,
    /// Its application group.
    group: Mutex<String>,
    /// The connection of the request under way, shut down if the process exits first (see
    /// [`Shared::shut_running`]). Cleared, under the lock, before the connection is closed or
    /// kept, so that the descriptor shut down is never one reused for something else.
    socket: Mutex<Option<std::os::fd::RawFd>>,
}

struct Shared {
    info: GroupSnapshot,
    config: Arc<DaemonConfig>,
    started: Instant,
    stopping: AtomicBool,
    /// Set, before `stopping` and before a restart is recorded, when the process stops taking
    /// work ([`Shared::ending`]).
    ending: AtomicBool,
    active: AtomicUsize,
    served: AtomicU64,
    /// When the first request started (startup-timeout), 0 before.
    first_request_ms: AtomicU64,
    /// Whether a request got past loading its script (startup-timeout).
    loaded: AtomicBool,
    last_activity_ms: AtomicU64,
    heartbeat_ms: AtomicU64,
    slots: Vec<Slot>,
    /// Which idle request threads wait for the next connection or request.
    turns: Turns,
    connections: Connections,
    restart: Mutex<Option<Restart>>,
    /// Scripts this process has run, with their modification time then.
    scripts: Mutex<std::collections::HashMap<String, std::time::SystemTime>>,
}

/// Which request threads wait for work (in `epoll_wait()`, called `accept()` below): at most
/// [`ACCEPTORS`] at a time, and the most recently idle ones. A sequential client is then
/// served by the same two threads, whose caches are warm and which the scheduler need not move
/// between CPUs (with every thread in `accept()`, the kernel woke them in turn, and moved a
/// thread on nearly every request). The other idle threads wait on a LIFO stack.
///
/// When the last thread in `accept()` takes work, no other is sent there at once: the threads
/// serving requests usually come back within microseconds, and a thread woken for nothing
/// costs two task switches. Most often they are all waiting for the GIL, and more threads
/// would only queue behind it (a test at 16 connections: with every thread let in, the p99
/// latency was twice as high). [`Turns::watch`] sends the most recently idle thread there when
/// none has come back for [`SPARE_AFTER`] and no thread is waiting for the GIL (so the busy
/// ones are blocked, in I/O or `time.sleep`), or after [`SPARE_AFTER_MOST`] in any case.
struct Turns {
    state: Mutex<TurnState>,
    /// One per request thread, to wake it when its turn comes.
    wake: Vec<Condvar>,
    /// Wakes the watcher when it sleeps untimed.
    watcher: Condvar,
}

/// How many threads wait in `accept()` at once. With two, the thread that has just served a
/// connection goes back to `accept()` behind the other one, so that one is always ready and
/// no thread has to be woken for the next connection (the kernel hands connections to the
/// threads in `accept()` in the order they began to wait).
const ACCEPTORS: usize = 2;

/// How long no thread may be in `accept()` (with idle threads waiting for a turn) before one is
/// sent there, when no thread waits for the GIL.
const SPARE_AFTER: Duration = Duration::from_millis(1);

/// How long no thread may be in `accept()` before one is sent there, whatever the GIL: a
/// request that holds the GIL for long must not hold up the start of the others (CPython hands
/// the GIL to a waiting thread every 5 ms).
const SPARE_AFTER_MOST: Duration = Duration::from_millis(5);

/// How long the watcher keeps looking on its own after the last moment with no thread in
/// `accept()`, before it sleeps until [`Turns::pass`] tells it.
const WATCH_IDLE: Duration = Duration::from_millis(100);

struct TurnState {
    /// Threads in `accept()`, or given the turn and waking up.
    accepting: usize,
    /// The threads waiting for a turn, the most recently idle last.
    waiting: Vec<usize>,
    /// Per thread: it was given a turn and has not taken it yet.
    given: Vec<bool>,
    /// Since when no thread has been in `accept()` while some waited for a turn.
    uncovered_since: Option<Instant>,
    /// Whether the watcher sleeps until told.
    watcher_asleep: bool,
}

impl Turns {
    fn new(threads: usize) -> Self {
        Self {
            state: Mutex::new(TurnState {
                accepting: 0,
                waiting: Vec::with_capacity(threads),
                given: vec![false; threads],
                uncovered_since: None,
                watcher_asleep: false,
            }),
            wake: (0..threads).map(|_| Condvar::new()).collect(),
            watcher: Condvar::new(),
        }
    }

    /// Returns when thread `me` may go into `accept()`: at once if fewer than [`ACCEPTORS`]
    /// threads are there, else when the watcher gives it the turn.
    fn take(&self, me: usize) {
        let mut state = self.state.lock();
        if state.accepting < ACCEPTORS {
            state.accepting += 1;
            state.uncovered_since = None;
            return;
        }
        state.waiting.push(me);
        while !state.given[me] {
            self.wake[me].wait(&mut state);
        }
        state.given[me] = false;
    }

    /// Called by a thread whose `accept()` returned, before it serves the connection: when no
    /// thread is left in `accept()`, starts the watcher's clock.
    fn pass(&self) {
        let mut state = self.state.lock();
        state.accepting -= 1;
        if state.accepting == 0 && !state.waiting.is_empty() {
            state.uncovered_since = Some(Instant::now());
            if state.watcher_asleep {
                state.watcher_asleep = false;
                self.watcher.notify_one();
            }
        }
    }

    /// The watcher's loop (a thread of its own; never returns): sends the most recently idle
    /// thread into `accept()` when none has been there for long enough (see [`Turns`]).
    /// `gil_wanted` tells whether a thread is waiting for the GIL.
    fn watch(&self, gil_wanted: impl Fn() -> bool) -> ! {
        let mut state = self.state.lock();
        let mut last_seen = Instant::now();
        loop {
            let Some(since) = state.uncovered_since else {
                if last_seen.elapsed() < WATCH_IDLE {
                    self.watcher.wait_for(&mut state, SPARE_AFTER);
                } else {
                    state.watcher_asleep = true;
                    while state.watcher_asleep {
                        self.watcher.wait(&mut state);
                    }
                }
                continue;
            };
            last_seen = Instant::now();
            let waited = since.elapsed();
            let due = if gil_wanted() {
                SPARE_AFTER_MOST
            } else {
                SPARE_AFTER
            };
            if waited < due {
                // Looked at again after SPARE_AFTER: whether a thread wants the GIL changes.
                self.watcher
                    .wait_for(&mut state, (due - waited).min(SPARE_AFTER));
                continue;
            }
            state.uncovered_since = None;
            if let Some(next) = state.waiting.pop() {
                state.accepting += 1;
                state.given[next] = true;
                self.wake[next].notify_one();
            }
        }
    }
}

/// The epoll token of the listening socket; a kept connection's token is its descriptor.
const LISTENER: u64 = u64::MAX;

/// A connection from an Apache child, between the requests it carries.
struct Connection {
    stream: UnixStream,
    /// Whether the read timeout for the request frame ([`REQUEST_TIMEOUT`]) is on the socket.
    limited_reads: bool,
    /// Whether it is in the epoll set (it has carried a request before).
    watched: bool,
}

/// The connections kept between requests and the epoll set that tells which of them (or the
/// listening socket) has something to read.
///
/// A group of one process keeps each connection after a response, for the child's next
/// request: the child then pays no connect, and this process no accept and no close. A group
/// of several processes does not: a kept connection would tie the child's next request to this
/// process even when it is busy and another one is idle, while a new connection goes to
/// whichever process is waiting on the shared listening socket.
struct Connections {
    /// The group's listening socket.
    listener: UnixListener,
    epoll: Epoll,
    idle: Mutex<std::collections::HashMap<std::os::fd::RawFd, Connection>>,
    keep: bool,
}

impl Connections {
    fn new(listener: UnixListener, keep: bool) -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Other processes of the group wait on the same socket: only one of them is woken.
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        epoll.add(&listener, EpollEvent::new(flags, LISTENER))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            epoll,
            idle: Mutex::new(std::collections::HashMap::new()),
            keep,
        })
    }

    /// Waits for a new connection or for a request on a kept one; `None` when there was none
    /// to take, or when `ending()` says the process is on its way out (the connection or
    /// request is then left where it is).
    fn next(&self, ending: impl Fn() -> bool) -> std::io::Result<Option<Connection>> {
        let mut events = [EpollEvent::empty()];
        let woken = loop {
            match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => {}
                other => break other?,
            }
        };
        if woken == 0 || ending() {
            return Ok(None);
        }
        match events[0].data() {
            LISTENER => match self.listener.accept() {
                Ok((stream, _)) => {
                    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux.
                    Ok(Some(Connection {
                        stream,
                        limited_reads: false,
                        watched: false,
                    }))
                }
                // Another process of the group, or another thread, took it.
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
                // Out of descriptors: the idle kept connections must not keep new ones out.
                // One is closed (its child sends its next request on a new connection) and
                // the accept is tried again.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && self.shed_one() =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            token => Ok(i32::try_from(token)
                .ok()
                .and_then(|fd| self.idle.lock().remove(&fd))),
        }
    }

    /// Keeps `connection` for its next request, or closes it.
    fn keep(&self, mut connection: Connection) {
        use std::os::fd::AsRawFd as _;
        let fd = connection.stream.as_raw_fd();
        let Ok(token) = u64::try_from(fd) else {
            return;
        };
        let mut event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, token);
        let watched = std::mem::replace(&mut connection.watched, true);
        // In the map before it is armed: its next request may arrive at once.
        let mut idle = self.idle.lock();
        let stream = &idle.entry(fd).insert_entry(connection).into_mut().stream;
        let armed = if watched {
            self.epoll.modify(stream, &mut event)
        } else {
            self.epoll.add(stream, event)
        };
        if let Err(e) = armed {
            tracing::debug!("cannot keep a connection for its next request: {e}");
            if let Some(connection) = idle.remove(&fd) {
                close(connection.stream);
            }
        }
    }

    /// Takes the listening socket out of the epoll set: the process is on its way out. The
    /// socket itself stays open (the group's other processes and the Apache parent share it),
    /// so new connections wait in its backlog for another process. Called before the flag
    /// that [`Shared::ending`] reads is set: a thread woken for the socket before then
    /// serves the connection as usual, and none is woken after, so no wake-up that another
    /// process of the group should have had is lost.
    fn stop_listening(&self) {
        let _ = self.epoll.delete(&self.listener);
    }

    /// Closes one kept connection, if there is one; whether there was.
    fn shed_one(&self) -> bool {
        let mut idle = self.idle.lock();
        let Some(&fd) = idle.keys().next() else {
            return false;
        };
        if let Some(connection) = idle.remove(&fd) {
            // Out of the set first: a copy of it in a forked process would keep it there.
            let _ = self.epoll.delete(&connection.stream);
            close(connection.stream);
        }
        true
    }

    /// Closes the kept connections (the process is about to exit).
    fn close_idle(&self) {
        for (_, connection) in self.idle.lock().drain() {
            close(connection.stream);
        }
    }
}

/// Closes a connection that the Apache child may have kept for its next request. The socket
/// is shut down, not only closed: a process forked by the application (`os.fork`,
/// `multiprocessing`) holds a copy of every descriptor and may outlive this one, and the
/// child would otherwise see no end of the connection and wait the socket-timeout for an
/// `Accepted` that never comes.
fn close(stream: UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn request_loop(shared: &Shared, slot: usize) {
    loop {
        if shared.ending() {
            return;
        }
        shared.turns.take(slot);
        let next = shared.connections.next(|| shared.ending());
        shared.turns.pass();
        match next {
            Ok(Some(connection)) => {
                // A connection accepted while stopping is still served: the main thread waits
                // for it (up to the drain time).
                shared.active.fetch_add(1, Ordering::AcqRel);
                shared
                    .last_activity_ms
                    .store(now_ms(shared), Ordering::Release);
                let (ran, kept) = serve_connection(shared, connection, &shared.slots[slot]);
                shared
                    .last_activity_ms
                    .store(now_ms(shared), Ordering::Release);
                let served =
                    shared.served.fetch_add(u64::from(ran), Ordering::AcqRel) + u64::from(ran);
                let maximum = shared.config.maximum_requests;
                if maximum > 0 && served >= maximum {
                    request_restart(
                        shared,
                        format!("maximum-requests of {maximum} reached"),
                        shared.config.graceful_timeout,
                    );
                }
                match kept {
                    Some(connection) if shared.connections.keep && !shared.ending() => {
                        shared.connections.keep(connection);
                    }
                    Some(connection) => close(connection.stream),
                    None => {}
                }
                shared.active.fetch_sub(1, Ordering::AcqRel);
            }
            Ok(None) => {}
            Err(_) if shared.stopping.load(Ordering::Acquire) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("WSGI0038: accepting a connection failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Serves the next request of a connection: whether the application ran, and the connection
/// when it may carry another request (the response ended cleanly).
fn serve_connection(
    shared: &Shared,
    mut connection: Connection,
    slot: &Slot,
) -> (bool, Option<Connection>) {
    let reused = connection.watched;
    let request = match read_request(&mut connection) {
        Ok(Frame::Request(request)) if request.secret_matches(&shared.info.secret) => request,
        Ok(Frame::Request(_)) => {
            tracing::warn!("WSGI0039: dropped a connection whose request had a wrong secret");
            return (false, None);
        }
        Ok(other) => {
            tracing::warn!(
                "WSGI0039: dropped a connection that began with {other:?} instead of a request"
            );
            return (false, None);
        }
        // A kept connection that the child closed (its process ended).
        Err(protocol::ProtocolError::Closed) if reused => return (false, None),
        Err(e) => {
            tracing::warn!("WSGI0039: dropped a connection with a bad request frame: {e}");
            return (false, None);
        }
    };
    let mut stream = connection.stream;
    if shared.ending() {
        // Restarting or stopping: the replacement process will take it.
        let _ = protocol::write_frame(&mut stream, &Frame::Retry);
        return (false, None);
    }
    // One stat per request, for both the reload check and the script's load.
    let script = String::from_utf8_lossy(&request.script).into_owned();
    let modified = std::fs::metadata(&script).and_then(|m| m.modified()).ok();
    if request.reloading && modified.is_some_and(|m| script_changed(shared, &script, m)) {
        request_restart(
            shared,
            format!("script '{script}' changed"),
            shared.config.graceful_timeout,
        );
        let _ = protocol::write_frame(&mut stream, &Frame::Retry);
        return (false, None);
    }
    let _log_scope = crate::apache::log::RequestIdScope::enter(&request.request_id);
    if let Some(limit) = shared.info.queue_timeout {
        let now_us = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let waited =
            Duration::from_micros(u64::try_from(now_us - request.request_start_us).unwrap_or(0));
        if waited > limit {
            tracing::error!(
                "WSGI0047: queue-timeout of {} s expired (the request waited {} ms); not run",
                limit.as_secs(),
                waited.as_millis()
            );
            let _ = protocol::write_frame(&mut stream, &Frame::Failure { status: 504 });
            // The child may keep the connection after a Failure: it must see it closed.
            close(stream);
            return (false, None);
        }
    }
    if protocol::write_frame(&mut stream, &Frame::Accepted).is_err() {
        return (false, None);
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    *slot.group.lock() = request.application_group.clone();
    slot.started_ms.store(now_ms(shared), Ordering::Release);
    let backend = Arc::new(DaemonBackend {
        conn: Mutex::new(Conn {
            stream: Some(stream),
            clean: true,
            body_done: false,
            held: Vec::new(),
            limited_reads: connection.limited_reads,
            answer: Vec::new(),
            answer_at: 0,
        }),
    });
    // After the backend, so dropped before it if the request unwinds.
    let running = Running::new(slot, fd);
    let _ = shared.first_request_ms.compare_exchange(
        0,
        now_ms(shared),
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    let backend_dyn = Arc::clone(&backend) as Arc<dyn Backend>;
    let outcome = run_request(shared, &request, &script, modified, backend_dyn);
    let last = match outcome {
        Some(Outcome::Sent) => Frame::End,
        Some(Outcome::NoCallable) => Frame::Failure { status: 404 },
        Some(Outcome::Failed) | None => Frame::Failure { status: 500 },
    };
    slot.started_ms.store(0, Ordering::Release);
    let mut conn = backend.conn.lock();
    let ended = conn.send(&last).is_ok() && conn.clean;
    let stream = conn.stream.take();
    // Before the connection is closed or kept (see Slot::socket).
    drop(running);
    let kept = match stream {
        Some(stream) if ended => Some(Connection {
            stream,
            limited_reads: conn.limited_reads,
            watched: reused,
        }),
        Some(stream) => {
            close(stream);
            None
        }
        None => None,
    };
    (true, kept)
}

/// Marks a slot's request as running on a connection, for [`Shared::shut_running`], until it
/// is dropped, which must happen before the connection is closed or kept.
struct Running<'s>(&'s Slot);

impl<'s> Running<'s> {
    fn new(slot: &'s Slot, fd: std::os::fd::RawFd) -> Self {
        *slot.socket.lock() = Some(fd);
        Self(slot)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.socket.lock() = None;
    }
}

/// How long a new connection may take to send its request frame.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The bytes of a request frame that [`read_request`] takes in its first read; a request frame
/// is usually 1 to 3 KiB.
const REQUEST_PEEK: usize = 8 * 1024;

/// Reads the first frame of a connection, with a read timeout of [`REQUEST_TIMEOUT`] that is
/// left on the socket: [`Conn::unlimit_reads`] clears it before the first body read, so that a
/// response that reads no body costs no second `setsockopt`. The child writes the whole frame
/// at once, so one read usually takes all of it.
fn read_request(connection: &mut Connection) -> Result<Frame, protocol::ProtocolError> {
    use std::io::Read as _;
    if !std::mem::replace(&mut connection.limited_reads, true) {
        connection.stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    }
    let stream = &mut connection.stream;
    let mut first = [0u8; REQUEST_PEEK];
    let got = loop {
        match stream.read(&mut first) {
            Ok(0) => return Err(protocol::ProtocolError::Closed),
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    };
    match Frame::decode(&first[..got])? {
        Some((frame, used)) if used == got => Ok(frame),
        // The child sends nothing after its request until it is asked.
        Some((_, used)) => Err(protocol::ProtocolError::TrailingBytes(got - used)),
        None => protocol::read_frame(&mut (&first[..got]).chain(&mut *stream)),
    }
}

/// Whether the script's modification time `mtime` differs from when this process first ran it
/// (a daemon restarts to pick up a changed script, like C mod_wsgi's daemons).
fn script_changed(shared: &Shared, script: &str, mtime: SystemTime) -> bool {
    let mut seen = shared.scripts.lock();
    match seen.get(script) {
        Some(first) => *first != mtime,
        None => {
            seen.insert(script.to_owned(), mtime);
            false
        }
    }
}

fn run_request(
    shared: &Shared,
    request: &RequestFrame,
    script: &str,
    modified: Option<SystemTime>,
    backend: Arc<dyn Backend>,
) -> Option<Outcome> {
    let mtime = wsgi::script::mtime_micros(modified);
    if mtime == 0 && !std::path::Path::new(script).is_file() {
        tracing::error!(
            request_id = request.request_id.as_str(),
            "WSGI0020: target WSGI script not found or unable to stat: '{script}'"
        );
        return Some(Outcome::NoCallable);
    }
    let info = crate::python::runtime::settings().map(|(_, info)| info.apache_version);
    let spec = RequestSpec {
        script,
        script_mtime: mtime,
        reloading: request.reloading,
        callable: &request.callable,
        cgi: request.env.iter().collect(),
        process_group: &shared.info.name,
        application_group: &request.application_group,
        request_handler: &request.handler,
        header_only: request.header_only,
        request_id: &request.request_id,
        request_start: request.request_start_us as f64 / 1e6,
        queue_start: std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        multithread: shared.info.threads > 1,
        multiprocess: shared.info.multiprocess,
        apache_version: info.unwrap_or((2, 4, 0)),
        loaded: Some(&shared.loaded),
    };
    match runtime::run_in(&request.application_group, |py| {
        wsgi::serve(py, &spec, backend)
    }) {
        Ok(outcome) => Some(outcome),
        Err(e) => {
            tracing::error!("WSGI0023: cannot run '{script}': {e}");
            None
        }
    }
}

/// The WSGI backend of a daemon request: the connection to the Apache child.
struct DaemonBackend {
    conn: Mutex<Conn>,
}

impl DaemonBackend {
    /// Hands `put` up to `max` more body bytes (none at the end of the body) and returns what
    /// it returns. Bytes left over from the child's last answer come first; otherwise the
    /// child is asked for at least [`protocol::BODY_BLOCK`] bytes, and what `max` leaves of
    /// its answer is kept for the next read.
    fn next_body<R>(&self, max: usize, put: impl FnOnce(&[u8]) -> R) -> Result<R, BackendError> {
        let mut conn = self.conn.lock();
        if max == 0 {
            return Ok(put(&[]));
        }
        if conn.answer_at == conn.answer.len() {
            if conn.body_done {
                return Ok(put(&[]));
            }
            let asked = max.clamp(protocol::BODY_BLOCK, MAX_PAYLOAD);
            let ask = Frame::ReadBody {
                max: u32::try_from(asked).unwrap_or(u32::MAX),
            };
            conn.unlimit_reads();
            conn.send(&ask).map_err(|_| BackendError::Read)?;
            let stream = conn.stream().map_err(|_| BackendError::Read)?;
            match protocol::read_frame(stream) {
                Ok(Frame::Body(data)) if data.len() <= asked => {
                    conn.answer = data;
                    conn.answer_at = 0;
                }
                Ok(Frame::BodyEnd) => {
                    conn.body_done = true;
                    return Ok(put(&[]));
                }
                _ => {
                    conn.body_done = true;
                    conn.clean = false;
                    return Err(BackendError::Read);
                }
            }
        }
        let from = conn.answer_at;
        let to = conn.answer.len().min(from + max);
        conn.answer_at = to;
        Ok(put(&conn.answer[from..to]))
    }
}

struct Conn {
    /// Taken back by the request thread when the request is over: whatever the application
    /// still holds (its `wsgi.input`, a thread writing late) can no longer reach the
    /// connection, which may carry the next request.
    stream: Option<UnixStream>,
    /// Cleared when a read or write failed, or an Abort went out: the connection is then
    /// closed after the request instead of kept for the next one.
    clean: bool,
    body_done: bool,
    /// Encoded frames held back to go out in the same write as the next frame that is sent
    /// (each write wakes the Apache child): the `Head`, and the `Data` of a list response
    /// ([`Backend::hold`]). A hello world then goes out as one write of Head, Data and End.
    held: Vec<u8>,
    /// Whether the read timeout set for the request frame is still on the socket.
    limited_reads: bool,
    /// The child's last answer to a ReadBody, of which the bytes from `answer_at` on have not
    /// been read yet (the read that asked for them wanted fewer).
    answer: Vec<u8>,
    answer_at: usize,
}

impl Conn {
    /// Clears the socket's read timeout (set by [`read_request`]) before the first read of the
    /// request body, which may take as long as the client does.
    fn unlimit_reads(&mut self) {
        if self.limited_reads
            && let Some(stream) = &self.stream
        {
            self.limited_reads = false;
            let _ = stream.set_read_timeout(None);
        }
    }

    /// The connection, while the request is under way.
    fn stream(&mut self) -> Result<&mut UnixStream, BackendError> {
        self.stream.as_mut().ok_or(BackendError::Write)
    }

    /// Passes `result` on, remembering a failure (the connection is then not kept).
    fn note<T>(&mut self, result: Result<T, BackendError>) -> Result<T, BackendError> {
        if result.is_err() {
            self.clean = false;
        }
        result
    }

    /// Writes `frame`, preceded by the held frames if there are any.
    fn send(&mut self, frame: &Frame) -> Result<(), BackendError> {
        let sent = self.send_unnoted(frame);
        self.note(sent)
    }

    fn send_unnoted(&mut self, frame: &Frame) -> Result<(), BackendError> {
        use std::io::Write as _;
        if self.held.is_empty() {
            return protocol::write_frame(self.stream()?, frame).map_err(|_| BackendError::Write);
        }
        frame.check().map_err(|_| BackendError::Write)?;
        let mut out = std::mem::take(&mut self.held);
        frame.encode(&mut out);
        self.stream()?
            .write_all(&out)
            .map_err(|_| BackendError::Write)
    }

    /// Encodes `data` as Data frames after the held ones and sends what the socket takes
    /// without blocking; the rest stays held.
    fn try_send_data(&mut self, data: &[u8]) -> Result<Taken, BackendError> {
        use nix::sys::socket::{MsgFlags, send};
        use std::os::fd::AsRawFd as _;
        let mut out = std::mem::take(&mut self.held);
        Frame::encode_data(data, DATA_CHUNK, &mut out);
        let fd = self.stream()?.as_raw_fd();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let sent = match send(fd, &out, flags) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => 0,
            Err(_) => return Err(BackendError::Write),
        };
        if sent == out.len() {
            return Ok(Taken::Sent);
        }
        out.drain(..sent);
        self.held = out;
        Ok(Taken::Queued)
    }

    /// Writes the held frames, if there are any.
    fn flush_held(&mut self) -> Result<(), BackendError> {
        use std::io::Write as _;
        if self.held.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.held);
        self.stream()?
            .write_all(&out)
            .map_err(|_| BackendError::Write)
    }

    /// Writes `data` as Data frames, after the held frames.
    fn send_data(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let sent = self.send_data_unnoted(data);
        self.note(sent)
    }

    fn send_data_unnoted(&mut self, data: &[u8]) -> Result<(), BackendError> {
        use std::io::Write as _;
        for chunk in data.chunks(DATA_CHUNK) {
            if self.held.is_empty() && chunk.len() >= COPY_AT_LEAST {
                // Large: not copied into a buffer; header and payload in one vectored write.
                protocol::write_data(self.stream()?, chunk).map_err(|_| BackendError::Write)?;
                continue;
            }
            let mut out = std::mem::take(&mut self.held);
            Frame::encode_data(chunk, DATA_CHUNK, &mut out);
            self.stream()?
                .write_all(&out)
                .map_err(|_| BackendError::Write)?;
        }
        Ok(())
    }
}

/// The most response bytes put in one frame. 64 KiB keeps the Apache child's frame buffer
/// under glibc's mmap threshold (128 KiB): larger buffers raised that threshold, and with it
/// how much memory every malloc arena keeps (about 400 KiB instead of 160 KiB per arena).
const DATA_CHUNK: usize = 64 * 1024;

/// The most bytes [`Conn::held`] may grow to through [`Backend::hold`]; a list response larger
/// than this is written as it is sent.
const HOLD_LIMIT: usize = 256 * 1024;

/// The largest block of a streamed response that [`Backend::try_send`] sends with the GIL
/// held (a copy into the socket buffer of a microsecond or two): a one-item framework
/// response (Flask: 11% to 21% more requests per second, back to back; docs/performance.md,
/// "Fourth pass"). Larger blocks keep the usual path: with
/// 64 KiB, streaming was 9% to 20% slower (the socket buffer of a fast stream is often full,
/// and every other block then cost a failed `send` as well).
const TRY_SEND_MOST: usize = 16 * 1024;

/// Data blocks at least this large that find nothing held go out without being copied first.
const COPY_AT_LEAST: usize = 64 * 1024;

impl Backend for DaemonBackend {
    fn read(&self, buf: &mut [u8]) -> Result<usize, BackendError> {
        self.next_body(buf.len(), |data| {
            buf[..data.len()].copy_from_slice(data);
            data.len()
        })
    }

    fn read_uninit<'a>(
        &self,
        buf: &'a mut [MaybeUninit<u8>],
    ) -> Result<&'a mut [u8], BackendError> {
        self.next_body(buf.len(), |data| {
            buf[..data.len()].write_copy_of_slice(data)
        })
    }

    /// Holds the `Head` frame (never writes).
    fn set_head(&self, head: &ResponseHead) -> Result<(), BackendError> {
        // Appended after anything already held (not expected: a response has one head), so
        // the frames stay in order.
        head_frame(head)?.encode(&mut self.conn.lock().held);
        Ok(())
    }

    fn write(&self, data: &[u8]) -> Result<(), BackendError> {
        self.conn.lock().send_data(data)
    }

    /// Holds `data` as Data frames while the held bytes stay within [`HOLD_LIMIT`]; never
    /// writes (called with the GIL held).
    fn hold(&self, data: &[u8]) -> Result<bool, BackendError> {
        // Another thread of the application reading the body holds the lock while it waits
        // for the child: do not wait for it with the GIL held.
        let Some(mut conn) = self.conn.try_lock() else {
            return Ok(false);
        };
        let frames = data.len().div_ceil(DATA_CHUNK);
        let grown = conn.held.len() + data.len() + frames * protocol::HEADER_LEN;
        if grown > HOLD_LIMIT {
            return Ok(false);
        }
        Frame::encode_data(data, DATA_CHUNK, &mut conn.held);
        Ok(true)
    }

    /// Writes `data` as Data frames (after the held ones) with a non-blocking `send`, when
    /// the connection is free and `data` is at most [`TRY_SEND_MOST`] bytes; what the socket
    /// does not take at once is held for [`Backend::flush`].
    fn try_send(&self, data: &[u8]) -> Result<Taken, BackendError> {
        if data.len() > TRY_SEND_MOST {
            return Ok(Taken::No);
        }
        let Some(mut conn) = self.conn.try_lock() else {
            return Ok(Taken::No);
        };
        let taken = conn.try_send_data(data);
        conn.note(taken)
    }

    fn flush(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.lock();
        let flushed = conn.flush_held();
        conn.note(flushed)
    }

    fn abort(&self) {
        let mut conn = self.conn.lock();
        let _ = conn.send(&Frame::Abort);
        conn.clean = false;
    }

    /// Passes the open file to the Apache child, which sends the region itself as embedded
    /// mode does (a File frame with the descriptor). When the descriptor cannot be passed,
    /// streams the region through the socket in Data frames instead.
    fn send_file(&self, fd: OwnedFd, offset: u64, len: u64) -> Result<bool, BackendError> {
        let mut conn = self.conn.lock();
        if len == 0 {
            return Ok(true);
        }
        let passing = conn.pass_file(&fd, offset, len);
        match conn.note(passing)? {
            Passing::Passed => return Ok(true),
            Passing::Undescribable => {}
            Passing::NotSent => {
                tracing::debug!("cannot pass a file to the Apache child; streaming it");
            }
        }
        let streamed = conn.stream_file(fd, offset, len);
        conn.note(streamed)?;
        Ok(true)
    }

    /// Holds the `Head` frame unless another thread holds the connection (reading the body).
    fn try_set_head(&self, head: &ResponseHead) -> Result<bool, BackendError> {
        let Some(mut conn) = self.conn.try_lock() else {
            return Ok(false);
        };
        head_frame(head)?.encode(&mut conn.held);
        Ok(true)
    }
}

/// The `Head` frame of `head`, checked.
fn head_frame(head: &ResponseHead) -> Result<Frame, BackendError> {
    let frame = Frame::Head(HeadFrame {
        status: head.status,
        reason: head.reason.clone(),
        headers: head.headers.clone(),
    });
    frame.check().map_err(|_| BackendError::Write)?;
    Ok(frame)
}

/// How passing a file to the Apache child went (see [`Conn::pass_file`]).
enum Passing {
    /// The File frame and its descriptor went out.
    Passed,
    /// The region cannot be described by a File frame; nothing was sent.
    Undescribable,
    /// `sendmsg` failed with nothing sent; the held frames are kept.
    NotSent,
}

impl Conn {
    /// Sends the held frames and a File frame, with `fd` attached (`SCM_RIGHTS`), in one
    /// `sendmsg`. `Err` when the connection broke after part of it went out (nothing more can
    /// be sent on it then).
    fn pass_file(&mut self, fd: &OwnedFd, offset: u64, len: u64) -> Result<Passing, BackendError> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let frame = Frame::File { offset, len };
        if frame.check().is_err() {
            return Ok(Passing::Undescribable);
        }
        let kept = self.held.len();
        let mut out = std::mem::take(&mut self.held);
        frame.encode(&mut out);
        let fds = [fd.as_raw_fd()];
        let rights = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(&out)];
        let raw = self.stream()?.as_raw_fd();
        let sent = loop {
            let flags = MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(raw, &iov, &rights, flags, None) {
                Err(nix::errno::Errno::EINTR) => {}
                other => break other,
            }
        };
        match sent {
            // The descriptor went with the first bytes; the rest are plain bytes.
            Ok(n) => self
                .stream()?
                .write_all(&out[n..])
                .map(|()| Passing::Passed)
                .map_err(|_| BackendError::Write),
            Err(e) => {
                tracing::debug!("sendmsg of a file descriptor failed: {e}");
                out.truncate(kept);
                self.held = out;
                Ok(Passing::NotSent)
            }
        }
    }

    /// Streams the file region to the Apache child in Data frames, without copying it through
    /// Python.
    fn stream_file(&mut self, fd: OwnedFd, offset: u64, len: u64) -> Result<(), BackendError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::from(fd);
        file.seek(SeekFrom::Start(offset))
            .map_err(|_| BackendError::Write)?;
        let mut left = len;
        let mut chunk = vec![0u8; DATA_CHUNK];
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(DATA_CHUNK);
            let n = file
                .read(&mut chunk[..want])
                .map_err(|_| BackendError::Write)?;
            if n == 0 {
                break;
            }
            self.send_data(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected() -> (DaemonBackend, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        theirs.set_nonblocking(true).expect("non-blocking");
        let conn = Conn {
            stream: Some(ours),
            clean: true,
            body_done: false,
            held: Vec::new(),
            limited_reads: false,
            answer: Vec::new(),
            answer_at: 0,
        };
        let backend = DaemonBackend {
            conn: Mutex::new(conn),
        };
        (backend, theirs)
    }

    fn head() -> ResponseHead {
        ResponseHead {
            status: 200,
            reason: Some("OK".into()),
            headers: vec![("Content-Type".into(), "text/plain".into())],
        }
    }

    /// Everything the peer can read now, as frames.
    fn frames(peer: &mut UnixStream) -> Vec<Frame> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = Frame::decode(&bytes[at..]).expect("valid frames") {
            out.push(frame);
            at += used;
        }
        assert_eq!(at, bytes.len(), "a partial frame");
        out
    }

    fn request_bytes() -> Vec<u8> {
        Frame::Request(Box::new(RequestFrame {
            secret: [1; protocol::SECRET_LEN],
            script: b"/srv/app.wsgi".to_vec(),
            application_group: String::new(),
            callable: "application".into(),
            request_id: "id".into(),
            handler: "wsgi-script".into(),
            reloading: false,
            header_only: false,
            request_start_us: 0,
            env: vec![(b"K".to_vec(), vec![b'v'; 3 * REQUEST_PEEK])].into(),
        }))
        .encoded()
    }

    #[test]
    fn requests_are_read_whole_split_or_refused_with_extra_bytes() {
        use std::io::Write as _;
        let bytes = request_bytes();
        let expected = Frame::decode(&bytes).expect("valid").expect("whole").0;

        // In one piece, larger than the first read, and in two pieces some time apart.
        let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
        let mut ours = Connection {
            stream: ours,
            limited_reads: false,
            watched: false,
        };
        theirs.write_all(&bytes).expect("write");
        assert_eq!(read_request(&mut ours), Ok(expected.clone()));
        let small = Frame::Retry.encoded();
        theirs.write_all(&small).expect("write");
        assert_eq!(read_request(&mut ours), Ok(Frame::Retry));
        let writer = std::thread::spawn(move || {
            theirs.write_all(&bytes[..100]).expect("write");
            std::thread::sleep(Duration::from_millis(50));
            theirs.write_all(&bytes[100..]).expect("write");
            theirs
        });
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(read_request(&mut ours), Ok(expected));
        let mut theirs = writer.join().expect("writer");

        // Anything after the request is refused.
        let mut two = small.clone();
        two.extend_from_slice(&small);
        theirs.write_all(&two).expect("write");
        assert_eq!(
            read_request(&mut ours),
            Err(protocol::ProtocolError::TrailingBytes(small.len()))
        );
        drop(theirs);
        assert_eq!(
            read_request(&mut ours),
            Err(protocol::ProtocolError::Closed)
        );
    }

    #[test]
    fn a_file_goes_over_as_a_descriptor_with_the_held_frames() {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::fd::AsFd as _;
        let mut file = tempfile::tempfile().expect("temporary file");
        file.write_all(b"0123456789").expect("write");
        let (backend, peer) = connected();
        backend.set_head(&head()).expect("head");
        assert_eq!(backend.send_file(OwnedFd::from(file), 3, 5), Ok(true));

        let mut fds = Vec::new();
        let mut buf = [0; 4096];
        let got = crate::apache::request::recv_with_fds(peer.as_fd(), &mut buf, &mut fds)
            .expect("recvmsg");
        assert!(!got.truncated);
        let (first, used) = Frame::decode(&buf[..got.bytes])
            .expect("valid")
            .expect("whole");
        assert!(matches!(first, Frame::Head(_)));
        let second = Frame::decode(&buf[used..got.bytes]).expect("valid");
        assert_eq!(
            second,
            Some((Frame::File { offset: 3, len: 5 }, got.bytes - used))
        );

        // The descriptor is the file itself.
        assert_eq!(fds.len(), 1);
        let mut file = std::fs::File::from(fds.remove(0));
        file.rewind().expect("seek");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read");
        assert_eq!(text, "0123456789");
    }

    /// Turns for 4 threads, with 0 and 1 in accept() and 2 and 3 (the most recently idle)
    /// waiting; each reports on the channel when it gets its turn. The watcher runs with
    /// `gil_wanted`.
    fn turns_with_two_waiting(
        gil_wanted: bool,
    ) -> (
        Arc<Turns>,
        std::sync::mpsc::Receiver<usize>,
        Vec<std::thread::JoinHandle<()>>,
    ) {
        let turns = Arc::new(Turns::new(4));
        turns.take(0);
        turns.take(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut handles = Vec::new();
        for me in [2, 3] {
            let (theirs, tx) = (Arc::clone(&turns), tx.clone());
            handles.push(std::thread::spawn(move || {
                theirs.take(me);
                tx.send(me).expect("send");
            }));
            while turns.state.lock().waiting.len() < me - 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let watcher = Arc::clone(&turns);
        // Never ends: it goes to sleep untimed once the test is over.
        std::thread::spawn(move || watcher.watch(move || gil_wanted));
        (turns, rx, handles)
    }

    #[test]
    fn an_idle_thread_is_sent_to_accept_only_when_the_busy_ones_stay_away() {
        let (turns, rx, handles) = turns_with_two_waiting(false);
        // Thread 0 takes a connection: thread 1 is still in accept(), nobody is woken.
        turns.pass();
        std::thread::sleep(Duration::from_millis(20));
        assert!(rx.try_recv().is_err());
        // Thread 1 takes one too: after SPARE_AFTER with both away, the most recently idle
        // thread (3) goes into accept().
        let away = Instant::now();
        turns.pass();
        assert_eq!(rx.recv().ok(), Some(3));
        assert!(away.elapsed() >= SPARE_AFTER, "{:?}", away.elapsed());
        // Thread 0, done, goes back into accept() without waiting; then it and thread 3 are
        // away: thread 2 goes.
        turns.take(0);
        assert_eq!(turns.state.lock().accepting, 2);
        turns.pass();
        turns.pass();
        assert_eq!(rx.recv().ok(), Some(2));
        for handle in handles {
            handle.join().expect("thread");
        }
        let state = turns.state.lock();
        assert_eq!(state.accepting, 1);
        assert!(state.waiting.is_empty() && !state.given.contains(&true));
    }

    #[test]
    fn while_a_thread_waits_for_the_gil_an_idle_one_is_sent_only_after_the_longer_delay() {
        let (turns, rx, handles) = turns_with_two_waiting(true);
        turns.pass();
        let away = Instant::now();
        turns.pass();
        assert_eq!(rx.recv().ok(), Some(3));
        assert!(away.elapsed() >= SPARE_AFTER_MOST, "{:?}", away.elapsed());
        turns.pass();
        assert_eq!(rx.recv().ok(), Some(2));
        for handle in handles {
            handle.join().expect("thread");
        }
    }

    #[test]
    fn head_and_held_data_go_out_with_the_end() {
        let (backend, mut peer) = connected();
        backend.set_head(&head()).expect("head");
        assert_eq!(backend.hold(b"hello, "), Ok(true));
        assert_eq!(backend.hold(b""), Ok(true));
        assert_eq!(backend.hold(b"world\n"), Ok(true));
        assert!(
            frames(&mut peer).is_empty(),
            "nothing is written before the end"
        );

        backend.conn.lock().send(&Frame::End).expect("end");
        let expected = vec![
            Frame::Head(HeadFrame {
                status: 200,
                reason: Some("OK".into()),
                headers: vec![("Content-Type".into(), "text/plain".into())],
            }),
            Frame::Data(b"hello, ".to_vec()),
            Frame::Data(b"world\n".to_vec()),
            Frame::End,
        ];
        assert_eq!(frames(&mut peer), expected);
    }

    #[test]
    fn holding_stops_at_the_limit_and_writes_keep_the_order() {
        let (backend, mut peer) = connected();
        backend.set_head(&head()).expect("head");
        // (What is written at the end must fit in the socket pair's buffer, about 208 KiB.)
        let block = vec![b'x'; 200 * 1024];
        assert_eq!(backend.hold(&block), Ok(true));
        assert_eq!(backend.hold(&block[..60 * 1024]), Ok(false), "over 256 KiB");
        assert!(frames(&mut peer).is_empty());

        // What could not be held is written, after what was.
        backend.write(b"tail").expect("write");
        let got = frames(&mut peer);
        assert!(matches!(&got[0], Frame::Head(_)));
        let mut body = Vec::new();
        for frame in &got[1..got.len() - 1] {
            let Frame::Data(data) = frame else {
                panic!("not a Data frame: {frame:?}");
            };
            assert!(data.len() <= DATA_CHUNK);
            body.extend_from_slice(data);
        }
        assert!(body == block, "held bytes changed");
        assert_eq!(got[got.len() - 1], Frame::Data(b"tail".to_vec()));
    }

    /// The payloads of the Data frames the peer receives until the connection ends, read on
    /// a thread of their own.
    fn data_frames(peer: UnixStream) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
        std::thread::spawn(move || {
            peer.set_nonblocking(false).expect("blocking");
            let mut peer = peer;
            let mut blocks = Vec::new();
            while let Ok(frame) = protocol::read_frame(&mut peer) {
                if let Frame::Data(data) = frame {
                    blocks.push(data);
                }
            }
            blocks
        })
    }

    #[test]
    fn streamed_blocks_go_out_at_once_or_are_queued_for_flush_in_order() {
        let (backend, mut peer) = connected();
        backend.set_head(&head()).expect("head");
        assert_eq!(backend.try_send(b"abc").expect("try_send"), Taken::Sent);
        let got = frames(&mut peer);
        assert!(
            matches!(&got[..], [Frame::Head(_), Frame::Data(d)] if d == b"abc"),
            "{got:?}"
        );
        assert_eq!(
            backend
                .try_send(&vec![0; TRY_SEND_MOST + 1])
                .expect("try_send"),
            Taken::No
        );
        // Nobody reads: the socket buffer fills, and a block that does not fit is queued.
        let mut sent = 0;
        let queued = (0u8..=255).find(|&i| {
            sent += 1;
            backend.try_send(&[i; 16_000]).expect("try_send") == Taken::Queued
        });
        assert!(queued.is_some(), "never queued");
        let reader = data_frames(peer);
        backend.flush().expect("flush");
        drop(backend);
        let blocks = reader.join().expect("reader");
        assert_eq!(blocks.len(), sent);
        for (i, block) in blocks.iter().enumerate() {
            assert!(block.len() == 16_000 && block.iter().all(|&b| usize::from(b) == i));
        }
    }

    #[test]
    fn held_frames_precede_an_abort_and_large_writes_are_split() {
        let (backend, mut peer) = connected();
        backend.set_head(&head()).expect("head");
        backend.abort();
        let got = frames(&mut peer);
        assert!(
            matches!(&got[..], [Frame::Head(_), Frame::Abort]),
            "{got:?}"
        );

        let (backend, peer) = connected();
        let reader = data_frames(peer);
        backend.write(&vec![1; DATA_CHUNK + 10]).expect("write");
        drop(backend);
        let sizes: Vec<usize> = reader
            .join()
            .expect("reader")
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [DATA_CHUNK, 10]);
    }
}
