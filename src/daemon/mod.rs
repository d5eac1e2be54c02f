//! Daemon mode: WSGI applications in separate processes, forked and supervised by the Apache
//! parent, reached by Apache's children over a Unix socket.
//!
//! - `protocol`: the versioned wire format (sans-I/O codec and blocking helpers);
//! - `manager`: the Apache parent's side: sockets, forking, restarting, stopping;
//! - `worker`: the daemon process: privileges, Python, request threads;
//! - `client`: the Apache child's side: relaying one request to a daemon.

pub mod client;
pub mod manager;
pub mod protocol;
pub mod worker;
