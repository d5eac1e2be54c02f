//! `WSGIDaemonProcess name option=value …`: the definition of a daemon process group, parsed
//! and checked option by option (unknown options and bad values are configuration errors).

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

const DIRECTIVE: &str = "WSGIDaemonProcess";

/// A user or group as written: a name, or `#id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A name to look up in the system's user or group database.
    Name(String),
    /// A numeric id (`#1000`).
    Id(u32),
}

impl Principal {
    fn parse(option: &str, value: &str) -> Result<Self, ConfigError> {
        if let Some(id) = value.strip_prefix('#') {
            let id = id
                .parse()
                .map_err(|_| bad(option, value, "expected a name or #id"))?;
            return Ok(Self::Id(id));
        }
        if value.is_empty() {
            return Err(bad(option, value, "the name is empty"));
        }
        Ok(Self::Name(value.to_owned()))
    }
}

/// One daemon process group.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    /// The group's name (what `WSGIProcessGroup` and `process-group=` refer to).
    pub name: String,
    /// `processes` (default 1).
    pub processes: u32,
    /// Whether `processes` was given at all (then `wsgi.multiprocess` is true).
    pub processes_given: bool,
    /// `threads` (default 15).
    pub threads: u32,
    /// `user` (default: Apache's `User`).
    pub user: Option<Principal>,
    /// `group` (default: Apache's `Group`).
    pub group: Option<Principal>,
    /// `supplementary-groups`.
    pub supplementary_groups: Vec<Principal>,
    /// `umask` (octal).
    pub umask: Option<u32>,
    /// `home`: the daemon's working folder, also put first on `sys.path`.
    pub home: Option<PathBuf>,
    /// `display-name` (`%{GROUP}` means `(wsgi:NAME)`).
    pub display_name: Option<String>,
    /// `lang`: `LANG` for the daemon.
    pub lang: Option<String>,
    /// `locale`: `LC_ALL` for the daemon.
    pub locale: Option<String>,
    /// `python-home`.
    pub python_home: Option<PathBuf>,
    /// `python-path` (colon-separated folders).
    pub python_path: Vec<PathBuf>,
    /// `python-eggs`.
    pub python_eggs: Option<PathBuf>,
    /// `stack-size` of request threads, in bytes.
    pub stack_size: Option<usize>,
    /// `maximum-requests` per process (0: no limit).
    pub maximum_requests: u64,
    /// `inactivity-timeout`.
    pub inactivity_timeout: Option<Duration>,
    /// `request-timeout`.
    pub request_timeout: Option<Duration>,
    /// `deadlock-timeout` (default 300 s).
    pub deadlock_timeout: Option<Duration>,
    /// `startup-timeout`.
    pub startup_timeout: Option<Duration>,
    /// `graceful-timeout` (default 15 s).
    pub graceful_timeout: Duration,
    /// `eviction-timeout` (0: the graceful timeout).
    pub eviction_timeout: Option<Duration>,
    /// `shutdown-timeout` (default 5 s).
    pub shutdown_timeout: Duration,
    /// `restart-interval`.
    pub restart_interval: Option<Duration>,
    /// `connect-timeout` (default 15 s).
    pub connect_timeout: Duration,
    /// `socket-timeout` (0: Apache's `Timeout`).
    pub socket_timeout: Option<Duration>,
    /// `queue-timeout`.
    pub queue_timeout: Option<Duration>,
    /// `listen-backlog` (default 100).
    pub listen_backlog: u32,
    /// `header-buffer-size` (0: 32768).
    pub header_buffer_size: usize,
    /// `response-buffer-size` (0: default).
    pub response_buffer_size: usize,
    /// `response-socket-timeout`.
    pub response_socket_timeout: Option<Duration>,
    /// `send-buffer-size` (SO_SNDBUF, 0: the system's).
    pub send_buffer_size: usize,
    /// `receive-buffer-size` (SO_RCVBUF, 0: the system's).
    pub receive_buffer_size: usize,
    /// `socket-user`: owner of the listening socket.
    pub socket_user: Option<Principal>,
    /// `cpu-time-limit` in seconds (RLIMIT_CPU).
    pub cpu_time_limit: Option<u64>,
    /// `cpu-priority` (nice value).
    pub cpu_priority: i32,
    /// `memory-limit` in bytes (RLIMIT_DATA).
    pub memory_limit: Option<u64>,
    /// `virtual-memory-limit` in bytes (RLIMIT_AS).
    pub virtual_memory_limit: Option<u64>,
    /// `script-user`: scripts must belong to this user.
    pub script_user: Option<Principal>,
    /// `script-group`: scripts must belong to this group.
    pub script_group: Option<Principal>,
    /// `server-metrics`.
    pub server_metrics: bool,
}

