#!/usr/bin/env bash
# Soak test: a release anytls-server on 127.0.0.1 (CPU 0) under a mix of
# well-behaved clients (bulk echo, short request/response, UDP over TCP, slow
# readers, all checked byte for byte, on reused sessions), abrupt disconnects
# and hostile authenticated clients (SYN floods, many UDP associations, refused
# and never-reading targets, many sessions, bad first PSH, rule-breaking frames,
# 1-byte TLS records, wrong passwords, answers never read, unauthenticated
# connection floods, empty-datagram floods, streams ended with bytes undelivered) from `anytls-bench soak` (CPU 1), for
# SECONDS after a warm-up. Prints the soak's summary: errors seen by the
# well-behaved clients (goal 0), streams served, hostile actions, the server's
# baseline/peak/final RSS and fds. Loopback only; stops by itself.
# Exits non-zero if a well-behaved client saw an error, if the server's fds do
# not come back exactly to the baseline, if its RSS ends more than
# SOAK_RSS_TOLERANCE_MIB (default 16) above the baseline or peaks more than 256
# MiB above it, if the host's kernel TCP memory peaks 512 MiB above its baseline
# or an orphaned socket remains, or if the well-behaved short requests' p99
# passes 1 s.
# Usage: scripts/soak.sh [SECONDS]   (default 600; 20 is a quick check)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
PASSWORD="soak-$$-$RANDOM"
HOSTILE_PASSWORD="soak-hostile-$$-$RANDOM"

# The server alone (so none of the generator's dependencies or features are
# built into it), then the generator.
cargo build --release --bin anytls-server
cargo build --release -p anytls-bench
SERVER_BIN=target/release/anytls-server
BENCH_BIN=target/release/anytls-bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/anytls-soak.XXXXXX")
SERVER_LOG="$WORK/server.log"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Server on CPU 0 and the generator on CPU 1 when both may be used.
SERVER_PIN=()
BENCH_CPUS=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  SERVER_PIN=(taskset -c 0)
  BENCH_CPUS=(--cpus 1)
fi

# Short timeouts so the server's own clean-up is seen within the settle period
# (no well-behaved stream idles for 10 s: slow readers read every 40 ms);
# a per-IP cap below the many-sessions client's 300 sessions, and a pending cap
# per subnet below the pending flood's 200 connections (the hostile clients
# connect from 127.0.1.2, another /24 than the well-behaved clients' 127.0.0.1).
RUST_LOG=${SOAK_SERVER_LOG:-info} "${SERVER_PIN[@]}" "$SERVER_BIN" \
  --listen 127.0.0.1:0 \
  --password "$PASSWORD" --password "$HOSTILE_PASSWORD" \
  --cores 1 \
  --handshake-timeout 5 \
  --idle-session-timeout 5 \
  --stream-stall-timeout 3 \
  --stream-idle-timeout 10 \
  --write-timeout 10 \
  --uot-idle-timeout 10 \
  --address-timeout-ms 1500 \
  --max-sessions-per-ip 256 \
  --max-pending-per-subnet 128 \
  --stats-interval 60 \
  </dev/null >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

ADDR=
for _ in $(seq 200); do
  ADDR=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$SERVER_LOG" | head -n 1)
  [ -n "$ADDR" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ADDR" ]; then
  echo "error: the server did not start:" >&2
  cat "$SERVER_LOG" >&2
  exit 1
fi
echo "server built from $(git describe --always --dirty 2>/dev/null || echo '?'): $ADDR (pid $SERVER_PID, ${SERVER_PIN[*]:-not pinned}), soak of ${SECS} s after a warm-up"

set +e
"$BENCH_BIN" soak \
  --server "$ADDR" \
  --password "$PASSWORD" \
  --hostile-password "$HOSTILE_PASSWORD" \
  --hostile-source 127.0.1.2 \
  --server-pid "$SERVER_PID" \
  --duration "$SECS" \
  --rss-tolerance-mib "${SOAK_RSS_TOLERANCE_MIB:-16}" \
  "${BENCH_CPUS[@]}"
STATUS=$?
set -e

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "error: the server exited during the soak; its log ends with:" >&2
  tail -n 40 "$SERVER_LOG" >&2
  STATUS=1
elif [ "$STATUS" -ne 0 ]; then
  echo "server log (last 40 lines; warnings and errors above it: $(grep -cE ' (WARN|ERROR) ' "$SERVER_LOG" || true)):"
  tail -n 40 "$SERVER_LOG"
fi
echo "server log: $(grep -cE ' WARN ' "$SERVER_LOG" || true) warnings, $(grep -cE ' ERROR ' "$SERVER_LOG" || true) errors"
grep -E ' ERROR ' "$SERVER_LOG" | head -n 10 || true
exit "$STATUS"
