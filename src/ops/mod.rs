//! Running under an operator: systemd notification and watchdog, signals, metrics (and the
//! process's own), and the HTTP server loop every endpoint of the binary runs on.

pub mod http_server;
pub mod log_format;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod signals;
pub mod watchdog;
