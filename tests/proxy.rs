//! Trusted proxy headers (issue #6 item 4): WSGITrustedProxyHeaders and WSGITrustedProxies in
//! embedded and daemon mode, with CVE-2022-2255 (an untrusted peer's headers are removed and
//! rewrite nothing) and X-Forwarded-For chains with empty elements (shared case 020).

mod support;

use support::ServerBuilder;

const APP: &str = r#"
def application(environ, start_response):
    keys = ['wsgi.url_scheme', 'REMOTE_ADDR', 'HTTP_X_FORWARDED_PROTO', 'HTTP_X_FORWARDED_FOR',
            'HTTP_X_REAL_IP', 'HTTP_HOST', 'SCRIPT_NAME', 'mod_wsgi.mount_point']
    body = '\n'.join('%s=%s' % (k, environ.get(k)) for k in keys)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

fn field(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_owned()
}

fn check(daemon: bool) {
    let group = if daemon { " process-group=p" } else { "" };
    let server = ServerBuilder::new()
        .file("app.wsgi", APP)
        .config(&format!(
            "{}WSGIScriptAlias /plain ${{TEST_DIR}}/app.wsgi{group}\n\
             WSGIScriptAlias /trusted ${{TEST_DIR}}/app.wsgi{group}\n\
             WSGIScriptAlias /untrusted ${{TEST_DIR}}/app.wsgi{group}\n\
             WSGIScriptAlias /any ${{TEST_DIR}}/app.wsgi{group}\n\
             <Location /trusted>\n  WSGITrustedProxyHeaders X-Forwarded-Proto X-Forwarded-For\n  \
               WSGITrustedProxies 127.0.0.1\n</Location>\n\
             <Location /untrusted>\n  WSGITrustedProxyHeaders X-Forwarded-Proto X-Forwarded-For\n  \
               WSGITrustedProxies 192.0.2.1\n</Location>\n\
             <Location /any>\n  WSGITrustedProxyHeaders X-Forwarded-Host X-Script-Name\n</Location>",
            if daemon { "WSGIDaemonProcess p threads=2\n" } else { "" }
        ))
        .start();
    let headers = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.9, 127.0.0.1"),
        ("X-Real-IP", "6.6.6.6"),
    ];
    let get =
        |path: &str, headers: &[(&str, &str)]| server.request("GET", path, headers, b"").text();

    let plain = get("/plain", &headers);
    assert_eq!(field(&plain, "wsgi.url_scheme"), "http");
    assert_eq!(field(&plain, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(field(&plain, "HTTP_X_FORWARDED_PROTO"), "https");

    let trusted = get("/trusted", &headers);
    assert_eq!(field(&trusted, "wsgi.url_scheme"), "https");
    assert_eq!(field(&trusted, "REMOTE_ADDR"), "203.0.113.9");
    // The synonym the application might read instead is gone.
    assert_eq!(field(&trusted, "HTTP_X_REAL_IP"), "None");

    // CVE-2022-2255: from an untrusted peer, the configured headers are removed and ignored.
    let untrusted = get("/untrusted", &headers);
    assert_eq!(field(&untrusted, "wsgi.url_scheme"), "http");
    assert_eq!(field(&untrusted, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(field(&untrusted, "HTTP_X_FORWARDED_PROTO"), "None");
    assert_eq!(field(&untrusted, "HTTP_X_FORWARDED_FOR"), "None");
    assert_eq!(field(&untrusted, "HTTP_X_REAL_IP"), "None");

    // Empty elements in the chain are skipped.
    let chain = get(
        "/trusted",
        &[("X-Forwarded-For", " , 203.0.113.9,,127.0.0.1")],
    );
    assert_eq!(field(&chain, "REMOTE_ADDR"), "203.0.113.9");

    // Without WSGITrustedProxies every peer is trusted; host and mount point are rewritten.
    let any = get(
        "/any",
        &[
            ("X-Forwarded-Host", "public.example"),
            ("X-Script-Name", "/site"),
        ],
    );
    assert_eq!(field(&any, "HTTP_HOST"), "public.example");
    assert_eq!(field(&any, "SCRIPT_NAME"), "/site");
    assert_eq!(field(&any, "mod_wsgi.mount_point"), "/site");
}

#[test]
fn trusted_proxy_headers_embedded() {
    check(false);
}

#[test]
fn trusted_proxy_headers_daemon() {
    check(true);
}
