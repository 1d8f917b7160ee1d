//! The scenario sets of `compare`. A case is one of the existing scenarios run
//! with a fixed [`Tuning`], and the figures of its report that the table shows.
//! Most run flat out; the fixed-load cases (`busy-up-400`, `busy-down-400`,
//! `busy-rate-5000`) offer a set rate and show the server's CPU at it, the
//! figure an operator sizes a server by, next to the rate achieved.

use super::CompareSet;
use crate::report::Report;
use crate::scenarios::{Direction, Scenario, Tuning};

/// Which number of a scenario's report a table row shows.
#[derive(Clone, Copy, Debug)]
pub enum Pick {
    /// A figure, by name.
    Figure(&'static str),
    /// The median of a latency histogram, by name.
    P50(&'static str),
    /// The 99th percentile of a latency histogram, by name.
    P99(&'static str),
}

impl Pick {
    /// The number in `report`, if it has it.
    pub fn read(self, report: &Report) -> Option<f64> {
        match self {
            Pick::Figure(name) => report
                .results
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.value),
            Pick::P50(name) => report.latency_us.get(name).map(|p| p.p50 as f64),
            Pick::P99(name) => report.latency_us.get(name).map(|p| p.p99 as f64),
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// What the row shows (with its unit).
    pub label: &'static str,
    /// Where the number comes from.
    pub pick: Pick,
    /// Whether a larger figure is the better one.
    pub higher_is_better: bool,
}

/// One scenario with a fixed tuning.
#[derive(Debug)]
pub struct Case {
    /// Its name on the command line (`--only`) and in the table.
    pub name: &'static str,
    /// What it does, in words.
    pub title: &'static str,
    /// The set it belongs to (`Single` or `Busy`).
    pub set: CompareSet,
    /// The scenario run.
    pub scenario: Scenario,
    /// Its load, over what every run gets (server, password, CPUs, duration).
    pub tuning: Tuning,
    /// The rows it gives.
    pub metrics: &'static [Metric],
    /// Sessions open at once: the descriptors each side needs, about.
    pub sessions: usize,
    /// Whether bulk payload moves (the table then gives server CPU-seconds per GB).
    pub bulk: bool,
}

const THROUGHPUT: &[Metric] = &[Metric {
    label: "MB/s",
    pick: Pick::Figure("throughput"),
    higher_is_better: true,
}];

const STREAMS: &[Metric] = &[Metric {
    label: "streams/s",
    pick: Pick::Figure("streams/s"),
    higher_is_better: true,
}];

const FIRST_BYTE: &[Metric] = &[
    Metric {
        label: "first byte p50 us",
        pick: Pick::P50("first_byte"),
        higher_is_better: false,
    },
    Metric {
        label: "first byte p99 us",
        pick: Pick::P99("first_byte"),
        higher_is_better: false,
    },
];

/// A fixed bulk load (--rate-mbps): what it cost the server, and whether it
/// was held.
const FIXED_BULK: &[Metric] = &[
    SERVER_CPU,
    Metric {
        label: "MB/s achieved",
        pick: Pick::Figure("throughput"),
        higher_is_better: true,
    },
];

/// A fixed rate of short streams (--rate): what it cost the server, and
/// whether it was held.
const FIXED_STREAMS: &[Metric] = &[
    SERVER_CPU,
    Metric {
        label: "streams/s achieved",
        pick: Pick::Figure("streams/s"),
        higher_is_better: true,
    },
];

/// The server's CPU over the run, percent of one CPU (the report's figure).
const SERVER_CPU: Metric = Metric {
    label: "server CPU %",
    pick: Pick::Figure("server CPU"),
    higher_is_better: false,
};

const SESSIONS: &[Metric] = &[Metric {
    label: "sessions/s",
    pick: Pick::Figure("sessions/s"),
    higher_is_better: true,
}];

const IDLE: &[Metric] = &[Metric {
    label: "RSS KiB/session",
    pick: Pick::Figure("RSS per idle session"),
    higher_is_better: false,
}];

/// Every case, in the order they run.
pub const CASES: &[Case] = &[
    Case {
        name: "up",
        title: "bulk upload, 1 stream on 1 session",
        set: CompareSet::Single,
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Up),
            streams: Some(1),
            sessions: Some(1),
            ..Tuning::NONE
        },
        metrics: THROUGHPUT,
        sessions: 1,
        bulk: true,
    },
    Case {
        name: "down",
        title: "bulk download, 8 streams on 2 sessions",
        set: CompareSet::Single,
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Down),
            streams: Some(8),
            sessions: Some(2),
            ..Tuning::NONE
        },
        metrics: THROUGHPUT,
        sessions: 2,
        bulk: true,
    },
    Case {
        name: "streams",
        title: "short streams on 1 session, 32 in flight",
        set: CompareSet::Single,
        scenario: Scenario::Streams,
        tuning: Tuning {
            concurrency: Some(32),
            ..Tuning::NONE
        },
        metrics: STREAMS,
        sessions: 1,
        bulk: false,
    },
    Case {
        name: "streams-rate",
        title: "short streams on 1 session at 5000/s (open loop)",
        set: CompareSet::Single,
        scenario: Scenario::Streams,
        tuning: Tuning {
            rate: Some(5000.0),
            ..Tuning::NONE
        },
        metrics: FIRST_BYTE,
        sessions: 1,
        bulk: false,
    },
    Case {
        name: "handshakes",
        title: "a new session per request, 8 in flight",
        set: CompareSet::Single,
        scenario: Scenario::Handshakes,
        tuning: Tuning {
            concurrency: Some(8),
            ..Tuning::NONE
        },
        metrics: SESSIONS,
        sessions: 8,
        bulk: false,
    },
    Case {
        name: "idle-1000",
        title: "1000 idle sessions",
        set: CompareSet::Single,
        scenario: Scenario::Idle,
        tuning: Tuning {
            sessions: Some(1000),
            ..Tuning::NONE
        },
        metrics: IDLE,
        sessions: 1000,
        bulk: false,
    },
    Case {
        name: "busy-down",
        title: "bulk download, 64 sessions x 1 stream",
        set: CompareSet::Busy,
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Down),
            streams: Some(64),
            sessions: Some(64),
            ..Tuning::NONE
        },
        metrics: THROUGHPUT,
        sessions: 64,
        bulk: true,
    },
    Case {
        name: "busy-up",
        title: "bulk upload, 64 sessions x 1 stream",
        set: CompareSet::Busy,
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Up),
            streams: Some(64),
            sessions: Some(64),
            ..Tuning::NONE
        },
        metrics: THROUGHPUT,
        sessions: 64,
        bulk: true,
    },
    Case {
        name: "busy-down-400",
        title: "bulk download at 400 MB/s over 64 sessions x 1 stream: server CPU",
        set: CompareSet::Busy,
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Down),
            streams: Some(64),
            sessions: Some(64),
            rate_mbps: Some(400.0),
            ..Tuning::NONE
        },
        metrics: FIXED_BULK,
        sessions: 64,
        bulk: true,
    },
    Case {
        name: "busy-up-400",
        title: "bulk upload at 400 MB/s over 64 sessions x 1 stream: server CPU",
        set: CompareSet::Busy,
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Up),
            streams: Some(64),
            sessions: Some(64),
            rate_mbps: Some(400.0),
            ..Tuning::NONE
        },
        metrics: FIXED_BULK,
        sessions: 64,
        bulk: true,
    },
    Case {
        name: "busy-streams",
        title: "short streams on 64 sessions, 512 in flight",
        set: CompareSet::Busy,
        scenario: Scenario::Streams,
        tuning: Tuning {
            sessions: Some(64),
            concurrency: Some(512),
            ..Tuning::NONE
        },
        metrics: STREAMS,
        sessions: 64,
        bulk: false,
    },
    Case {
        name: "busy-rate",
        title: "short streams on 64 sessions at 8000/s (open loop)",
        set: CompareSet::Busy,
        scenario: Scenario::Streams,
        tuning: Tuning {
            sessions: Some(64),
            rate: Some(8000.0),
            ..Tuning::NONE
        },
        metrics: FIRST_BYTE,
        sessions: 64,
        bulk: false,
    },
    Case {
        name: "busy-rate-5000",
        title: "short streams on 64 sessions at 5000/s (open loop): server CPU",
        set: CompareSet::Busy,
        scenario: Scenario::Streams,
        tuning: Tuning {
            sessions: Some(64),
            rate: Some(5000.0),
            ..Tuning::NONE
        },
        metrics: FIXED_STREAMS,
        sessions: 64,
        bulk: false,
    },
    Case {
        name: "idle-5000",
        title: "5,000 idle sessions",
        set: CompareSet::Busy,
        scenario: Scenario::Idle,
        tuning: Tuning {
            sessions: Some(5000),
            concurrency: Some(64),
            ..Tuning::NONE
        },
        metrics: IDLE,
        sessions: 5000,
        bulk: false,
    },
    Case {
        name: "idle-20000",
        title: "20,000 idle sessions",
        set: CompareSet::Busy,
        scenario: Scenario::Idle,
        tuning: Tuning {
            sessions: Some(20000),
            concurrency: Some(64),
            ..Tuning::NONE
        },
        metrics: IDLE,
        sessions: 20000,
        bulk: false,
    },
];

