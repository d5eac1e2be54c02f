//! Configuration tests of the module under a real `apache2 -t` (and, for the shipped example
//! configurations, a real server):
//!
//! - every `WSGI*` directive with a bad value, or written where it is not allowed, makes the
//!   configuration check fail with Apache's `Syntax error on line N of FILE:` naming the file
//!   and line of the offending directive, followed by a reason that says what is wrong;
//! - a representative set of valid directives, in every context they are allowed in, passes;
//! - the built module exports exactly one dynamic symbol, `wsgi_module`;
//! - every file in `apache-conf/` passes `apache2 -t` when included with the `Define`s it
//!   documents, and the examples serve what their comments promise.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use support::{ConfigTest, ServerBuilder, TEST_ROOT, module_path, python_venv};

/// Where a directive is written.
#[derive(Clone, Copy, Debug)]
enum Context {
    /// The main server configuration.
    Server,
    /// Inside `<VirtualHost *:80>`.
    VirtualHost,
    /// Inside `<Directory ${TEST_DIR}>`.
    Directory,
    /// Inside `<Location /somewhere>`.
    Location,
}

impl Context {
    /// The section's opening and closing lines, if it is one.
    fn section(self) -> Option<(&'static str, &'static str)> {
        match self {
            Context::Server => None,
            Context::VirtualHost => Some(("<VirtualHost *:80>", "</VirtualHost>")),
            Context::Directory => Some(("<Directory ${TEST_DIR}>", "</Directory>")),
            Context::Location => Some(("<Location /somewhere>", "</Location>")),
        }
    }
}

/// A directive line that `apache2 -t` must refuse, and a distinctive part of the reason.
struct Bad {
    context: Context,
    line: &'static str,
    reason: &'static str,
}

const fn bad(context: Context, line: &'static str, reason: &'static str) -> Bad {
    Bad {
        context,
        line,
        reason,
    }
}

/// The name of the file the bad directives are written to, included from `httpd.conf`.
const BAD_FILE: &str = "bad-directive.conf";

const ON_OFF: &str = "must be one of: Off | On";
const NOT_IN_VHOST: &str = "cannot occur within <VirtualHost> section";

