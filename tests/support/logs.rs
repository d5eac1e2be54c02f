//! Error-log scanning: finds the lines of an Apache error log that report a problem
//! (level `warn` or worse) and that no allow pattern excuses.

use regex::Regex;

/// Message ids that are always allowed.
///
/// In this harness's setup Apache logs nothing at `warn` or worse on a clean start and
/// stop (checked with Apache 2.4 on Debian 12 for all three MPMs): its start-up and
/// shut-down lines are at `notice`. They are "configured -- resuming normal operations"
/// (AH00489 event, AH00292 worker, AH00163 prefork), AH00094 "Command line", "caught
/// SIGTERM, shutting down" (AH00491 event, AH00295 worker, AH00169 prefork) and AH00492
/// "caught SIGWINCH". They are listed anyway so that a future Apache that logs them
/// higher does not fail every test, as is AH00558, the warning about a missing
/// `ServerName`, which a snippet could provoke. AH03093 ("apr_pollset_add failure for keep
/// alive", Bad file descriptor) is the event MPM's own race when a test stops Apache the moment
/// a keep-alive request completes: the poll set is already gone.
const BUILTIN_ALLOWED: &[&str] = &[
    "AH00558", "AH00489", "AH00163", "AH00292", "AH00094", "AH00491", "AH00295", "AH00492",
    "AH00169", "AH03093",
];

/// Levels that make a log line a problem unless it is allowed.
const PROBLEM_LEVELS: &[&str] = &["warn", "error", "crit", "alert", "emerg"];

/// Returns the lines of `log` at level `warn`, `error`, `crit`, `alert` or `emerg` that
/// match neither a built-in allowance nor any pattern in `allow`.
///
/// A line's level is read from Apache's default error-log format,
/// `[time] [module:level] [pid ...] message`, e.g. `[wsgi:error]` or `[mpm_event:warn]`.
/// Lines in any other shape (such as raw output a child wrote to stderr) are never
/// flagged. Each allow pattern matches a line if the line contains it as a substring or,
/// when it is a valid regular expression, if the expression matches somewhere in it.
pub fn unexpected_log_lines(log: &str, allow: &[String]) -> Vec<String> {
    let matchers: Vec<AllowPattern> = allow.iter().map(|p| AllowPattern::new(p)).collect();
    log.lines()
        .filter(|line| level_of(line).is_some_and(|level| PROBLEM_LEVELS.contains(&level)))
        .filter(|line| !BUILTIN_ALLOWED.iter().any(|id| line.contains(id)))
        .filter(|line| !matchers.iter().any(|m| m.matches(line)))
        .map(str::to_owned)
        .collect()
}

/// The level of an error-log line (`"error"` for `[... ] [wsgi:error] ...`), if the line
/// has Apache's format.
fn level_of(line: &str) -> Option<&str> {
    let after_time = line.strip_prefix('[')?.split_once("] [")?.1;
    let tag = after_time.split_once(']')?.0;
    let level = tag.rsplit(':').next()?.trim();
    Some(level)
}

/// One allow pattern: a substring, and the same text as a regex when it compiles.
struct AllowPattern<'a> {
    text: &'a str,
    regex: Option<Regex>,
}

impl<'a> AllowPattern<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            regex: Regex::new(text).ok(),
        }
    }

    fn matches(&self, line: &str) -> bool {
        line.contains(self.text) || self.regex.as_ref().is_some_and(|r| r.is_match(line))
    }
}

/// The last `count` lines of `log`, for failure messages.
pub(crate) fn tail(log: &str, count: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}
