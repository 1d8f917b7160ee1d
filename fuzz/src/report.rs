//! What a run found: [`Report`], one [`TargetReport`] per target and the distinct
//! [`Failure`]s, how reports of parallel jobs merge, and how a report prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::Target;

/// What broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The decoder (or an encoder it was checked against) panicked.
    Panic,
    /// A contract check failed: wrong length, lost round trip, dishonest "need more".
    Invariant,
    /// The decoder allocated more than the bound for its input.
    Allocation,
}

/// One distinct failure, with the first input that caused it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The target that found it.
    pub target: Target,
    /// What kind of failure.
    pub kind: FailureKind,
    /// What went wrong (a panic's message and location, or the broken invariant).
    pub message: String,
    /// The first input that caused it.
    pub input: Vec<u8>,
    /// Where that input was saved.
    pub saved: Option<PathBuf>,
    /// How many inputs failed this same way.
    pub count: u64,
    /// The panic's backtrace, when it was one.
    pub backtrace: Option<String>,
}

/// Totals of one target.
#[derive(Clone, Debug)]
pub struct TargetReport {
    /// The target.
    pub target: Target,
    /// Inputs checked, corpus replay excluded.
    pub cases: u64,
    /// Inputs from the generator (a third of them mutated further).
    pub generated: u64,
    /// Inputs made by mutating corpus files.
    pub mutated: u64,
    /// Corpus files replayed before fuzzing.
    pub replayed: u64,
    /// Inputs saved into the corpus (`grow_corpus`).
    pub grown: u64,
    /// How often each decoder outcome was reached.
    pub outcomes: BTreeMap<String, u64>,
    /// Time spent in this target's cases.
    pub elapsed: Duration,
    /// Largest input.
    pub largest_input: usize,
    /// Most bytes one decoder call had allocated at once, and the input's length then.
    pub max_alloc: (usize, usize),
    /// Highest allocation per input byte (for inputs of 64+ bytes), and that input's length.
    pub max_alloc_per_byte: (f64, usize),
    /// Slowest case.
    pub slowest: Duration,
    /// The slowest case's input.
    pub slowest_input: Vec<u8>,
    /// Padding only: the largest total of records a scheme could make one write into,
    /// and that scheme's length in bytes.
    pub max_shape_bound: (usize, usize),
}

impl TargetReport {
    pub(crate) fn new(target: Target) -> TargetReport {
        TargetReport {
            target,
            cases: 0,
            generated: 0,
            mutated: 0,
            replayed: 0,
            grown: 0,
            outcomes: BTreeMap::new(),
            elapsed: Duration::ZERO,
            largest_input: 0,
            max_alloc: (0, 0),
            max_alloc_per_byte: (0.0, 0),
            slowest: Duration::ZERO,
            slowest_input: Vec::new(),
            max_shape_bound: (0, 0),
        }
    }

    /// Cases per second.
    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: TargetReport) {
        self.cases += other.cases;
        self.generated += other.generated;
        self.mutated += other.mutated;
        self.replayed = self.replayed.max(other.replayed);
        self.grown += other.grown;
        for (outcome, n) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += n;
        }
        // Jobs run side by side: the wall time is the longest, not the sum.
        self.elapsed = self.elapsed.max(other.elapsed);
        self.largest_input = self.largest_input.max(other.largest_input);
        if other.max_alloc.0 > self.max_alloc.0 {
            self.max_alloc = other.max_alloc;
        }
        if other.max_alloc_per_byte.0 > self.max_alloc_per_byte.0 {
            self.max_alloc_per_byte = other.max_alloc_per_byte;
        }
        if other.slowest > self.slowest {
            self.slowest = other.slowest;
            self.slowest_input = other.slowest_input;
        }
        if other.max_shape_bound.0 > self.max_shape_bound.0 {
            self.max_shape_bound = other.max_shape_bound;
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// One entry per target run.
    pub targets: Vec<TargetReport>,
    /// Distinct failures (panics, broken invariants, allocations past the bound).
    pub failures: Vec<Failure>,
    /// Whether allocations were measured ([`CountingAlloc`](crate::CountingAlloc) installed).
    pub alloc_measured: bool,
}

