//! The thread-per-core runtime under the server and the client: one glommio
//! executor pinned per CPU, each with its own `SO_REUSEPORT` listener on the same
//! address ([`Executors`]), the CPUs it may use ([`allowed_cpus`]), the checks
//! of what the kernel must offer ([`preflight`]), and the errors that stop a start.
//!
//! Every listener is bound before any executor starts, so a bad address fails
//! cleanly; [`Executors::start`] returns once each executor is serving.

mod accept;
mod cpus;
mod executors;
pub mod preflight;

use std::net::SocketAddr;

use thiserror::Error;

pub use accept::{accept_each, ACCEPT_BACKOFF};
pub use cpus::allowed_cpus;
pub use executors::Executors;
pub(crate) use executors::{adopt_listener, bind_single};

/// Why the server could not start. Each is one line for the operator.
#[derive(Debug, Error)]
pub enum StartError {
    /// The kernel or the process limits do not allow io_uring.
    #[error("{0}")]
    Kernel(#[from] preflight::PreflightError),
    /// No CPU to run on, or more asked than allowed.
    #[error("{0}")]
    Cpus(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot listen on --metrics {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An executor could not be created or pinned.
    #[error("cannot start the executor for CPU {cpu}: {reason}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// Why.
        reason: String,
    },
}
