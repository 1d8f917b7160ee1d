//! Start-up checks of what glommio needs from the kernel, so a missing piece is one
//! clear line instead of a panic deep inside the executor.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use thiserror::Error;

/// glommio refuses to start below this `RLIMIT_MEMLOCK` (bytes).
pub const MIN_MEMLOCK: u64 = 512 * 1024;

/// A kernel feature or limit the server needs is missing.
#[derive(Debug, Error)]
pub enum PreflightError {
    /// `io_uring_setup` does not exist here.
    #[error(
        "io_uring is not available (io_uring_setup: {0}): the kernel is older than 5.8 or a \
         seccomp profile blocks it; run on Linux >= 5.8, and in Docker use \
         --security-opt seccomp=unconfined or a profile that allows io_uring_* (see kernel-notes.md)"
    )]
    Unsupported(std::io::Error),
    /// io_uring exists but is switched off for this process.
    #[error(
        "io_uring is disabled for this process (io_uring_setup: {0}): check \
         `sysctl kernel.io_uring_disabled` (must be 0, or 1 with this user in \
         kernel.io_uring_group) and any seccomp/LSM policy (see kernel-notes.md)"
    )]
    Disabled(std::io::Error),
    /// io_uring failed for another reason.
    #[error("io_uring_setup failed: {0} (see kernel-notes.md)")]
    Other(std::io::Error),
    /// The locked-memory limit is below what glommio requires.
    #[error(
        "RLIMIT_MEMLOCK is {0} bytes, below the {MIN_MEMLOCK} bytes io_uring needs: raise it \
         with `ulimit -l 512` (or LimitMEMLOCK= in the systemd unit, memlock in \
         /etc/security/limits.conf)"
    )]
    MemlockTooLow(u64),
}

/// Checks that io_uring can be set up and that `RLIMIT_MEMLOCK` is high enough.
pub fn check() -> Result<(), PreflightError> {
    probe_io_uring()?;
    let memlock = memlock_limit();
    if memlock < MIN_MEMLOCK {
        return Err(PreflightError::MemlockTooLow(memlock));
    }
    Ok(())
}

/// Raises this process's descriptor limit (`RLIMIT_NOFILE`) to its hard limit:
/// every session, stream and UDP association holds one. Returns the soft limit
/// before and after.
pub fn raise_descriptor_limit() -> Result<(u64, u64), nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}

fn memlock_limit() -> u64 {
    // Cannot tell: let glommio decide.
    getrlimit(Resource::RLIMIT_MEMLOCK).map_or(u64::MAX, |(soft, _)| soft)
}

#[allow(unsafe_code)]
fn probe_io_uring() -> Result<(), PreflightError> {
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the params buffer we pass, which
    // is large enough for the kernel's struct; the returned fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: fd is a descriptor we just received and own.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    Err(match error.raw_os_error() {
        Some(libc::ENOSYS) => PreflightError::Unsupported(error),
        Some(libc::EPERM) | Some(libc::EACCES) => PreflightError::Disabled(error),
        _ => PreflightError::Other(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_passes() {
        check().expect("io_uring is usable on the test machine");
    }

    #[test]
    fn messages_say_how_to_fix() {
        let text = PreflightError::MemlockTooLow(1024).to_string();
        assert!(text.contains("ulimit -l"), "{text}");
        let text =
            PreflightError::Disabled(std::io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(text.contains("kernel.io_uring_disabled"), "{text}");
    }
}
