/* Headers bindgen reads to generate the Apache/APR bindings (src/apache/sys.rs includes the
 * result). Only what build.rs allowlists reaches Rust. */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_mpm.h>
#include <ap_mmn.h>
#include <util_script.h>
#include <util_filter.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <apr_pools.h>
#include <apr_buckets.h>
#include <util_filter.h>
#include <unixd.h>
#include <ap_listen.h>
#include <apr_thread_proc.h>
#include <mod_auth.h>
#include <apr_optional.h>

#include "shim.h"
