# Shared by the benchmark scripts: a release build, a scratch folder, and cleanup of
# every process they start (by PID) however they end. Source it; do not run it.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -q
bin=target/release/tandemn
tmp=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

# CPU ticks (1/100 s) a process has used, user plus system.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits (bounded) until FILE contains TEXT.
wait_for() { for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.05; done; echo "timeout: $1" >&2; exit 1; }

# start_mock ARGS...: mock-vllm on a free port, one thread; sets mock_pid and mock_url.
start_mock() {
  "$bin" mock-vllm --port 0 --threads 1 "$@" > "$tmp/mock.out" &
  mock_pid=$!; pids+=("$mock_pid")
  wait_for "$tmp/mock.out" serving
  mock_url=$(awk '/serving/ {print $NF}' "$tmp/mock.out")
}

stop_mock() { kill "$mock_pid"; wait "$mock_pid" 2>/dev/null || true; }
