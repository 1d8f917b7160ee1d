//! Structure-aware fuzzing of every decoder in [`anytls::proto`], on the stable toolchain.
//!
//! Each [`Target`] pairs a generator that builds mostly-valid wire input with targeted
//! corruptions (lengths that lie, truncations, unknown command and type bytes, non-UTF-8
//! names, huge numbers, odd line endings) with a checker that runs the decoder and
//! asserts its contract, not just the absence of a panic:
//!
//! - the bytes consumed never exceed the input, and re-encoding a decoded value gives
//!   back exactly the bytes consumed (`decode(encode(x)) == x`);
//! - every strict prefix of a complete value answers "need more" (`None`/`Ok(None)`),
//!   "need more" is only answered while the longest possible value is not yet present
//!   (a decoder never makes its caller buffer without bound), and an error stays the
//!   same error whatever bytes follow it;
//! - each decoder agrees with a small model of its rule: last-value-wins settings, the
//!   UoT address types against the SOCKS ones, padding ranges and `c` marks, the records
//!   [`shape`](anytls::proto::padding::shape) builds;
//! - the memory a decoder allocates stays within a bound proportional to its input,
//!   measured by [`CountingAlloc`] when the binary installs it as its global allocator,
//!   and the padding records a scheme can ask for are bounded before they are built.
//!
//! A second input source mutates the files of a corpus (bit flips, interesting bytes,
//! truncation, duplication, splicing). A check is a pure function of its input (the
//! randomness it needs is seeded from the input's hash), so a saved input replays
//! exactly with [`check`].
//!
//! `tests/fuzz.rs` runs a bounded number of cases per target and replays the corpus in
//! `fuzz/corpus/`; `examples/fuzz.rs`, through `scripts/fuzz.sh`, runs for as long as
//! asked, saves failing inputs to `fuzz/crashes/` and grows the corpus.
//!
//! ```
//! use anytls_fuzz::{self as fuzz, Target};
//!
//! let report = fuzz::run(Target::Frame, 1, 500, None);
//! assert_eq!(report.cases(), 500);
//! assert!(report.failures.is_empty(), "{report}");
//! ```

mod session;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::hash::Hasher;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

use anytls::accounts::{AccountSpec, Accounts};
use anytls::proto::addr::Address;
use anytls::proto::auth::{self, PasswordHash};
use anytls::proto::error::{AddrError, PaddingError, UotError};
use anytls::proto::frame::{self, Command, HEADER_LEN, MAX_DATA_LEN};
use anytls::proto::padding::{self, PaddingScheme, Step};
use anytls::proto::settings::Settings;
use anytls::proto::uot;

/// One decoder family of [`anytls::proto`], or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// [`frame::decode`] over a stream of frames, and the frame encoders.
    Frame,
    /// [`Address::decode`] (SOCKS form) and [`Address::parse`] (text).
    Address,
    /// [`Settings::decode`].
    Settings,
    /// [`auth::decode_preamble`] and [`Accounts::authenticate`].
    Auth,
    /// [`uot::Request::decode`].
    UotRequest,
    /// [`uot::decode_datagram`]; the input's first byte selects connect mode (bit 0).
    UotDatagram,
    /// [`PaddingScheme::parse`], then its record sizes and [`padding::shape`].
    Padding,
    /// A whole session: a client's frames after authentication, in reads of any
    /// size, through [`anytls::proto::session::ServerSession`].
    Session,
    /// Every target above, in turn.
    All,
}

impl Target {
    /// Every single target, in the order `All` runs them.
    pub const EACH: [Target; 8] = [
        Target::Frame,
        Target::Address,
        Target::Settings,
        Target::Auth,
        Target::UotRequest,
        Target::UotDatagram,
        Target::Padding,
        Target::Session,
    ];

    /// The name used on the command line and for the corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Frame => "frame",
            Target::Address => "address",
            Target::Settings => "settings",
            Target::Auth => "auth",
            Target::UotRequest => "uot-request",
            Target::UotDatagram => "uot-datagram",
            Target::Padding => "padding",
            Target::Session => "session",
            Target::All => "all",
        }
    }

    /// The single targets this one stands for.
    pub fn targets(self) -> Vec<Target> {
        match self {
            Target::All => Target::EACH.to_vec(),
            one => vec![one],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        Target::EACH
            .into_iter()
            .chain([Target::All])
            .find(|t| t.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Target::EACH.iter().map(|t| t.name()).collect();
                format!("unknown target {text:?}: one of {}, all", names.join(", "))
            })
    }
}

/// How long to fuzz, and where inputs come from and go.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seeds the generators; the same seed and case count give the same inputs.
    pub seed: u64,
    /// Cases to run over all targets together (`None`: until `duration`).
    pub cases: Option<u64>,
    /// Time to run (`None`: until `cases`; both `None`: 10,000 cases).
    pub duration: Option<Duration>,
    /// Corpus root: files of `<root>/<target>/` are replayed first, then mutated.
    pub corpus: Option<PathBuf>,
    /// Where failing inputs are written (`<target>-<hash>.bin` and a `.txt` beside).
    pub crashes: Option<PathBuf>,
    /// Save inputs that reach an outcome the corpus had not reached into the corpus.
    pub grow_corpus: bool,
    /// Print a progress line to stderr this often.
    pub progress: Option<Duration>,
}

impl Options {
    /// `cases` cases from `seed`, no corpus, nothing written.
    pub fn new(seed: u64, cases: u64) -> Options {
        Options {
            seed,
            cases: Some(cases),
            duration: None,
            corpus: None,
            crashes: None,
            grow_corpus: false,
            progress: None,
        }
    }
}

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
    fn new(target: Target) -> TargetReport {
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
    /// Whether allocations were measured ([`CountingAlloc`] installed).
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

/// Runs `cases` cases of `target` from `seed`, replaying and mutating the corpus under
/// `corpus` (`<corpus>/<target>/`) when given.
pub fn run(target: Target, seed: u64, cases: u64, corpus: Option<&Path>) -> Report {
    let mut options = Options::new(seed, cases);
    options.corpus = corpus.map(Path::to_path_buf);
    run_with(target, &options)
}

/// Runs `target` as `options` say.
pub fn run_with(target: Target, options: &Options) -> Report {
    install_panic_hook();
    CRASH_DIR.with(|dir| *dir.borrow_mut() = options.crashes.clone());
    let mut run = Run {
        options,
        failures: Vec::new(),
    };
    let mut states: Vec<State> = target
        .targets()
        .into_iter()
        .map(|t| State::new(t, options))
        .collect();
    for state in &mut states {
        run.replay_corpus(state);
    }

    let start = Instant::now();
    let deadline = options.duration.map(|d| start + d);
    let limit = match (options.cases, options.duration) {
        (None, None) => Some(10_000),
        (cases, _) => cases,
    };
    let mut done = 0u64;
    let mut last_progress = start;
    'outer: loop {
        for state in &mut states {
            let chunk = limit.map_or(CHUNK, |l| CHUNK.min(l - done));
            if chunk == 0 {
                break 'outer;
            }
            let began = Instant::now();
            for _ in 0..chunk {
                run.one_case(state);
            }
            state.report.elapsed += began.elapsed();
            done += chunk;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break 'outer;
            }
            if let Some(every) = options.progress {
                if now - last_progress >= every {
                    last_progress = now;
                    eprintln!(
                        "fuzz: {done} cases in {:.0?} ({:.0}/s), {} failing",
                        now - start,
                        done as f64 / (now - start).as_secs_f64(),
                        run.failures.iter().map(|f| f.count).sum::<u64>()
                    );
                }
            }
        }
    }
    CRASH_DIR.with(|dir| *dir.borrow_mut() = None);
    Report {
        targets: states.into_iter().map(|s| s.report).collect(),
        failures: run.failures,
        alloc_measured: ALLOC_SEEN.load(Ordering::Relaxed),
    }
}

/// Checks one input against `target`'s contract: `Ok` with the outcome it reached,
/// or `Err` with what failed (a panic is caught and reported as an `Err`).
pub fn check(target: Target, input: &[u8]) -> Result<String, String> {
    if target == Target::All {
        return Err("check takes a single target".into());
    }
    install_panic_hook();
    let (result, _, _) = execute(target, input);
    result.map_err(|(kind, message, _)| format!("{kind:?}: {message}"))
}

