#!/usr/bin/env bash
# Ingest over time: the standard workload against one server for MINUTES consecutive
# minutes (a loadgen run each, as benches/e2e.sh runs it), printing each minute's rate,
# CPU per span, refusals and the spans table's Delta log size. A cost that grows with
# what the server has written shows as a trend; the 15-s e2e run cannot show it.
# Then the same CPU by thread (the kernel's schedstat of each): the whole server's CPU
# per span moves by several percent between runs of one build on a shared VM, while one
# stage's thread (an observer, the write-ahead log, the flush's encoder) moves far less.
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
trap stop_and_remove EXIT
start_server "$work/data" always "$extra"
echo "| minute | spans/s | CPU s per 1M spans | refused | spans _delta_log files |"
echo "|---|---|---|---|---|"
# threads FILE: each of the server's threads, its name and its CPU time so far (ns).
threads() {
  for t in /proc/"$pid"/task/*; do
    echo "$(basename "$t") $(tr ' ' _ < "$t/comm") $(cut -d' ' -f1 "$t/schedstat")"
  done > "$1" 2> /dev/null || true
}
for m in $(seq 1 "$minutes"); do
  t0=$(cpu_ticks "$pid")
  threads "$work/threads0"
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --duration 60 --distinct-requests 2000 --start-offset-secs 172800 --json > "$work/load.json"
  threads "$work/threads1"
  t1=$(cpu_ticks "$pid")
  python3 - "$work/threads0" "$work/threads1" "$work/load.json" "$m" "$((t1 - t0))" "$ticks" \
    >> "$work/by_thread.txt" <<'PY'
import collections, json, re, sys
def load(path):
    return {p[0]: (p[1], int(p[2])) for p in (l.split() for l in open(path)) if len(p) == 3}
before, after = load(sys.argv[1]), load(sys.argv[2])
spans = max(json.load(open(sys.argv[3]))["accepted_spans"], 1)
total_s = int(sys.argv[5]) / int(sys.argv[6])
by_name = collections.Counter()
for tid, (name, ns) in after.items():
    by_name[re.sub(r"[-_0-9]+$", "", name)] += ns - before.get(tid, (name, 0))[1]
# Threads that ended within the minute, and rounding: the process's total less the rest.
by_name["(ended)"] = max(total_s * 1e9 - sum(by_name.values()), 0)
print(json.dumps({"minute": sys.argv[4], "cpu": {k: v / 1e9 / spans * 1e6 for k, v in by_name.items()}}))
PY
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
echo
echo "CPU s per 1M spans by thread (the runtime's workers receive, convert, log and"
echo "flush; swarmscope-enco is the flush's second encoding lane):"
echo
python3 - "$work/by_thread.txt" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
totals = collections.Counter()
for r in rows:
    totals.update(r["cpu"])
# Threads that averaged under 0.01 CPU s per 1M spans are left out.
names = [n for n, t in totals.most_common() if t >= 0.01 * len(rows)]
print("| minute | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for r in rows:
    print(f"| {r['minute']} | " + " | ".join(f"{r['cpu'].get(n, 0):.2f}" for n in names) + " |")
PY
