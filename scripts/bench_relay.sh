#!/usr/bin/env bash
# Runs the relay benchmark (server on CPU 0, client on CPU 1) and prints its table.
# Usage: scripts/bench_relay.sh [SECONDS_PER_ROW]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench relay -- --duration "${1:-5}"