impl Case {
    /// For a fixed-load case (--rate-mbps, --rate): the load offered, and
    /// where its report gives the load achieved, in the same unit.
    pub fn fixed_load(&self) -> Option<(f64, Pick)> {
        match self.scenario {
            Scenario::Throughput => {
                // The paced side: the client's writes, or the source's for download.
                let sent = match self.tuning.direction {
                    Some(Direction::Down) => "download",
                    _ => "upload",
                };
                self.tuning.rate_mbps.map(|mb| (mb, Pick::Figure(sent)))
            }
            Scenario::Streams => self.tuning.rate.map(|r| (r, Pick::Figure("streams/s"))),
            Scenario::Handshakes => self.tuning.rate.map(|r| (r, Pick::Figure("sessions/s"))),
            Scenario::Idle | Scenario::Baseline => None,
        }
    }
}

/// The cases of `set`, narrowed to `only` when it names any. A name of another
/// set is an error.
pub fn select(set: CompareSet, only: &[String]) -> Result<Vec<&'static Case>, String> {
    let in_set = |case: &Case| set == CompareSet::All || case.set == set;
    if let Some(name) = only
        .iter()
        .find(|name| !CASES.iter().any(|c| c.name == *name && in_set(c)))
    {
        let names: Vec<&str> = CASES.iter().filter(|c| in_set(c)).map(|c| c.name).collect();
        return Err(format!(
            "--only {name}: not in this --set (its scenarios: {})",
            names.join(", ")
        ));
    }
    Ok(CASES
        .iter()
        .filter(|c| in_set(c) && (only.is_empty() || only.iter().any(|n| n == c.name)))
        .collect())
}
