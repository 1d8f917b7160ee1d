#!/usr/bin/env bash
# Compares the outbound pool kinds end to end and prints the tables:
#   1. micro-benchmark: take + return on fake spares, 1/2/4 threads, ratio to lock;
#   2. stream open (SYN -> SYNACK) latency and streams/s for none, lock, lockfree,
#      highperf against a local echo target on loopback;
#   3. the same against a target behind a real 10 ms one-way delay (a network
#      namespace made by this script; needs root).
# Usage: scripts/test_lockfree_performance.sh [SECONDS_PER_KIND]
# Stops everything it started; exits non-zero on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib_delay_ns.sh
SECS=${1:-5}

build_benches
echo
echo "== 1. micro-benchmark (no sockets)"
"$POOL_BIN" --millis 1000 --repeats 3
echo
echo "== 2. end to end, loopback target"
"$BENCH_BIN" pool-e2e --duration "$SECS" --concurrency 8
echo
echo "== 3. end to end, target behind a 10 ms delay each way"
delay_ns_up 10 7000
"$BENCH_BIN" pool-e2e --duration "$SECS" --concurrency 8 --target "$NS_IP:7000"
