//! The servers under test and the machine state each run starts from.
//!
//! [`Server`] starts a server command pinned to one CPU (through `taskset -c`
//! when util-linux has it, else by spawning from a thread pinned to that CPU:
//! the child inherits the mask), waits until its port accepts, and kills it when
//! dropped. Every running server is also listed in [`RUNNING`], so that a panic
//! (the release profile aborts, so no `Drop` runs) or SIGINT/SIGTERM/SIGHUP
//! still kills it: see [`install_cleanup`]. [`settle_time_wait`] waits for
//! TIME_WAIT sockets of earlier runs to go away; [`raise_nofile_limit`] lifts
//! the descriptor limit that many idle sessions need.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procfs;

/// Process ids of the servers running now.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// A server process; killed (and reaped) when dropped.
pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `argv` pinned to `cpu` with GOMAXPROCS=1, its output going to
    /// `log`, and waits (at most `limit`) until `addr` accepts a connection.
    pub fn start(
        argv: &[String],
        cpu: usize,
        addr: SocketAddr,
        limit: Duration,
        log: &Path,
    ) -> Result<Server, String> {
        let (program, rest) = argv.split_first().ok_or("empty server command")?;
        if program.contains('/') && !Path::new(program).is_file() {
            return Err(format!("{program}: no such file"));
        }
        let output = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let command = |program: &str| {
            let mut command = Command::new(program);
            command
                .env("GOMAXPROCS", "1")
                .stdin(Stdio::null())
                .stdout(output.try_clone().map_or(Stdio::null(), Stdio::from))
                .stderr(errors.try_clone().map_or(Stdio::null(), Stdio::from));
            command
        };
        let mut taskset = command("taskset");
        taskset
            .arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(rest);
        let child = match taskset.spawn() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut direct = command(program);
                direct.args(rest);
                spawn_pinned(direct, cpu)
            }
            spawned => spawned,
        }
        .map_err(|e| format!("cannot start {program}: {e}"))?;
        let mut server = Server {
            child,
            log: log.to_owned(),
        };
        lock_running().push(server.pid());
        server.wait_for_port(addr, limit)?;
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the server has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn wait_for_port(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "the server exited ({status}) before accepting on {addr}{}",
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, POLL * 4).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the server did not accept on {addr} within {limit:?}{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of the server's output, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its last output ({}):\n  {tail}", self.log.display())
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.pid();
        lock_running().retain(|p| *p != pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lock_running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Spawns `command` from a thread pinned to `cpu`, so the child starts with
/// that CPU mask (for machines without taskset).
fn spawn_pinned(mut command: Command, cpu: usize) -> io::Result<Child> {
    std::thread::spawn(move || {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            return Err(io::Error::other(format!(
                "cannot pin a thread to CPU {cpu}"
            )));
        }
        command.spawn()
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
}

/// Kills every server still running (from a panic or a signal).
fn kill_running() {
    // try_lock: a panic while the list is locked must not deadlock here.
    let pids = match RUNNING.try_lock() {
        Ok(pids) => pids.clone(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Makes sure the servers die with this process: a panic hook (before the
/// release profile's abort) and a thread that, on SIGINT, SIGTERM or SIGHUP,
/// kills them and exits (130 for SIGINT). Normal returns and errors are covered
/// by [`Server`]'s `Drop`.
pub fn install_cleanup() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut outcome = Ok(());
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            kill_running();
            previous(info);
        }));
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        outcome = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| format!("cannot handle signals: {e}"))
            .map(|mut signals| {
                std::thread::spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        kill_running();
                        eprintln!(
                            "anytls-bench compare: stopped by signal {signal}, servers killed"
                        );
                        std::process::exit(128 + signal);
                    }
                });
            });
    });
    outcome
}

/// A free port on 127.0.0.1 (bound and released: the kernel hands out another
/// one next, so the server can bind it).
pub fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The TIME_WAIT count a run started with.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TimeWait {
    /// Sockets in TIME_WAIT when the run started (`None`: /proc/net/sockstat unreadable).
    pub at_start: Option<u64>,
    /// Seconds spent waiting for the count to drop.
    pub waited_s: f64,
    /// Whether the wait ended at its bound with the count still too high.
    pub bound_hit: bool,
}

/// Waits (polling every 0.5 s, at most `bound`) until fewer than `max` TCP
/// sockets are in TIME_WAIT: the loopback connections of one run otherwise slow
/// the next one's choice of local ports.
pub fn settle_time_wait(max: u64, bound: Duration) -> TimeWait {
    let started = Instant::now();
    let mut told = false;
    loop {
        let count = procfs::time_wait();
        let waited = started.elapsed();
        let bound_hit = waited >= bound;
        if count.is_none_or(|n| n < max) || bound_hit {
            return TimeWait {
                at_start: count,
                waited_s: waited.as_secs_f64(),
                bound_hit,
            };
        }
        if !told {
            told = true;
            eprintln!(
                "  waiting for {} TIME_WAIT sockets to drop below {max} (at most {bound:?})",
                count.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Raises this process's RLIMIT_NOFILE to its hard limit (the servers started
/// later inherit it); the limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}
