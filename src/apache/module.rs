//! The module record Apache loads (`wsgi_module`) and the hooks it registers.
//!
//! Every hook is a thin `extern "C"` function: it wraps Apache's pointers in the safe types of
//! this folder, enters the panic boundary, and calls the safe code that does the work
//! (`crate::handler`, `crate::python`). Apache unloads and reloads this library between its
//! configuration passes, so nothing here relies on Rust statics surviving a pass.

use std::ffi::{c_char, c_int, c_ulong};
use std::ptr;
use std::sync::Arc;

use super::boundary::guard;
use super::config::{
    create_dir_config, create_server_config, merge_dir_config, merge_server_config, server_config,
};
use super::directives::COMMANDS;
use super::request::Request;
use super::{log, process, sys};
use crate::config::DaemonConfig;

/// The module record. Apache writes `module_index`, `next` and the load handle into it, so it is
/// a mutable static; Rust code only reads `module_index` (see [`module_index`]).
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mut wsgi_module: sys::module = sys::module {
    version: sys::MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: sys::MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    // Named as the C module is, so `<IfModule mod_wsgi.c>` and `[wsgi:…]` log tags both work.
    name: c"mod_wsgi.c".as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: sys::MODULE_MAGIC_COOKIE as c_ulong,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    cmds: &raw const COMMANDS.0 as *const sys::command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

/// This module's index in Apache's configuration vectors.
pub fn module_index() -> usize {
    // SAFETY: Apache sets `module_index` once, while loading the module and before calling any
    // of its functions; afterwards it is only read.
    let index = unsafe { wsgi_module.module_index };
    usize::try_from(index).unwrap_or(0)
}

/// A NULL-terminated list of module names, for hook ordering.
#[repr(transparent)]
struct ModuleList([*const c_char; 2]);

// SAFETY: immutable, pointing at 'static C strings.
unsafe impl Sync for ModuleList {}

/// `Alias` is looked at before `WSGIScriptAlias` (as with the C module), so
/// `Alias /static/ …` works inside a `WSGIScriptAlias /` mount.
static AFTER_ALIAS: ModuleList = ModuleList([c"mod_alias.c".as_ptr(), ptr::null()]);

unsafe extern "C" fn register_hooks(pool: *mut sys::apr_pool_t) {
    // SAFETY: Apache passes the pool for registrations.
    unsafe { super::auth::register(pool) };
    // SAFETY: registering hooks with Apache during module initialisation, with 'static
    // functions and ordering lists.
    unsafe {
        sys::ap_hook_post_config(
            Some(post_config),
            ptr::null(),
            ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_hook_child_init(
            Some(child_init),
            ptr::null(),
            ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_hook_translate_name(
            Some(translate_name),
            AFTER_ALIAS.0.as_ptr(),
            ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_hook_handler(
            Some(handler),
            ptr::null(),
            ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
    }
}

unsafe extern "C" fn post_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    server: *mut sys::server_rec,
) -> c_int {
    guard(
        "post_config",
        || sys::OK as c_int,
        || {
            // SAFETY: Apache passes its main server record, valid for this configuration cycle.
            unsafe { log::install(server) };
            if !process::is_real_start() {
                return sys::OK as c_int;
            }
            tracing::debug!("mod_wsgi-rs {} configured", env!("CARGO_PKG_VERSION"));
            start_daemons(pconf, server)
        },
    )
}

/// Starts the `WSGIDaemonProcess` groups of the whole configuration (Apache parent).
fn start_daemons(pconf: *mut sys::apr_pool_t, server: *mut sys::server_rec) -> c_int {
    // SAFETY: the main server and every virtual host hold our records (see
    // `all_server_configs`); `pconf` lives for this configuration cycle.
    let (servers, pool) = unsafe {
        (
            super::config::all_servers(server),
            process::Pool::from_raw(pconf),
        )
    };
    let Some((_, main)) = servers.first() else {
        return sys::OK as c_int;
    };
    // Each group once, with the error log of the server that defined it and a secret that
    // stays the same across restarts (so Apache children of the previous generation, still
    // finishing their requests, can reach the new daemons).
    let mut daemons: Vec<(Arc<DaemonConfig>, log::LogTarget, Vec<u8>)> = Vec::new();
    for (target, config) in &servers {
        for daemon in &config.daemons[..config.own_daemons] {
            let key = format!("secret:{}", daemon.name);
            // SAFETY: `server` is the live main server record.
            let secret = unsafe {
                process::process_lifetime_bytes(server, &key, || {
                    crate::daemon::manager::random_secret()
                        .unwrap_or_default()
                        .to_vec()
                })
            };
            daemons.push((Arc::clone(daemon), *target, secret));
        }
    }
    let prefix = main.socket_prefix.as_deref();
    // SAFETY: `server` is the live main server record; `timeout` is a plain number in µs.
    let apache_timeout = unsafe { (*server).timeout };
    let timeout = std::time::Duration::from_micros(u64::try_from(apache_timeout).unwrap_or(0));
    let preloads = crate::config::preloads(servers.iter().map(|(_, config)| *config));
    let started = crate::daemon::manager::start(
        pool,
        daemons,
        main.python.clone(),
        prefix,
        timeout,
        preloads,
    );
    match started {
        Ok(()) => sys::OK as c_int,
        Err(e) => {
            tracing::error!("WSGI0046: daemon mode cannot start: {e}");
            sys::HTTP_INTERNAL_SERVER_ERROR as c_int
        }
    }
}

unsafe extern "C" fn child_init(pool: *mut sys::apr_pool_t, server: *mut sys::server_rec) {
    guard(
        "child_init",
        || (),
        || {
            // SAFETY: Apache passes the main server record and the child's pool, both valid for the
            // child's life.
            unsafe { log::install(server) };
            // Before the MPM starts the worker threads, which would each make an arena.
            if let Some(arenas) = process::limit_malloc_arenas() {
                tracing::debug!("malloc arenas limited to {arenas} (one per CPU)");
            }
            // SAFETY: as above; the main server's record holds our configuration.
            let main = unsafe { server_config(server) };
            crate::daemon::manager::close_listeners();
            // SAFETY: as above, for every virtual host of the configuration.
            let servers = unsafe { super::config::all_server_configs(server) };
            let preloads = crate::config::preloads(servers.iter().copied());
            // As with the C module: under WSGIRestrictEmbedded On, Python starts in Apache's
            // children only for what runs there whatever the process group (access, auth and
            // dispatch scripts in the server configuration, WSGIImportScript for %{GLOBAL}).
            let python_needed = !main.restrict_embedded
                || preloads.iter().any(|p| p.process_group.is_empty())
                // SAFETY: as above.
                || unsafe { super::directives::scripts_in_children(server) };
            if !python_needed {
                tracing::debug!("WSGIRestrictEmbedded On: Python is not started in this child");
                return;
            }
            crate::python::runtime::start(&main.python, &process::ProcessInfo::query());
            crate::handler::preload("", &preloads);
            // SAFETY: live child pool; the cleanup runs once when the child exits.
            unsafe { process::on_pool_cleanup(pool, stop_python) };
        },
    );
}

fn stop_python() {
    guard("child_exit", || (), crate::python::runtime::stop);
}

unsafe extern "C" fn translate_name(r: *mut sys::request_rec) -> c_int {
    guard(
        "translate_name",
        || sys::DECLINED,
        || {
            // SAFETY: Apache passes the live request, used by this thread for this call.
            match unsafe { Request::from_raw(r) } {
                Some(mut request) => crate::handler::translate(&mut request),
                None => sys::DECLINED,
            }
        },
    )
}

unsafe extern "C" fn handler(r: *mut sys::request_rec) -> c_int {
    guard(
        "handler",
        || sys::HTTP_INTERNAL_SERVER_ERROR as c_int,
        || {
            // SAFETY: Apache passes the live request, used by this thread for this call.
            let Some(mut request) = (unsafe { Request::from_raw(r) }) else {
                return sys::DECLINED;
            };
            // SAFETY: the request outlives the scope, which is dropped on this thread below.
            let _scope = unsafe { log::RequestScope::enter(request.as_ptr()) };
            crate::handler::handle(&mut request)
        },
    )
}
