//! The runner: [`run`] and [`run_with`] replay a corpus, then take turns between
//! targets, each case an input from the target's generator or a mutated corpus file,
//! checked with its panics caught and its allocations measured; new outcomes grow the
//! corpus, failures are kept once each and saved. [`check`] replays one input. A panic
//! hook saves the input before a `panic = "abort"` build ends.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::hash::Hasher;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::alloc::{self, CaseStats};
use crate::gen::{number_text, pick, random_bytes, some_u16, INTERESTING_BYTES};
use crate::report::{hex, Failure, FailureKind, Report, TargetReport};
use crate::targets;
use crate::Target;

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
        alloc_measured: alloc::measured(),
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
        targets::check(target, input, &mut rng, &mut stats)
    }));
    let took = start.elapsed();
    alloc::stop_tracking();
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
        let mut data = targets::generate(*target, rng);
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

// ---------------------------------------------------------------------------------------
// Mutation of corpus (and generated) inputs.

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
