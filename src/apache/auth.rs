//! Apache's access, authentication and authorization entry points for the Python hooks of
//! `src/auth/`: an `access_checker` hook (after mod_ssl's, so TLS details are known), the
//! authn provider `wsgi` (`AuthBasicProvider wsgi`, `AuthDigestProvider wsgi`) and the authz
//! provider `wsgi-group` (`Require wsgi-group …`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use super::boundary::guard;
use super::request::Request;
use super::sys;
use crate::auth::{self, Authn, Authz};

/// A provider record handed to Apache by address.
#[repr(transparent)]
struct Provider<T>(T);

// SAFETY: the records are immutable and hold only function pointers.
unsafe impl<T> Sync for Provider<T> {}

static AUTHN: Provider<sys::authn_provider> = Provider(sys::authn_provider {
    check_password: Some(check_password),
    get_realm_hash: Some(get_realm_hash),
});

static AUTHZ: Provider<sys::authz_provider> = Provider(sys::authz_provider {
    check_authorization: Some(check_authorization),
    parse_require_line: None,
});

/// A NULL-terminated list of module names.
#[repr(transparent)]
struct ModuleList([*const c_char; 2]);

// SAFETY: immutable, pointing at 'static C strings.
unsafe impl Sync for ModuleList {}

static AFTER_SSL: ModuleList = ModuleList([c"mod_ssl.c".as_ptr(), ptr::null()]);

/// Registers the hook and the two providers (from `register_hooks`).
///
/// # Safety
/// `pool` must be the pool Apache passes to `register_hooks`.
pub(super) unsafe fn register(pool: *mut sys::apr_pool_t) {
    // SAFETY: registration during module initialisation with 'static functions, names and
    // provider records (Apache keeps the pointers for the life of the configuration).
    unsafe {
        sys::ap_hook_access_checker(
            Some(access_checker),
            AFTER_SSL.0.as_ptr(),
            ptr::null(),
            sys::APR_HOOK_MIDDLE as c_int,
        );
        sys::ap_register_auth_provider(
            pool,
            sys::AUTHN_PROVIDER_GROUP.as_ptr().cast(),
            c"wsgi".as_ptr(),
            sys::AUTHN_PROVIDER_VERSION.as_ptr().cast(),
            (&raw const AUTHN.0).cast::<c_void>(),
            sys::AP_AUTH_INTERNAL_PER_CONF as c_int,
        );
        sys::ap_register_auth_provider(
            pool,
            sys::AUTHZ_PROVIDER_GROUP.as_ptr().cast(),
            c"wsgi-group".as_ptr(),
            sys::AUTHZ_PROVIDER_VERSION.as_ptr().cast(),
            (&raw const AUTHZ.0).cast::<c_void>(),
            sys::AP_AUTH_INTERNAL_PER_CONF as c_int,
        );
    }
}

unsafe extern "C" fn access_checker(r: *mut sys::request_rec) -> c_int {
    guard(
        "access_checker",
        || sys::HTTP_INTERNAL_SERVER_ERROR as c_int,
        || {
            // SAFETY: Apache passes the live request, used by this thread for this call.
            match unsafe { Request::from_raw(r) } {
                Some(mut request) => {
                    // SAFETY: the request outlives the scope, dropped on this thread below.
                    let _scope = unsafe { super::log::RequestScope::enter(request.as_ptr()) };
                    auth::access(&mut request)
                }
                None => sys::DECLINED,
            }
        },
    )
}

/// A C string argument as text.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: per the contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

unsafe extern "C" fn check_password(
    r: *mut sys::request_rec,
    user: *const c_char,
    password: *const c_char,
) -> sys::authn_status {
    guard(
        "check_password",
        || sys::authn_status_AUTH_GENERAL_ERROR,
        || {
            // SAFETY: Apache passes the live request and NUL-terminated strings.
            let (Some(mut request), user, password) = (
                unsafe { Request::from_raw(r) },
                unsafe { text(user) },
                unsafe { text(password) },
            ) else {
                return sys::authn_status_AUTH_GENERAL_ERROR;
            };
            // SAFETY: as in `access_checker`.
            let _scope = unsafe { super::log::RequestScope::enter(request.as_ptr()) };
            match auth::check_password(&mut request, &user, &password) {
                Authn::Granted(replacement) => {
                    if let Some(name) = replacement {
                        request.set_user(&name);
                    }
                    sys::authn_status_AUTH_GRANTED
                }
                Authn::Denied => sys::authn_status_AUTH_DENIED,
                Authn::NotFound => sys::authn_status_AUTH_USER_NOT_FOUND,
                Authn::Hash(_) | Authn::Error => sys::authn_status_AUTH_GENERAL_ERROR,
            }
        },
    )
}

unsafe extern "C" fn get_realm_hash(
    r: *mut sys::request_rec,
    user: *const c_char,
    realm: *const c_char,
    hash: *mut *mut c_char,
) -> sys::authn_status {
    guard(
        "get_realm_hash",
        || sys::authn_status_AUTH_GENERAL_ERROR,
        || {
            // SAFETY: Apache passes the live request and NUL-terminated strings.
            let (Some(mut request), user, realm) = (
                unsafe { Request::from_raw(r) },
                unsafe { text(user) },
                unsafe { text(realm) },
            ) else {
                return sys::authn_status_AUTH_GENERAL_ERROR;
            };
            // SAFETY: as in `access_checker`.
            let _scope = unsafe { super::log::RequestScope::enter(request.as_ptr()) };
            match auth::realm_hash(&mut request, &user, &realm) {
                Authn::Hash(value) => {
                    let Ok(value) = std::ffi::CString::new(value) else {
                        return sys::authn_status_AUTH_GENERAL_ERROR;
                    };
                    // SAFETY: `hash` is Apache's out-parameter; the copy lives in the request pool.
                    unsafe { *hash = sys::apr_pstrdup((*r).pool, value.as_ptr()) };
                    sys::authn_status_AUTH_USER_FOUND
                }
                Authn::NotFound => sys::authn_status_AUTH_USER_NOT_FOUND,
                _ => sys::authn_status_AUTH_GENERAL_ERROR,
            }
        },
    )
}

unsafe extern "C" fn check_authorization(
    r: *mut sys::request_rec,
    require_line: *const c_char,
    _parsed: *const c_void,
) -> sys::authz_status {
    guard(
        "check_authorization",
        || sys::authz_status_AUTHZ_GENERAL_ERROR,
        || {
            // SAFETY: Apache passes the live request.
            let Some(mut request) = (unsafe { Request::from_raw(r) }) else {
                return sys::authz_status_AUTHZ_GENERAL_ERROR;
            };
            // SAFETY: as in `access_checker`.
            let _scope = unsafe { super::log::RequestScope::enter(request.as_ptr()) };
            let line = if require_line.is_null() {
                c""
            } else {
                // SAFETY: Apache passes the NUL-terminated arguments of the Require line.
                unsafe { CStr::from_ptr(require_line) }
            };
            match auth::check_groups(&mut request, line) {
                Authz::Granted => sys::authz_status_AUTHZ_GRANTED,
                Authz::Denied => sys::authz_status_AUTHZ_DENIED,
                Authz::NoUser => sys::authz_status_AUTHZ_DENIED_NO_USER,
                Authz::Error => sys::authz_status_AUTHZ_GENERAL_ERROR,
            }
        },
    )
}
