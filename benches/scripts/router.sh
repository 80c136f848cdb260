#!/usr/bin/env bash
# The router against a direct baseline, in the same session, on loopback, release build:
#   - paced streams (TTFT 50 ms, ITL 10 ms, 64 chunks) at 256 and 1,024 concurrent;
#   - an unpaced single stream (req/s);
#   - router CPU per delivered chunk, and its peak RSS.
# mock-vllm and the load generator get one thread each; the router gets the core count.
# When haproxy is installed (apt-get install haproxy) it runs the same loads as a second
# baseline, with as many threads as the router.
# Usage: benches/scripts/router.sh [SECONDS]   (default 15 s per run)
set -euo pipefail
secs=${1:-15}
source "$(dirname "$0")/common.sh"

start_router() {
  local port; port=$(free_port)
  RUST_LOG=warn "$bin" router --listen "127.0.0.1:$port" --spot "$mock_url" --spot-capacity 100000 \
    --api-key bench-key > "$tmp/router.out" 2> "$tmp/router.err" &
  router_pid=$!; pids+=("$router_pid")
  wait_for "$tmp/router.out" "tandemn router"
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  router_url="http://127.0.0.1:$port"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_haproxy: haproxy in front of the same mock (http mode, keep-alive both sides); sets proxy_url.
start_haproxy() {
  local port; port=$(free_port)
  cat > "$tmp/haproxy.cfg" <<CFG
global
  nbthread $(nproc)
  maxconn 8000
defaults
  mode http
  option http-no-delay
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend bench
  bind 127.0.0.1:$port
  default_backend mock
backend mock
  http-reuse always
  server mock ${mock_url#http://}
CFG
  haproxy -db -f "$tmp/haproxy.cfg" > "$tmp/haproxy.out" 2>&1 &
  haproxy_pid=$!; pids+=("$haproxy_pid")
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  haproxy_url="http://127.0.0.1:$port"
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
import os
tmp, label, direct, routed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
d, r = (json.load(open(f"{tmp}/{x}.json")) for x in (direct, routed))
h = json.load(open(f"{tmp}/{sys.argv[5]}.json")) if len(sys.argv) > 5 and os.path.exists(f"{tmp}/{sys.argv[5]}.json") else None
def row(name, rep):
    return (f"  {name:<7} ok {rep['succeeded']:>6} failed {rep['failed']:>3}  {rep['requests_per_sec']:8.1f} req/s"
            f"  ttft p50/p99 {rep['ttft_ms']['p50']:7.2f}/{rep['ttft_ms']['p99']:7.2f} ms"
            f"  gap p50/p99 {rep['itl_ms']['p50']:6.2f}/{rep['itl_ms']['p99']:6.2f} ms")
print(label); print(row("direct", d)); print(row("router", r))
if h: print(row("haproxy", h))
for name, rep in [("router", r)] + ([("haproxy", h)] if h else []):
    print(f"  {name} added: ttft p99 {rep['ttft_ms']['p99'] - d['ttft_ms']['p99']:+.2f} ms, gap p99 {rep['itl_ms']['p99'] - d['itl_ms']['p99']:+.2f} ms,"
          f" req/s ratio {rep['requests_per_sec'] / max(d['requests_per_sec'], 1e-9):.3f}")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); ${secs} s per run"

# cpu_report NAME PID REPORT TICKS: CPU per delivered chunk and memory of a proxy process.
cpu_report() {
  python3 - "$@" <<'PY'
import json, sys
name, pid, path, ticks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = json.load(open(path)); chunks = r["output_tokens"]
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
print(f"  {name} CPU {ticks / 100 / r['duration_secs'] * 100:.0f}% of one core,"
      f" {ticks * 10_000 / max(chunks, 1):.2f} us per delivered chunk ({chunks} chunks);"
      f" RSS now {status['VmRSS'].strip()}, peak {status['VmHWM'].strip()}")
PY
}

# proxied LABEL NAME PID URL [bench flags]: one run through a proxy, with its CPU use.
proxied() {
  local label=$1 name=$2 pid=$3 url=$4; shift 4
  local before; before=$(ticks "$pid")
  run "$label" "$url" "$@"
  cpu_report "$name" "$pid" "$tmp/$label.json" "$(( $(ticks "$pid") - before ))" > "$tmp/$label.cpu"
}

has_haproxy=$(command -v haproxy || true)
start_mock --ttft-ms 50 --itl-ms 10 --max-num-seqs 8192
start_router
[ -n "$has_haproxy" ] && start_haproxy
for streams in 256 1024; do
  run "direct$streams" "$mock_url" --concurrency "$streams" --osl 64
  proxied "router$streams" router "$router_pid" "$router_url" --concurrency "$streams" --osl 64
  [ -n "$has_haproxy" ] && proxied "haproxy$streams" haproxy "$haproxy_pid" "$haproxy_url" --concurrency "$streams" --osl 64
  report "paced, $streams streams" "direct$streams" "router$streams" "haproxy$streams"
  cat "$tmp/router$streams.cpu" "$tmp/haproxy$streams.cpu" 2>/dev/null || true
done
kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true
pids=()

start_mock --ttft-ms 0 --itl-ms 0 --max-num-seqs 8192
start_router
[ -n "$has_haproxy" ] && start_haproxy
run direct1 "$mock_url" --concurrency 1 --osl 64
run router1 "$router_url" --concurrency 1 --osl 64
[ -n "$has_haproxy" ] && run haproxy1 "$haproxy_url" --concurrency 1 --osl 64
report "unpaced, 1 stream" direct1 router1 haproxy1
