//! Structure-aware fuzzing of the protocol decoders (`anytls_fuzz`) within `cargo test`:
//! a bounded, seeded number of cases per target (generated and mutated from the corpus),
//! and a replay of every file in `fuzz/corpus/`. Long runs: `scripts/fuzz.sh`.

use std::path::PathBuf;

use anytls_fuzz::{self as fuzz, CountingAlloc, Target};

// Allocations of each decoder call are measured and held to a bound of its input.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Runs `cases` cases of `target` from a fixed seed; every outcome class the generators
/// are meant to reach must have been reached at least `min_outcomes` times over.
fn fuzz_target(target: Target, cases: u64, min_outcomes: usize) {
    let seed = 0x5EED_0000 + Target::EACH.iter().position(|&t| t == target).unwrap() as u64;
    let report = fuzz::run(target, seed, cases, Some(&corpus_root()));
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.cases(), cases);
    assert!(report.alloc_measured, "the counting allocator is installed");
    let t = &report.targets[0];
    assert!(t.replayed > 0, "no corpus replayed for {target}");
    assert!(t.mutated > 0 && t.generated > 0, "{t:?}");
    assert!(
        t.outcomes.len() >= min_outcomes,
        "{target}: only {} outcomes reached: {:?}",
        t.outcomes.len(),
        t.outcomes.keys().collect::<Vec<_>>()
    );
}

#[test]
fn frame() {
    fuzz_target(Target::Frame, 200_000, 12);
}

#[test]
fn address() {
    fuzz_target(Target::Address, 300_000, 10);
}

#[test]
fn settings() {
    fuzz_target(Target::Settings, 200_000, 12);
}

#[test]
fn auth() {
    fuzz_target(Target::Auth, 120_000, 8);
}

#[test]
fn uot_request() {
    fuzz_target(Target::UotRequest, 300_000, 11);
}

#[test]
fn uot_datagram() {
    fuzz_target(Target::UotDatagram, 300_000, 20);
}

#[test]
fn padding() {
    fuzz_target(Target::Padding, 40_000, 20);
}

#[test]
fn session() {
    fuzz_target(Target::Session, 20_000, 40);
}

#[test]
fn pair() {
    fuzz_target(Target::Pair, 3_000, 8);
}

#[test]
fn corpus_replays_clean() {
    let root = corpus_root();
    let mut failures = Vec::new();
    for target in Target::EACH {
        let files = fuzz::corpus_files(&root, target).unwrap();
        assert!(!files.is_empty(), "no corpus files for {target}");
        for (path, data) in files {
            if let Err(e) = fuzz::check(target, &data) {
                failures.push(format!("{}: {e}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn same_seed_same_run() {
    let a = fuzz::run(Target::All, 42, 3_000, None);
    let b = fuzz::run(Target::All, 42, 3_000, None);
    assert_eq!(a.cases(), 3_000);
    for (x, y) in a.targets.iter().zip(&b.targets) {
        assert_eq!(x.outcomes, y.outcomes, "{}", x.target);
    }
}

#[test]
fn target_names_round_trip() {
    for target in Target::EACH.into_iter().chain([Target::All]) {
        assert_eq!(target.name().parse::<Target>(), Ok(target));
    }
    assert!("nope".parse::<Target>().is_err());
    assert!(fuzz::check(Target::All, b"").is_err());
}
