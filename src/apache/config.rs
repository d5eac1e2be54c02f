//! Apache's configuration callbacks: our typed records ([`ServerConfig`], [`DirConfig`]) are
//! boxed, handed to Apache as opaque pointers, and dropped by a cleanup on the pool Apache made
//! them for, so their lifetime is exactly the pool's.

use std::ffi::{c_char, c_void};

use super::boundary::guard;
use super::log::LogTarget;
use super::module::module_index;
use super::sys;
use crate::config::{DirConfig, ServerConfig};

/// Moves `value` into a box owned by `pool`: dropped when the pool is cleared or destroyed.
///
/// # Safety
/// `pool` must be a live APR pool.
unsafe fn pool_box<T>(pool: *mut sys::apr_pool_t, value: T) -> *mut c_void {
    unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> sys::apr_status_t {
        // SAFETY: `data` came from `Box::into_raw` below and this cleanup runs exactly once.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
        sys::APR_SUCCESS as sys::apr_status_t
    }
    let raw = Box::into_raw(Box::new(value)).cast::<c_void>();
    // SAFETY: live pool (caller); `apr_pool_cleanup_null` is APR's no-op child cleanup.
    unsafe {
        sys::apr_pool_cleanup_register(
            pool,
            raw,
            Some(drop_box::<T>),
            Some(sys::apr_pool_cleanup_null),
        );
    }
    raw
}

/// Our slot in an Apache configuration vector.
///
/// # Safety
/// `vector` must be a live `ap_conf_vector_t` of a server or request, whose slot for this module
/// holds a record made by the callbacks below.
unsafe fn slot(vector: *mut sys::ap_conf_vector_t) -> *mut c_void {
    // SAFETY: a configuration vector is an array of one pointer per module, indexed by
    // `module_index` (what the `ap_get_module_config` macro does).
    unsafe { *vector.cast::<*mut c_void>().add(module_index()) }
}

/// The WSGI record of a server or virtual host.
///
/// # Safety
/// `server` must be a live `server_rec` whose configuration vector has our record, and the
/// reference must not outlive the configuration pool.
pub unsafe fn server_config<'a>(server: *const sys::server_rec) -> &'a ServerConfig {
    // SAFETY: per the contract, the slot holds a `ServerConfig` made by `create_server_config`
    // or `merge_server_config`.
    unsafe { &*slot((*server).module_config).cast::<ServerConfig>() }
}

/// The WSGI records of the main server and every virtual host, in configuration order.
///
/// # Safety
/// As [`server_config`], for `main` and every server chained after it.
pub unsafe fn all_server_configs<'a>(main: *const sys::server_rec) -> Vec<&'a ServerConfig> {
    // SAFETY: as documented, passed on.
    unsafe { all_servers(main.cast_mut()) }
        .into_iter()
        .map(|(_, config)| config)
        .collect()
}

/// Every server (main first) with its WSGI record and its error log.
///
/// # Safety
/// As [`all_server_configs`].
pub unsafe fn all_servers<'a>(main: *mut sys::server_rec) -> Vec<(LogTarget, &'a ServerConfig)> {
    let mut servers = Vec::new();
    let mut server = main;
    while !server.is_null() {
        // SAFETY: each server in Apache's list is live and holds our record (caller), for the
        // whole configuration cycle.
        unsafe {
            servers.push((LogTarget::from_raw(server), server_config(server)));
            server = (*server).next;
        }
    }
    servers
}

/// Mutable access while directives are read (single-threaded configuration phase).
///
/// # Safety
/// As [`server_config`], and no other reference to the record may exist.
pub unsafe fn server_config_mut<'a>(server: *mut sys::server_rec) -> &'a mut ServerConfig {
    // SAFETY: as above; exclusivity is the caller's contract.
    unsafe { &mut *slot((*server).module_config).cast::<ServerConfig>() }
}

/// The WSGI record of a request's merged directory configuration.
///
/// # Safety
/// `vector` must be a live per-directory configuration vector holding our record.
pub unsafe fn dir_config<'a>(vector: *mut sys::ap_conf_vector_t) -> &'a DirConfig {
    // SAFETY: the slot holds a `DirConfig` made by the callbacks below.
    unsafe { &*slot(vector).cast::<DirConfig>() }
}

pub(super) unsafe extern "C" fn create_dir_config(
    pool: *mut sys::apr_pool_t,
    _dir: *mut c_char,
) -> *mut c_void {
    // SAFETY: Apache passes a live pool.
    guard("create_dir_config", std::ptr::null_mut, || unsafe {
        pool_box(pool, DirConfig::default())
    })
}

pub(super) unsafe extern "C" fn merge_dir_config(
    pool: *mut sys::apr_pool_t,
    base: *mut c_void,
    over: *mut c_void,
) -> *mut c_void {
    guard("merge_dir_config", std::ptr::null_mut, || {
        // SAFETY: Apache passes two records made by `create_dir_config`/`merge_dir_config` and
        // a live pool for the result.
        unsafe {
            let merged = DirConfig::merge(&*base.cast::<DirConfig>(), &*over.cast::<DirConfig>());
            pool_box(pool, merged)
        }
    })
}

pub(super) unsafe extern "C" fn create_server_config(
    pool: *mut sys::apr_pool_t,
    _server: *mut sys::server_rec,
) -> *mut c_void {
    // SAFETY: Apache passes a live pool.
    guard("create_server_config", std::ptr::null_mut, || unsafe {
        pool_box(pool, ServerConfig::default())
    })
}

pub(super) unsafe extern "C" fn merge_server_config(
    pool: *mut sys::apr_pool_t,
    base: *mut c_void,
    over: *mut c_void,
) -> *mut c_void {
    guard("merge_server_config", std::ptr::null_mut, || {
        // SAFETY: as `merge_dir_config`, for server records.
        unsafe {
            let merged =
                ServerConfig::merge(&*base.cast::<ServerConfig>(), &*over.cast::<ServerConfig>());
            pool_box(pool, merged)
        }
    })
}