#[rustfmt::skip]
const BAD_DIRECTIVES: &[Bad] = &[
    // WSGIScriptAlias: arguments, URL path, options and option values.
    bad(Context::Server, "WSGIScriptAlias", "expects a URL path (or regex) and a file or folder"),
    bad(Context::Server, "WSGIScriptAlias /app", "expects a URL path (or regex) and a file or folder"),
    bad(Context::Server, "WSGIScriptAlias app ${TEST_DIR}/app.wsgi", "the URL path 'app' must start with '/'"),
    bad(Context::VirtualHost, "WSGIScriptAlias app/ ${TEST_DIR}/app.wsgi", "must start with '/'"),
    bad(Context::Server, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi colour=red", "unknown option 'colour'"),
    bad(Context::Server, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi process-group", "'process-group' is not of the form name=value"),
    bad(Context::Server, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi application-group=%{NOPE}", "unknown expansion '%{NOPE}'"),
    bad(Context::Server, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi callable-object=my-app", "'my-app' is not a Python identifier"),
    bad(Context::Server, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi pass-authorization=yes", ON_OFF),
    bad(Context::Directory, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi", "WSGIScriptAlias not allowed in <Directory> context"),
    bad(Context::Location, "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi", "WSGIScriptAlias not allowed in <Location> context"),
    // WSGIScriptAliasMatch.
    bad(Context::Server, "WSGIScriptAliasMatch ^/(app ${TEST_DIR}/$1.wsgi", "bad regular expression '^/(app'"),
    bad(Context::Server, "WSGIScriptAliasMatch ^/app/([^/]+", "expects a URL path (or regex) and a file or folder"),
    bad(Context::VirtualHost, "WSGIScriptAliasMatch ^/([a-z]+) ${TEST_DIR}/$1.wsgi speed=fast", "unknown option 'speed'"),
    // Per-directory directives.
    bad(Context::Server, "WSGICallableObject my-app", "'my-app' is not a Python identifier"),
    bad(Context::Location, "WSGICallableObject 2fast", "'2fast' is not a Python identifier"),
    bad(Context::Server, "WSGICallableObject app extra", "takes one argument"),
    bad(Context::Server, "WSGIApplicationGroup %{GLOBALS}", "unknown expansion '%{GLOBALS}'"),
    bad(Context::Directory, "WSGIApplicationGroup %{ENV:}", "unknown expansion '%{ENV:}'"),
    bad(Context::Server, "WSGIPassAuthorization maybe", "WSGIPassAuthorization must be one of: Off | On"),
    bad(Context::Server, "WSGIScriptReloading 1", "WSGIScriptReloading must be one of: Off | On"),
    bad(Context::Server, "WSGIChunkedRequest yes", "WSGIChunkedRequest must be one of: Off | On"),
    bad(Context::Directory, "WSGIChunkedRequest Onn", "WSGIChunkedRequest must be one of: Off | On"),
    bad(Context::Server, "WSGIMapHEADToGET maybe", "WSGIMapHEADToGET: must be one of: Off | On | Auto"),
    bad(Context::Directory, "WSGIEnableSendfile 1", "WSGIEnableSendfile must be one of: Off | On"),
    bad(Context::VirtualHost, "WSGISocketPrefix /tmp/x", "cannot occur within <VirtualHost>"),
    bad(Context::Server, "WSGIDaemonProcess site colour=red", "unknown option 'colour'"),
    bad(Context::Server, "WSGIDaemonProcess site user=root", "may not run as root"),
    bad(Context::Directory, "WSGIProcessGroup %{SERVER}", "use %{GLOBAL}, %{ENV:VAR}"),
    bad(Context::Server, "WSGIRestrictEmbedded maybe", "WSGIRestrictEmbedded must be one of"),
    bad(Context::Directory, "WSGIRestrictProcess", "expects one or more group names"),
    bad(Context::Directory, "WSGIErrorOverride perhaps", "WSGIErrorOverride must be one of"),
    bad(Context::Directory, "WSGITrustedProxies 10.0.0.0/99", "is not an IP address or network"),
    bad(Context::Directory, "WSGITrustedProxyHeaders", "expects one or more header names"),
    bad(Context::Directory, "WSGIAccessScript", "expects a script path"),
    bad(Context::Directory, "WSGIAuthUserScript /a.wsgi colour=red", "unknown option"),
    bad(Context::Directory, "WSGIAuthGroupScript /a.wsgi app=x", "unknown option"),
    bad(Context::Directory, "WSGIGroupAuthoritative sometimes", "must be one of: Off | On"),
    bad(Context::Directory, "WSGIDispatchScript", "expects a script path"),
    bad(Context::Directory, "WSGIHandlerScript only-a-name", "expects a handler name and a script"),
    bad(
        Context::Server,
        "WSGIImportScript /x.wsgi process-group=%{GLOBAL}",
        "application-group= is required",
    ),
    bad(
        Context::Server,
        "WSGIImportScript /x.wsgi process-group=%{GLOBAL} application-group=%{RESOURCE}",
        "only %{GLOBAL} or a plain name",
    ),
    bad(
        Context::Server,
        "WSGIImportScript /x.wsgi process-group=nosuch application-group=%{GLOBAL}",
        "process-group=nosuch: no WSGIDaemonProcess of that name is defined before this line",
    ),
    // Server-configuration-only directives: bad values...
    bad(Context::Server, "WSGIPythonHome", "WSGIPythonHome: takes one argument"),
    bad(Context::Server, "WSGIPythonHome /a /b", "takes one argument"),
    bad(Context::Server, "WSGIPythonPath :", "WSGIPythonPath: no directory given"),
    bad(Context::Server, "WSGIPythonOptimize 3", "'3' is not an optimisation level; use 0, 1 or 2"),
    bad(Context::Server, "WSGIPythonOptimize -O", "is not an optimisation level"),
    bad(Context::Server, "WSGIDontWriteBytecode true", "WSGIDontWriteBytecode must be one of: Off | On"),
    bad(Context::Server, "WSGIRestrictStdout no", "WSGIRestrictStdout must be one of: Off | On"),
    bad(Context::Server, "WSGIRestrictStdin 0", "WSGIRestrictStdin must be one of: Off | On"),
    bad(Context::Server, "WSGIRestrictSignal enabled", "WSGIRestrictSignal must be one of: Off | On"),
    bad(Context::Server, "WSGIDestroyInterpreter Of", "WSGIDestroyInterpreter must be one of: Off | On"),
    // ... and good values where they are not allowed (Apache's own GLOBAL_ONLY check).
    bad(Context::VirtualHost, "WSGIPythonHome /usr", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIPythonPath /srv", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIPythonOptimize 1", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIDontWriteBytecode On", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIRestrictStdout On", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIRestrictStdin On", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIRestrictSignal Off", NOT_IN_VHOST),
    bad(Context::VirtualHost, "WSGIDestroyInterpreter Off", NOT_IN_VHOST),
    bad(Context::Directory, "WSGIPythonHome /usr", "WSGIPythonHome not allowed in <Directory> context"),
    bad(Context::Location, "WSGIRestrictStdout On", "WSGIRestrictStdout not allowed in <Location> context"),
];

/// The directives the module implemented when these tests were written.
const KNOWN_DIRECTIVES: &[&str] = &[
    "WSGIScriptAlias",
    "WSGIScriptAliasMatch",
    "WSGICallableObject",
    "WSGIApplicationGroup",
    "WSGIPassAuthorization",
    "WSGIScriptReloading",
    "WSGIChunkedRequest",
    "WSGIPythonHome",
    "WSGIPythonPath",
    "WSGIPythonOptimize",
    "WSGIDontWriteBytecode",
    "WSGIRestrictStdout",
    "WSGIRestrictStdin",
    "WSGIRestrictSignal",
    "WSGIDestroyInterpreter",
];

/// The directive names in the module's directive table (the `c"WSGI..."` names in
/// `src/config/directive.rs`), so that a directive added later needs a bad case here too.
fn table_directives() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/directive.rs");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Regex::new(r#"c"(WSGI[A-Za-z]+)""#)
        .expect("valid pattern")
        .captures_iter(&source)
        .map(|caps| caps[1].to_owned())
        .collect()
}

/// The contents of [`BAD_FILE`] for `case`, and the 1-based number of its offending line.
///
/// A valid `WSGI*` directive comes first, so that a report of "the first WSGI line" or
/// "line 1" would not pass by accident.
fn bad_file(case: &Bad) -> (String, usize) {
    let mut lines = vec![
        "# Written by tests/config.rs: one offending directive.".to_owned(),
        "WSGIScriptReloading On".to_owned(),
        String::new(),
    ];
    let section = case.context.section();
    if let Some((open, _)) = section {
        lines.push(open.to_owned());
    }
    lines.push(format!("    {}", case.line));
    let offending = lines.len();
    if let Some((_, close)) = section {
        lines.push(close.to_owned());
    }
    lines.push("# end".to_owned());
    (lines.join("\n") + "\n", offending)
}

/// Apache's `Syntax error on line N of FILE:` report: (N, FILE, the reason that follows).
fn syntax_error(output: &str) -> Option<(usize, String, String)> {
    let re = Regex::new(r"Syntax error on line (\d+) of ([^\n]+):\n([^\n]*)")
        .expect("the syntax-error pattern is valid");
    let caps = re.captures(output)?;
    Some((
        caps[1].parse().ok()?,
        caps[2].to_owned(),
        caps[3].to_owned(),
    ))
}

/// Runs `apache2 -t` on the standard test configuration plus `snippet`.
fn check(snippet: &str) -> ConfigTest {
    ServerBuilder::new().config(snippet).config_test()
}

#[test]
fn every_directive_has_a_bad_case() {
    let table = table_directives();
    for known in KNOWN_DIRECTIVES {
        assert!(
            table.contains(*known),
            "{known} is not in the directive table {table:?}"
        );
    }
    let covered: BTreeSet<&str> = BAD_DIRECTIVES
        .iter()
        .map(|case| case.line.split_whitespace().next().unwrap_or_default())
        .collect();
    let missing: Vec<&String> = table
        .iter()
        .filter(|d| !covered.contains(d.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "no bad case in BAD_DIRECTIVES for {missing:?}"
    );
    let alias_cases = BAD_DIRECTIVES
        .iter()
        .filter(|case| case.line.starts_with("WSGIScriptAlias "))
        .count();
    assert!(
        alias_cases >= 5,
        "only {alias_cases} bad WSGIScriptAlias cases"
    );
}

#[test]
fn bad_directives_fail_naming_file_line_and_reason() {
    let mut failures = Vec::new();
    for case in BAD_DIRECTIVES {
        let (contents, offending) = bad_file(case);
        let result = ServerBuilder::new()
            .file(BAD_FILE, &contents)
            .config(&format!("Include ${{TEST_DIR}}/{BAD_FILE}"))
            .config_test();
        let describe = || format!("{:?} `{}`", case.context, case.line);
        if result.ok {
            failures.push(format!("{} was accepted:\n{}", describe(), result.output));
            continue;
        }
        let Some((line, file, reason)) = syntax_error(&result.output) else {
            failures.push(format!(
                "{}: no `Syntax error on line N of FILE:` in:\n{}",
                describe(),
                result.output
            ));
            continue;
        };
        let file_ok = file.starts_with(TEST_ROOT) && file.ends_with(&format!("/{BAD_FILE}"));
        if !file_ok || line != offending || !reason.contains(case.reason) {
            failures.push(format!(
                "{}: expected line {offending} of .../{BAD_FILE} and a reason containing {:?}, \
                 got:\n{}",
                describe(),
                case.reason,
                result.output
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad directives were not reported as expected:\n\n{}",
        failures.len(),
        BAD_DIRECTIVES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn errors_in_httpd_conf_name_it_and_the_offending_line() {
    // The harness does not expose the generated httpd.conf, so its line numbers are checked
    // relatively: two more lines in front of the offending one move the report by two.
    let first = check("WSGIChunkedRequest sometimes");
    let later = check("# a comment\nWSGIScriptReloading Off\nWSGIChunkedRequest sometimes");
    let (first_line, first_file, first_reason) =
        syntax_error(&first.output).unwrap_or_else(|| panic!("no syntax error:\n{}", first.output));
    let (later_line, later_file, later_reason) =
        syntax_error(&later.output).unwrap_or_else(|| panic!("no syntax error:\n{}", later.output));
    assert!(!first.ok && !later.ok);
    for file in [&first_file, &later_file] {
        assert!(
            file.starts_with(TEST_ROOT) && file.ends_with("/httpd.conf"),
            "file reported: {file}"
        );
    }
    assert!(
        first_line > 10,
        "the snippet comes after the base configuration"
    );
    assert_eq!(later_line, first_line + 2, "{}", later.output);
    assert_eq!(first_reason, "WSGIChunkedRequest must be one of: Off | On");
    assert_eq!(later_reason, first_reason);
}

#[test]
fn the_first_bad_directive_is_reported() {
    let result =
        check("WSGIPythonOptimize 2\nWSGICallableObject app.main\nWSGIChunkedRequest never\n");
    assert!(!result.ok);
    let (_, _, reason) = syntax_error(&result.output).expect("a syntax error");
    assert!(
        reason.contains("'app.main' is not a Python identifier"),
        "{reason}"
    );
    assert!(
        !result.output.contains("WSGIChunkedRequest"),
        "{}",
        result.output
    );
}

/// Valid configurations, each checked on its own.
#[rustfmt::skip]
const GOOD: &[&str] = &[
    "WSGIScriptAlias / ${TEST_DIR}/app.wsgi",
    "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi",
    "WSGIScriptAlias /app/ ${TEST_DIR}/scripts/",
    "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi process-group=%{GLOBAL} application-group=%{GLOBAL} \
     callable-object=main pass-authorization=On",
    "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi application-group=%{ENV:GROUP} \
     callable-object=%{ENV:CALLABLE} pass-authorization=off",
    "WSGIScriptAlias /app ${TEST_DIR}/app.wsgi application-group=shared",
    "WSGIScriptAliasMatch ^/apps/([^/]+) ${TEST_DIR}/apps/$1.wsgi",
    "WSGIScriptAliasMatch (?i)^/WIKI(/.*)?$ ${TEST_DIR}/wiki.wsgi application-group=%{SERVER}",
    "<VirtualHost *:80>\nServerName vhost.test\nWSGIScriptAlias /v ${TEST_DIR}/v.wsgi\n\
     WSGIScriptAliasMatch ^/m/(.*) ${TEST_DIR}/$1.wsgi\nWSGICallableObject app\n\
     WSGIApplicationGroup %{HOST}\nWSGIPassAuthorization On\n</VirtualHost>",
    "WSGICallableObject application",
    "WSGICallableObject _private2",
    "WSGICallableObject %{ENV:WSGI_CALLABLE}",
    "WSGIApplicationGroup %{GLOBAL}",
    "WSGIApplicationGroup %{SERVER}",
    "WSGIApplicationGroup %{HOST}",
    "WSGIApplicationGroup %{RESOURCE}",
    "WSGIApplicationGroup %{ENV:APP_GROUP}",
    "WSGIApplicationGroup my-group.example",
    "<Directory ${TEST_DIR}>\nWSGIApplicationGroup %{GLOBAL}\nWSGICallableObject app\n\
     WSGIPassAuthorization On\nWSGIScriptReloading Off\nWSGIChunkedRequest On\n\
     Options +ExecCGI\nAddHandler wsgi-script .wsgi\n</Directory>",
    "<Location /x>\nWSGIApplicationGroup x\nWSGICallableObject x\nWSGIPassAuthorization off\n\
     WSGIScriptReloading ON\nWSGIChunkedRequest oFF\n</Location>",
    "<Files app.wsgi>\nWSGICallableObject app\nWSGIChunkedRequest On\n</Files>",
    "WSGIPassAuthorization On",
    "WSGIPassAuthorization off",
    "WSGIScriptReloading Off",
    "WSGIScriptReloading on",
    "WSGIChunkedRequest On",
    "WSGIChunkedRequest OFF",
    "WSGIChunkedRequest oN",
    "WSGIPythonHome /usr",
    "WSGIPythonPath ${TEST_DIR}",
    "WSGIPythonPath ${TEST_DIR}/a:${TEST_DIR}/b\nWSGIPythonPath ${TEST_DIR}/c",
    "WSGIPythonOptimize 0",
    "WSGIPythonOptimize 1",
    "WSGIPythonOptimize 2",
    "WSGIDontWriteBytecode On",
    "WSGIRestrictStdout On",
    "WSGIRestrictStdin Off",
    "WSGIRestrictSignal Off",
    "WSGIDestroyInterpreter Off",
    "AddHandler wsgi-script .wsgi\nAddHandler application/x-httpd-wsgi .py",
];

#[test]
fn good_directives_pass() {
    let failures: Vec<String> = GOOD
        .iter()
        .filter_map(|snippet| {
            let result = check(snippet);
            let ok = result.ok && result.output.contains("Syntax OK");
            (!ok).then(|| format!("--- {snippet}\n{}", result.output))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "valid configurations refused:\n{}",
        failures.join("\n")
    );
}

#[test]
fn module_exports_only_wsgi_module() {
    let module = module_path();
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&module)
        .output()
        .expect("cannot run nm (binutils)");
    assert!(
        output.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    // Lines are `ADDRESS TYPE NAME`; weak (w, W, v, V), undefined (U) and absolute version
    // (A) symbols are not exports of ours.
    let exported: Vec<&str> = listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().rev();
            let name = fields.next()?;
            let kind = fields.next()?;
            let ignored = matches!(kind, "w" | "W" | "v" | "V" | "U" | "A");
            (!ignored).then_some(name)
        })
        .collect();
    assert_eq!(
        exported,
        ["wsgi_module"],
        "dynamic symbols of {}:\n{listing}",
        module.display()
    );
    let kind = listing
        .lines()
        .find(|line| line.ends_with(" wsgi_module"))
        .and_then(|line| line.split_whitespace().nth(1));
    assert!(
        matches!(kind, Some("D" | "d" | "B" | "b")),
        "wsgi_module should be a data symbol (the module record): {listing}"
    );
}

/// The repository's `apache-conf/` folder.
fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apache-conf")
}

/// `Define NAME VALUE` lines that `file` (a name in `apache-conf/`) needs, or `None` for a
/// file this test does not know about.
fn defines_for(file: &str, venv: &Path) -> Option<String> {
    let venv = venv.display();
    let defines = match file {
        "embedded-root.conf" => "Define APP_DIR ${TEST_DIR}/app".to_owned(),
        "embedded-subpath.conf" => {
            "Define APP_DIR ${TEST_DIR}/app\nDefine APPS_DIR ${TEST_DIR}/apps".to_owned()
        }
        "addhandler.conf" => "Define SCRIPTS_DIR ${TEST_DIR}/scripts".to_owned(),
        "virtualenv.conf" => format!("Define VENV {venv}\nDefine APP_DIR ${{TEST_DIR}}/app"),
        "example-site.conf" => {
            format!("Define EXAMPLE_DIR ${{TEST_DIR}}/example\nDefine EXAMPLE_VENV {venv}")
        }
        _ => return None,
    };
    Some(defines)
}

/// Every `*.conf` file in `apache-conf/`, by name, sorted.
fn example_files() -> Vec<String> {
    let dir = conf_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("cannot read a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".conf"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_example_config_passes_apache_t() {
    let venv = python_venv(&["flask"]);
    let files = example_files();
    for expected in [
        "embedded-root.conf",
        "embedded-subpath.conf",
        "addhandler.conf",
        "virtualenv.conf",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} is missing");
    }
    for file in &files {
        let defines = defines_for(file, &venv).unwrap_or_else(|| {
            panic!("apache-conf/{file} is new: add the Defines it needs to defines_for()")
        });
        let result = ServerBuilder::new()
            .config(&defines)
            .config(&format!("Include {}", conf_dir().join(file).display()))
            .config_test();
        assert!(
            result.ok && result.output.contains("Syntax OK"),
            "apache-conf/{file} fails apache2 -t:\n{}",
            result.output
        );
        // An undefined ${VAR} is only a warning for Apache: treat it as a failure.
        assert!(
            !result.output.contains("AH00111"),
            "apache-conf/{file} uses an undefined variable:\n{}",
            result.output
        );
    }
}

/// A WSGI script that reports what it was called with.
const REPORT_APP: &str = r#"
import os
def application(environ, start_response):
    body = '%s|%s|%s' % (os.path.basename(__file__), environ['SCRIPT_NAME'],
                         environ['PATH_INFO'])
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
"#;

/// A server that includes `apache-conf/<file>` with its Defines, with `files` added.
fn example_server(file: &str, files: &[(&str, &str)]) -> ServerBuilder {
    let venv = python_venv(&["flask"]);
    let defines = defines_for(file, &venv).expect("a known example");
    let mut builder = ServerBuilder::new()
        .config(&defines)
        .config(&format!("Include {}", conf_dir().join(file).display()));
    for (path, contents) in files {
        builder = builder.file(path, contents);
    }
    builder
}

#[test]
fn embedded_root_example_serves_every_url() {
    let server = example_server("embedded-root.conf", &[("app/app.wsgi", REPORT_APP)]).start();
    assert_eq!(server.get("/").text(), "app.wsgi||/");
    assert_eq!(server.get("/a/b").text(), "app.wsgi||/a/b");
    assert_eq!(server.get("/index.html").text(), "app.wsgi||/index.html");
    server.stop();
}

#[test]
fn embedded_subpath_example_serves_its_mounts_only() {
    let server = example_server(
        "embedded-subpath.conf",
        &[
            ("app/app.wsgi", REPORT_APP),
            ("apps/blog.wsgi", REPORT_APP),
            ("apps/wiki.wsgi", REPORT_APP),
        ],
    )
    .start();
    assert_eq!(server.get("/myapp").text(), "app.wsgi|/myapp|");
    assert_eq!(server.get("/myapp/x/y").text(), "app.wsgi|/myapp|/x/y");
    assert_eq!(server.get("/apps/blog").text(), "blog.wsgi|/apps/blog|");
    assert_eq!(
        server.get("/apps/wiki/page/1").text(),
        "wiki.wsgi|/apps/wiki|/page/1"
    );
    // Everything else is still the static site.
    assert_eq!(server.get("/").text(), "ok");
    assert_eq!(server.get("/myappfoo").status, 404);
    server.stop();
}

#[test]
fn embedded_subpath_example_gives_404_for_a_missing_script() {
    let server = example_server(
        "embedded-subpath.conf",
        &[("app/app.wsgi", REPORT_APP), ("apps/blog.wsgi", REPORT_APP)],
    )
    .allow_log("WSGI0020")
    .start();
    assert_eq!(server.get("/apps/nothing").status, 404);
    assert_eq!(server.get("/apps/blog").status, 200);
    let stopped = server.stop();
    assert!(
        stopped.error_log.contains("nothing.wsgi"),
        "the 404 should be logged with the script path:\n{}",
        stopped.error_log
    );
}

#[test]
fn addhandler_example_runs_wsgi_files_and_serves_others() {
    let server = example_server(
        "addhandler.conf",
        &[
            ("scripts/hello.wsgi", REPORT_APP),
            ("scripts/readme.txt", "static text"),
        ],
    )
    .start();
    assert_eq!(
        server.get("/scripts/hello.wsgi").text(),
        "hello.wsgi|/scripts/hello.wsgi|"
    );
    assert_eq!(
        server.get("/scripts/hello.wsgi/more").text(),
        "hello.wsgi|/scripts/hello.wsgi|/more"
    );
    let text = server.get("/scripts/readme.txt");
    assert_eq!(text.status, 200);
    assert_eq!(text.text(), "static text");
    server.stop();
}

#[test]
fn virtualenv_example_uses_the_venv_and_the_python_path() {
    let venv = python_venv(&["flask"]);
    let app = r#"
import sys
import helper
import flask
application = flask.Flask(__name__)

@application.route('/')
def index():
    print('printed to stdout')
    return '|'.join([sys.prefix, helper.NAME, str(sys.dont_write_bytecode),
                     str(sys.flags.optimize), type(sys.stdin).__name__])
"#;
    let server = example_server(
        "virtualenv.conf",
        &[
            ("app/app.wsgi", app),
            ("app/helper.py", "NAME = 'helper'\n"),
        ],
    )
    // WSGIRestrictStdout Off: print() goes to the error log, at level error.
    .allow_log("printed to stdout")
    .start();
    let response = server.get("/");
    assert_eq!(response.status, 200, "{}", server.error_log());
    let expected = format!("{}|helper|True|0|Restricted", venv.display());
    assert_eq!(response.text(), expected);
    assert!(server.wait_for_log("printed to stdout", std::time::Duration::from_secs(5)));
    assert!(
        !server.dir().join("app/__pycache__").exists(),
        "WSGIDontWriteBytecode On wrote bytecode"
    );
    server.stop();
}

#[test]
fn example_site_serves_the_flask_example() {
    // Someone else's optional file: nothing to check when it is not there.
    if !conf_dir().join("example-site.conf").is_file() {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flask_app");
    let mut files = Vec::new();
    collect_files(&example, &example, &mut files);
    let mut builder = ServerBuilder::new()
        .config(&defines_for("example-site.conf", &python_venv(&["flask"])).expect("known"))
        .config(&format!(
            "Include {}",
            conf_dir().join("example-site.conf").display()
        ));
    for (rel, contents) in &files {
        builder = builder.file(&format!("example/app/{rel}"), contents);
    }
    let server = builder.start();
    let response = server.get("/");
    assert_eq!(response.status, 200, "{}", server.error_log());
    assert!(
        response.text().contains("Hello from Flask"),
        "{}",
        response.text()
    );
    server.stop();
}

/// Every regular file under `dir` (skipping `__pycache__`), as (path relative to `root`,
/// contents).
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("cannot read a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                collect_files(root, &path, out);
            }
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let contents = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push((rel, contents));
        }
    }
}

#[test]
fn module_links_debians_libpython() {
    // Apache's children must load the system libpython 3.11, whatever `python3` is on PATH.
    let output = Command::new("ldd")
        .arg(module_path())
        .output()
        .expect("cannot run ldd");
    let listing = String::from_utf8_lossy(&output.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains("libpython"))
        .unwrap_or_else(|| panic!("no libpython in:\n{listing}"));
    assert!(
        line.contains("libpython3.11.so.1.0 => /lib/x86_64-linux-gnu/libpython3.11.so.1.0")
            || line.contains("libpython3.11.so.1.0 => /usr/lib/x86_64-linux-gnu/libpython3.11"),
        "{line}"
    );
}
