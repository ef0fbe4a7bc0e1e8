#!/usr/bin/env bash
# How far behind the clock the newest derived row is, under the standard load: the
# age of the newest `health` row, polled every second through the API while the load
# generator runs (analytics on, default settings: 10 s intervals, 2 s grace). Prints one
# `lag_ms N` line per poll and the maximum.
#
#   bash benches/derived_lag.sh [SECONDS]
#
# Uses the release build and ports of benches/common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-40}"
# shellcheck source=benches/common.sh
. benches/common.sh
work=$(mktemp -d)
start_server "$work/data" always ""
"$loadgen" --endpoint http://127.0.0.1:14317 --concurrency 4 --duration "$seconds" \
  --distinct-requests 2000 --start-offset-secs 0 --json > /dev/null &
load=$!
max=0
for _ in $(seq 1 $((seconds - 4))); do
  sleep 1
  lag=$(curl -s "$api/api/v1/query" \
    -d '{"sql":"SELECT CAST((CAST(now() AS BIGINT) - CAST(max(time) AS BIGINT)) / 1000000 AS BIGINT) FROM health"}' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["rows"]; print(r[0][0] if r and r[0][0] is not None else -1)')
  echo "lag_ms $lag"
  if [ "$lag" -gt "$max" ]; then max=$lag; fi
done
wait "$load"
stop_server
echo "max_lag_ms $max"
