//! The Apache parent's side of daemon mode: one listening Unix socket per `WSGIDaemonProcess`
//! group, the group's processes forked from the parent (which never runs Python), restarted
//! when they die, and stopped when Apache stops or restarts.
//!
//! Runs in the Apache parent during `post_config` (the real start, not the first configuration
//! pass) and in the MPM's child-maintenance callbacks. The registry is a process static: it is
//! made anew on every configuration cycle (the module is reloaded each time), and Apache's
//! children and the daemons inherit it when they are forked, which is how they find the
//! sockets and secrets.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, Uid, chown};
use parking_lot::Mutex;

use super::protocol::SECRET_LEN;
use super::worker;
use crate::apache::log::LogTarget;
use crate::apache::process::{self, ChildEvent, Forked, Pool};
use crate::config::{DaemonConfig, ImportScript, Principal, PythonSettings};

/// What Apache's children and the daemons need to know about a group.
#[derive(Debug)]
pub struct GroupInfo {
    /// The group's configuration.
    pub config: Arc<DaemonConfig>,
    /// The listening socket's path.
    pub socket: PathBuf,
    /// The secret each request must carry (authenticates the sender).
    pub secret: [u8; SECRET_LEN],
    /// The error log of the server (or virtual host) that defined the group.
    pub log_target: LogTarget,
    /// How long the Apache child waits on the daemon's socket (`socket-timeout`, else
    /// Apache's `Timeout`).
    pub socket_timeout: Duration,
    /// The scripts its processes load when they start (`WSGIImportScript`, or a
    /// `WSGIScriptAlias` naming both groups).
    pub preload: Vec<ImportScript>,
}

struct GroupRuntime {
    info: Arc<GroupInfo>,
    /// The listening socket (closed in Apache's children, which only connect).
    listener: Option<UnixListener>,
    pids: Vec<Option<Pid>>,
    /// When each process was last started (to slow down restarts of a failing daemon).
    started: Vec<Option<Instant>>,
}

struct Manager {
    pool: Pool,
    settings: PythonSettings,
    groups: Vec<GroupRuntime>,
    stopping: bool,
    /// Daemons told to stop, not yet reaped.
    draining: Vec<Pid>,
}

static STATE: Mutex<Option<Manager>> = parking_lot::const_mutex(None);

/// The group called `name`, as known when this process was forked.
pub fn group(name: &str) -> Option<Arc<GroupInfo>> {
    let state = STATE.lock();
    let manager = state.as_ref()?;
    manager
        .groups
        .iter()
        .find(|g| g.info.config.name == name)
        .map(|g| Arc::clone(&g.info))
}

/// Why a group could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The socket could not be made.
    #[error("cannot create the socket '{path}' of daemon group '{group}': {source}")]
    Socket {
        /// The group.
        group: String,
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No secret could be made.
    #[error("cannot read random bytes for the daemon secret: {0}")]
    Secret(std::io::Error),
}

