//! The directive table Apache reads from the module record, and the one entry point that
//! applies any `WSGI*` directive: it turns Apache's argument vector into strings and hands them
//! to [`Directive::apply`], whose error text Apache prints with the file and line.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use super::boundary::guard;
use super::config::server_config_mut;
use super::sys;
use crate::config::{DaemonNames, DirConfig, Directive, Scope};

const COUNT: usize = Directive::ALL.len();

/// The table: one entry per directive, then the all-zero terminator Apache expects.
#[repr(transparent)]
pub(super) struct CommandTable(pub [sys::command_rec; COUNT + 1]);

// SAFETY: the table is immutable after compilation; its pointers are to 'static C strings and
// functions.
unsafe impl Sync for CommandTable {}

pub(super) static COMMANDS: CommandTable = CommandTable(table());

const fn table() -> [sys::command_rec; COUNT + 1] {
    // SAFETY: an all-zero command_rec is the table terminator Apache expects (NULL name).
    let mut table: [sys::command_rec; COUNT + 1] = unsafe { std::mem::zeroed() };
    let mut i = 0;
    while i < COUNT {
        let directive = Directive::ALL[i];
        let req_override = match directive.scope() {
            Scope::Global | Scope::Server => sys::RSRC_CONF,
            Scope::Directory => sys::RSRC_CONF | sys::ACCESS_CONF,
            Scope::FileInfo => sys::OR_FILEINFO,
            Scope::AuthConfig => sys::OR_AUTHCFG,
        };
        table[i] = sys::command_rec {
            name: directive.c_name().as_ptr(),
            func: sys::cmd_func {
                take_argv: Some(apply_directive),
            },
            // The index into Directive::ALL, read back in `apply_directive`.
            cmd_data: i as *mut c_void,
            req_override: req_override as c_int,
            args_how: sys::cmd_how_TAKE_ARGV,
            errmsg: ptr::null(),
        };
        i += 1;
    }
    table
}

/// The daemon group names of the configuration being read (kept in the configuration pool,
/// so each read starts afresh).
///
/// # Safety
/// `pool` must be the live configuration pool, and the returned set must not be used after
/// the pool is cleared nor while another reference to it exists (configuration is read on
/// one thread, one directive at a time).
unsafe fn daemon_names<'a>(pool: *mut sys::apr_pool_t) -> &'a mut DaemonNames {
    const KEY: &std::ffi::CStr = c"mod_wsgi_rs.daemon_names";
    type Names = DaemonNames;
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: live pool; userdata under our key is only ever a `Names` set by this function.
    unsafe {
        sys::apr_pool_userdata_get(&mut data, KEY.as_ptr(), pool);
        if data.is_null() {
            unsafe extern "C" fn drop_names(data: *mut c_void) -> sys::apr_status_t {
                // SAFETY: `data` is the Box made below; the pool runs this cleanup once.
                drop(unsafe { Box::from_raw(data.cast::<Names>()) });
                sys::APR_SUCCESS as sys::apr_status_t
            }
            data = Box::into_raw(Box::<Names>::default()).cast();
            sys::apr_pool_userdata_set(data, KEY.as_ptr(), Some(drop_names), pool);
        }
        &mut *data.cast::<Names>()
    }
}

/// The configuration-pool key under which [`note_script_for_children`] leaves its mark.
const SCRIPTS_IN_CHILDREN: &std::ffi::CStr = c"mod_wsgi_rs.scripts_in_children";

/// Records, in the configuration pool, that the server configuration names a script that runs
/// in Apache's children ([`Directive::runs_in_apache_children`]). `.htaccess` files, read per
/// request in a child with the request's pool as `cmd->pool`, are not recorded.
///
/// # Safety
/// `cmd` must be Apache's live cmd_parms for the directive being read.
unsafe fn note_script_for_children(cmd: *mut sys::cmd_parms, directive: Directive) {
    // The mark is the key itself: a static that outlives every pool.
    static MARK: u8 = 1;
    if !directive.runs_in_apache_children() {
        return;
    }
    // SAFETY: live cmd_parms (caller); its server's process record lives for the process.
    unsafe {
        let pconf = (*(*(*cmd).server).process).pconf;
        if (*cmd).pool == pconf {
            let mark = (&raw const MARK).cast_mut().cast();
            sys::apr_pool_userdata_set(mark, SCRIPTS_IN_CHILDREN.as_ptr(), None, pconf);
        }
    }
}

/// Whether the configuration read for this generation names a script that runs in Apache's
/// children (access, authentication, authorization or dispatch), so Python must start there.
///
/// # Safety
/// `server` must be a live server record.
pub unsafe fn scripts_in_children(server: *const sys::server_rec) -> bool {
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: live server record (caller); its process's configuration pool is live while the
    // configuration it holds is in use.
    unsafe {
        let pconf = (*(*server).process).pconf;
        sys::apr_pool_userdata_get(&mut data, SCRIPTS_IN_CHILDREN.as_ptr(), pconf);
    }
    !data.is_null()
}

/// Apache calls this for every `WSGI*` directive in the configuration.
unsafe extern "C" fn apply_directive(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    let fallback = || c"internal error while reading this directive (see the error log)".as_ptr();
    guard("directive", fallback, || {
        // SAFETY: Apache passes its live cmd_parms; `info` is the cmd_data we put in the table.
        let index = unsafe { (*cmd).info } as usize;
        let Some(&directive) = Directive::ALL.get(index) else {
            return fallback();
        };
        if directive.scope() == Scope::Global {
            // SAFETY: live cmd_parms; returns NULL or an error string in the cmd pool.
            let refused = unsafe { sys::ap_check_cmd_context(cmd, sys::GLOBAL_ONLY) };
            if !refused.is_null() {
                return refused;
            }
        }
        let args: Vec<String> = (0..argc.max(0) as usize)
            .map(|i| {
                // SAFETY: Apache passes `argc` NUL-terminated argument strings in `argv`.
                unsafe { CStr::from_ptr(*argv.add(i)) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // SAFETY: configuration is read on one thread; `cmd->server` holds our server record
        // and `mconfig` our record for the enclosing section, and no other reference to either
        // exists during this call.
        let (server, dir) = unsafe {
            (
                server_config_mut((*cmd).server),
                &mut *mconfig.cast::<DirConfig>(),
            )
        };
        // SAFETY: `cmd->pool` is the configuration pool of this read of the configuration; the
        // set is used for this directive only.
        let names = unsafe { daemon_names((*cmd).pool) };
        match directive.apply(&args, server, dir, names) {
            Ok(()) => {
                // SAFETY: live cmd_parms, whose server record lives for this configuration.
                unsafe { note_script_for_children(cmd, directive) };
                ptr::null()
            }
            Err(e) => {
                let message =
                    std::ffi::CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
                // SAFETY: live cmd pool; Apache prints and then discards the copy.
                unsafe { sys::apr_pstrdup((*cmd).pool, message.as_ptr()) }
            }
        }
    })
}
