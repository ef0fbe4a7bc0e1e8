#!/usr/bin/env bash
# Ingest benchmark: the standard workload over OTLP gRPC into a release build of
# swarmscope, once per storage.wal_fsync mode. Prints a Markdown table: sustained
# accepted spans/s, server CPU seconds per million spans, peak RSS, Parquet bytes per
# stored span, request latency.
#
#   bash benches/ingest.sh [SECONDS] [CONCURRENCY]
#
# Builds the server with --release (slow the first time; or set SWARMSCOPE_BIN) and the
# load generator in the dev profile; both run on this machine, so the generator's CPU competes with the
# server's. Requests (1M distinct spans) are cycled when a run sends more. Uses ports 14317/14318/18080 and a temporary data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
concurrency="${2:-4}"
release_dir="${RELEASE_TARGET_DIR:-$HOME/.cache/swarmscope-release}"
dev_dir="${CARGO_TARGET_DIR:-$HOME/.cache/swarmscope-target}"

# SWARMSCOPE_BIN: an already built release binary to measure instead of building one.
server="${SWARMSCOPE_BIN:-}"
if [ -z "$server" ]; then
  CARGO_TARGET_DIR="$release_dir" cargo build --release --bin swarmscope -q
  server="$release_dir/release/swarmscope"
fi
CARGO_TARGET_DIR="$dev_dir" cargo build --bench loadgen -q
loadgen=$(ls -t "$dev_dir"/debug/deps/loadgen-* | grep -v '\.d$' | head -1)
ticks=$(getconf CLK_TCK)

echo "| wal_fsync | spans/s | CPU s per 1M spans (server) | peak RSS MiB | Parquet bytes/span | OTLP bytes/span | p50 / p99 ms |"
echo "|---|---|---|---|---|---|---|"
for mode in always interval never; do
  work=$(mktemp -d)
  cat > "$work/config.toml" <<EOF
[receivers.otlp]
grpc_address = "127.0.0.1:14317"
http_address = "127.0.0.1:14318"
[api]
address = "127.0.0.1:18080"
[storage]
data_dir = "$work/data"
wal_fsync = "$mode"
retention_hours = 1000000
EOF
  RUST_LOG=warn "$server" serve --config "$work/config.toml" > "$work/out.log" 2>&1 &
  pid=$!
  until curl -sf http://127.0.0.1:18080/readyz > /dev/null; do sleep 0.1; done
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  result=$("$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --duration "$seconds" --distinct-requests 2000 --json)
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  parquet_bytes=$(find "$work/data" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  python3 - "$result" "$cpu0" "$cpu1" "$ticks" "$peak_kib" "$parquet_bytes" "$mode" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
cpu0, cpu1, ticks, peak, parquet, mode = map(str, sys.argv[2:8])
spans = r["accepted_spans"]
cpu = (float(cpu1) - float(cpu0)) / float(ticks)
print(f"| {mode} | {r['spans_per_sec']:,.0f} | {cpu / spans * 1e6:.1f} | {int(peak) / 1024:.0f} | "
      f"{int(parquet) / spans:.1f} | {r['otlp_bytes_per_span']:.0f} | "
      f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} |")
PY
  rm -rf "$work"
done