impl Report {
    /// Cases run over all targets, corpus replay excluded.
    pub fn cases(&self) -> u64 {
        self.targets.iter().map(|t| t.cases).sum()
    }

    /// Inputs that failed, over all distinct failures.
    pub fn failed_inputs(&self) -> u64 {
        self.failures.iter().map(|f| f.count).sum()
    }

    /// Adds another run of the same targets (a parallel job) to this one.
    pub fn merge(&mut self, other: Report) {
        for theirs in other.targets {
            match self.targets.iter_mut().find(|t| t.target == theirs.target) {
                Some(ours) => ours.merge(theirs),
                None => self.targets.push(theirs),
            }
        }
        for failure in other.failures {
            match self
                .failures
                .iter_mut()
                .find(|f| f.target == failure.target && f.message == failure.message)
            {
                Some(ours) => ours.count += failure.count,
                None => self.failures.push(failure),
            }
        }
        self.alloc_measured |= other.alloc_measured;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<13} {:>11} {:>11} {:>9} {:>7} {:>11} {:>8} {:>14} {:>13} {:>10}",
            "target",
            "cases",
            "cases/s",
            "mutated",
            "corpus",
            "outcomes",
            "max in",
            "max alloc",
            "alloc/byte",
            "slowest"
        )?;
        let mut elapsed = Duration::ZERO;
        for t in &self.targets {
            elapsed += t.elapsed;
            writeln!(
                f,
                "{:<13} {:>11} {:>11.0} {:>9} {:>7} {:>11} {:>8} {:>14} {:>13} {:>10}",
                t.target.name(),
                t.cases,
                t.rate(),
                t.mutated,
                t.replayed,
                t.outcomes.len(),
                t.largest_input,
                format!("{} ({}B in)", t.max_alloc.0, t.max_alloc.1),
                format!(
                    "{:.1} ({}B)",
                    t.max_alloc_per_byte.0, t.max_alloc_per_byte.1
                ),
                format!("{:.2?}", t.slowest),
            )?;
        }
        let cases = self.cases();
        writeln!(
            f,
            "{:<13} {:>11} {:>11.0}",
            "total",
            cases,
            cases as f64 / elapsed.as_secs_f64().max(1e-9)
        )?;
        if let Some(t) = self.targets.iter().find(|t| t.target == Target::Padding) {
            let (bound, len) = t.max_shape_bound;
            writeln!(
                f,
                "padding: largest records total one write can be shaped into: {bound} bytes, \
                 from a {len}-byte scheme"
            )?;
        }
        if !self.alloc_measured {
            writeln!(f, "allocations not measured (CountingAlloc not installed)")?;
        }
        if self.failures.is_empty() {
            write!(f, "failures: none")
        } else {
            writeln!(
                f,
                "failures: {} distinct, {} inputs",
                self.failures.len(),
                self.failed_inputs()
            )?;
            for failure in &self.failures {
                writeln!(
                    f,
                    "  [{}] {:?} x{}: {}",
                    failure.target, failure.kind, failure.count, failure.message
                )?;
                writeln!(
                    f,
                    "    input ({} bytes): {}",
                    failure.input.len(),
                    hex(&failure.input, 96)
                )?;
                if let Some(path) = &failure.saved {
                    writeln!(f, "    saved to {}", path.display())?;
                }
            }
            Ok(())
        }
    }
}

/// Hex of the first `max` bytes.
pub fn hex(data: &[u8], max: usize) -> String {
    let mut text: String = data.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if data.len() > max {
        text.push_str(&format!("... (+{} bytes)", data.len() - max));
    }
    text
}
