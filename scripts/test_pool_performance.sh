#!/usr/bin/env bash
# High-concurrency stress of the outbound pool kinds: thousands of concurrent
# streams over a few sessions, bounded in time, against a loopback echo target.
# (The delayed-target comparison is scripts/test_lockfree_performance.sh: the
# userspace delay line it falls back to without sch_netem cannot carry thousands
# of concurrent connections, so figures from it at this scale would measure it.)
# Prints streams/s, stream-open latency and each kind's pool stats.
# Usage: scripts/test_pool_performance.sh [SECONDS_PER_KIND] [CONCURRENT_STREAMS]
# Stops everything it started; exits non-zero on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib_delay_ns.sh
SECS=${1:-5}
CONCURRENCY=${2:-2000}

need=$(( CONCURRENCY * 3 + 1000 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || { echo "error: need ulimit -n >= $need" >&2; exit 1; }
fi

build_benches
echo
echo "== $CONCURRENCY concurrent streams over 20 sessions, loopback target"
"$BENCH_BIN" pool-e2e --duration "$SECS" --concurrency "$CONCURRENCY" --sessions 20 --min-idle 64