/// Sets up every daemon group and starts its processes (Apache parent, `post_config`).
pub fn start(
    pool: Pool,
    daemons: Vec<(Arc<DaemonConfig>, LogTarget, Vec<u8>)>,
    settings: PythonSettings,
    socket_prefix: Option<&str>,
    apache_timeout: Duration,
    preloads: Vec<ImportScript>,
) -> Result<(), ManagerError> {
    stop_all();
    if daemons.is_empty() {
        return Ok(());
    }
    let prefix = match socket_prefix {
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(p) => process::runtime_dir_relative(pool, p),
        None => process::runtime_dir_relative(pool, "wsgi"),
    };
    let parent = std::process::id();
    let identity = process::apache_identity();
    let mut groups = Vec::with_capacity(daemons.len());
    for (index, (config, log_target, secret)) in daemons.into_iter().enumerate() {
        // Named after the group, with no generation in the name: an Apache child of the
        // previous generation still reaches the same group after a graceful restart, even when
        // the new configuration defines the groups in another order or adds some.
        let mut path = PathBuf::from(format!(
            "{prefix}.{parent}.{}.sock",
            socket_tag(&config.name)
        ));
        if groups.iter().any(|g: &GroupRuntime| g.info.socket == path) {
            path = PathBuf::from(format!(
                "{prefix}.{parent}.{}-{}.sock",
                socket_tag(&config.name),
                index + 1
            ));
        }
        let secret: [u8; SECRET_LEN] = match secret.try_into() {
            Ok(secret) => secret,
            Err(_) => random_secret()?,
        };
        let socket_error = |source| ManagerError::Socket {
            group: config.name.clone(),
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&path);
        let listener = listen(&path, &config).map_err(socket_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(socket_error)?;
        if Uid::effective().is_root() {
            let owner = match &config.socket_user {
                Some(user) => resolve_user(user).unwrap_or(identity.uid),
                None => identity.uid,
            };
            chown(&path, Some(owner.into()), None).map_err(|e| socket_error(e.into()))?;
        }
        let socket_timeout = config.socket_timeout.unwrap_or(apache_timeout);
        let preload = preloads
            .iter()
            .filter(|p| p.process_group == config.name)
            .cloned()
            .collect();
        let info = GroupInfo {
            config,
            socket: path,
            secret,
            log_target,
            socket_timeout,
            preload,
        };
        let processes = info.config.processes as usize;
        groups.push(GroupRuntime {
            info: Arc::new(info),
            listener: Some(listener),
            pids: vec![None; processes],
            started: vec![None; processes],
        });
    }
    *STATE.lock() = Some(Manager {
        pool,
        settings,
        groups,
        stopping: false,
        draining: Vec::new(),
    });
    pool.on_cleanup(stop_all);

    let slots: Vec<(usize, usize)> = {
        let state = STATE.lock();
        let manager = state.as_ref().expect("just set");
        (0..manager.groups.len())
            .flat_map(|g| (0..manager.groups[g].pids.len()).map(move |p| (g, p)))
            .collect()
    };
    for (g, p) in slots {
        spawn(g, p);
    }
    Ok(())
}

/// The group's listening socket, with its backlog and buffer sizes.
fn listen(path: &std::path::Path, config: &DaemonConfig) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, setsockopt, socket,
        sockopt,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if config.send_buffer_size > 0 {
        setsockopt(&fd, sockopt::SndBuf, &config.send_buffer_size)?;
    }
    if config.receive_buffer_size > 0 {
        setsockopt(&fd, sockopt::RcvBuf, &config.receive_buffer_size)?;
    }
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let backlog = i32::try_from(config.listen_backlog).unwrap_or(i32::MAX);
    listen(&fd, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))?;
    Ok(UnixListener::from(fd))
}

/// Closes the listening sockets in an Apache child (it only connects to them); the paths and
/// secrets stay.
pub fn close_listeners() {
    if let Some(manager) = STATE.lock().as_mut() {
        for group in &mut manager.groups {
            group.listener = None;
        }
    }
}

/// A user name or `#uid` as a uid.
pub fn resolve_user(user: &Principal) -> Option<u32> {
    match user {
        Principal::Id(id) => Some(*id),
        Principal::Name(name) => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    }
}

/// A group name or `#gid` as a gid.
pub fn resolve_group(group: &Principal) -> Option<u32> {
    match group {
        Principal::Id(id) => Some(*id),
        Principal::Name(name) => nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    }
}

