//! What the binaries share at their edge: logging set-up, and start-up failures
//! reported as one line with exit code 2.

use std::process::ExitCode;

/// A start-up problem: printed as one error line, exit code 2.
pub struct Fatal(pub String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

/// Sets up `env_logger` from `RUST_LOG` (default `info`), runs `body`, and turns
/// its outcome into the process exit code.
pub fn main_with(body: impl FnOnce() -> Result<(), Fatal>) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            log::error!("{message}");
            ExitCode::from(2)
        }
    }
}

/// Returns memory that closed connections freed to the kernel. glibc keeps freed
/// heap pages otherwise, so a burst (a scan of thousands of connections) would
/// leave the resident size high long after every connection is gone.
#[allow(unsafe_code)]
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made (make it before any
/// executor thread starts).
pub struct StopSignals(signal_hook::iterator::Signals);

/// Starts catching SIGINT and SIGTERM.
pub fn stop_signals() -> std::io::Result<StopSignals> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    Ok(StopSignals(signal_hook::iterator::Signals::new([
        SIGINT, SIGTERM,
    ])?))
}

impl StopSignals {
    /// Blocks the calling thread until one of them arrives.
    pub fn wait(mut self) {
        self.0.forever().next();
    }
}
