//! Long fuzzing runs of every decoder in `anytls::proto` (the harness is `anytls_fuzz`).
//!
//! ```text
//! cargo run --release -p anytls-fuzz --example fuzz -- --target all --seconds 600 --corpus fuzz/corpus
//! ```
//!
//! Runs until the time or the case count is reached, prints cases per second per target
//! and the totals, writes failing inputs to `--crashes` and exits with 1 if there was
//! one. In the release profile (`panic = "abort"`) a decoder panic ends the process
//! right after the input is saved and printed; the exit status is then 134.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anytls_fuzz::{self as fuzz, CountingAlloc, Options, Report, Target};
use clap::Parser;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Structure-aware fuzzing of the AnyTLS protocol decoders.
#[derive(Parser, Debug)]
struct Args {
    /// Target: frame, address, settings, auth, uot-request, uot-datagram, padding, session, pair, all.
    #[arg(long, default_value = "all")]
    target: Target,
    /// Seconds to run (default 600 when --cases is not given either).
    #[arg(long)]
    seconds: Option<u64>,
    /// Cases to run over all targets (stops at whichever of --seconds and --cases comes first).
    #[arg(long)]
    cases: Option<u64>,
    /// Seed of the generators (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Corpus root: `<dir>/<target>/` files are replayed, then mutated.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where failing inputs are written.
    #[arg(long, default_value = "fuzz/crashes")]
    crashes: PathBuf,
    /// Save inputs that reach a decoder outcome the corpus had not reached into it.
    #[arg(long)]
    grow_corpus: bool,
    /// Parallel jobs, each with its own seed (seed + job).
    #[arg(long, default_value_t = 1)]
    jobs: u64,
    /// Write each target's slowest input to `<dir>/<target>.bin`.
    #[arg(long)]
    slowest: Option<PathBuf>,
    /// Check these files once each instead of fuzzing (the target is taken from
    /// --target, else from the file's folder or its `<target>-<hash>.bin` name).
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
}

/// Checks saved inputs, printing each outcome and how long the check took.
fn replay(target: Target, files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in files {
        let target = match target {
            Target::All => {
                let folder = path.parent().and_then(|p| p.file_name());
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                let from_folder = folder.and_then(|f| f.to_str()?.parse().ok());
                let from_name = stem.and_then(|s| s.rsplit_once('-')?.0.parse().ok());
                match from_folder.or(from_name) {
                    Some(t) => t,
                    None => {
                        eprintln!("{}: cannot tell the target, give --target", path.display());
                        failed = true;
                        continue;
                    }
                }
            }
            one => one,
        };
        let input = match std::fs::read(path) {
            Ok(input) => input,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        let start = Instant::now();
        let result = fuzz::check(target, &input);
        let took = start.elapsed();
        // The decoder alone, best of three.
        let decoder = (0..3)
            .map(|_| {
                let start = Instant::now();
                fuzz::decode(target, &input);
                start.elapsed()
            })
            .min()
            .unwrap_or_default();
        let what = format!(
            "{} [{target}, {} bytes, check {took:.2?}, decoder {decoder:.2?}]",
            path.display(),
            input.len()
        );
        match result {
            Ok(outcome) => println!("{what}: {outcome}"),
            Err(e) => {
                failed = true;
                println!("{what}: FAILED {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.replay.is_empty() {
        return replay(args.target, &args.replay);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let duration = match (args.seconds, args.cases) {
        (None, None) => Some(Duration::from_secs(600)),
        (seconds, _) => seconds.map(Duration::from_secs),
    };
    let jobs = args.jobs.max(1);
    println!(
        "fuzzing {} with seed {seed}, {jobs} job(s), {}{}",
        args.target,
        duration.map_or(String::new(), |d| format!("for {d:?} ")),
        args.cases
            .map_or(String::new(), |c| format!("up to {c} cases")),
    );
    let start = Instant::now();
    let threads: Vec<_> = (0..jobs)
        .map(|job| {
            let options = Options {
                seed: seed.wrapping_add(job),
                cases: args.cases.map(|c| c / jobs + u64::from(job < c % jobs)),
                duration,
                corpus: args.corpus.clone(),
                crashes: Some(args.crashes.clone()),
                grow_corpus: args.grow_corpus,
                progress: (job == 0).then_some(Duration::from_secs(30)),
            };
            let target = args.target;
            std::thread::spawn(move || fuzz::run_with(target, &options))
        })
        .collect();
    let mut report: Option<Report> = None;
    for thread in threads {
        let Ok(one) = thread.join() else {
            eprintln!("fuzz: a job panicked outside a case");
            return ExitCode::FAILURE;
        };
        match &mut report {
            Some(all) => all.merge(one),
            None => report = Some(one),
        }
    }
    let report = report.expect("at least one job");
    let wall = start.elapsed();
    println!("{report}");
    println!(
        "{} cases in {:.1?} wall: {:.0} cases/s over {jobs} job(s)",
        report.cases(),
        wall,
        report.cases() as f64 / wall.as_secs_f64()
    );
    for t in &report.targets {
        let outcomes: Vec<String> = t
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o}: {n}"))
            .collect();
        println!(
            "{} ({} generated, {} mutated, {} corpus grown): {}",
            t.target,
            t.generated,
            t.mutated,
            t.grown,
            outcomes.join("; ")
        );
    }
    if let Some(dir) = &args.slowest {
        for t in &report.targets {
            let path = dir.join(format!("{}.bin", t.target));
            if let Err(e) =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &t.slowest_input))
            {
                eprintln!("fuzz: cannot write {}: {e}", path.display());
            }
        }
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in &report.failures {
            if let Some(trace) = &failure.backtrace {
                eprintln!("[{}] {}\n{trace}", failure.target, failure.message);
            }
        }
        ExitCode::FAILURE
    }
}