impl DaemonConfig {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            processes: 1,
            processes_given: false,
            threads: 15,
            user: None,
            group: None,
            supplementary_groups: Vec::new(),
            umask: None,
            home: None,
            display_name: None,
            lang: None,
            locale: None,
            python_home: None,
            python_path: Vec::new(),
            python_eggs: None,
            stack_size: None,
            maximum_requests: 0,
            inactivity_timeout: None,
            request_timeout: None,
            deadlock_timeout: Some(Duration::from_secs(300)),
            startup_timeout: None,
            graceful_timeout: Duration::from_secs(15),
            eviction_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
            restart_interval: None,
            connect_timeout: Duration::from_secs(15),
            socket_timeout: None,
            queue_timeout: None,
            listen_backlog: 100,
            header_buffer_size: 0,
            response_buffer_size: 0,
            response_socket_timeout: None,
            send_buffer_size: 0,
            receive_buffer_size: 0,
            socket_user: None,
            cpu_time_limit: None,
            cpu_priority: 0,
            memory_limit: None,
            virtual_memory_limit: None,
            script_user: None,
            script_group: None,
            server_metrics: false,
        }
    }

    /// Parses the directive's arguments: the name, then `option=value` pairs.
    pub fn parse(args: &[String]) -> Result<Self, ConfigError> {
        let [name, options @ ..] = args else {
            return Err(ConfigError::invalid(
                DIRECTIVE,
                "expects a group name, then options",
            ));
        };
        if name.is_empty() || name.starts_with('%') || name.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                DIRECTIVE,
                format!("'{name}' is not a usable group name"),
            ));
        }
        let mut config = Self::new(name);
        for option in options {
            let Some((key, value)) = option.split_once('=') else {
                return Err(ConfigError::invalid(
                    DIRECTIVE,
                    format!("'{option}' is not of the form option=value"),
                ));
            };
            config.set(key, super::unquote(value))?;
        }
        if config.script_user.is_some() && config.script_group.is_some() {
            return Err(ConfigError::invalid(
                DIRECTIVE,
                "only one of script-user and script-group is allowed",
            ));
        }
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let secs = |v: &str| -> Result<Option<Duration>, ConfigError> {
            let n = number(key, v)?;
            Ok((n > 0).then(|| Duration::from_secs(n)))
        };
        match key {
            "processes" => {
                self.processes = bounded(key, value, 1, 65_535)?;
                self.processes_given = true;
            }
            "threads" => self.threads = bounded(key, value, 1, 65_533)?,
            "user" => {
                let user = Principal::parse(key, value)?;
                if matches!(&user, Principal::Id(0)) || user == Principal::Name("root".into()) {
                    return Err(ConfigError::invalid(
                        DIRECTIVE,
                        "user=root: a WSGI daemon process may not run as root",
                    ));
                }
                if let Principal::Name(name) = &user
                    && !matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
                {
                    return Err(bad(key, value, "there is no such user on this system"));
                }
                self.user = Some(user);
            }
            "group" => {
                let group = Principal::parse(key, value)?;
                if let Principal::Name(name) = &group
                    && !matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
                {
                    return Err(bad(key, value, "there is no such group on this system"));
                }
                self.group = Some(group);
            }
            "supplementary-groups" => {
                self.supplementary_groups = value
                    .split(',')
                    .map(|g| Principal::parse(key, g.trim()))
                    .collect::<Result<_, _>>()?;
                if self.supplementary_groups.len() > 64 {
                    return Err(bad(key, value, "too many supplementary groups"));
                }
            }
            "umask" => {
                self.umask = Some(
                    u32::from_str_radix(value, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| bad(key, value, "expected an octal mask such as 0022"))?,
                );
            }
            "home" => self.home = Some(absolute(key, value)?),
            "display-name" => self.display_name = Some(non_empty(key, value)?),
            "lang" => self.lang = Some(non_empty(key, value)?),
            "locale" => self.locale = Some(non_empty(key, value)?),
            "python-home" => self.python_home = Some(absolute(key, value)?),
            "python-path" => {
                self.python_path = value
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect();
            }
            "python-eggs" => self.python_eggs = Some(absolute(key, value)?),
            "stack-size" => {
                self.stack_size =
                    Some(usize::try_from(bounded(key, value, 1, u32::MAX)?).unwrap_or(usize::MAX));
            }
            "maximum-requests" => self.maximum_requests = number(key, value)?,
            "inactivity-timeout" => self.inactivity_timeout = secs(value)?,
            "request-timeout" => self.request_timeout = secs(value)?,
            "deadlock-timeout" => self.deadlock_timeout = secs(value)?,
            "startup-timeout" => self.startup_timeout = secs(value)?,
            "graceful-timeout" => self.graceful_timeout = Duration::from_secs(number(key, value)?),
            "eviction-timeout" => self.eviction_timeout = secs(value)?,
            "shutdown-timeout" => self.shutdown_timeout = Duration::from_secs(number(key, value)?),
            "restart-interval" => self.restart_interval = secs(value)?,
            "connect-timeout" => self.connect_timeout = Duration::from_secs(number(key, value)?),
            "socket-timeout" => self.socket_timeout = secs(value)?,
            "queue-timeout" => self.queue_timeout = secs(value)?,
            "response-socket-timeout" => self.response_socket_timeout = secs(value)?,
            "listen-backlog" => self.listen_backlog = bounded(key, value, 1, 65_535)?,
            "header-buffer-size" => self.header_buffer_size = size(key, value, 8192)?,
            "response-buffer-size" => self.response_buffer_size = size(key, value, 65_536)?,
            "send-buffer-size" => self.send_buffer_size = size(key, value, 512)?,
            "receive-buffer-size" => self.receive_buffer_size = size(key, value, 512)?,
            "socket-user" => self.socket_user = Some(Principal::parse(key, value)?),
            "cpu-time-limit" => self.cpu_time_limit = Some(number(key, value)?).filter(|&n| n > 0),
            "cpu-priority" => {
                self.cpu_priority = value
                    .parse()
                    .ok()
                    .filter(|p| (-20..=19).contains(p))
                    .ok_or_else(|| bad(key, value, "expected a nice value from -20 to 19"))?;
            }
            "memory-limit" => self.memory_limit = Some(number(key, value)?).filter(|&n| n > 0),
            "virtual-memory-limit" => {
                self.virtual_memory_limit = Some(number(key, value)?).filter(|&n| n > 0);
            }
            "script-user" => self.script_user = Some(Principal::parse(key, value)?),
            "script-group" => self.script_group = Some(Principal::parse(key, value)?),
            "server-metrics" => self.server_metrics = super::parse_on_off(DIRECTIVE, value)?,
            _ => {
                return Err(ConfigError::UnknownOption {
                    directive: DIRECTIVE,
                    option: key.to_owned(),
                    expected: OPTIONS,
                });
            }
        }
        Ok(())
    }
}