/// Runs only `target`'s decoder over `input`, without checks: the cost of the decoder
/// alone, for timing an input (a frame or datagram stream is decoded to its end).
pub fn decode(target: Target, input: &[u8]) {
    use std::hint::black_box;
    match target {
        Target::Frame => {
            let mut rest = input;
            while let Some(f) = frame::decode(black_box(rest)) {
                rest = &rest[f.wire_len()..];
            }
        }
        Target::Address => {
            let _ = black_box(Address::decode(black_box(input)));
        }
        Target::Settings => {
            let _ = black_box(Settings::decode(black_box(input)));
        }
        Target::Auth => {
            black_box(auth::decode_preamble(black_box(input)));
        }
        Target::UotRequest => {
            let _ = black_box(uot::Request::decode(black_box(input)));
        }
        Target::UotDatagram => {
            if let Some((&mode, mut rest)) = input.split_first() {
                while let Ok(Some((_, used))) = uot::decode_datagram(black_box(rest), mode & 1 == 1)
                {
                    rest = &rest[used..];
                }
            }
        }
        Target::Padding => {
            let _ = black_box(PaddingScheme::parse(black_box(input)));
        }
        Target::Session => {
            let mut rng = SmallRng::seed_from_u64(0);
            let _ = black_box(session::check(black_box(input), &mut rng));
        }
        Target::All => {}
    }
}

/// Reads the files of `<root>/<target>/`, sorted by name (a missing folder is empty).
pub fn corpus_files(root: &Path, target: Target) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = root.join(target.name());
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| fs::read(&p).map(|data| (p, data)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Allocation measurement.

/// A global allocator that forwards to [`System`] and counts, per thread, the bytes
/// allocated while a decoder under test runs. Install it in the fuzzing binary:
///
/// ```
/// #[global_allocator]
/// static ALLOC: anytls_fuzz::CountingAlloc = anytls_fuzz::CountingAlloc;
/// # fn main() {}
/// ```
pub struct CountingAlloc;

static ALLOC_SEEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note_alloc(delta: isize) {
    if !ALLOC_SEEN.load(Ordering::Relaxed) {
        ALLOC_SEEN.store(true, Ordering::Relaxed);
    }
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every method forwards to `System` with its arguments unchanged; the counting
// only touches const-initialised, destructor-free thread-locals, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_alloc(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// What one case measured besides its outcome.
#[derive(Default)]
struct CaseStats {
    /// Most bytes one measured call had allocated at once.
    alloc_peak: usize,
    /// Padding: the most record bytes one write could be shaped into.
    shape_bound: usize,
}

/// Runs a decoder counting its allocations: returns its result and the peak bytes it
/// held, and keeps the largest peak of the case in `stats`.
fn measure<R>(stats: &mut CaseStats, f: impl FnOnce() -> R) -> (R, usize) {
    let (out, peak) = measure_aside(f);
    stats.alloc_peak = stats.alloc_peak.max(peak);
    (out, peak)
}

/// [`measure`] for a call whose allocations follow from something else than the input
/// (the records [`padding::shape`] builds for a payload): not kept in the case's stats.
fn measure_aside<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let out = f();
    TRACKING.set(false);
    (out, PEAK.get().max(0) as usize)
}

/// Fails a check with an `alloc:` message when `peak` exceeds `bound`.
fn alloc_within(what: &str, peak: usize, bound: usize, input_len: usize) -> Result<(), String> {
    if peak > bound {
        return Err(format!(
            "alloc: {what} held {peak} bytes for a {input_len}-byte input (bound {bound})"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running cases.

/// Cases of one target run before the next target's turn.
const CHUNK: u64 = 256;
/// Inputs saved into the corpus are at most this long.
const MAX_GROWN_LEN: usize = 4096;
/// Mutated inputs are cut to this length.
const MAX_INPUT_LEN: usize = 140_000;
/// Distinct failures kept per run (the rest are counted in the first).
const MAX_FAILURES: usize = 64;

struct State {
    target: Target,
    rng: SmallRng,
    corpus: Vec<Vec<u8>>,
    corpus_dir: Option<PathBuf>,
    seen: HashSet<String>,
    report: TargetReport,
}

impl State {
    fn new(target: Target, options: &Options) -> State {
        let index = Target::EACH.iter().position(|&t| t == target).unwrap_or(0) as u64;
        State {
            target,
            rng: SmallRng::seed_from_u64(
                options.seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            corpus: Vec::new(),
            corpus_dir: options.corpus.as_ref().map(|root| root.join(target.name())),
            seen: HashSet::new(),
            report: TargetReport::new(target),
        }
    }
}

struct Run<'a> {
    options: &'a Options,
    failures: Vec<Failure>,
}

impl Run<'_> {
    fn replay_corpus(&mut self, state: &mut State) {
        let Some(root) = &self.options.corpus else {
            return;
        };
        let files = match corpus_files(root, state.target) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("fuzz: cannot read corpus of {}: {e}", state.target);
                return;
            }
        };
        for (_, data) in files {
            let (result, _, _) = execute(state.target, &data);
            state.report.replayed += 1;
            match result {
                Ok(outcome) => {
                    state.seen.insert(outcome);
                }
                Err((kind, message, backtrace)) => {
                    self.fail(state.target, kind, message, &data, backtrace)
                }
            }
            state.corpus.push(data);
        }
    }

    fn one_case(&mut self, state: &mut State) {
        let input = next_input(state);
        let (result, stats, took) = execute(state.target, &input);
        let report = &mut state.report;
        report.cases += 1;
        report.largest_input = report.largest_input.max(input.len());
        if stats.alloc_peak > report.max_alloc.0 {
            report.max_alloc = (stats.alloc_peak, input.len());
        }
        if input.len() >= 64 {
            let per_byte = stats.alloc_peak as f64 / input.len() as f64;
            if per_byte > report.max_alloc_per_byte.0 {
                report.max_alloc_per_byte = (per_byte, input.len());
            }
        }
        if stats.shape_bound > report.max_shape_bound.0 {
            report.max_shape_bound = (stats.shape_bound, input.len());
        }
        if took > report.slowest {
            report.slowest = took;
            report.slowest_input = input.clone();
        }
        match result {
            Ok(outcome) => {
                match report.outcomes.get_mut(&outcome) {
                    Some(n) => *n += 1,
                    None => {
                        report.outcomes.insert(outcome.clone(), 1);
                    }
                }
                if !state.seen.contains(&outcome) {
                    state.seen.insert(outcome);
                    self.grow(state, &input);
                }
            }
            Err((kind, message, backtrace)) => {
                self.fail(state.target, kind, message, &input, backtrace)
            }
        }
    }

    /// Saves an input that reached a new outcome into the corpus.
    fn grow(&mut self, state: &mut State, input: &[u8]) {
        if !self.options.grow_corpus || input.len() > MAX_GROWN_LEN {
            return;
        }
        let Some(dir) = &state.corpus_dir else {
            return;
        };
        let path = dir.join(format!("grown-{:016x}.bin", hash64(input)));
        match fs::create_dir_all(dir).and_then(|()| fs::write(&path, input)) {
            Ok(()) => {
                state.report.grown += 1;
                state.corpus.push(input.to_vec());
            }
            Err(e) => eprintln!("fuzz: cannot save {}: {e}", path.display()),
        }
    }

    fn fail(
        &mut self,
        target: Target,
        kind: FailureKind,
        message: String,
        input: &[u8],
        backtrace: Option<(String, Option<PathBuf>)>,
    ) {
        // Failures of one kind differ in their numbers; the text before the first
        // colon (or the panic location) tells them apart.
        let key = |m: &str| m.split(':').next().unwrap_or(m).to_owned();
        if let Some(known) = self
            .failures
            .iter_mut()
            .find(|f| f.target == target && f.kind == kind && key(&f.message) == key(&message))
        {
            known.count += 1;
            return;
        }
        if self.failures.len() >= MAX_FAILURES {
            if let Some(last) = self.failures.last_mut() {
                last.count += 1;
            }
            return;
        }
        let (backtrace, mut saved) = match backtrace {
            Some((trace, saved)) => (Some(trace), saved),
            None => (None, None),
        };
        if saved.is_none() {
            if let Some(dir) = &self.options.crashes {
                saved = save_crash(dir, target, input, &message);
            }
        }
        self.failures.push(Failure {
            target,
            kind,
            message,
            input: input.to_vec(),
            saved,
            count: 1,
            backtrace,
        });
    }
}

type CaseResult = Result<String, (FailureKind, String, Option<(String, Option<PathBuf>)>)>;

/// Runs one check, catching a panic and timing it.
fn execute(target: Target, input: &[u8]) -> (CaseResult, CaseStats, Duration) {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        current.active = true;
        current.target = target;
        current.input.clear();
        current.input.extend_from_slice(input);
    });
    let mut stats = CaseStats::default();
    let start = Instant::now();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut rng = SmallRng::seed_from_u64(hash64(input));
        check_one(target, input, &mut rng, &mut stats)
    }));
    let took = start.elapsed();
    TRACKING.set(false);
    CURRENT.with(|current| current.borrow_mut().active = false);
    let result = match caught {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(message)) if message.starts_with("alloc:") => {
            Err((FailureKind::Allocation, message, None))
        }
        Ok(Err(message)) => Err((FailureKind::Invariant, message, None)),
        Err(payload) => {
            let (message, trace, saved) = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .unwrap_or_else(|| (panic_text(payload.as_ref()), String::new(), None));
            Err((FailureKind::Panic, message, Some((trace, saved))))
        }
    };
    (result, stats, took)
}

