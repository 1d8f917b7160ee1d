//! What a worker counts: successes, payload bytes, errors by kind (with one
//! example message each), latency histograms, its measurement window and its
//! own CPU time. Each executor fills its own [`Tally`] through a [`Recorder`];
//! the main thread merges them. [`Live`] holds the few atomic counters the
//! progress line reads while a run is going.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::procfs;

/// Counters shared with the progress line (relaxed atomics, read roughly).
#[derive(Default)]
pub struct Live {
    /// Operations completed.
    pub ok: AtomicU64,
    /// Payload bytes moved, both directions.
    pub bytes: AtomicU64,
    /// Failed operations.
    pub errors: AtomicU64,
}

impl Live {
    /// (ok, bytes, errors) now.
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// TCP connect, TLS handshake or the authentication preamble failed.
    Connect,
    /// The session ended (wrong password, server gone, Alert).
    SessionClosed,
    /// The server answered SYNACK with an error (target unreachable).
    Refused,
    /// The operation took longer than --op-timeout.
    Timeout,
    /// Writing failed.
    Write,
    /// The stream or connection ended before the expected bytes arrived.
    ShortResponse,
    /// Open loop: too many operations in flight, this one was not started.
    Overload,
}

impl Failure {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::SessionClosed => "session_closed",
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Write => "write",
            Failure::ShortResponse => "short_response",
            Failure::Overload => "overload",
        }
    }
}

/// A failed operation: its kind and what was said about it.
#[derive(Debug)]
pub struct Failed {
    /// The kind.
    pub kind: Failure,
    /// A human-readable detail (error text, SYNACK text, byte counts).
    pub detail: String,
}

impl Failed {
    /// A failure of `kind` described by `detail`.
    pub fn new(kind: Failure, detail: impl ToString) -> Failed {
        Failed {
            kind,
            detail: detail.to_string(),
        }
    }
}

/// Count and first example of one kind of error.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ErrorCount {
    /// How many.
    pub count: u64,
    /// The first one's message.
    pub example: String,
}

/// A worker's results; merged across workers by [`Tally::merge`].
pub struct Tally {
    /// Successful operations (streams, sessions, handshakes, established bulk streams).
    pub ok: u64,
    /// Payload bytes sent.
    pub bytes_up: u64,
    /// Payload bytes received.
    pub bytes_down: u64,
    /// Operations cut off by the end of the run (neither success nor error).
    pub cancelled: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, ErrorCount>,
    /// Latency histograms in microseconds, by name.
    pub latency: BTreeMap<&'static str, Histogram<u64>>,
    /// Start and end of the measured interval.
    pub window: Option<(Instant, Instant)>,
    /// CPU time of the worker threads during their windows.
    pub cpu: Duration,
    /// Sum of the workers' window lengths (to turn `cpu` into a percentage).
    pub busy_wall: Duration,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ok: 0,
            bytes_up: 0,
            bytes_down: 0,
            cancelled: 0,
            errors: BTreeMap::new(),
            latency: BTreeMap::new(),
            window: None,
            cpu: Duration::ZERO,
            busy_wall: Duration::ZERO,
        }
    }
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
        self.cancelled += other.cancelled;
        for (name, e) in other.errors {
            let mine = self.errors.entry(name).or_default();
            if mine.count == 0 {
                mine.example = e.example;
            }
            mine.count += e.count;
        }
        for (name, h) in other.latency {
            let mine = self.latency.entry(name).or_insert_with(new_histogram);
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.add(&h);
        }
        self.window = match (self.window, other.window) {
            (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
            (a, b) => a.or(b),
        };
        self.cpu += other.cpu;
        self.busy_wall += other.busy_wall;
    }

    /// Length of the measured interval (zero if nothing was measured).
    pub fn wall(&self) -> Duration {
        self.window.map_or(Duration::ZERO, |(a, b)| b - a)
    }

    /// Generator CPU use during the windows, percent of one CPU per worker.
    pub fn cpu_percent(&self) -> Option<f64> {
        (self.busy_wall > Duration::ZERO)
            .then(|| self.cpu.as_secs_f64() / self.busy_wall.as_secs_f64() * 100.0)
    }
}

/// Records into one worker's [`Tally`] and the shared [`Live`] counters.
pub struct Recorder {
    tally: RefCell<Tally>,
    live: Arc<Live>,
    cpu_at_start: Cell<Option<Duration>>,
}

impl Recorder {
    /// An empty recorder feeding `live`.
    pub fn new(live: Arc<Live>) -> Recorder {
        Recorder {
            tally: RefCell::default(),
            live,
            cpu_at_start: Cell::new(None),
        }
    }

    /// Marks the start of the measured interval (also samples this thread's CPU).
    pub fn start_window(&self) -> Instant {
        let now = Instant::now();
        self.cpu_at_start.set(procfs::this_thread_cpu());
        self.tally.borrow_mut().window = Some((now, now));
        now
    }

    /// Marks the end of the measured interval.
    pub fn end_window(&self) {
        let now = Instant::now();
        let mut tally = self.tally.borrow_mut();
        if let Some((start, _)) = tally.window {
            tally.window = Some((start, now));
            tally.busy_wall = now - start;
            if let (Some(a), Some(b)) = (self.cpu_at_start.get(), procfs::this_thread_cpu()) {
                tally.cpu = b.saturating_sub(a);
            }
        }
    }

    /// One successful operation.
    pub fn ok(&self) {
        self.tally.borrow_mut().ok += 1;
        self.live.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// A latency sample under `name`.
    pub fn latency(&self, name: &'static str, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.tally
            .borrow_mut()
            .latency
            .entry(name)
            .or_insert_with(new_histogram)
            .saturating_record(micros.max(1));
    }

    /// Payload bytes sent.
    pub fn up(&self, n: usize) {
        self.tally.borrow_mut().bytes_up += n as u64;
        self.live.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Payload bytes received.
    pub fn down(&self, n: usize) {
        self.tally.borrow_mut().bytes_down += n as u64;
        self.live.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// An operation cut off by the end of the run.
    pub fn cancelled(&self) {
        self.tally.borrow_mut().cancelled += 1;
    }

    /// A failed operation.
    pub fn fail(&self, failed: Failed) {
        let mut tally = self.tally.borrow_mut();
        let entry = tally.errors.entry(failed.kind.name()).or_default();
        if entry.count == 0 {
            entry.example = failed.detail;
        }
        entry.count += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The tally so far (the recorder is left empty).
    pub fn take(&self) -> Tally {
        self.tally.take()
    }
}

/// A share of --count: a worker's remaining units of work.
pub struct Budget {
    left: Cell<Option<u64>>,
}

impl Budget {
    /// `None` = unlimited.
    pub fn new(units: Option<u64>) -> Budget {
        Budget {
            left: Cell::new(units),
        }
    }

    /// Takes up to `want` units; how many were granted (0 = exhausted).
    pub fn claim(&self, want: u64) -> u64 {
        match self.left.get() {
            None => want,
            Some(left) => {
                let got = left.min(want);
                self.left.set(Some(left - got));
                got
            }
        }
    }

    /// Whether no unit is left.
    pub fn exhausted(&self) -> bool {
        self.left.get() == Some(0)
    }
}

/// Worker `index`'s share of `total` split over `workers` (the first ones get
/// the remainder).
pub fn share(total: u64, workers: usize, index: usize) -> u64 {
    let workers = workers as u64;
    let index = index as u64;
    total / workers + u64::from(index < total % workers)
}
