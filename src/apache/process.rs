//! Facts about the Apache process and its MPM, and process-level pool cleanups.

use nix::sys::signal::SigHandler;
use std::ffi::c_void;
use std::ptr;

use super::sys;

/// What the WSGI layer needs to know about the Apache child it runs in.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    /// Most request threads per child (`ThreadsPerChild`; 1 under prefork).
    pub threads_per_process: u32,
    /// Most child processes (`MaxRequestWorkers / ThreadsPerChild` or prefork's limit).
    pub maximum_processes: u32,
    /// Apache's version, e.g. (2, 4, 71).
    pub apache_version: (u32, u32, u32),
    /// Apache's description, e.g. `Apache/2.4.71 (Debian)`.
    pub server_description: String,
    /// The daemon process group this process serves (`""` for Apache's own children).
    pub process_group: String,
}

impl ProcessInfo {
    /// Asks the MPM.
    pub fn query() -> Self {
        let threads = mpm_query(sys::AP_MPMQ_MAX_THREADS).max(1);
        let daemons = mpm_query(sys::AP_MPMQ_MAX_DAEMONS).max(1);
        // SAFETY: returns a static, NUL-terminated string owned by Apache.
        let description = unsafe { std::ffi::CStr::from_ptr(sys::ap_get_server_description()) }
            .to_string_lossy()
            .into_owned();
        Self {
            threads_per_process: threads,
            maximum_processes: daemons,
            apache_version: parse_version(&description),
            server_description: description,
            process_group: String::new(),
        }
    }
}

fn mpm_query(what: u32) -> u32 {
    let mut value: std::ffi::c_int = 0;
    // SAFETY: `ap_mpm_query` writes one int for these queries.
    let status = unsafe { sys::ap_mpm_query(what as std::ffi::c_int, &mut value) };
    if status == sys::APR_SUCCESS as i32 {
        u32::try_from(value).unwrap_or(0)
    } else {
        0
    }
}

