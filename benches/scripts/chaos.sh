#!/usr/bin/env bash
# The chaos run (issue 9): a local deployment under `tandemn bench` load while backends
# are killed, preempted and stalled and the router gets slow, stalled and malformed
# clients; then checks that requests ended cleanly, that the router's footprint came
# back and that the ledger matches the billing record. Exits non-zero if a check fails.
# Usage: benches/scripts/chaos.sh [SECONDS] [--streams N] [--sighup] [--debug] [--seed S]
#   SECONDS    load duration (default 180)
#   --streams  concurrent streams from `tandemn bench` (default 256)
#   --sighup   also send SIGHUP to the deploy process (a config reload)
#   --debug    use a debug build (for trying the script; the figures need release)
#   --seed     the faults' random seed (default: the time), printed to replay a run
# Logs and results (deploy.out, bench.json, chaos.json, the processes' logs) are kept in
# .build/chaos/last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

secs=180
profile=release
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --sighup) extra+=(--sighup) ;;
    --streams|--seed) extra+=("$1" "$2"); shift ;;
    [0-9]*) secs=$1 ;;
    *) echo "chaos.sh: unknown argument \`$1\` (see the usage at the top of this script)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$profile" = release ]; then cargo build --release -q; else cargo build -q; fi
mkdir -p .build/chaos
exec python3 benches/scripts/chaos.py --bin "target/$profile/tandemn" --duration "$secs" \
  --keep .build/chaos/last "${extra[@]}"
