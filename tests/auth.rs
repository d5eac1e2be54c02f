//! Access, authentication and authorization hooks in Python (issue #6 items 1-2):
//! WSGIAccessScript (also over real TLS, with mod_ssl's functions in the environ),
//! WSGIAuthUserScript as the `wsgi` authn provider for Basic and Digest, WSGIAuthGroupScript as
//! the `wsgi-group` authz provider; failing scripts deny and log; scripts reload on change.

mod support;

use std::process::Command;
use std::time::Duration;

use support::ServerBuilder;

const APP: &str = r#"
def application(environ, start_response):
    body = 'user=%s' % environ.get('REMOTE_USER')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

const ACCESS: &str = r#"
def allow_access(environ, host):
    uri = environ['REQUEST_URI']
    environ['wsgi.errors'].write('access check for %s from %s\n' % (uri, host))
    if uri.endswith('/allow'):
        return True
    if uri.endswith('/deny'):
        return False
    if uri.endswith('/raise'):
        raise RuntimeError('access script failure')
    if uri.endswith('/tls'):
        return environ['mod_ssl.is_https']() and \
            (environ['mod_ssl.var_lookup']('SSL_PROTOCOL') or '').startswith('TLS')
    return None
"#;

const USERS: &str = r#"
import hashlib
def check_password(environ, user, password):
    if user == 'alice':
        return password == 'secret'
    if user == 'bob' and password == 'builder':
        return 'robert'
    if user == 'crash':
        raise ValueError('user script failure')
    return None

def get_realm_hash(environ, user, realm):
    if user == 'alice':
        return hashlib.md5(('%s:%s:%s' % (user, realm, 'secret')).encode()).hexdigest()
    return None
"#;

const GROUPS: &str = r#"
def groups_for_user(environ, user):
    return {'alice': ['admins', 'staff'], 'robert': ['staff']}.get(user, [])
"#;

fn basic(user: &str, password: &str) -> String {
    use std::fmt::Write;
    let raw = format!("{user}:{password}");
    // Base64 by hand, to keep the test free of extra crates.
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let mut header = String::new();
    let _ = write!(header, "Basic {out}");
    header
}

fn server(daemon: bool) -> support::Server {
    let group = if daemon { " process-group=p" } else { "" };
    ServerBuilder::new()
        .load("auth_basic")
        .load("auth_digest")
        .load("authz_user")
        .file("app.wsgi", APP)
        .file("access.wsgi", ACCESS)
        .file("users.wsgi", USERS)
        .file("groups.wsgi", GROUPS)
        .config(&format!(
            "{}WSGIScriptAlias / ${{TEST_DIR}}/app.wsgi{group}\n\
             <Location /a>\n  WSGIAccessScript ${{TEST_DIR}}/access.wsgi\n</Location>\n\
             <Location /basic>\n  AuthType Basic\n  AuthName \"wsgi test\"\n  \
               AuthBasicProvider wsgi\n  WSGIAuthUserScript ${{TEST_DIR}}/users.wsgi\n  \
               Require valid-user\n</Location>\n\
             <Location /digest>\n  AuthType Digest\n  AuthName \"wsgi test\"\n  \
               AuthDigestProvider wsgi\n  WSGIAuthUserScript ${{TEST_DIR}}/users.wsgi\n  \
               Require valid-user\n</Location>\n\
             <Location /admins>\n  AuthType Basic\n  AuthName \"wsgi test\"\n  \
               AuthBasicProvider wsgi\n  WSGIAuthUserScript ${{TEST_DIR}}/users.wsgi\n  \
               WSGIAuthGroupScript ${{TEST_DIR}}/groups.wsgi\n  WSGIGroupAuthoritative On\n  \
               Require wsgi-group admins\n</Location>",
            if daemon {
                "WSGIDaemonProcess p threads=2\n"
            } else {
                ""
            }
        ))
        .allow_log("access check for")
        .allow_log("WSGI0010")
        .allow_log("Traceback")
        .allow_log(r"\[wsgi:error\] .*\[request [^\]]+\]   ")
        .allow_log("failure")
        .allow_log("AH01617")
        .allow_log("AH01618")
        .allow_log("AH01630")
        .allow_log("AH01631")
        .allow_log("AH01694")
        .allow_log("AH01790")
        .allow_log("AH01794")
        .allow_log("AH01797")
        .allow_log("AH01809")
        .start()
}

