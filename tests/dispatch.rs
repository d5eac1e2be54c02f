//! WSGIHandlerScript and WSGIDispatchScript (issue #6 item 3): a named handler served by a
//! script's `handle_request` (through SetHandler, AddHandler and RewriteRule [H=]), in embedded
//! and daemon mode; and per-request choice of process group, application group and callable.

mod support;

use support::ServerBuilder;

const HANDLER: &str = r#"
import os
def handle_request(environ, start_response):
    body = 'handler pid=%d file=%s group=%s' % (os.getpid(),
        os.path.basename(environ.get('SCRIPT_FILENAME', '')),
        environ['mod_wsgi.process_group'])
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

const APP: &str = r#"
import os
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('application %s %s %d' % (environ['mod_wsgi.application_group'],
        environ['mod_wsgi.process_group'], os.getpid())).encode()]
def alt(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('alt %s' % environ['mod_wsgi.application_group']).encode()]
"#;

const DISPATCH: &str = r#"
def process_group(environ):
    if environ['REQUEST_URI'].startswith('/app/daemon'):
        return 'p'
    return None
def application_group(environ):
    if environ['REQUEST_URI'].startswith('/app/named'):
        return 'chosen'
    return None
def callable_object(environ):
    if environ['REQUEST_URI'].endswith('/alt'):
        return 'alt'
    return None
"#;

#[test]
fn handler_scripts_serve_named_handlers() {
    let server = ServerBuilder::new()
        .load("rewrite")
        .file("handler.wsgi", HANDLER)
        .file("htdocs/page.tmpl", "template\n")
        .config(
            "WSGIDaemonProcess p threads=2\n\
             WSGIHandlerScript my-handler ${TEST_DIR}/handler.wsgi\n\
             WSGIHandlerScript daemon-handler ${TEST_DIR}/handler.wsgi process-group=p\n\
             AddHandler my-handler .tmpl\n\
             <Location /set>\n  SetHandler my-handler\n</Location>\n\
             <Location /daemon>\n  SetHandler daemon-handler\n</Location>\n\
             RewriteEngine On\n\
             RewriteRule ^/rw - [H=my-handler]",
        )
        .start();
    let set = server.get("/set/anything").text();
    assert!(set.starts_with("handler pid="), "{set}");
    assert!(set.ends_with("group="), "{set}");
    let add = server.get("/page.tmpl").text();
    assert!(add.contains("file=page.tmpl"), "{add}");
    let rw = server.get("/rw").text();
    assert!(rw.starts_with("handler "), "{rw}");
    let daemon = server.get("/daemon/x").text();
    assert!(daemon.ends_with("group=p"), "{daemon}");
    // Other handlers are left alone.
    assert_eq!(server.get("/index.html").status, 200);
}

#[test]
fn dispatch_script_chooses_groups_and_callable_per_request() {
    let server = ServerBuilder::new()
        .file("app.wsgi", APP)
        .file("dispatch.py", DISPATCH)
        .config(
            "WSGIDaemonProcess p threads=2\n\
             WSGIScriptAlias /app ${TEST_DIR}/app.wsgi\n\
             WSGIDispatchScript ${TEST_DIR}/dispatch.py",
        )
        .start();
    let plain = server.get("/app/plain").text();
    assert!(
        plain.starts_with(&format!("application 127.0.0.1:{}|/app  ", server.port())),
        "{plain}"
    );
    assert!(
        server
            .get("/app/named")
            .text()
            .starts_with("application chosen  ")
    );
    assert_eq!(server.get("/app/named/alt").text(), "alt chosen");
    let daemon = server.get("/app/daemon").text();
    assert!(daemon.contains(" p "), "{daemon}");
}
