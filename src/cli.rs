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