fn parse_version(description: &str) -> (u32, u32, u32) {
    let version = description.split_once('/').map_or("", |(_, v)| v);
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// True unless this is the configuration-reading pass Apache makes before the real start (or
/// a config test): the pass on which heavy work is skipped.
pub fn is_real_start() -> bool {
    // SAFETY: plain queries of Apache's process state.
    let (state, mode) = unsafe {
        (
            sys::ap_state_query(sys::AP_SQ_MAIN_STATE as i32),
            sys::ap_state_query(sys::AP_SQ_RUN_MODE as i32),
        )
    };
    state != sys::AP_SQ_MS_CREATE_PRE_CONFIG as i32 && mode == sys::AP_SQ_RM_NORMAL as i32
}

/// Runs `f` when `pool` is cleared or destroyed (for the child pool: when the child exits).
///
/// # Safety
/// `pool` must be a live APR pool.
pub unsafe fn on_pool_cleanup(pool: *mut sys::apr_pool_t, f: fn()) {
    unsafe extern "C" fn run(data: *mut c_void) -> sys::apr_status_t {
        // SAFETY: `data` is the `fn()` pointer registered below.
        let f: fn() = unsafe { std::mem::transmute::<*mut c_void, fn()>(data) };
        f();
        sys::APR_SUCCESS as sys::apr_status_t
    }
    // SAFETY: live pool (caller); a `fn()` pointer fits in `void *` on every Apache platform.
    unsafe {
        sys::apr_pool_cleanup_register(
            pool,
            f as *mut c_void,
            Some(run),
            Some(sys::apr_pool_cleanup_null),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_read_from_the_description() {
        assert_eq!(super::parse_version("Apache/2.4.71 (Debian)"), (2, 4, 71));
        assert_eq!(super::parse_version("weird"), (0, 0, 0));
    }
}

/// The identity Apache's children run as (`User`/`Group`).
#[derive(Clone, Debug)]
pub struct ApacheIdentity {
    /// `User`'s uid.
    pub uid: u32,
    /// `Group`'s gid.
    pub gid: u32,
}

/// Apache's `User` and `Group`, as resolved by mod_unixd.
pub fn apache_identity() -> ApacheIdentity {
    // SAFETY: mod_unixd fills `ap_unixd_config` while reading the configuration and only reads
    // it afterwards; we read two plain integers.
    let (uid, gid) = unsafe { (sys::ap_unixd_config.user_id, sys::ap_unixd_config.group_id) };
    ApacheIdentity { uid, gid }
}

/// A path relative to Apache's `DefaultRuntimeDir` (absolute paths are kept).
pub fn runtime_dir_relative(pool: Pool, name: &str) -> String {
    let Ok(name) = std::ffi::CString::new(name) else {
        return String::new();
    };
    // SAFETY: `pool` is live (Pool's contract); the result is a pool string.
    let path = unsafe { sys::ap_runtime_dir_relative(pool.0, name.as_ptr()) };
    if path.is_null() {
        return String::new();
    }
    // SAFETY: a NUL-terminated string in the pool.
    unsafe { std::ffi::CStr::from_ptr(path) }
        .to_string_lossy()
        .into_owned()
}

/// Apache's configuration generation (increments on each restart).
pub fn config_generation() -> u32 {
    // SAFETY: a plain query of Apache's state.
    let generation = unsafe { sys::ap_state_query(sys::AP_SQ_CONFIG_GEN as i32) };
    u32::try_from(generation).unwrap_or(0)
}

/// An APR pool that stays alive for as long as the value is used (the configuration pool
/// during `post_config`, or a child's pool).
#[derive(Clone, Copy, Debug)]
pub struct Pool(*mut sys::apr_pool_t);

// SAFETY: the pool pointer is only used from the thread Apache runs its hooks on; the type is
// Send only so that it can sit in the (mutex-protected) daemon registry of the parent.
unsafe impl Send for Pool {}

impl Pool {
    /// Wraps a pool pointer.
    ///
    /// # Safety
    /// `pool` must be a live APR pool for as long as the value (or a copy) is used.
    pub unsafe fn from_raw(pool: *mut sys::apr_pool_t) -> Self {
        Self(pool)
    }

    /// Runs `f` when the pool is cleared or destroyed.
    pub fn on_cleanup(self, f: fn()) {
        // SAFETY: live pool (the type's contract).
        unsafe { on_pool_cleanup(self.0, f) };
    }
}

/// Which side of a fork this is.
pub enum Forked {
    /// The parent, with the child's pid.
    Parent(i32),
    /// The new child process (Apache's listening sockets already closed in it).
    Child,
}

/// Forks the Apache parent into a new process for a daemon; in the child, `env` is added to
/// the environment before anything else runs.
pub fn fork(pool: Pool, env: &[(String, String)]) -> std::io::Result<Forked> {
    let mut proc: sys::apr_proc_t = sys::apr_proc_t::default();
    // SAFETY: `pool` is live; apr_proc_fork fills `proc`. In the child, the listeners Apache
    // opened are closed at once (a daemon must never accept HTTP connections).
    let status = unsafe { sys::apr_proc_fork(&mut proc, pool.0) };
    match status as u32 {
        sys::APR_INCHILD => {
            // SAFETY: we are the new child, which has exactly one thread until it starts more:
            // changing the environment is safe, and closing Apache's listeners is what
            // Apache's own helper processes do.
            unsafe {
                sys::ap_close_listeners();
                for (name, value) in env {
                    std::env::set_var(name, value);
                }
            }
            // SIGPIPE is ignored, as in Apache's own children and in any Python program: a
            // write to a connection whose peer has gone (a client that disconnected while a
            // response streamed) then fails with EPIPE instead of killing the daemon.
            // SAFETY: SIG_IGN runs no handler code, so no async-signal-safety rule applies.
            if let Err(e) = unsafe {
                nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, SigHandler::SigIgn)
            } {
                tracing::warn!("cannot ignore SIGPIPE in a daemon process: {e}");
            }
            Ok(Forked::Child)
        }
        sys::APR_INPARENT => Ok(Forked::Parent(proc.pid)),
        _ => Err(std::io::Error::other(format!(
            "fork failed (APR status {status})"
        ))),
    }
}

/// What happened to a watched child process.
#[derive(Clone, Copy, Debug)]
pub enum ChildEvent {
    /// It exited or was killed; the raw wait status.
    Died(i32),
    /// Apache is restarting or stopping: the registration is being dropped.
    Unregistered,
}

/// Asks Apache's MPM to call `on_event(slot, event)` in the parent when child `pid` dies.
/// The registration ends with `pool`.
pub fn watch_child(pool: Pool, pid: i32, slot: usize, on_event: fn(usize, ChildEvent)) {
    struct Watch {
        proc: sys::apr_proc_t,
        slot: usize,
        on_event: fn(usize, ChildEvent),
        /// Set once the death was reported: the unregistration that follows is not news.
        dead: std::cell::Cell<bool>,
    }
    unsafe extern "C" fn maintenance(reason: std::ffi::c_int, data: *mut c_void, status: i32) {
        // SAFETY: `data` is the Watch allocated below, alive until the pool cleanup frees it
        // (APR calls this at the latest from that cleanup, with reason UNREGISTER).
        let watch = unsafe { &*data.cast::<Watch>() };
        if watch.dead.get() {
            return;
        }
        let event = match reason as u32 {
            sys::APR_OC_REASON_DEATH | sys::APR_OC_REASON_LOST => ChildEvent::Died(status),
            sys::APR_OC_REASON_RESTART | sys::APR_OC_REASON_UNREGISTER => ChildEvent::Unregistered,
            _ => return,
        };
        if let ChildEvent::Died(_) = event {
            watch.dead.set(true);
            // SAFETY: the registration of this very Watch; unregistering from inside the
            // callback is how APR expects a dead child to be dropped (the UNREGISTER call it
            // makes back into this function is ignored: `dead` is set).
            unsafe { sys::apr_proc_other_child_unregister(data) };
        }
        let (slot, on_event) = (watch.slot, watch.on_event);
        super::boundary::guard("daemon watch", || (), || on_event(slot, event));
    }
    unsafe extern "C" fn free_watch(data: *mut c_void) -> sys::apr_status_t {
        // SAFETY: the Box made below; the pool runs this cleanup once, after APR's own
        // other-child cleanup for it (registered later, so run earlier).
        drop(unsafe { Box::from_raw(data.cast::<Watch>()) });
        sys::APR_SUCCESS as sys::apr_status_t
    }
    let proc = sys::apr_proc_t {
        pid,
        ..Default::default()
    };
    let watch = Box::into_raw(Box::new(Watch {
        proc,
        slot,
        on_event,
        dead: std::cell::Cell::new(false),
    }));
    // SAFETY: `pool` is live; APR keeps the pointers to `proc` and `watch`, which stay valid
    // until `free_watch` runs (registered first, so it runs after APR's unregistration).
    unsafe {
        sys::apr_pool_cleanup_register(
            pool.0,
            watch.cast(),
            Some(free_watch),
            Some(sys::apr_pool_cleanup_null),
        );
        sys::apr_proc_other_child_register(
            &raw mut (*watch).proc,
            Some(maintenance),
            watch.cast(),
            ptr::null_mut(),
            pool.0,
        );
    }
}

/// Caps glibc's malloc arenas in this process at one per CPU, unless the administrator chose a
/// number (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`). Returns the cap set.
///
/// glibc gives each new thread that allocates an arena of its own, up to 8 per CPU, and every
/// arena keeps at least 128 KiB of freed memory (`M_TOP_PAD`) plus what its threads' caches
/// hold. Apache's own threads allocate from APR pools, whose memory APR maps itself (Debian
/// builds it so): with the C module, a child's 15 arenas hold 150 KiB in all. This module's
/// short-lived allocations made them hold 4 to 6 MiB per child (docs/performance.md, "Memory
/// of the Apache children in daemon mode"), for a live heap of 34 KB. No more threads than
/// CPUs run at once, so one arena per CPU keeps lock contention low.
///
/// Call it before the process starts threads: arenas already made stay.
pub fn limit_malloc_arenas() -> Option<usize> {
    let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if chosen {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    set_arena_max(cpus).then_some(cpus)
}

#[cfg(target_env = "gnu")]
fn set_arena_max(arenas: usize) -> bool {
    let value = std::ffi::c_int::try_from(arenas).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: `mallopt` only sets a parameter of glibc's allocator (under its own lock); it
    // reads and writes no memory of ours.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, value) == 1 }
}

#[cfg(not(target_env = "gnu"))]
fn set_arena_max(_arenas: usize) -> bool {
    false
}

/// Ends this process at once, without running `atexit` handlers or Apache's pool cleanups
/// (which, in a forked daemon, belong to the Apache parent).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` only ends the process; it has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Sets this process's scheduling priority (nice value, -20..=19).
pub fn set_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority only changes this process's priority; it reads no memory of ours.
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bytes kept under `key` for the life of the Apache parent process (across restarts, which
/// reload this module): made by `make` the first time, then returned as they were.
///
/// # Safety
/// `server` must be a live server record (its `process` record lives for the whole process).
pub unsafe fn process_lifetime_bytes(
    server: *const sys::server_rec,
    key: &str,
    make: impl FnOnce() -> Vec<u8>,
) -> Vec<u8> {
    let Ok(key) = std::ffi::CString::new(format!("mod_wsgi_rs:{key}")) else {
        return make();
    };
    // SAFETY: the process pool lives as long as the process (caller); userdata under our keys
    // is only ever a NUL-free byte copy made below, in that same pool, with its length first.
    unsafe {
        let pool = (*(*server).process).pool;
        let mut data: *mut c_void = ptr::null_mut();
        sys::apr_pool_userdata_get(&mut data, key.as_ptr(), pool);
        if !data.is_null() {
            let len = *data.cast::<usize>();
            let bytes = data.cast::<u8>().add(std::mem::size_of::<usize>());
            return std::slice::from_raw_parts(bytes, len).to_vec();
        }
        let value = make();
        let size = std::mem::size_of::<usize>() + value.len();
        let copy = sys::apr_palloc(pool, size);
        *copy.cast::<usize>() = value.len();
        ptr::copy_nonoverlapping(
            value.as_ptr(),
            copy.cast::<u8>().add(std::mem::size_of::<usize>()),
            value.len(),
        );
        // The key must outlive the pool too: copy it into the pool as well.
        let key_copy = sys::apr_pstrdup(pool, key.as_ptr());
        sys::apr_pool_userdata_set(copy, key_copy, None, pool);
        value
    }
}
