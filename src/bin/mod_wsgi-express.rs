//! `mod_wsgi-express`: runs a Python WSGI application in Apache httpd with mod_wsgi-rs, from
//! the command line (see docs/express.md and the `mod_wsgi::express` module).
//!
//! Every error is shown as one line on stderr, `mod_wsgi-express: error: ...`, with exit status
//! 2 for a bad command line and 1 for anything else.

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;
use mod_wsgi::express::{self, Cli};

/// The subcommands, for pointing at the right `--help`.
const SUBCOMMANDS: &[&str] = &[
    "start-server",
    "setup-server",
    "module-config",
    "module-location",
    "install-module",
];

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(&e),
    };
    match express::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mod_wsgi-express: error: {e}");
            if e.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints `--help` and `--version` as clap renders them; any other problem with the command
/// line as a single line.
fn command_line_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!(
                "mod_wsgi-express: error: no subcommand given; use one of {} (see \
                 mod_wsgi-express --help)",
                SUBCOMMANDS.join(", ")
            );
            ExitCode::from(2)
        }
        _ => {
            let text = e.to_string();
            let first = text
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("bad command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let help = std::env::args()
                .nth(1)
                .filter(|arg| SUBCOMMANDS.contains(&arg.as_str()))
                .map_or_else(|| "--help".to_owned(), |sub| format!("{sub} --help"));
            eprintln!("mod_wsgi-express: error: {first} (see mod_wsgi-express {help})");
            ExitCode::from(2)
        }
    }
}
