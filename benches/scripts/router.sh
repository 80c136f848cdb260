#!/usr/bin/env bash
# The router against a direct baseline, in the same session, on loopback, release build:
#   - paced streams (TTFT 50 ms, ITL 10 ms, 64 chunks) at 256 and 1,024 concurrent;
#   - an unpaced single stream (req/s);
#   - router CPU per delivered chunk, and its peak RSS.
# mock-vllm and the load generator get one thread each; the router gets the core count.
# Usage: benches/scripts/router.sh [SECONDS]   (default 15 s per run)
set -euo pipefail
secs=${1:-15}
source "$(dirname "$0")/common.sh"

start_router() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RUST_LOG=warn "$bin" router --listen "127.0.0.1:$port" --spot "$mock_url" --spot-capacity 100000 \
    --api-key bench-key > "$tmp/router.out" 2> "$tmp/router.err" &
  router_pid=$!; pids+=("$router_pid")
  wait_for "$tmp/router.out" "tandemn router"
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  router_url="http://127.0.0.1:$port"
}

# run LABEL URL [bench flags]: one bench run; prints its JSON report path.
run() {
  local label=$1 url=$2; shift 2
  "$bin" bench --url "$url" --api-key bench-key --model mock-model --threads 1 --isl 16 --warmup 2s \
    --duration "${secs}s" --json "$@" > "$tmp/$label.json"
}

report() {
  python3 - "$tmp" "$@" <<'PY'
import json, sys
tmp, label, direct, routed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
d, r = (json.load(open(f"{tmp}/{x}.json")) for x in (direct, routed))
def row(name, rep):
    return (f"  {name:<7} ok {rep['succeeded']:>6} failed {rep['failed']:>3}  {rep['requests_per_sec']:8.1f} req/s"
            f"  ttft p50/p99 {rep['ttft_ms']['p50']:7.2f}/{rep['ttft_ms']['p99']:7.2f} ms"
            f"  gap p50/p99 {rep['itl_ms']['p50']:6.2f}/{rep['itl_ms']['p99']:6.2f} ms")
print(label); print(row("direct", d)); print(row("router", r))
print(f"  added: ttft p99 {r['ttft_ms']['p99'] - d['ttft_ms']['p99']:+.2f} ms, gap p99 {r['itl_ms']['p99'] - d['itl_ms']['p99']:+.2f} ms,"
      f" req/s ratio {r['requests_per_sec'] / max(d['requests_per_sec'], 1e-9):.3f}")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); ${secs} s per run"

start_mock --ttft-ms 50 --itl-ms 10 --max-num-seqs 8192
start_router
for streams in 256 1024; do
  run "direct$streams" "$mock_url" --concurrency "$streams" --osl 64
  before=$(ticks "$router_pid")
  run "router$streams" "$router_url" --concurrency "$streams" --osl 64
  after=$(ticks "$router_pid")
  report "paced, $streams streams" "direct$streams" "router$streams"
  python3 - "$tmp/router$streams.json" "$((after - before))" "$router_pid" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); ticks = int(sys.argv[2]); pid = sys.argv[3]
chunks = r["output_tokens"]
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
print(f"  router CPU {ticks / 100 / r['duration_secs'] * 100:.0f}% of one core,"
      f" {ticks * 10_000 / max(chunks, 1):.2f} us per delivered chunk ({chunks} chunks);"
      f" RSS now {status['VmRSS'].strip()}, peak {status['VmHWM'].strip()}")
PY
done
kill "$router_pid" "$mock_pid"; wait "$router_pid" "$mock_pid" 2>/dev/null || true

start_mock --ttft-ms 0 --itl-ms 0 --max-num-seqs 8192
start_router
run direct1 "$mock_url" --concurrency 1 --osl 64
run router1 "$router_url" --concurrency 1 --osl 64
report "unpaced, 1 stream" direct1 router1