/// Eight hex digits that stand for a group's name in its socket's path (names may hold
/// characters that a path should not, and may be long).
fn socket_tag(name: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(name.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from the system's random source.
pub fn random_secret() -> Result<[u8; SECRET_LEN], ManagerError> {
    use std::io::Read;
    let mut secret = [0u8; SECRET_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(ManagerError::Secret)?;
    Ok(secret)
}

const SLOTS_PER_GROUP: usize = 1 << 16;

/// Forks process `index` of group `group`.
fn spawn(group: usize, index: usize) {
    let mut state = STATE.lock();
    let Some(manager) = state.as_mut() else {
        return;
    };
    if manager.stopping {
        return;
    }
    let pool = manager.pool;
    let runtime = &manager.groups[group];
    let info = Arc::clone(&runtime.info);
    let mut env = Vec::new();
    if let Some(lang) = &info.config.lang {
        env.push(("LANG".to_owned(), lang.clone()));
    }
    if let Some(locale) = &info.config.locale {
        env.push(("LC_ALL".to_owned(), locale.clone()));
    }
    if let Some(eggs) = &info.config.python_eggs {
        env.push(("PYTHON_EGG_CACHE".to_owned(), eggs.display().to_string()));
    }
    match process::fork(pool, &env) {
        Ok(Forked::Child) => {
            let listener = runtime
                .listener
                .as_ref()
                .ok_or_else(|| std::io::Error::other("no listening socket"))
                .and_then(UnixListener::try_clone);
            let settings = manager.settings.clone();
            // This process serves one group: the registry (every group's socket and secret)
            // goes, closing the other groups' listening sockets.
            drop(state.take());
            drop(state);
            match listener {
                Ok(listener) => worker::run(&info, listener, settings, index),
                Err(e) => {
                    tracing::error!(
                        "WSGI0030: daemon '{}' cannot use its socket: {e}",
                        info.config.name
                    );
                    process::exit_now(1)
                }
            }
        }
        Ok(Forked::Parent(pid)) => {
            let pid = Pid::from_raw(pid);
            manager.groups[group].pids[index] = Some(pid);
            manager.groups[group].started[index] = Some(Instant::now());
            drop(state);
            tracing::info!(
                "started daemon process {pid} of group '{}' ({}/{})",
                info.config.name,
                index + 1,
                info.config.processes
            );
            process::watch_child(
                pool,
                pid.as_raw(),
                group * SLOTS_PER_GROUP + index,
                on_event,
            );
        }
        Err(e) => tracing::error!(
            "WSGI0031: cannot fork a daemon process of group '{}': {e}",
            info.config.name
        ),
    }
}

/// The MPM's report on one of our daemons.
fn on_event(slot: usize, event: ChildEvent) {
    let (group, index) = (slot / SLOTS_PER_GROUP, slot % SLOTS_PER_GROUP);
    let (name, pid, stopping, lived) = {
        let mut state = STATE.lock();
        let Some(manager) = state.as_mut() else {
            return;
        };
        if matches!(event, ChildEvent::Unregistered) {
            // Apache is stopping or restarting: nothing is restarted from now on.
            manager.stopping = true;
        }
        let Some(runtime) = manager.groups.get_mut(group) else {
            return;
        };
        let pid = runtime.pids.get_mut(index).and_then(Option::take);
        let lived = runtime
            .started
            .get(index)
            .copied()
            .flatten()
            .map(|t| t.elapsed());
        (
            runtime.info.config.name.clone(),
            pid,
            manager.stopping,
            lived,
        )
    };
    // A report on a process already dealt with (APR may report a reaped child once more).
    let Some(pid) = pid else { return };
    match event {
        ChildEvent::Died(status) => {
            // Depending on the MPM's path, `status` is an exit code, a signal number or a raw
            // wait status (Apache's own AH00052 line, when there is one, says which): report it
            // as it is, without claiming one reading.
            let how = format!("ended (exit status or signal {status})");
            if stopping {
                tracing::info!("daemon process {pid} of group '{name}' {how}");
                return;
            }
            if status == 0 {
                // A planned restart (maximum-requests, restart-interval, timeouts, ...).
                tracing::info!("daemon process {pid} of group '{name}' exited; restarting it");
            } else {
                tracing::error!(
                    "WSGI0032: daemon process {pid} of group '{name}' {how}; restarting it"
                );
            }
            if lived.is_some_and(|l| l < Duration::from_secs(1)) {
                // It died at once: do not fork again in a tight loop.
                std::thread::sleep(Duration::from_secs(1));
            }
            spawn(group, index);
        }
        ChildEvent::Unregistered => {
            // Apache is stopping or restarting: the daemon goes too, after the requests it is
            // serving (stop_all waits for it).
            let _ = kill(pid, Signal::SIGTERM);
            if let Some(manager) = STATE.lock().as_mut() {
                manager.draining.push(pid);
            }
        }
    }
}

/// Stops every daemon (SIGTERM, then SIGKILL after 3 s) and removes the sockets.
fn stop_all() {
    let taken = {
        let mut state = STATE.lock();
        match state.as_mut() {
            Some(manager) => {
                manager.stopping = true;
                let mut pids: Vec<Pid> = manager
                    .groups
                    .iter_mut()
                    .flat_map(|g| g.pids.iter_mut().filter_map(Option::take))
                    .collect();
                pids.append(&mut manager.draining);
                let sockets: Vec<PathBuf> = manager
                    .groups
                    .iter()
                    .map(|g| g.info.socket.clone())
                    .collect();
                // Requests under way get the longest shutdown-timeout of the groups (within
                // reason: Apache waits for this).
                let limit = manager
                    .groups
                    .iter()
                    .map(|g| g.info.config.shutdown_timeout + Duration::from_secs(1))
                    .max()
                    .unwrap_or_default()
                    .clamp(Duration::from_secs(3), Duration::from_secs(10));
                Some((pids, sockets, limit))
            }
            None => None,
        }
    };
    let Some((pids, sockets, limit)) = taken else {
        return;
    };
    for &pid in &pids {
        let _ = kill(pid, Signal::SIGTERM);
    }
    reap(&pids, limit);
    for socket in sockets {
        let _ = std::fs::remove_file(socket);
    }
    *STATE.lock() = None;
}

/// Waits for `pids` to exit, killing what is left after `limit`.
fn reap(pids: &[Pid], limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut left: Vec<Pid> = pids.to_vec();
    while !left.is_empty() {
        left.retain(|&pid| {
            matches!(
                waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for &pid in &left {
                tracing::warn!("WSGI0033: daemon process {pid} did not stop in time; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
