/* C shim for mod_wsgi-rs: wrappers over Apache macros. See shim.h. No state lives here. */
#include "shim.h"

#include <http_config.h>
#include <http_log.h>
#include <util_filter.h>
#include <apr_file_io.h>
#include <apr_portable.h>
#include <unistd.h>

/* The module record is defined in Rust (src/apache/module.rs); Apache fills in its index. */
extern module AP_MODULE_DECLARE_DATA wsgi_module;
APLOG_USE_MODULE(wsgi);

int wsgi_shim_log_enabled(const server_rec *s, const request_rec *r, int level)
{
    if (r != NULL) {
        return APLOG_R_MODULE_IS_LEVEL(r, APLOG_MODULE_INDEX, level);
    }
    return APLOG_MODULE_IS_LEVEL(s, APLOG_MODULE_INDEX, level);
}

void wsgi_shim_log_server(const server_rec *s, const char *file, int line, int level,
                          const char *message)
{
    ap_log_error_(file, line, APLOG_MODULE_INDEX, level, 0, s, "%s", message);
}

void wsgi_shim_log_request(const request_rec *r, const char *file, int line, int level,
                           const char *message)
{
    ap_log_rerror_(file, line, APLOG_MODULE_INDEX, level, 0, r, "%s", message);
}

apr_status_t wsgi_shim_pass_bytes(request_rec *r, apr_bucket_brigade *bb, const char *data,
                                  apr_size_t len, int flush)
{
    apr_bucket *b;

    if (len > 0) {
        b = apr_bucket_transient_create(data, len, bb->bucket_alloc);
        APR_BRIGADE_INSERT_TAIL(bb, b);
    }
    if (flush) {
        b = apr_bucket_flush_create(bb->bucket_alloc);
        APR_BRIGADE_INSERT_TAIL(bb, b);
    }
    return ap_pass_brigade(r->output_filters, bb);
}

/* Block size for reading a file bucket when sendfile is not used. */
#define WSGI_SHIM_FILE_READ_SIZE (128 * 1024)

static apr_status_t close_file(void *file)
{
    return apr_file_close((apr_file_t *)file);
}

apr_status_t wsgi_shim_pass_file(request_rec *r, apr_bucket_brigade *bb, int fd, apr_off_t offset,
                                 apr_off_t len, int sendfile)
{
    apr_file_t *file = NULL;
    apr_os_file_t os_fd = fd;
    apr_int32_t flags = APR_FOPEN_READ | (sendfile ? APR_FOPEN_SENDFILE_ENABLED : 0);
    apr_bucket *b;
    apr_status_t rv;

    rv = apr_os_file_put(&file, &os_fd, flags, r->pool);
    if (rv != APR_SUCCESS) {
        close(fd);
        return rv;
    }
    apr_pool_cleanup_register(r->pool, file, close_file, apr_pool_cleanup_null);
    apr_brigade_insert_file(bb, file, offset, len, r->pool);
    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_FILE(b)) {
            apr_bucket_file_enable_mmap(b, 0);
            apr_bucket_file_set_buf_size(b, WSGI_SHIM_FILE_READ_SIZE);
        }
    }
    b = apr_bucket_flush_create(bb->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, b);
    b = apr_bucket_eos_create(bb->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, b);
    return ap_pass_brigade(r->output_filters, bb);
}

int wsgi_shim_first_filter_type(const request_rec *r)
{
    if (r->output_filters == NULL || r->output_filters->frec == NULL) {
        return -1;
    }
    return (int)r->output_filters->frec->ftype;
}

apr_status_t wsgi_shim_pass_eos(request_rec *r, apr_bucket_brigade *bb)
{
    apr_bucket *b = apr_bucket_eos_create(bb->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, b);
    return ap_pass_brigade(r->output_filters, bb);
}
