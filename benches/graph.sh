#!/usr/bin/env bash
# Call graph under load: RATE spans/s (default 100000) for SECONDS (default 60) from the
# soak generator with CONCURRENT agents at a time (default 2000), each step a tool call
# (a client span answered by the tool service's server span) and a model call to an
# uninstrumented provider, into a release build with its analytics on. Once the
# pairing store's wait is over and an evaluation has written `graph_edges`, prints, edge
# by edge, the requests `/metrics` counted and those `GET /api/v1/graph` sums over the
# run, with the API's response time.
#
#   bash benches/graph.sh [SECONDS] [RATE] [CONCURRENT]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
rate="${2:-100000}"
concurrent="${3:-2000}"
# shellcheck source=benches/common.sh
. benches/common.sh
start_soak_server
from=$(($(date +%s) - 60))
"$soak" --endpoint http://127.0.0.1:14317 --api "$api" --pid "$pid" --rate "$rate" \
  --concurrent "$concurrent" --duration "$seconds" --sample "$((seconds + 1))" > "$work/soak.log"
# The longest wait (under twice wait_seconds) and an evaluation interval, then one more.
sleep 35
to=$(($(date +%s) + 60))
curl -sf "$api/metrics" > "$work/metrics.txt"
curl -sf -o "$work/graph.json" -w '%{time_total}\n' "$api/api/v1/graph?start=$from&end=$to" > "$work/time.txt"
echo "### Call graph: ${rate} spans/s for ${seconds} s, ${concurrent} agents at a time"
echo
python3 - "$work/metrics.txt" "$work/graph.json" "$(cat "$work/time.txt")" <<'PY'
import json, re, sys
metrics, graph, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
live = {}
for line in open(metrics):
    m = re.match(r'traces_service_graph_request_total\{client="([^"]*)",server="([^"]*)",connection_type="([^"]*)",failed="[^"]*"\} (\S+)', line)
    if m:
        key = (m.group(1), m.group(2), m.group(3))
        live[key] = live.get(key, 0) + float(m.group(4))
api = {(e["source"], e["target"], e["connection_type"]): e["calls"] for e in json.load(open(graph))["edges"]}
print("| edge | connection_type | /metrics | GET /api/v1/graph |")
print("|---|---|---|---|")
for key in sorted(set(live) | set(api)):
    print(f"| {key[0]} → {key[1]} | {key[2] or '(direct)'} | {live.get(key, 0):,.0f} | {api.get(key, 0):,} |")
other = {}
for line in open(metrics):
    m = re.match(r'(swarmscope_graph_\w+_total) (\S+)', line)
    if m:
        other[m.group(1)] = float(m.group(2))
print()
print("API answered in %.3f s; " % seconds + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(other.items())))
PY
