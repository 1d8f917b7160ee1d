#!/usr/bin/env bash
# Runs the relay benchmark (`anytls-bench relay`: server in-process on CPU 0, the
# generator and its targets on the last CPU) and prints its tables.
# Usage: scripts/bench_relay.sh [SECONDS_PER_ROW] [more anytls-bench relay flags]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p anytls-bench
target/release/anytls-bench relay --duration "${1:-5}" "${@:2}"
