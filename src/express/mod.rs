//! `mod_wsgi-express`: runs a Python WSGI application in Apache httpd with this module without
//! any hand-written Apache configuration, like the C mod_wsgi's command of the same name.
//!
//! - [`cli`]: the subcommands and options (clap).
//! - [`setup`]: checks the options and writes the server root.
//! - [`config`]: the text of `httpd.conf`, `apachectl` and `envvars`.
//! - [`handler`]: the generated `handler.wsgi` and `default.wsgi`.
//! - [`run`]: starts Apache in the foreground and relays signals to it.
//! - [`module`]: `module-location`, `module-config` and `install-module`.
//!
//! The program itself is `src/bin/mod_wsgi-express.rs`; docs/express.md is the user's guide.

pub mod cli;
pub mod config;
pub mod error;
pub mod handler;
pub mod module;
pub mod run;
pub mod setup;

use std::fmt::Write as _;

pub use cli::Cli;
pub use error::{ExpressError, Result};

use cli::Command;
use setup::{App, Setup};

/// Runs one command. What it prints goes to stdout; warnings go to stderr.
pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::StartServer(args) => {
            if !args.setup_only {
                // Before anything is written: a failed start must not touch a running server.
                setup::check_port_free(&args.host, args.port)?;
                if let Some(port) = args.https_port {
                    setup::check_port_free(&args.host, port)?;
                }
            }
            let setup = prepare(&args)?;
            if args.setup_only {
                print!("{}", summary(&setup, true));
                return Ok(());
            }
            print!("{}", summary(&setup, false));
            run::run(&setup)
        }
        Command::SetupServer(args) => {
            let setup = prepare(&args)?;
            print!("{}", summary(&setup, true));
            Ok(())
        }
        Command::ModuleConfig(args) => {
            print!("{}", module::module_config(&args)?);
            Ok(())
        }
        Command::ModuleLocation(args) => {
            print!("{}", module::location(&args)?);
            Ok(())
        }
        Command::InstallModule(args) => {
            let installed = module::install(&args)?;
            if let Some(backup) = &installed.backup {
                eprintln!(
                    "mod_wsgi-express: the previous {} was kept as {}",
                    installed.path.display(),
                    backup.display()
                );
            }
            print!("{}", installed.config);
            Ok(())
        }
        Command::Exec { argv } => Err(run::exec_unblocked(&argv)),
    }
}

/// Checks the options, shows the warnings and writes the server root.
fn prepare(args: &cli::ServerArgs) -> Result<Setup> {
    let setup = setup::resolve(args)?;
    for warning in &setup.warnings {
        eprintln!("mod_wsgi-express: warning: {warning}");
    }
    setup::check_root_not_running(&setup)?;
    setup::write_server_root(&setup)?;
    Ok(setup)
}

/// What was set up and where things are, one `Label : value` per line.
pub fn summary(setup: &Setup, setup_only: bool) -> String {
    let args = &setup.args;
    let layout = &setup.layout;
    let mut s = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(s, "{label:<19}: {value}");
    };
    line("Server URL", &setup.url());
    if let Some(url) = setup.https_url() {
        line("Server URL (HTTPS)", &url);
    }
    line("Server Root", &layout.root.display().to_string());
    line("Server Conf", &layout.conf().display().to_string());
    let error_log = if args.log_to_terminal {
        "(the terminal: stderr)".to_owned()
    } else {
        layout.error_log().display().to_string()
    };
    line(
        "Error Log File",
        &format!("{error_log} ({})", args.log_level),
    );
    if args.access_log {
        let access_log = if args.log_to_terminal {
            "(the terminal: stdout)".to_owned()
        } else {
            layout.access_log().display().to_string()
        };
        line("Access Log File", &access_log);
    }
    let app = match &setup.app {
        App::Script(path) if *path == layout.default_script() => "the built-in page".to_owned(),
        App::Script(path) => format!("script {}", path.display()),
        App::Module { module, callable } => format!("module {module}:{callable}"),
        App::Static(dir) => format!("static files in {}", dir.display()),
    };
    line("Application", &app);
    if setup.has_python() {
        if args.embedded_mode {
            line("Process Mode", "embedded (in Apache's own processes)");
        } else {
            line(
                "Request Capacity",
                &format!(
                    "{} ({} process{} * {} thread{})",
                    setup.capacity(),
                    args.processes,
                    if args.processes == 1 { "" } else { "es" },
                    args.threads,
                    if args.threads == 1 { "" } else { "s" },
                ),
            );
            line(
                "Request Timeout",
                &format!("{} (seconds)", args.request_timeout),
            );
            line(
                "Queue Timeout",
                &format!("{} (seconds)", args.queue_timeout),
            );
        }
        if let Some(home) = &setup.python_home {
            line("Python Home", &home.display().to_string());
        }
        if args.reload_on_changes {
            line("Reload On Changes", "yes");
        }
    }
    let sizing = config::Sizing::new(setup.capacity(), args.max_clients);
    line("Server Capacity", &sizing.max_request_workers.to_string());
    if setup_only {
        line("Environ Variables", &layout.envvars().display().to_string());
        line("Control Script", &layout.apachectl().display().to_string());
        let apachectl = layout.apachectl();
        let _ = writeln!(
            s,
            "\nStart it with `{0} start` (in the background) or `{0} foreground`;\n\
             stop it with `{0} stop`.",
            apachectl.display()
        );
    }
    s
}