const OPTIONS: &str = "processes, threads, user, group, supplementary-groups, umask, home, \
    display-name, lang, locale, python-home, python-path, python-eggs, stack-size, \
    maximum-requests, inactivity-timeout, request-timeout, deadlock-timeout, startup-timeout, \
    graceful-timeout, eviction-timeout, shutdown-timeout, restart-interval, connect-timeout, \
    socket-timeout, queue-timeout, response-socket-timeout, listen-backlog, header-buffer-size, \
    response-buffer-size, send-buffer-size, receive-buffer-size, socket-user, cpu-time-limit, \
    cpu-priority, memory-limit, virtual-memory-limit, script-user, script-group, server-metrics";

fn bad(option: &str, value: &str, why: &str) -> ConfigError {
    ConfigError::invalid(DIRECTIVE, format!("invalid {option} '{value}': {why}"))
}

fn number(option: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .parse()
        .map_err(|_| bad(option, value, "expected a whole number, 0 or more"))
}

fn bounded(option: &str, value: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            bad(
                option,
                value,
                &format!("expected a whole number from {min} to {max}"),
            )
        })
}

/// A buffer size: 0 (the default) or at least `min`.
fn size(option: &str, value: &str, min: usize) -> Result<usize, ConfigError> {
    let n = usize::try_from(number(option, value)?).unwrap_or(usize::MAX);
    if n != 0 && n < min {
        return Err(bad(option, value, &format!("must be 0 or at least {min}")));
    }
    Ok(n)
}

