#!/usr/bin/env bash
# A day of traffic, time-scaled, against a local deployment (examples/local.yaml on a free
# port): the routing split, failed requests and cost against pure serverless and on-demand.
# Usage: benches/scripts/day_cycle.sh [SECONDS] [PEAK_RPS]   (default 240 s, 20 req/s at peak)
set -euo pipefail
secs=${1:-240}
peak=${2:-20}
source "$(dirname "$0")/common.sh"
export TANDEMN_HOME="$tmp/home"

sed 's/listen: 127.0.0.1:8080/listen: 127.0.0.1:0/' examples/local.yaml > "$tmp/local.yaml"
"$bin" deploy --config "$tmp/local.yaml" > "$tmp/deploy.out" 2>&1 &
deploy_pid=$!; pids+=("$deploy_pid")
wait_for "$tmp/deploy.out" "^api key"
url=$(awk '/^endpoint/ {print $2}' "$tmp/deploy.out"); url=${url%/v1}
key=$(awk '/^api key/ {print $3}' "$tmp/deploy.out")

"$bin" bench --url "$url" --api-key "$key" --profile day-cycle --rate "$peak" --duration "${secs}s" \
  --osl 64 --threads 1 > "$tmp/bench.txt"
cat "$tmp/bench.txt"
"$bin" status --service-name local-demo | sed -n '/^REPLICA/,$p'
"$bin" destroy --service-name local-demo
wait "$deploy_pid" 2>/dev/null || true
echo; grep '^\[' "$tmp/deploy.out" | tail -n 40
echo; "$bin" cost --service-name local-demo