fn check_one(
    target: Target,
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    match target {
        Target::Frame => check_frame(input, rng, stats),
        Target::Address => check_address(input, rng, stats),
        Target::Settings => check_settings(input, stats),
        Target::Auth => check_auth(input, rng, stats),
        Target::UotRequest => check_uot_request(input, rng, stats),
        Target::UotDatagram => check_uot_datagram(input, rng, stats),
        Target::Padding => check_padding(input, rng, stats),
        Target::Session => session::check(input, rng),
        Target::All => Err("check takes a single target".into()),
    }
}

fn next_input(state: &mut State) -> Vec<u8> {
    let State {
        target,
        rng,
        corpus,
        report,
        ..
    } = state;
    if !corpus.is_empty() && rng.gen_ratio(1, 4) {
        let mut data = corpus[rng.gen_range(0..corpus.len())].clone();
        let other = rng
            .gen_ratio(1, 4)
            .then(|| &corpus[rng.gen_range(0..corpus.len())]);
        mutate(rng, &mut data, other.map(Vec::as_slice));
        report.mutated += 1;
        data
    } else {
        let mut data = generate(*target, rng);
        if rng.gen_ratio(1, 3) {
            mutate(rng, &mut data, None);
        }
        report.generated += 1;
        data
    }
}

// ---------------------------------------------------------------------------------------
// Panics: the hook saves the input before anything else happens, which matters where
// `panic = "abort"` (the release profile) ends the process right after the hook.

struct CurrentCase {
    active: bool,
    target: Target,
    input: Vec<u8>,
}

type PanicRecord = (String, String, Option<PathBuf>);