fn absolute(option: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(bad(option, value, "expected an absolute path"))
    }
}

fn non_empty(option: &str, value: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        Err(bad(option, value, "the value is empty"))
    } else {
        Ok(value.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<DaemonConfig, ConfigError> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        DaemonConfig::parse(&args)
    }

    #[test]
    fn defaults() {
        let d = parse(&["site"]).unwrap();
        assert_eq!((d.processes, d.threads, d.processes_given), (1, 15, false));
        assert_eq!(d.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(d.deadlock_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn options_are_parsed() {
        let d = parse(&[
            "site",
            "processes=2",
            "threads=4",
            "user=#1000",
            "group=www-data",
            "umask=0027",
            "home=/srv",
            "python-path=/a:/b",
            "memory-limit=1000000",
            "request-timeout=30",
            "cpu-priority=-5",
        ])
        .unwrap();
        assert_eq!((d.processes, d.threads, d.processes_given), (2, 4, true));
        assert_eq!(d.user, Some(Principal::Id(1000)));
        assert_eq!(d.group, Some(Principal::Name("www-data".into())));
        assert_eq!(d.umask, Some(0o027));
        assert_eq!(d.python_path.len(), 2);
        assert_eq!(d.memory_limit, Some(1_000_000));
        assert_eq!(d.request_timeout, Some(Duration::from_secs(30)));
        assert_eq!(d.cpu_priority, -5);
        let quoted = parse(&[
            "site",
            "python-home=\"/srv/venv\"",
            "display-name='%{GROUP}'",
        ])
        .unwrap();
        assert_eq!(quoted.python_home, Some(PathBuf::from("/srv/venv")));
        assert_eq!(quoted.display_name.as_deref(), Some("%{GROUP}"));
    }

    #[test]
    fn bad_input_is_refused() {
        for args in [
            &["site", "colour=red"][..],
            &["site", "processes=0"],
            &["site", "threads=x"],
            &["site", "user=root"],
            &["site", "user=#0"],
            &["site", "umask=9"],
            &["site", "home=relative"],
            &["site", "header-buffer-size=100"],
            &["site", "script-user=a", "script-group=b"],
            &["site", "noequals"],
            &["site", "python-home=\"relative\""],
            &["%{GLOBAL}"],
            &[],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        let e = parse(&["site", "colour=red"]).unwrap_err().to_string();
        assert!(e.contains("unknown option 'colour'"), "{e}");
        let e = parse(&["site", "user=root"]).unwrap_err().to_string();
        assert!(e.contains("may not run as root"), "{e}");
    }
}
