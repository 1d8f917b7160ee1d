# Shared by the pool scripts: builds the benchmark binaries (the root package's
# pool and delaylink micro-benchmarks, and anytls-bench, whose pool-e2e and
# serve-echo commands they run) and, on request, a network namespace reachable over
# a point-to-point link with a real one-way delay.
# Source it; it defines build_benches, delay_ns_up and cleanup (installed as trap).

NS="anytls-bench-$$"
HOST_IF="atb$$h"
NS_IF="atb$$n"
HOST_IP=10.211.$(( $$ % 250 )).1
NS_IP=10.211.$(( $$ % 250 )).2
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Prints the path of a bench binary after building it in release mode.
bench_binary() {
  cargo bench --bench "$1" --no-run 2>&1 | tee /dev/stderr | grep -o "target/release/deps/$1-[0-9a-f]*" | tail -n 1
}

build_benches() {
  POOL_BIN=$(bench_binary pool)
  DELAY_BIN=$(bench_binary delaylink)
  cargo build --release -p anytls-bench
  BENCH_BIN=target/release/anytls-bench
  for bin in "$POOL_BIN" "$BENCH_BIN" "$DELAY_BIN"; do
    [ -x "$bin" ] || { echo "error: could not build $bin" >&2; exit 1; }
  done
}

# delay_ns_up DELAY_MS PORT: a namespace at $NS_IP, $DELAY_MS each way, echo on PORT.
delay_ns_up() {
  local delay_ms=$1 port=$2
  [ "$(id -u)" -eq 0 ] || { echo "error: the delayed network needs root (ip netns)" >&2; exit 1; }
  command -v ip >/dev/null || { echo "error: ip (iproute2) is required" >&2; exit 1; }
  ip netns add "$NS"
  if tc qdisc add dev lo root netem delay 0ms 2>/dev/null; then
    tc qdisc del dev lo root
    # sch_netem is available: a veth pair with netem on both ends.
    ip link add "$HOST_IF" type veth peer name "$NS_IF"
    ip link set "$NS_IF" netns "$NS"
    tc qdisc add dev "$HOST_IF" root netem delay "${delay_ms}ms"
    ip netns exec "$NS" tc qdisc add dev "$NS_IF" root netem delay "${delay_ms}ms"
    ip addr add "$HOST_IP/30" dev "$HOST_IF"
    ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$NS_IF"
    DELAY_KIND="veth + tc netem"
  else
    # No sch_netem in this kernel: TUN devices joined by a userspace delay line.
    "$DELAY_BIN" "$HOST_IF" "$NS" "$NS_IF" "$delay_ms" &
    PIDS+=($!)
    for _ in $(seq 50); do ip link show "$HOST_IF" >/dev/null 2>&1 && break; sleep 0.1; done
    ip addr add "$HOST_IP" peer "$NS_IP" dev "$HOST_IF"
    ip netns exec "$NS" ip addr add "$NS_IP" peer "$HOST_IP" dev "$NS_IF"
    DELAY_KIND="TUN pair + userspace delay line (no sch_netem in this kernel)"
  fi
  ip link set "$HOST_IF" up
  ip netns exec "$NS" ip link set "$NS_IF" up
  ip netns exec "$NS" ip link set lo up
  ip netns exec "$NS" "$BENCH_BIN" serve-echo "$NS_IP:$port" &
  PIDS+=($!)
  sleep 0.5
  echo "delayed target: $NS_IP:$port, ${delay_ms} ms each way via $DELAY_KIND"
}