thread_local! {
    static CURRENT: RefCell<CurrentCase> = const {
        RefCell::new(CurrentCase { active: false, target: Target::All, input: Vec::new() })
    };
    static CRASH_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
    static LAST_PANIC: RefCell<Option<PanicRecord>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let case = CURRENT.try_with(|current| {
                current
                    .try_borrow()
                    .ok()
                    .filter(|c| c.active)
                    .map(|c| (c.target, c.input.clone()))
            });
            if let Ok(Some((target, input))) = case {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                let message = format!("panicked at {location}: {}", panic_text(info.payload()));
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                let dir = CRASH_DIR.try_with(|d| d.borrow().clone()).ok().flatten();
                let saved = dir.and_then(|dir| save_crash(&dir, target, &input, &message));
                eprintln!(
                    "fuzz: {target}: {message}\n  input ({} bytes): {}",
                    input.len(),
                    hex(&input, 256)
                );
                if let Some(path) = &saved {
                    eprintln!("  saved to {}", path.display());
                }
                let _ = LAST_PANIC.try_with(|last| {
                    if let Ok(mut last) = last.try_borrow_mut() {
                        *last = Some((message, trace, saved));
                    }
                });
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

fn save_crash(dir: &Path, target: Target, input: &[u8], message: &str) -> Option<PathBuf> {
    let path = dir.join(format!("{}-{:016x}.bin", target.name(), hash64(input)));
    let saved = fs::create_dir_all(dir)
        .and_then(|()| fs::write(&path, input))
        .and_then(|()| fs::write(path.with_extension("txt"), format!("{target}: {message}\n")));
    match saved {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("fuzz: cannot save {}: {e}", path.display());
            None
        }
    }
}

/// FNV-1a, to name files and seed a check's randomness from its input.
fn hash64(data: &[u8]) -> u64 {
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    hasher.write(data);
    hasher.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
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

// ---------------------------------------------------------------------------------------
// Checks, one per target. Each returns the outcome it reached or what failed.

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The longest SOCKS address: type, length, 255-byte name, port.
const MAX_ADDR_LEN: usize = 1 + 1 + 255 + 2;

/// An error's variant names without their numbers: `Address(UnknownType)`.
fn variant(error: &impl fmt::Debug) -> String {
    let text = format!("{error:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        match rest.find(')') {
            Some(close) if rest[1..close].bytes().all(|b| b.is_ascii_digit()) => {
                rest = &rest[close + 1..];
            }
            _ => {
                out.push('(');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Prefix lengths to try below `len`: all of them when few, else a sample.
fn prefixes(len: usize, rng: &mut SmallRng) -> Vec<usize> {
    if len <= 48 {
        return (0..len).collect();
    }
    let mut lens = vec![0, 1, len / 2, len - 1];
    lens.extend((0..6).map(|_| rng.gen_range(0..len)));
    lens
}

/// `input` followed by a few random bytes.
fn extended(input: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    let mut out = input.to_vec();
    let n = rng.gen_range(1..=16);
    out.extend((0..n).map(|_| rng.gen::<u8>()));
    out
}

fn check_frame(input: &[u8], rng: &mut SmallRng, stats: &mut CaseStats) -> Result<String, String> {
    let mut rest = input;
    let mut frames = 0usize;
    loop {
        let (decoded, peak) = measure(stats, || frame::decode(rest));
        alloc_within("frame::decode", peak, 0, rest.len())?;
        let Some(f) = decoded else {
            let need = match rest.get(..HEADER_LEN) {
                None => HEADER_LEN,
                Some(h) => HEADER_LEN + u16::from_be_bytes([h[5], h[6]]) as usize,
            };
            ensure!(
                rest.len() < need,
                "need-more: None for {} bytes that hold a whole {need}-byte frame",
                rest.len()
            );
            break;
        };
        let used = f.wire_len();
        ensure!(
            used <= rest.len(),
            "length: frame of {used} bytes from {} bytes",
            rest.len()
        );
        ensure!(
            used >= HEADER_LEN,
            "length: frame of {used} bytes is shorter than a header"
        );
        ensure!(
            f.data.len() <= MAX_DATA_LEN,
            "length: {} data bytes",
            f.data.len()
        );
        let len = u16::from_be_bytes([rest[5], rest[6]]) as usize;
        ensure!(
            f.data.len() == len,
            "length: {} data bytes, header says {len}",
            f.data.len()
        );
        ensure!(
            f.data == &rest[HEADER_LEN..used],
            "data: not the bytes after the header"
        );
        ensure!(
            u8::from(f.cmd) == rest[0],
            "command: {:?} from byte {}",
            f.cmd,
            rest[0]
        );
        ensure!(
            Command::from(rest[0]) == f.cmd,
            "command: byte {} not round-tripped",
            rest[0]
        );
        let id = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        ensure!(
            f.stream_id == id,
            "stream id: {} decoded, {id} sent",
            f.stream_id
        );
        ensure!(
            frame::header(f.cmd, f.stream_id, len as u16) == rest[..HEADER_LEN],
            "round trip: header() differs from the decoded header"
        );
        if frames < 16 {
            let mut wire = Vec::with_capacity(used);
            frame::encode(f.cmd, f.stream_id, f.data, &mut wire)
                .map_err(|e| format!("round trip: encode refused a decoded frame: {e}"))?;
            ensure!(wire == rest[..used], "round trip: encode(decode(x)) != x");
            for p in prefixes(used, rng) {
                ensure!(
                    frame::decode(&rest[..p]).is_none(),
                    "prefix: {p} of a {used}-byte frame decoded"
                );
            }
            ensure!(
                frame::decode(&rest[..used]) == Some(f),
                "extension: the frame alone decodes differently than with bytes after it"
            );
        }
        frames += 1;
        rest = &rest[used..];
    }

    // The encoders' limits, with the input as a payload.
    if rng.gen_ratio(1, 8) {
        let id = rng.gen();
        let mut wire = Vec::new();
        frame::encode_push(id, input, &mut wire);
        let mut joined = Vec::with_capacity(input.len());
        let mut rest = &wire[..];
        let mut count = 0;
        while let Some(f) = frame::decode(rest) {
            ensure!(
                f.cmd == Command::Push && f.stream_id == id,
                "push: wrong frame {f:?}"
            );
            ensure!(!f.data.is_empty(), "push: empty PSH frame");
            joined.extend_from_slice(f.data);
            rest = &rest[f.wire_len()..];
            count += 1;
        }
        ensure!(rest.is_empty(), "push: {} bytes left undecoded", rest.len());
        ensure!(joined == input, "push: payload not carried whole");
        ensure!(
            count == input.len().div_ceil(MAX_DATA_LEN),
            "push: {count} frames"
        );
    }
    if let Some(&b) = input.first() {
        let len = (b as usize) << 9;
        let mut wire = vec![1, 2, 3];
        match frame::encode_waste(len, &mut wire) {
            Ok(()) => {
                ensure!(len <= MAX_DATA_LEN, "waste: {len} bytes accepted");
                let f = frame::decode(&wire[3..]).ok_or("waste: not decodable")?;
                ensure!(
                    f.cmd == Command::Waste && f.data.len() == len,
                    "waste: {f:?}"
                );
                ensure!(f.data.iter().all(|&b| b == 0), "waste: data not zero");
            }
            Err(_) => {
                ensure!(len > MAX_DATA_LEN, "waste: {len} bytes refused");
                ensure!(wire == [1, 2, 3], "waste: output written on error");
            }
        }
    }

    let tail = if rest.is_empty() {
        "end"
    } else if rest.len() < HEADER_LEN {
        "short-header"
    } else {
        "short-data"
    };
    Ok(format!("frames={} tail={tail}", frames.min(3)))
}

/// Checks an [`Address::decode`] answer for `input` against the rules of the SOCKS form.
fn check_socks_answer(
    input: &[u8],
    answer: &Result<Option<(Address, usize)>, AddrError>,
    rng: &mut SmallRng,
) -> Result<(), String> {
    match answer {
        Ok(Some((address, used))) => {
            let used = *used;
            ensure!(
                used <= input.len(),
                "length: used {used} of {} bytes",
                input.len()
            );
            let mut wire = Vec::new();
            address
                .encode(&mut wire)
                .map_err(|e| format!("round trip: encode refused {address:?}: {e}"))?;
            ensure!(
                wire == input[..used],
                "round trip: encode(decode(x)) != x for {address:?}"
            );
            if let Address::Domain(name, _) = address {
                ensure!(
                    !name.is_empty() && name.len() <= 255,
                    "domain: name of {} bytes",
                    name.len()
                );
                ensure!(
                    !name.chars().any(|c| c.is_control() || c.is_whitespace()),
                    "domain: {name:?} has control or space characters"
                );
            }
            for p in prefixes(used, rng) {
                let short = Address::decode(&input[..p]);
                ensure!(
                    short == Ok(None),
                    "prefix: {p} of {used} bytes gave {short:?}"
                );
            }
            let alone = Address::decode(&input[..used]);
            ensure!(
                alone == *answer,
                "extension: alone {alone:?}, with more {answer:?}"
            );
        }
        Ok(None) => {
            ensure!(
                input.len() < MAX_ADDR_LEN,
                "need-more: Ok(None) for {} bytes, longer than any address",
                input.len()
            );
            let mut full = input.to_vec();
            full.resize(MAX_ADDR_LEN, 0);
            let completed = Address::decode(&full);
            ensure!(
                completed != Ok(None),
                "need-more: still Ok(None) at {MAX_ADDR_LEN} bytes"
            );
        }
        Err(e) => {
            let first = input.first().copied();
            let expected_first = match e {
                AddrError::UnknownType(t) => Some(*t),
                _ => Some(3),
            };
            ensure!(
                first == expected_first,
                "error: {e:?} for a type byte {first:?}"
            );
            if let AddrError::UnknownType(t) = e {
                ensure!(![1, 3, 4].contains(t), "error: type {t} is known");
            }
            ensure!(
                !matches!(e, AddrError::EmptyDomain) || input.get(1) == Some(&0),
                "error: EmptyDomain for length {:?}",
                input.get(1)
            );
            let longer = extended(input, rng);
            let again = Address::decode(&longer);
            ensure!(
                again == *answer,
                "error: {e:?} became {again:?} with more bytes"
            );
        }
    }
    Ok(())
}

fn check_address(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let (answer, peak) = measure(stats, || Address::decode(input));
    alloc_within("Address::decode", peak, 255, input.len())?;
    check_socks_answer(input, &answer, rng)?;
    let decoded = match &answer {
        Ok(Some((Address::Ip(a), _))) if a.is_ipv4() => "ipv4".to_owned(),
        Ok(Some((Address::Ip(_), _))) => "ipv6".to_owned(),
        Ok(Some((Address::Domain(..), _))) => "domain".to_owned(),
        Ok(None) => "need-more".to_owned(),
        Err(e) => variant(e),
    };

    // The text form, as the command line gives it.
    let text = String::from_utf8_lossy(input);
    let (parsed, peak) = measure(stats, || Address::parse(&text));
    alloc_within("Address::parse", peak, text.len(), text.len())?;
    let parsed_kind = match &parsed {
        None => "none",
        Some(address) => {
            let shown = address.to_string();
            let again = Address::parse(&shown);
            ensure!(
                again.as_ref() == Some(address),
                "parse: {text:?} gave {address:?}, whose text {shown:?} parses to {again:?}"
            );
            match address {
                Address::Ip(_) => "ip",
                Address::Domain(..) => "domain",
            }
        }
    };
    Ok(format!("decode={decoded} parse={parsed_kind}"))
}

/// Settings as a model sees them: pairs in order of first appearance, last value wins.
fn settings_model(text: &str) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(eq) = line.find('=') else {
            continue;
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        match index.get(key) {
            Some(&i) => pairs[i].1 = value,
            None => {
                index.insert(key, pairs.len());
                pairs.push((key, value));
            }
        }
    }
    pairs
}

/// Whether a pair survives `encode` then `decode` unchanged.
fn clean_pair(key: &str, value: &str) -> bool {
    !key.contains(['=', '\n']) && !value.contains('\n') && !value.ends_with('\r')
}

fn check_settings(input: &[u8], stats: &mut CaseStats) -> Result<String, String> {
    let (decoded, peak) = measure(stats, || Settings::decode(input));
    alloc_within(
        "Settings::decode",
        peak,
        64 * input.len() + 256,
        input.len(),
    )?;
    let (settings, text) = match (decoded, std::str::from_utf8(input)) {
        (Err(e), Err(_)) => return Ok(format!("err={}", variant(&e))),
        (Err(e), Ok(_)) => return Err(format!("utf8: {e:?} for UTF-8 text")),
        (Ok(_), Err(_)) => return Err("utf8: text that is not UTF-8 decoded".into()),
        (Ok(settings), Ok(text)) => (settings, text),
    };
    let model = settings_model(text);
    let pairs: Vec<(&str, &str)> = settings.iter().collect();
    ensure!(
        pairs == model,
        "model: {} pairs decoded, {} expected (first difference at {:?})",
        pairs.len(),
        model.len(),
        pairs.iter().zip(&model).position(|(a, b)| a != b)
    );
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 1).sum();
    ensure!(
        bytes <= input.len(),
        "length: {bytes} bytes of pairs from {} bytes",
        input.len()
    );
    let version = model
        .iter()
        .find(|(k, _)| *k == "v")
        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    ensure!(
        settings.version() == version,
        "version: {} not {version}",
        settings.version()
    );
    for (key, value) in model.iter().take(8) {
        ensure!(settings.get(key) == Some(*value), "get: {key:?}");
    }

    // decode(encode(s)) == s for settings whose pairs can be written as lines.
    let lossless = pairs.iter().all(|(k, v)| clean_pair(k, v));
    if lossless {
        let again = Settings::decode(&settings.encode());
        ensure!(
            again.as_ref() == Ok(&settings),
            "round trip: decode(encode(s)) != s"
        );
    }
    let mut clean = Settings::default();
    for (key, value) in pairs.iter().filter(|(k, v)| clean_pair(k, v)) {
        clean.set(key, value);
    }
    let again = Settings::decode(&clean.encode());
    ensure!(
        again.as_ref() == Ok(&clean),
        "round trip: decode(encode(s)) != s for built settings"
    );

    let count = match pairs.len() {
        0 => "0",
        1 => "1",
        _ => "many",
    };
    let version = match version {
        0 => "0",
        2 => "2",
        _ => "other",
    };
    let cr = if lossless { "" } else { " value-ends-cr" };
    Ok(format!("ok pairs={count} v={version}{cr}"))
}

fn users() -> &'static Accounts {
    static USERS: OnceLock<Accounts> = OnceLock::new();
    USERS.get_or_init(|| {
        Accounts::new(&[
            AccountSpec::new("alice", "alice-pass"),
            AccountSpec::new("bob", "bob-pass"),
        ])
        .expect("two users")
    })
}

fn check_auth(input: &[u8], rng: &mut SmallRng, stats: &mut CaseStats) -> Result<String, String> {
    let (decoded, peak) = measure(stats, || auth::decode_preamble(input));
    alloc_within("decode_preamble", peak, 0, input.len())?;
    let Some(preamble) = decoded else {
        let need = match input.get(..auth::FIXED_LEN) {
            None => auth::FIXED_LEN,
            Some(f) => auth::FIXED_LEN + u16::from_be_bytes([f[32], f[33]]) as usize,
        };
        ensure!(
            input.len() < need,
            "need-more: None for {} of {need} bytes",
            input.len()
        );
        ensure!(
            input.len() < auth::MAX_PREAMBLE_LEN,
            "need-more: None past the longest preamble"
        );
        let short = if input.len() < auth::FIXED_LEN {
            "fixed"
        } else {
            "padding"
        };
        return Ok(format!("need-more={short}"));
    };
    let pad = u16::from_be_bytes([input[32], input[33]]);
    ensure!(
        preamble.len == auth::FIXED_LEN + pad as usize,
        "length: {} for padding {pad}",
        preamble.len
    );
    ensure!(
        preamble.len <= input.len(),
        "length: {} of {} bytes",
        preamble.len,
        input.len()
    );
    ensure!(
        preamble.hash.0 == input[..32],
        "hash: not the first 32 bytes"
    );
    let mut wire = Vec::new();
    auth::encode_preamble(&preamble.hash, pad, &mut wire);
    ensure!(
        wire.len() == preamble.len,
        "round trip: encoded {} bytes",
        wire.len()
    );
    ensure!(
        wire[..auth::FIXED_LEN] == input[..auth::FIXED_LEN],
        "round trip: header differs"
    );
    for p in prefixes(preamble.len, rng) {
        ensure!(
            auth::decode_preamble(&input[..p]).is_none(),
            "prefix: {p} bytes decoded"
        );
    }
    ensure!(
        auth::decode_preamble(&input[..preamble.len]) == Some(preamble),
        "extension: the preamble alone decodes differently"
    );
    let user = users().authenticate(&preamble.hash).map(|a| a.name());
    let expected = if preamble.hash == PasswordHash::of("alice-pass") {
        Some("alice")
    } else if preamble.hash == PasswordHash::of("bob-pass") {
        Some("bob")
    } else {
        None
    };
    ensure!(
        user == expected,
        "authenticate: {user:?}, expected {expected:?}"
    );
    let padding = if pad == 0 { "none" } else { "some" };
    Ok(format!("ok user={} padding={padding}", user.unwrap_or("-")))
}

fn check_uot_request(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let (answer, peak) = measure(stats, || uot::Request::decode(input));
    alloc_within("Request::decode", peak, 255, input.len())?;
    // The model: a flag byte, then a SOCKS address.
    let expected = match input.first() {
        None => Ok(None),
        Some(&flag) if flag > 1 => Err(UotError::ConnectFlag(flag)),
        Some(&flag) => match Address::decode(&input[1..]) {
            Ok(Some((destination, used))) => Ok(Some((
                uot::Request {
                    is_connect: flag == 1,
                    destination,
                },
                used + 1,
            ))),
            Ok(None) => Ok(None),
            Err(e) => Err(UotError::Address(e)),
        },
    };
    ensure!(
        answer == expected,
        "model: {answer:?}, expected {expected:?}"
    );
    match &answer {
        Ok(Some((request, used))) => {
            let used = *used;
            ensure!(
                used <= input.len(),
                "length: used {used} of {}",
                input.len()
            );
            let mut wire = Vec::new();
            request
                .encode(&mut wire)
                .map_err(|e| format!("round trip: encode refused {request:?}: {e}"))?;
            ensure!(wire == input[..used], "round trip: encode(decode(x)) != x");
            for p in prefixes(used, rng) {
                let short = uot::Request::decode(&input[..p]);
                ensure!(
                    short == Ok(None),
                    "prefix: {p} of {used} bytes gave {short:?}"
                );
            }
        }
        Ok(None) => {
            ensure!(
                input.len() <= MAX_ADDR_LEN,
                "need-more: Ok(None) for {} bytes",
                input.len()
            );
        }
        Err(e) => {
            let again = uot::Request::decode(&extended(input, rng));
            ensure!(
                again.as_ref() == Err(e),
                "error: {e:?} became {again:?} with more bytes"
            );
        }
    }
    Ok(match answer {
        Ok(Some((r, _))) => format!(
            "ok connect={} {}",
            r.is_connect,
            match r.destination {
                Address::Ip(a) if a.is_ipv4() => "ipv4",
                Address::Ip(_) => "ipv6",
                Address::Domain(..) => "domain",
            }
        ),
        Ok(None) => "need-more".into(),
        Err(e) => format!("err={}", variant(&e)),
    })
}

type DatagramModel = Result<Option<(Option<Address>, usize, usize)>, UotError>;

/// The datagram rule as a model: a UoT address (its type byte mapped to the SOCKS one
/// and decoded as such) unless in connect mode, a u16 length, the payload. Answers the
/// address, where the payload starts and where the datagram ends.
fn datagram_model(input: &[u8], is_connect: bool) -> DatagramModel {
    let (address, start) = if is_connect {
        (None, 0)
    } else {
        let Some(&kind) = input.first() else {
            return Ok(None);
        };
        let socks = match kind {
            0 => 1,
            1 => 4,
            2 => 3,
            other => return Err(UotError::AddressType(other)),
        };
        let mut head = input[..input.len().min(MAX_ADDR_LEN)].to_vec();
        head[0] = socks;
        match Address::decode(&head)? {
            Some((address, used)) => (Some(address), used),
            None => return Ok(None),
        }
    };
    if input.len() < start + 2 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([input[start], input[start + 1]]) as usize;
    if input.len() < start + 2 + len {
        return Ok(None);
    }
    Ok(Some((address, start + 2, start + 2 + len)))
}

fn check_uot_datagram(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let Some((&mode, mut rest)) = input.split_first() else {
        return Ok("empty".into());
    };
    let is_connect = mode & 1 == 1;
    let mut count = 0usize;
    let tail = loop {
        let (answer, peak) = measure(stats, || uot::decode_datagram(rest, is_connect));
        alloc_within("decode_datagram", peak, 255, rest.len())?;
        let model = datagram_model(rest, is_connect);
        let agrees = match (&answer, &model) {
            (Ok(Some((d, used))), Ok(Some((address, start, end)))) => {
                d.address == *address && used == end && d.payload == &rest[*start..*end]
            }
            (Ok(None), Ok(None)) => true,
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        ensure!(agrees, "model: {answer:?}, expected {model:?}");
        match answer {
            Ok(Some((d, used))) => {
                ensure!(used <= rest.len(), "length: used {used} of {}", rest.len());
                if count < 8 {
                    let mut wire = Vec::new();
                    uot::encode_datagram(d.address.as_ref(), d.payload, &mut wire)
                        .map_err(|e| format!("round trip: encode refused {d:?}: {e}"))?;
                    ensure!(wire == rest[..used], "round trip: encode(decode(x)) != x");
                    for p in prefixes(used, rng) {
                        let short = uot::decode_datagram(&rest[..p], is_connect);
                        ensure!(
                            short == Ok(None),
                            "prefix: {p} of {used} bytes gave {short:?}"
                        );
                    }
                }
                count += 1;
                rest = &rest[used..];
            }
            Ok(None) => {
                let longest = if is_connect { 2 } else { MAX_ADDR_LEN + 2 } + MAX_DATA_LEN;
                ensure!(
                    rest.len() < longest,
                    "need-more: Ok(None) for {} bytes",
                    rest.len()
                );
                break if rest.is_empty() {
                    "end".to_owned()
                } else {
                    "need-more".to_owned()
                };
            }
            Err(e) => {
                let longer = extended(rest, rng);
                let again = uot::decode_datagram(&longer, is_connect);
                ensure!(
                    again.as_ref() == Err(&e),
                    "error: {e:?} became {again:?} with more bytes"
                );
                break format!("err={}", variant(&e));
            }
        }
    };
    let mode = if is_connect { "connect" } else { "addressed" };
    Ok(format!("{mode} datagrams={} {tail}", count.min(2)))
}

#[derive(Clone, Copy, Debug)]
enum ModelRule {
    Check,
    Range(i64, i64),
}

/// Padding rules as a model reads them: `c`, or `a-b` with both bounds i64 and the
/// smaller one positive; anything else skipped.
fn rules_model(value: &str) -> Vec<ModelRule> {
    let mut rules = Vec::new();
    for part in value.split(',') {
        if part == "c" {
            rules.push(ModelRule::Check);
            continue;
        }
        let Some(dash) = part.find('-') else {
            continue;
        };
        let bound = |s: &str| s.parse::<i128>().ok().and_then(|n| i64::try_from(n).ok());
        if let (Some(a), Some(b)) = (bound(&part[..dash]), bound(&part[dash + 1..])) {
            if a.min(b) > 0 {
                rules.push(ModelRule::Range(a.min(b), a.max(b)));
            }
        }
    }
    rules
}

fn check_padding(
    input: &[u8],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<String, String> {
    let (parsed, peak) = measure(stats, || PaddingScheme::parse(input));
    alloc_within(
        "PaddingScheme::parse",
        peak,
        128 * input.len() + 4096,
        input.len(),
    )?;

    // The model of which error comes first.
    let expected = if input.len() > MAX_DATA_LEN {
        Err(PaddingError::TooLong(input.len()))
    } else {
        match std::str::from_utf8(input) {
            Err(_) => Err(PaddingError::NotUtf8),
            Ok(text) => {
                let model = settings_model(text);
                if model.is_empty() {
                    Err(PaddingError::Empty)
                } else {
                    model
                        .iter()
                        .find(|(k, _)| *k == "stop")
                        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
                        .ok_or(PaddingError::MissingStop)
                }
            }
        }
    };
    let scheme = match (parsed, expected) {
        (Err(e), Err(x)) if e == x => return Ok(format!("err={}", variant(&e))),
        (Ok(scheme), Ok(stop)) => {
            ensure!(scheme.stop() == stop, "stop: {} not {stop}", scheme.stop());
            scheme
        }
        (got, want) => return Err(format!("model: {got:?}, expected {want:?}")),
    };
    ensure!(
        scheme.text().as_bytes() == input,
        "text: not the exact input"
    );
    let md5 = scheme.md5_hex();
    ensure!(
        md5.len() == 32
            && md5
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "md5: {md5:?} is not 32 lowercase hex digits"
    );
    ensure!(
        md5 == padding::md5_hex(input),
        "md5: not the md5 of the exact text"
    );
    let again = PaddingScheme::parse(scheme.text().as_bytes());
    ensure!(
        again.as_ref() == Ok(&scheme),
        "round trip: parse(text()) differs"
    );

    // Which packets have rules, as the model sees them (the last key naming a packet wins).
    let text = scheme.text();
    let mut packets: BTreeMap<u32, &str> = BTreeMap::new();
    for (key, value) in settings_model(text) {
        if let Ok(packet) = key.parse::<u32>() {
            packets.insert(packet, value);
        }
    }
    let mut any_check = false;
    let mut any_size = false;
    let mut shaped = "none";
    for (i, (&packet, value)) in packets.iter().enumerate().take(16) {
        let model = rules_model(value);
        let (steps, peak) = measure(stats, || scheme.record_sizes(packet, rng));
        alloc_within("record_sizes", peak, 16 * value.len() + 64, input.len())?;
        ensure!(
            steps.len() == model.len(),
            "rules: packet {packet}: {} steps, model {}",
            steps.len(),
            model.len()
        );
        for (step, rule) in steps.iter().zip(&model) {
            let fits = match (*step, *rule) {
                (Step::Check, ModelRule::Check) => true,
                (Step::Size(s), ModelRule::Range(min, max)) if min == max => s as i64 == min,
                (Step::Size(s), ModelRule::Range(min, max)) => {
                    i64::try_from(s).is_ok_and(|s| min <= s && s < max)
                }
                _ => false,
            };
            ensure!(
                fits,
                "rules: packet {packet}: step {step:?} for rule {rule:?}"
            );
        }
        any_check |= steps.contains(&Step::Check);
        any_size |= steps.iter().any(|s| matches!(s, Step::Size(_)));
        if packet == 0 {
            let mut a = rng.clone();
            let first = scheme
                .record_sizes(0, &mut a)
                .into_iter()
                .find_map(|s| match s {
                    Step::Size(n) => Some(n.min(u16::MAX as usize) as u16),
                    Step::Check => None,
                });
            let pad = scheme.preamble_padding(&mut rng.clone());
            ensure!(
                pad == first.unwrap_or(0),
                "preamble: padding {pad}, expected {first:?}"
            );
        }
        if i < 2 {
            shaped = check_shape(&steps, rng, stats)?;
        }
    }
    let unknown = rng.gen::<u32>();
    if !packets.contains_key(&unknown) {
        ensure!(
            scheme.record_sizes(unknown, rng).is_empty(),
            "rules: packet {unknown} has steps"
        );
    }

    let stop = match scheme.stop() {
        0 => "0",
        1..=8 => "small",
        _ => "big",
    };
    let rules = match (any_size, any_check) {
        (false, false) => "none",
        (true, false) => "sizes",
        (false, true) => "checks",
        (true, true) => "both",
    };
    Ok(format!("ok stop={stop} rules={rules} shape={shaped}"))
}

/// Shapes a payload with `steps` when the records it can make are small enough to build
/// here, and checks them; the bound itself is asserted whatever its size.
fn check_shape(
    steps: &[Step],
    rng: &mut SmallRng,
    stats: &mut CaseStats,
) -> Result<&'static str, String> {
    let payload_len = match rng.gen_range(0..10) {
        0 => 0,
        1 => 1,
        2 => MAX_DATA_LEN,
        3 => 70_000,
        4..=6 => rng.gen_range(0..2_000),
        _ => rng.gen_range(0..20_000),
    };
    // Each size makes at most one record: a split of the payload, the payload's end
    // with a Waste frame filling it to the size, or a Waste frame of the size (capped
    // to a frame's data) on its own. What is left after the list goes as it is.
    let bound = payload_len
        + steps
            .iter()
            .map(|s| match *s {
                Step::Size(size) => size.min(MAX_DATA_LEN) + HEADER_LEN,
                Step::Check => 0,
            })
            .sum::<usize>();
    stats.shape_bound = stats.shape_bound.max(bound);
    if bound > 16 << 20 {
        return Ok("too-big-to-build");
    }
    let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8 + 1).collect();
    let (records, peak) = measure_aside(|| padding::shape(&payload, steps));
    alloc_within(
        "shape",
        peak,
        2 * bound + 64 * (steps.len() + 2) + 1024,
        payload_len,
    )?;
    let total: usize = records.iter().map(Vec::len).sum();
    ensure!(total <= bound, "shape: {total} bytes, bound {bound}");
    ensure!(
        records.len() <= steps.len() + 1,
        "shape: {} records for {} steps",
        records.len(),
        steps.len()
    );
    let joined = records.concat();
    ensure!(joined.len() >= payload_len, "shape: payload lost");
    ensure!(
        joined[..payload_len] == payload[..],
        "shape: payload bytes changed or reordered"
    );
    let mut rest = &joined[payload_len..];
    while let Some(f) = frame::decode(rest) {
        ensure!(
            f.cmd == Command::Waste,
            "shape: {:?} frame in the padding",
            f.cmd
        );
        ensure!(f.data.iter().all(|&b| b == 0), "shape: Waste data not zero");
        rest = &rest[f.wire_len()..];
    }
    ensure!(
        rest.is_empty(),
        "shape: {} bytes after the payload are not Waste frames",
        rest.len()
    );
    Ok(if payload_len == 0 {
        "padding-only"
    } else {
        "built"
    })
}

// ---------------------------------------------------------------------------------------
// Generators: mostly-valid input with targeted corruptions.

const INTERESTING_U16: [u16; 14] = [
    0, 1, 2, 6, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF,
];
const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    2,
    7,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];
const INTERESTING_BYTES: [u8; 20] = [
    0, 1, 2, 3, 4, 5, 9, 10, 13, 0x20, b',', b'-', b'=', b'c', b'0', b'9', 0x7F, 0x80, 0xC0, 0xFF,
];

fn pick<T: Copy>(rng: &mut SmallRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

fn random_bytes(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    rng.fill_bytes(&mut out);
    out
}

/// A length skewed to small values, now and then up to a whole frame.
fn small_len(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..1000) {
        0..=499 => rng.gen_range(0..8),
        500..=799 => rng.gen_range(0..64),
        800..=949 => rng.gen_range(0..512),
        950..=997 => rng.gen_range(0..4096),
        _ => rng.gen_range(0..=MAX_DATA_LEN),
    }
}

fn some_u16(rng: &mut SmallRng) -> u16 {
    if rng.gen_bool(0.5) {
        pick(rng, &INTERESTING_U16)
    } else {
        rng.gen()
    }
}

/// A u16 length field: usually the true one, else a lie.
fn length_field(rng: &mut SmallRng, true_len: usize) -> u16 {
    match rng.gen_range(0..10) {
        0 => some_u16(rng),
        1 => (true_len as u16).wrapping_add(1),
        2 => (true_len as u16).wrapping_sub(1),
        _ => true_len.min(u16::MAX as usize) as u16,
    }
}

fn generate(target: Target, rng: &mut SmallRng) -> Vec<u8> {
    match target {
        Target::Frame => gen_frames(rng),
        Target::Address => gen_address_input(rng),
        Target::Settings => gen_settings(rng),
        Target::Auth => gen_auth(rng),
        Target::UotRequest => gen_uot_request(rng),
        Target::UotDatagram => gen_uot_datagrams(rng),
        Target::Padding => gen_padding(rng),
        Target::Session => session::generate(rng),
        Target::All => Vec::new(),
    }
}

fn gen_frames(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(0..=4) {
        let cmd = if rng.gen_ratio(3, 4) {
            rng.gen_range(0..=10u8)
        } else {
            rng.gen()
        };
        let stream_id = if rng.gen_bool(0.5) {
            pick(rng, &INTERESTING_U32)
        } else {
            rng.gen()
        };
        let mut data = match Command::from(cmd) {
            Command::Settings | Command::ServerSettings => gen_settings(rng),
            Command::UpdatePaddingScheme => gen_padding(rng),
            Command::Syn | Command::Push if rng.gen_bool(0.5) => {
                let mut data = Vec::new();
                gen_address(rng, &mut data, SOCKS);
                data
            }
            Command::Alert | Command::SynAck => b"dial tcp: connection refused".to_vec(),
            _ => {
                let n = small_len(rng);
                random_bytes(rng, n)
            }
        };
        data.truncate(MAX_DATA_LEN);
        let len = length_field(rng, data.len());
        out.push(cmd);
        out.extend_from_slice(&stream_id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&data);
    }
    if rng.gen_ratio(1, 5) {
        let cut = rng.gen_range(0..=out.len());
        out.truncate(cut);
    }
    out
}

/// Type bytes of an address form: IPv4, IPv6, domain.
#[derive(Clone, Copy)]
struct AddrCodes {
    ipv4: u8,
    ipv6: u8,
    domain: u8,
}

const SOCKS: AddrCodes = AddrCodes {
    ipv4: 1,
    ipv6: 4,
    domain: 3,
};
const UOT: AddrCodes = AddrCodes {
    ipv4: 0,
    ipv6: 1,
    domain: 2,
};

fn gen_domain(rng: &mut SmallRng) -> Vec<u8> {
    const NAMES: [&str; 12] = [
        "example.com",
        uot::UOT_V2_NAME,
        uot::UOT_V1_NAME,
        "localhost",
        "1.2.3.4",
        "::1",
        "[::1]",
        "a:b",
        "xn--bcher-kva.de",
        "bücher.de",
        "例え.jp",
        "a",
    ];
    const BAD: [&[u8]; 14] = [
        b"\xff",
        b"\x80",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
        b"\0",
        b"\n",
        b"\t",
        b" ",
        b"\x7f",
        "\u{85}".as_bytes(),
        "\u{a0}".as_bytes(),
        "\u{2028}".as_bytes(),
    ];
    match rng.gen_range(0..10) {
        0..=2 => pick(rng, &NAMES).as_bytes().to_vec(),
        3 | 4 => {
            let len = if rng.gen_ratio(1, 4) {
                pick(rng, &[1, 63, 64, 254, 255, 256])
            } else {
                rng.gen_range(1..40)
            };
            (0..len)
                .map(|_| pick(rng, b"abcdefghijklmnopqrstuvwxyz0123456789.-_"))
                .collect()
        }
        5 | 6 => {
            let mut name = pick(rng, &NAMES).as_bytes().to_vec();
            let at = rng.gen_range(0..=name.len());
            let bad = pick(rng, &BAD);
            name.splice(at..at, bad.iter().copied());
            name
        }
        7 => {
            let n = rng.gen_range(0..32);
            random_bytes(rng, n)
        }
        8 => Vec::new(),
        _ => "é".repeat(rng.gen_range(1..=130)).into_bytes(),
    }
}

/// Appends an address in the form `codes` names, with a lying length now and then.
fn gen_address(rng: &mut SmallRng, out: &mut Vec<u8>, codes: AddrCodes) {
    let kind = rng.gen_range(0..20);
    match kind {
        0..=5 => {
            out.push(codes.ipv4);
            let ip: [u8; 4] = pick(rng, &[[127, 0, 0, 1], [0, 0, 0, 0], [255, 255, 255, 255]]);
            out.extend_from_slice(&if rng.gen_bool(0.5) { ip } else { rng.gen() });
        }
        6..=9 => {
            out.push(codes.ipv6);
            let mut ip = [0u8; 16];
            if rng.gen_bool(0.5) {
                rng.fill_bytes(&mut ip);
            } else {
                ip[15] = 1;
            }
            out.extend_from_slice(&ip);
        }
        10..=18 => {
            out.push(codes.domain);
            let name = gen_domain(rng);
            let len = match rng.gen_range(0..10) {
                0 => rng.gen(),
                1 => (name.len() as u8).wrapping_add(1),
                2 => (name.len() as u8).wrapping_sub(1),
                _ => name.len().min(255) as u8,
            };
            out.push(len);
            out.extend_from_slice(&name[..name.len().min(255)]);
        }
        _ => {
            out.push(rng.gen());
            out.extend({
                let n = rng.gen_range(0..20);
                random_bytes(rng, n)
            });
        }
    }
    let port = if rng.gen_bool(0.5) {
        pick(rng, &[0u16, 1, 53, 80, 443, 8443, 65535])
    } else {
        rng.gen()
    };
    out.extend_from_slice(&port.to_be_bytes());
}

fn gen_address_input(rng: &mut SmallRng) -> Vec<u8> {
    if rng.gen_ratio(1, 6) {
        // The text form.
        let host = String::from_utf8_lossy(&gen_domain(rng)).into_owned();
        let port = pick(
            rng,
            &["80", "0", "65535", "65536", "+80", "080", "", "x", "-1"],
        );
        let text = match rng.gen_range(0..5) {
            0 => format!("[{host}]:{port}"),
            1 => format!("[::1]:{port}"),
            2 => format!(
                "{}.{}.{}.{}:{port}",
                rng.gen::<u8>(),
                rng.gen::<u8>(),
                rng.gen::<u8>(),
                rng.gen::<u8>()
            ),
            3 => host,
            _ => format!("{host}:{port}"),
        };
        return text.into_bytes();
    }
    let mut out = Vec::new();
    gen_address(rng, &mut out, SOCKS);
    if rng.gen_ratio(1, 3) {
        out.extend({
            let n = rng.gen_range(0..16);
            random_bytes(rng, n)
        });
    }
    if rng.gen_ratio(1, 5) {
        let cut = rng.gen_range(0..=out.len());
        out.truncate(cut);
    }
    out
}

const LINE_ENDS: [&str; 6] = ["\n", "\n", "\n", "\r\n", "\r", "\r\r\n"];

fn gen_settings(rng: &mut SmallRng) -> Vec<u8> {
    const KEYS: [&str; 14] = [
        "v",
        "v",
        "client",
        "padding-md5",
        "stop",
        "0",
        "",
        " v",
        "v ",
        "V",
        "\r",
        "ключ",
        "k\r",
        "=",
    ];
    const VALUES: [&str; 16] = [
        "2",
        "1",
        "0",
        " 2 ",
        "-1",
        "4294967296",
        "two",
        "",
        "anytls-rs/0.1.0",
        "75cff2ad89aadf5e257059ee571ebe11",
        "\r",
        "a=b",
        "2\r",
        "=",
        "1e3",
        "+2",
    ];
    let mut text = String::new();
    let lines = if rng.gen_ratio(1, 5000) {
        rng.gen_range(100..6000)
    } else {
        rng.gen_range(0..8)
    };
    for i in 0..lines {
        match rng.gen_range(0..10) {
            0 => text.push_str("junk"),
            1 => {}
            2 => text.push_str(&format!("k{i}=a=b=c")),
            3 => text.push_str(&format!("k{}={}", rng.gen_range(0..lines), i)),
            _ => {
                text.push_str(pick(rng, &KEYS));
                text.push('=');
                text.push_str(pick(rng, &VALUES));
            }
        }
        if i + 1 < lines || rng.gen_ratio(1, 3) {
            text.push_str(pick(rng, &LINE_ENDS));
        }
    }
    let mut out = text.into_bytes();
    if rng.gen_ratio(1, 20) {
        let at = rng.gen_range(0..=out.len());
        out.insert(at, pick(rng, &[0xFF, 0x80, 0xC0]));
    }
    out
}

fn gen_auth(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.gen_bool(0.4) {
        let password = pick(rng, &["alice-pass", "bob-pass", "", "wrong"]);
        out.extend_from_slice(&PasswordHash::of(password).0);
    } else {
        out.extend(random_bytes(rng, auth::HASH_LEN));
    }
    let pad = if rng.gen_bool(0.6) {
        rng.gen_range(0..64)
    } else {
        some_u16(rng)
    };
    out.extend_from_slice(&pad.to_be_bytes());
    let actual = match rng.gen_range(0..10) {
        0 => rng.gen_range(0..=pad as usize),
        1 => pad as usize + rng.gen_range(1..64),
        _ => pad as usize,
    };
    out.resize(out.len() + actual, 0);
    if rng.gen_ratio(1, 4) {
        // The first frame, sent right behind the preamble.
        out.extend_from_slice(&[4, 0, 0, 0, 0, 0, 3, b'v', b'=', b'2']);
    }
    if rng.gen_ratio(1, 5) {
        let cut = rng.gen_range(0..=out.len());
        out.truncate(cut);
    }
    out
}

fn gen_uot_request(rng: &mut SmallRng) -> Vec<u8> {
    let mut out = vec![match rng.gen_range(0..20) {
        0..=8 => 0,
        9..=17 => 1,
        _ => rng.gen(),
    }];
    gen_address(rng, &mut out, SOCKS);
    if rng.gen_ratio(1, 3) {
        // The first datagram, sent together with the request.
        let payload = {
            let n = small_len(rng).min(512);
            random_bytes(rng, n)
        };
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    if rng.gen_ratio(1, 5) {
        let cut = rng.gen_range(0..=out.len());
        out.truncate(cut);
    }
    out
}

fn gen_uot_datagrams(rng: &mut SmallRng) -> Vec<u8> {
    let mode = if rng.gen_ratio(1, 8) {
        rng.gen()
    } else {
        rng.gen_range(0..2)
    };
    let mut out = vec![mode];
    for _ in 0..rng.gen_range(0..=3) {
        if mode & 1 == 0 {
            gen_address(rng, &mut out, UOT);
        }
        let payload = {
            let n = small_len(rng);
            random_bytes(rng, n)
        };
        out.extend_from_slice(&length_field(rng, payload.len()).to_be_bytes());
        out.extend_from_slice(&payload);
    }
    if rng.gen_ratio(1, 5) {
        let cut = rng.gen_range(0..=out.len());
        out.truncate(cut);
    }
    out
}

fn number_text(rng: &mut SmallRng) -> String {
    match rng.gen_range(0..12) {
        0..=4 => rng.gen_range(0..2000).to_string(),
        5 => pick(
            rng,
            &[
                "0", "1", "7", "8", "9", "30", "65535", "65536", "65542", "100000",
            ],
        )
        .to_owned(),
        6 => pick(
            rng,
            &[
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "99999999999999999999999",
                "4294967295",
                "4294967296",
            ],
        )
        .to_owned(),
        7 => format!("-{}", rng.gen_range(0..1000)),
        8 => rng.gen::<u64>().to_string(),
        9 => rng.gen::<i64>().to_string(),
        _ => pick(
            rng,
            &["", "+5", " 5", "5 ", "0x10", "1e3", "١", "５", "5\r", "05"],
        )
        .to_owned(),
    }
}

fn gen_rule(rng: &mut SmallRng) -> String {
    match rng.gen_range(0..20) {
        0..=2 => "c".to_owned(),
        3..=9 => {
            let a = rng.gen_range(1..1500);
            let b = if rng.gen_ratio(1, 4) {
                a
            } else {
                rng.gen_range(1..1500)
            };
            format!("{a}-{b}")
        }
        10..=14 => format!("{}-{}", number_text(rng), number_text(rng)),
        _ => pick(
            rng,
            &[
                "", "C", " c", "c ", "1-", "-5", "1-2-3", "--", "1--2", "x-5", "+1-+2", " 1-2",
                "1 -2", "cc", "-", "0-0",
            ],
        )
        .to_owned(),
    }
}

fn gen_padding(rng: &mut SmallRng) -> Vec<u8> {
    match rng.gen_range(0..10_000) {
        0..=399 => {
            let mut text = padding::DEFAULT_SCHEME.to_owned();
            if rng.gen_bool(0.5) {
                text.push('\n');
            }
            return text.into_bytes();
        }
        400..=419 => {
            // As many rules as one frame can carry: the largest padding a scheme can ask for.
            let rule = pick(
                rng,
                &[
                    "9-9999999",
                    "65535-65535",
                    "1-2",
                    "c",
                    "1-9223372036854775807",
                ],
            );
            let limit = if rng.gen_bool(0.8) {
                MAX_DATA_LEN
            } else {
                70_000
            };
            let mut text = String::from("stop=1\n0=");
            while text.len() + rule.len() < limit {
                text.push_str(rule);
                text.push(',');
            }
            text.pop();
            return text.into_bytes();
        }
        420 => {
            // Many packets, many keys: the most lines (and distinct keys) a scheme can have.
            let mut text = String::from("stop=4294967295");
            let mut i = 0u32;
            while text.len() < MAX_DATA_LEN - 16 {
                text.push_str(&format!("\n{i}=1-2"));
                i += 1;
            }
            return text.into_bytes();
        }
        _ => {}
    }
    let mut lines = Vec::new();
    if rng.gen_ratio(9, 10) {
        let stop = if rng.gen_bool(0.7) {
            pick(
                rng,
                &[
                    "8",
                    "0",
                    "1",
                    "2",
                    " 8 ",
                    "8\r",
                    "4294967295",
                    "4294967296",
                    "-1",
                    "+3",
                    "",
                    "x",
                    "08",
                ],
            )
            .to_owned()
        } else {
            number_text(rng)
        };
        lines.push(format!("stop={stop}"));
    }
    for _ in 0..rng.gen_range(0..10) {
        let key = match rng.gen_range(0..8) {
            0..=5 => rng.gen_range(0..10).to_string(),
            6 => pick(
                rng,
                &[
                    "+1",
                    "01",
                    " 1",
                    "-1",
                    "4294967295",
                    "4294967296",
                    "stop",
                    "c",
                    "",
                ],
            )
            .to_owned(),
            _ => number_text(rng),
        };
        let count = if rng.gen_ratio(1, 50) {
            rng.gen_range(12..2000)
        } else {
            rng.gen_range(0..12)
        };
        let rules: Vec<String> = (0..count).map(|_| gen_rule(rng)).collect();
        lines.push(format!("{key}={}", rules.join(",")));
    }
    if rng.gen_ratio(1, 5) {
        lines.push(pick(rng, &["junk", "", "=", "stop"]).to_owned());
    }
    lines.shuffle(rng);
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        text.push_str(line);
        if i + 1 < lines.len() || rng.gen_ratio(1, 3) {
            text.push_str(pick(rng, &LINE_ENDS));
        }
    }
    let mut out = text.into_bytes();
    if rng.gen_ratio(1, 30) {
        let at = rng.gen_range(0..=out.len());
        out.insert(at, pick(rng, &[0xFF, 0x80, 0xC0]));
    }
    out
}

/// Mutates `data` in place: bit flips, interesting bytes and u16s, insertions,
/// deletions, truncation, duplication, numbers, splicing with `other`.
fn mutate(rng: &mut SmallRng, data: &mut Vec<u8>, other: Option<&[u8]>) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len();
        match rng.gen_range(0..11) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = pick(rng, &INTERESTING_BYTES);
            }
            2 => {
                let at = rng.gen_range(0..=len);
                let bytes = {
                    let n = rng.gen_range(1..=8);
                    random_bytes(rng, n)
                };
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                data.drain(a..b);
            }
            4 => data.truncate(rng.gen_range(0..=len)),
            5 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 256));
                let copy = data[a..b].to_vec();
                let at = rng.gen_range(0..=len);
                data.splice(at..at, copy);
            }
            6 if len >= 2 => {
                let i = rng.gen_range(0..len - 1);
                data[i..i + 2].copy_from_slice(&some_u16(rng).to_be_bytes());
            }
            7 => {
                let other = other.unwrap_or(data.as_slice()).to_vec();
                let a = rng.gen_range(0..=len);
                let b = rng.gen_range(0..=other.len());
                data.truncate(a);
                data.extend_from_slice(&other[b..]);
            }
            8 => {
                let at = rng.gen_range(0..=len);
                let number = number_text(rng);
                data.splice(at..at, number.bytes());
            }
            9 => {
                let at = rng.gen_range(0..=len);
                let piece = pick(
                    rng,
                    &[
                        &b"\n"[..],
                        b"\r\n",
                        b"=",
                        b",",
                        b"-",
                        b",c,",
                        b"\n0=",
                        b"\nstop=",
                    ],
                );
                data.splice(at..at, piece.iter().copied());
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = rng.gen();
            }
            _ => data.push(rng.gen()),
        }
    }
    data.truncate(MAX_INPUT_LEN);
}
