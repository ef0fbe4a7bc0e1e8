#!/usr/bin/env bash
# Ingest over time: the standard workload against one server for MINUTES consecutive
# minutes (a loadgen run each, as benches/e2e.sh runs it), printing each minute's rate,
# CPU per span, refusals and the spans table's Delta log size. A cost that grows with
# what the server has written shows as a trend; the 15-s e2e run cannot show it.
#
#   bash benches/longrun.sh [MINUTES] [CONCURRENCY] [EXTRA_STORAGE_TOML]
#
# benches/RESULTS.md (session 18) ran it with EXTRA_STORAGE_TOML='vacuum_after = "1m"':
# with the default of an hour, the merges' inputs stay on disk and a few minutes at
# full rate take tens of GB.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-4}"
concurrency="${2:-4}"
extra="${3:-}"
# shellcheck source=benches/common.sh
. benches/common.sh
work=$(mktemp -d)
trap 'kill -TERM "$pid" 2> /dev/null; wait "$pid" || true; rm -rf "$work"' EXIT
start_server "$work/data" always "$extra"
echo "| minute | spans/s | CPU s per 1M spans | refused | spans _delta_log files |"
echo "|---|---|---|---|---|"
for m in $(seq 1 "$minutes"); do
  t0=$(cpu_ticks "$pid")
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --duration 60 --distinct-requests 2000 --start-offset-secs 172800 --json > "$work/load.json"
  t1=$(cpu_ticks "$pid")
  log_files=$(find "$work/data/spans/_delta_log" -maxdepth 1 -type f | wc -l)
  python3 - "$work/load.json" "$m" "$((t1 - t0))" "$ticks" "$log_files" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
minute, ticks, per_sec, log_files = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cpu = ticks / per_sec / max(r["accepted_spans"], 1) * 1e6
print(f"| {minute} | {r['spans_per_sec']:,.0f} | {cpu:.2f} | {r['refused_requests']} | {log_files} |")
PY
done
echo
echo "peak RSS: $(( $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024 )) MiB"
