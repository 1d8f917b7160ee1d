#!/usr/bin/env bash
# Structure-aware fuzzing of every decoder in src/proto and of the session state
# machine (the harness is fuzz/src/, package anytls-fuzz),
# on the stable toolchain, in release mode.
#
#   scripts/fuzz.sh [SECONDS] [TARGET] [more fuzz/examples/fuzz.rs flags]
#
# SECONDS defaults to 600, TARGET to all (frame, address, settings, auth, uot-request,
# uot-datagram, padding, session). The corpus in fuzz/corpus/<target>/ is replayed first, then
# mutated; inputs that reach a decoder outcome it had not reached are added to it
# (FUZZ_GROW=0 turns that off). Failing inputs go to fuzz/crashes/ and the exit status
# is non-zero. FUZZ_JOBS runs that many jobs in parallel (default 1), FUZZ_SEED fixes
# the seed. Replay a saved input: scripts/fuzz.sh 0 all --replay fuzz/crashes/<file>.bin
set -euo pipefail

cd "$(dirname "$0")/.."
duration=${1:-600}
target=${2:-all}
shift $(( $# < 2 ? $# : 2 ))

args=(--target "$target" --seconds "$duration" --corpus fuzz/corpus --crashes fuzz/crashes
      --jobs "${FUZZ_JOBS:-1}")
if [[ "${FUZZ_GROW:-1}" != 0 ]]; then
    args+=(--grow-corpus)
fi
if [[ -n "${FUZZ_SEED:-}" ]]; then
    args+=(--seed "$FUZZ_SEED")
fi
exec cargo run --release -p anytls-fuzz --example fuzz -- "${args[@]}" "$@"
