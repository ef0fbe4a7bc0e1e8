#!/usr/bin/env bash
# Two server builds under the same fixed load, in turns: the server's CPU seconds per
# million spans (and spans/s) of each run, and their means. A change of a few percent
# is lost in this VM's noise between two e2e runs (benches/e2e.sh times a duration, so
# a faster run also batches differently); a fixed number of spans, several pairs and
# builds alternating so that both see the VM's drift, tell it apart roughly.
#
#   bash benches/pairs.sh BIN_A BIN_B [PAIRS] [SPANS] [CONCURRENCY]
#
# Each run starts BIN with `wal_fsync = "always"` in a new data directory, sends 500,000
# spans of the standard workload to warm it up, then SPANS (default 3,000,000) more,
# timestamped now, and reads the server's CPU time from /proc before and after.
# LOADGEN_ARGS adds load generator options (the second workload:
# LOADGEN_ARGS='--work-item-share 0.1 --token-usage-share 0.1'); STORAGE_TOML adds
# [storage] settings. THREAD=<name> (a thread's name as /proc shows it, at most 15
# characters: swarmscope-wal, swarmscope-enco) also prints that thread's CPU seconds
# per 1M spans: one stage's share, steadier than the whole server's. SEED_DIR starts
# each run on a copy of that data directory instead of an empty one (a store of a
# week: `benches/week.sh` makes one), where the costs that grow with a table's files
# show. Uses ports 14317/14318/18080.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,15p "$0"; exit 2; }
bin_a=$(realpath "$1")
bin_b=$(realpath "$2")
pairs="${3:-6}"
spans="${4:-3000000}"
concurrency="${5:-4}"
# shellcheck source=benches/common.sh
. benches/common.sh

# load [LOADGEN_OPTION...]: the standard workload (and LOADGEN_ARGS) into the server,
# its result as JSON.
load() {
  # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of options
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --distinct-requests 2000 ${LOADGEN_ARGS:-} --json "$@"
}

# thread_ticks PID NAME: the CPU time so far of PID's first thread named NAME, in
# clock ticks (0 without NAME).
thread_ticks() {
  local task
  [ -n "$2" ] || { echo 0; return; }
  for task in /proc/"$1"/task/*; do
    if [ "$(cat "$task/comm")" = "$2" ]; then
      awk '{print $14 + $15}' "$task/stat"
      return
    fi
  done
  echo 0
}

# run BIN: prints "CPU_S_PER_1M SPANS_PER_S THREAD_CPU_S_PER_1M" of one run.
run() {
  server=$1
  work=$(mktemp -d)
  [ -z "${SEED_DIR:-}" ] || cp -a "$SEED_DIR" "$work/data"
  start_server "$work/data" always "${STORAGE_TOML:-}"
  load --spans 500000 > /dev/null
  local cpu0 cpu1 thread0 thread1 result
  cpu0=$(cpu_ticks "$pid")
  thread0=$(thread_ticks "$pid" "${THREAD:-}")
  result=$(load --spans "$spans")
  cpu1=$(cpu_ticks "$pid")
  thread1=$(thread_ticks "$pid" "${THREAD:-}")
  stop_server
  rm -rf "$work"
  python3 -c 'import json, sys
r = json.loads(sys.argv[1])
ticks = float(sys.argv[4])
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / ticks
thread = (float(sys.argv[6]) - float(sys.argv[5])) / ticks
spans, rate = r["accepted_spans"], r["spans_per_sec"]
print(f"{cpu / spans * 1e6:.2f} {rate:.0f} {thread / spans * 1e6:.3f}")' \
    "$result" "$cpu0" "$cpu1" "$ticks" "$thread0" "$thread1"
}

thread_columns=""
[ -z "${THREAD:-}" ] || thread_columns=" A $THREAD | B $THREAD |"
echo "| pair | A CPU s per 1M spans | B CPU s per 1M spans | A spans/s | B spans/s |$thread_columns"
echo "|---|---|---|---|---|${thread_columns:+---|---|}"
results=()
for i in $(seq "$pairs"); do
  a=$(run "$bin_a")
  b=$(run "$bin_b")
  read -r cpu_a rate_a thread_a <<< "$a"
  read -r cpu_b rate_b thread_b <<< "$b"
  echo "| $i | $cpu_a | $cpu_b | $rate_a | $rate_b |${thread_columns:+ $thread_a | $thread_b |}"
  results+=("$cpu_a $cpu_b $thread_a $thread_b")
done
printf '%s\n' "${results[@]}" | THREAD="${THREAD:-}" python3 -c 'import os, statistics, sys
rows = [tuple(map(float, line.split())) for line in sys.stdin if line.strip()]
def compare(what, a, b):
    d = [y - x for x, y in zip(a, b)]
    print(f"Mean {what}: A {statistics.mean(a):.3f}, B {statistics.mean(b):.3f}; "
          f"B - A per pair {statistics.mean(d):+.3f} (from {min(d):+.3f} to {max(d):+.3f}), "
          f"B lower in {sum(x < 0 for x in d)} of {len(d)}.")
print()
compare("CPU s per 1M spans", [r[0] for r in rows], [r[1] for r in rows])
if os.environ["THREAD"]:
    compare(os.environ["THREAD"] + " CPU s per 1M spans", [r[2] for r in rows], [r[3] for r in rows])'
