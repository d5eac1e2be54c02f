/* The C shim: the few Apache facilities that are C macros (APLOG_MARK, per-module log levels,
 * bucket brigade macros) and so cannot be called from Rust directly. Each function is a thin,
 * stateless wrapper; the Rust side (src/apache/) documents how it is used. */
#ifndef MOD_WSGI_RS_SHIM_H
#define MOD_WSGI_RS_SHIM_H

#include <httpd.h>
#include <apr_buckets.h>

/* Non-zero when messages at `level` (an APLOG_* value) for this module are enabled for the given
 * request (when `r` is not NULL) or server. */
int wsgi_shim_log_enabled(const server_rec *s, const request_rec *r, int level);

/* Logs one already formatted message (`%s`, never a format string) at `level`, attributed to
 * the Rust source location `file`:`line` (shown by Apache at debug levels). */
void wsgi_shim_log_server(const server_rec *s, const char *file, int line, int level,
                          const char *message);
void wsgi_shim_log_request(const request_rec *r, const char *file, int line, int level,
                           const char *message);

/* Appends `len` bytes (a transient bucket: filters that keep it copy it) and, when `flush` is
 * set, a flush bucket; returns the status of passing the brigade down the output filter chain. */
apr_status_t wsgi_shim_pass_bytes(request_rec *r, apr_bucket_brigade *bb, const char *data,
                                  apr_size_t len, int flush);

/* Sends `len` bytes of the open file `fd` from `offset` as a file bucket followed by a flush
 * and an end-of-stream bucket (the file is the whole response, so filters such as byte ranges
 * see it complete). The flush has the file written before this returns, in the handler's
 * thread, rather than left to the MPM's write completion, which made the 99th percentile of
 * 100 MiB responses a sixth higher (docs/performance.md, "Sixth pass"). Takes ownership of
 * `fd` (closed with the request pool). `sendfile` allows the kernel's sendfile for it; memory
 * mapping is always off (an application may truncate its file), and without sendfile the file
 * is read in blocks of 128 KiB rather than APR's 8 KB. */
apr_status_t wsgi_shim_pass_file(request_rec *r, apr_bucket_brigade *bb, int fd, apr_off_t offset,
                                 apr_off_t len, int sendfile);

/* The type (AP_FTYPE_*) of the first output filter of the request, or -1 without one. */
int wsgi_shim_first_filter_type(const request_rec *r);

/* Appends an EOS bucket and passes the brigade. */
apr_status_t wsgi_shim_pass_eos(request_rec *r, apr_bucket_brigade *bb);

#endif
