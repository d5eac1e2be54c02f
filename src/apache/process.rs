//! Facts about the Apache process and its MPM, and process-level pool cleanups.

use std::ffi::c_void;

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