fn check(daemon: bool) {
    let server = server(daemon);
    let get = |path: &str, headers: &[(&str, &str)]| server.request("GET", path, headers, b"");

    // allow_access: True, False, None (Apache decides: granted here), an exception (denied).
    assert_eq!(get("/a/allow", &[]).status, 200);
    assert_eq!(get("/a/deny", &[]).status, 403);
    assert_eq!(get("/a/none", &[]).status, 200);
    assert_eq!(get("/a/raise", &[]).status, 403);
    let log = server.error_log();
    assert!(
        log.contains("access check for /a/allow from 127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("RuntimeError: access script failure"), "{log}");

    // Basic authentication through the `wsgi` provider.
    assert_eq!(get("/basic", &[]).status, 401);
    let alice = get("/basic", &[("Authorization", &basic("alice", "secret"))]);
    assert_eq!((alice.status, alice.text().as_str()), (200, "user=alice"));
    assert_eq!(
        get("/basic", &[("Authorization", &basic("alice", "wrong"))]).status,
        401
    );
    assert_eq!(
        get("/basic", &[("Authorization", &basic("nobody", "x"))]).status,
        401
    );
    // A returned string replaces the user name.
    let bob = get("/basic", &[("Authorization", &basic("bob", "builder"))]);
    assert_eq!((bob.status, bob.text().as_str()), (200, "user=robert"));
    // A failing script denies.
    let crash = get("/basic", &[("Authorization", &basic("crash", "x"))]);
    assert!(
        crash.status == 401 || crash.status == 500,
        "{}",
        crash.status
    );
    assert!(
        server
            .error_log()
            .contains("ValueError: user script failure")
    );

    // Digest authentication: get_realm_hash.
    let digest = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--digest",
            "-u",
            "alice:secret",
        ])
        .arg(server.url("/digest"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&digest.stdout), "200");
    let wrong = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--digest",
            "-u",
            "alice:nope",
        ])
        .arg(server.url("/digest"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&wrong.stdout), "401");

    // Require wsgi-group: alice is an admin, robert is not.
    assert_eq!(
        get("/admins", &[("Authorization", &basic("alice", "secret"))]).status,
        200
    );
    assert_ne!(
        get("/admins", &[("Authorization", &basic("bob", "builder"))]).status,
        200
    );

    // Scripts reload when they change.
    let users = server.dir().join("users.wsgi");
    std::fs::write(
        &users,
        USERS.replace("password == 'secret'", "password == 'changed'"),
    )
    .expect("edit the script");
    let later = std::time::SystemTime::now() + Duration::from_secs(3);
    std::fs::File::options()
        .write(true)
        .open(&users)
        .expect("edit the script")
        .set_modified(later)
        .expect("edit the script");
    assert_eq!(
        get("/basic", &[("Authorization", &basic("alice", "secret"))]).status,
        401
    );
    assert_eq!(
        get("/basic", &[("Authorization", &basic("alice", "changed"))]).status,
        200
    );
}

#[test]
fn auth_hooks_embedded() {
    check(false);
}

#[test]
fn auth_hooks_daemon() {
    check(true);
}

#[test]
fn access_script_sees_mod_ssl_over_tls() {
    let dir = tempfile::Builder::new()
        .prefix("tls-")
        .tempdir_in("/tmp")
        .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = ServerBuilder::new()
        .load("ssl")
        .load("socache_shmcb")
        .file("app.wsgi", APP)
        .file("access.wsgi", ACCESS)
        .file("cert.pem", std::fs::read(&cert).unwrap())
        .file("key.pem", std::fs::read(&key).unwrap())
        .config(&format!(
            "Listen 127.0.0.1:{tls_port}\n\
             SSLSessionCache shmcb:${{TEST_DIR}}/ssl_cache(512000)\n\
             WSGIScriptAlias / ${{TEST_DIR}}/app.wsgi\n\
             <Location /a>\n  WSGIAccessScript ${{TEST_DIR}}/access.wsgi\n</Location>\n\
             <VirtualHost 127.0.0.1:{tls_port}>\n  SSLEngine on\n  \
               SSLCertificateFile ${{TEST_DIR}}/cert.pem\n  \
               SSLCertificateKeyFile ${{TEST_DIR}}/key.pem\n  \
               WSGIScriptAlias / ${{TEST_DIR}}/app.wsgi\n</VirtualHost>"
        ))
        .allow_log("access check for")
        .allow_log("AH01909")
        // Debian's mod_ssl notes a minor OpenSSL version difference on some machines.
        .allow_log("AH01882")
        .allow_log("AH01906")
        .allow_log("AH01630")
        .start();
    // Over plain HTTP, is_https() is false: denied.
    assert_eq!(server.get("/a/tls").status, 403);
    let https = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{tls_port}/a/tls"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&https.stdout),
        "200",
        "{}",
        server.error_log()
    );
}
