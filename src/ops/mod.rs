//! Running under an operator: systemd notification, signals, metrics.

pub mod metrics;
pub mod notify;
pub mod signals;
