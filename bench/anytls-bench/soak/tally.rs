//! What the soak counts: well-behaved streams served by kind, well-behaved
//! errors (with the first distinct messages), and per hostile action how often it
//! ran and what it saw. Each executor fills a [`Rec`]; the main thread merges
//! the [`Tally`]s and prints [`Tally::report`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Shared;

/// The kinds of well-behaved streams ([`super::well`]), in report order.
pub const KINDS: [&str; 4] = ["bulk", "short", "udp", "slow"];

/// Distinct error messages kept (later ones are only counted).
const MESSAGES_KEPT: usize = 50;
/// Distinct error messages printed.
const MESSAGES_SHOWN: usize = 8;

/// Streams of one well-behaved kind.
#[derive(Default, Debug, Clone, Copy)]
pub struct Served {
    pub streams: u64,
    /// Payload bytes checked (both directions for an echo).
    pub bytes: u64,
    /// Datagrams checked (UDP).
    pub datagrams: u64,
}

/// Everything one executor counted.
#[derive(Default, Debug)]
pub struct Tally {
    pub served: BTreeMap<&'static str, Served>,
    /// Errors seen by well-behaved clients.
    pub errors: u64,
    /// Distinct error messages with their counts, in first-seen order.
    pub messages: Vec<(String, u64)>,
    /// Messages past [`MESSAGES_KEPT`].
    pub messages_dropped: u64,
    /// Sessions the well-behaved pools dialed.
    pub sessions_dialed: u64,
    /// Per action (abrupt disconnects and hostile), named counters.
    pub actions: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// How long each well-behaved short request/response took, in microseconds.
    pub short_us: Vec<u32>,
}

impl Tally {
    /// Adds another executor's counts.
    pub fn merge(&mut self, other: Tally) {
        for (kind, s) in other.served {
            let mine = self.served.entry(kind).or_default();
            mine.streams += s.streams;
            mine.bytes += s.bytes;
            mine.datagrams += s.datagrams;
        }
        self.errors += other.errors;
        for (message, n) in other.messages {
            self.add_message(message, n);
        }
        self.messages_dropped += other.messages_dropped;
        self.sessions_dialed += other.sessions_dialed;
        self.short_us.extend(other.short_us);
        for (action, counters) in other.actions {
            let mine = self.actions.entry(action).or_default();
            for (name, n) in counters {
                *mine.entry(name).or_default() += n;
            }
        }
    }

    fn add_message(&mut self, message: String, n: u64) {
        if let Some(entry) = self.messages.iter_mut().find(|(m, _)| *m == message) {
            entry.1 += n;
        } else if self.messages.len() < MESSAGES_KEPT {
            self.messages.push((message, n));
        } else {
            self.messages_dropped += n;
        }
    }

    /// The clients' part of the summary.
    /// The `q` quantile (0..=1) of the short requests' times, if any ran.
    pub fn short_quantile(&self, q: f64) -> Option<std::time::Duration> {
        let mut sorted = self.short_us.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted
            .get(at)
            .map(|&us| std::time::Duration::from_micros(u64::from(us)))
    }

    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "well-behaved clients (warm-up included):");
        let _ = writeln!(out, "  errors: {} (goal 0)", self.errors);
        for (message, n) in self.messages.iter().take(MESSAGES_SHOWN) {
            let _ = writeln!(out, "    {n:>6} x {message}");
        }
        let more = self.messages.len().saturating_sub(MESSAGES_SHOWN) as u64;
        if more + self.messages_dropped > 0 {
            let _ = writeln!(
                out,
                "    ... {more} more distinct messages, {} errors not itemised",
                self.messages_dropped
            );
        }
        if let (Some(p50), Some(p99), Some(max)) = (
            self.short_quantile(0.5),
            self.short_quantile(0.99),
            self.short_quantile(1.0),
        ) {
            let _ = writeln!(
                out,
                "  short request/response (dial or reuse, request, whole response): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
        let total: u64 = self.served.values().map(|s| s.streams).sum();
        let _ = writeln!(
            out,
            "  streams served: {total} on {} sessions dialed (reused sessions)",
            self.sessions_dialed
        );
        for kind in KINDS {
            let s = self.served.get(kind).copied().unwrap_or_default();
            let what = match kind {
                "bulk" => format!("{:.1} MiB echoed and checked", s.bytes as f64 / 1048576.0),
                "udp" => format!("{} datagrams echoed and checked", s.datagrams),
                "slow" => format!(
                    "{:.1} MiB read slowly and checked",
                    s.bytes as f64 / 1048576.0
                ),
                _ => format!("{:.1} MiB of responses checked", s.bytes as f64 / 1048576.0),
            };
            let _ = writeln!(out, "    {kind:<6} {:>9}  ({what})", s.streams);
        }
        let _ = writeln!(
            out,
            "abrupt disconnects and hostile clients (actions done, and what each saw):"
        );
        for (action, counters) in &self.actions {
            let list: Vec<String> = counters
                .iter()
                .filter(|(name, _)| **name != "runs")
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  {action:<18} {:>6} runs: {}",
                counters.get("runs").copied().unwrap_or(0),
                list.join(", ")
            );
        }
        out
    }
}

/// An executor's recorder.
pub struct Rec {
    tally: RefCell<Tally>,
    shared: Arc<Shared>,
}

impl Rec {
    pub fn new(shared: Arc<Shared>) -> Rc<Rec> {
        Rc::new(Rec {
            tally: RefCell::default(),
            shared,
        })
    }

    /// A well-behaved stream of `kind` served.
    /// A short request/response took `took`.
    pub fn short_took(&self, took: std::time::Duration) {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.tally.borrow_mut().short_us.push(us);
    }

    pub fn served(&self, kind: &'static str, bytes: u64, datagrams: u64) {
        let mut tally = self.tally.borrow_mut();
        let s = tally.served.entry(kind).or_default();
        s.streams += 1;
        s.bytes += bytes;
        s.datagrams += datagrams;
        self.shared.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// An error seen by a well-behaved client.
    pub fn error(&self, kind: &str, message: &str) {
        log::warn!("well-behaved {kind}: {message}");
        let mut tally = self.tally.borrow_mut();
        tally.errors += 1;
        tally.add_message(format!("{kind}: {message}"), 1);
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to counter `name` of `action`.
    pub fn count(&self, action: &'static str, name: &'static str, n: u64) {
        if name == "runs" && action != "abrupt" {
            self.shared.hostile.fetch_add(n, Ordering::Relaxed);
        }
        *self
            .tally
            .borrow_mut()
            .actions
            .entry(action)
            .or_default()
            .entry(name)
            .or_default() += n;
    }

    pub fn sessions_dialed(&self, n: u64) {
        self.tally.borrow_mut().sessions_dialed += n;
    }

    /// The counts so far, leaving an empty tally.
    pub fn take(&self) -> Tally {
        self.tally.take()
    }
}
