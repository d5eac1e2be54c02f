//! Build script: generates the Apache/APR bindings with bindgen and compiles the C shim.
//!
//! Header folders come from `apxs -q INCLUDEDIR` and `apr-1-config --includedir` (both from
//! Debian's `apache2-dev`); `APXS` and `APR_CONFIG` override the tool names. The allowlist keeps
//! the bindings to the handful of types and functions the module uses.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Apache and APR functions, types and constants the Rust side calls or reads.
const FUNCTIONS: &[&str] = &[
    "ap_hook_.*",
    "ap_add_common_vars",
    "ap_allow_options",
    "ap_check_cmd_context",
    "ap_close_listeners",
    "ap_runtime_dir_relative",
    "apr_proc_fork",
    "apr_proc_other_child_register",
    "apr_proc_other_child_unregister",
    "ap_discard_request_body",
    "ap_get_client_block",
    "ap_get_server_banner",
    "ap_get_server_built",
    "ap_get_server_description",
    "ap_getword_conf",
    "ap_internal_redirect_handler",
    "ap_register_auth_provider",
    "ap_get_remote_host",
    "apr_dynamic_fn_retrieve",
    "ap_mpm_query",
    "ap_no2slash",
    "ap_run_generate_log_id",
    "ap_rflush",
    "ap_rwrite",
    "ap_server_root_relative",
    "ap_set_content_length",
    "ap_set_content_type",
    "ap_setup_client_block",
    "ap_should_client_block",
    "ap_state_query",
    "apr_brigade_create",
    "apr_brigade_cleanup",
    "apr_palloc",
    "apr_pool_cleanup_null",
    "apr_pool_cleanup_register",
    "apr_pool_userdata_get",
    "apr_pool_userdata_set",
    "apr_pstrdup",
    "apr_pstrmemdup",
    "apr_table_add",
    "apr_table_elts",
    "apr_table_get",
    "apr_table_set",
    "apr_table_setn",
    "apr_table_unset",
    "apr_time_now",
    "wsgi_shim_.*",
];

const TYPES: &[&str] = &[
    "module",
    "request_rec",
    "server_rec",
    "conn_rec",
    "command_rec",
    "cmd_parms",
    "cmd_how",
    "process_rec",
    "apr_table_entry_t",
    "apr_array_header_t",
    "apr_filetype_e",
    "apr_bucket_brigade",
    "apr_proc_t",
    "unixd_config_rec",
    "authn_provider",
    "authz_provider",
    "authn_status",
    "authz_status",
    "ap_filter_type",
];

const VARS: &[&str] = &[
    "MODULE_MAGIC_.*",
    "AP_MODULE_FLAGS_.*",
    "OR_.*",
    "ACCESS_CONF",
    "RSRC_CONF",
    "EXEC_ON_READ",
    "GLOBAL_ONLY",
    "NOT_IN_.*",
    "OK",
    "DECLINED",
    "DONE",
    "HTTP_.*",
    "APLOG_.*",
    "OPT_EXECCGI",
    "M_GET",
    "AP_SQ_.*",
    "AP_MPMQ_.*",
    "REQUEST_CHUNKED_.*",
    "REQUEST_NO_BODY",
    "AP_REQ_.*",
    "AP_CONN_.*",
    "APR_HOOK_.*",
    "APR_SUCCESS",
    "APR_EOF",
    "APR_INCHILD",
    "APR_INPARENT",
    "APR_OC_REASON_.*",
    "ap_unixd_config",
    "AUTHN_.*",
    "AUTHZ_.*",
    "AP_AUTH_INTERNAL_PER_CONF",
    "REMOTE_NAME",
    "OR_AUTHCFG",
];

fn main() {
    println!("cargo:rerun-if-changed=ffi/wrapper.h");
    println!("cargo:rerun-if-changed=ffi/shim.h");
    println!("cargo:rerun-if-changed=ffi/shim.c");
    println!("cargo:rerun-if-env-changed=APXS");
    println!("cargo:rerun-if-env-changed=APR_CONFIG");

    let apache_include = query(&env_or("APXS", "apxs"), &["-q", "INCLUDEDIR"]);
    let apr_include = query(&env_or("APR_CONFIG", "apr-1-config"), &["--includedir"]);
    let defines = ["-DLINUX", "-D_REENTRANT", "-D_GNU_SOURCE"];

    let mut shim = cc::Build::new();
    shim.file("ffi/shim.c")
        .include(&apache_include)
        .include(&apr_include)
        .include("ffi");
    for define in defines {
        shim.flag(define);
    }
    shim.warnings(true).compile("wsgi_shim");

    let mut builder = bindgen::Builder::default()
        .header("ffi/wrapper.h")
        .clang_arg(format!("-I{apache_include}"))
        .clang_arg(format!("-I{apr_include}"))
        .clang_arg("-Iffi")
        .clang_args(defines)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_default(true)
        .layout_tests(true);
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        fail(&format!(
            "bindgen could not read the Apache headers ({e}); install apache2-dev and libclang-dev"
        ))
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("apache_sys.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write the bindings: {e}")));
}

fn env_or(var: &str, default: &str) -> String {
    env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Runs a `*-config` style tool and returns its trimmed output, or stops the build with a message
/// that names the missing package.
fn query(tool: &str, args: &[&str]) -> String {
    let output = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run `{tool}` ({e}); install Debian's apache2-dev package"
        ))
    });
    if !output.status.success() {
        fail(&format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
