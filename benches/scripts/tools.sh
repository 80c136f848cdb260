#!/usr/bin/env bash
# Measures the load tools themselves, on loopback, with the release build:
#   1. mock-vllm's chunk rate on one core (unpaced streams);
#   2. the load generator's timing fidelity: 10 vs 1,000 paced streams (TTFT 50 ms,
#      ITL 10 ms), both tools on one thread each.
# Usage: benches/scripts/tools.sh [SECONDS]   (default 15 s per run)
set -euo pipefail
secs=${1:-15}
source "$(dirname "$0")/common.sh"

# Runs the load generator against the mock; prints one result line.
measure() {
  local label=$1; shift
  local before after
  before=$(ticks "$mock_pid")
  curl -s "$mock_url/metrics" > "$tmp/metrics.before"
  "$bin" bench --url "$mock_url" --threads 1 --isl 16 --duration "${secs}s" --json "$@" > "$tmp/report.json"
  after=$(ticks "$mock_pid")
  curl -s "$mock_url/metrics" > "$tmp/metrics.after"
  python3 - "$label" "$((after - before))" "$secs" "$tmp/report.json" "$tmp/metrics.before" "$tmp/metrics.after" <<'PY'
import json, re, sys
label, mock_ticks, secs, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def buckets(path):
    found = {}
    for line in open(path):
        m = re.match(r'mock_vllm_token_lateness_seconds_bucket\{.*le="([^"]+)"\} (\d+)', line)
        if m:
            found[float(m.group(1))] = int(m.group(2))
    return found

before, after = buckets(sys.argv[5]), buckets(sys.argv[6])
delta = sorted((le, after[le] - before.get(le, 0)) for le in after)
def lateness(q):
    total = delta[-1][1]
    for le, count in delta:
        if total and count >= q * total:
            return le * 1000
    return float("nan")
r = json.load(open(path))
mock_cpu = mock_ticks / 100 / r["duration_secs"] * 100
chunks = r["output_tokens_per_sec"]
print(f"{label:<28} streams ok {r['succeeded']:>6}  failed {r['failed']:>3}  chunks/s {chunks:>9.0f}"
      f"  ttft p50/p99 {r['ttft_ms']['p50']:6.2f}/{r['ttft_ms']['p99']:6.2f} ms"
      f"  gap p50/p99 {r['itl_ms']['p50']:6.2f}/{r['itl_ms']['p99']:6.2f} ms"
      f"  mock late p50/p99 <={lateness(0.5):g}/<={lateness(0.99):g} ms"
      f"  mock cpu {mock_cpu:5.1f}%  bench cpu {r['client_cpu_percent']:5.1f}%"
      f"  chunks per mock cpu-s {chunks / max(mock_cpu / 100, 1e-9):9.0f}")
PY
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
start_mock --ttft-ms 0 --itl-ms 0 --max-num-seqs 4096
measure "unpaced, 64 streams" --concurrency 64 --osl 4000
stop_mock

start_mock --ttft-ms 50 --itl-ms 10 --max-num-seqs 4096
measure "paced, 10 streams" --concurrency 10 --osl 64
measure "paced, 1000 streams" --concurrency 1000 --osl 64
stop_mock
