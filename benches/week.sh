#!/usr/bin/env bash
# A week of history: SPANS (default 100M) distinct spans of the standard workload with
# timestamps spread over the seven days before now, then the typical queries over the
# last day and over the whole week, first with the server idle, then while a load
# generator on one connection sends more spans dated now. Prints Markdown tables.
#
#   bash benches/week.sh [SPANS] [RUNS]
#
# 1. Load: SPANS spans sent with --unique over 4 connections (each cycle through the 200
#    distinct requests moves a week / cycles on), then the server runs on until
#    compaction has merged what the burst left (the file count unchanged for 90 s).
#    Reports the load's rate, the files and bytes of the spans table.
# 2. Queries: each run once to warm up, then RUNS times (default 3); the median is
#    reported, through POST /api/v1/query at the default settings but a 110 s timeout.
#    A query refused or failed reports its HTTP status and error.
# 3. The same queries while the load generator sends on one connection for as long as
#    they run: their medians, and the spans/s accepted meanwhile (from
#    swarmscope_receiver_accepted_spans_total) against the same connection idle.
#
# Uses the release build of benches/e2e.sh (benches/common.sh), its ports, and a
# temporary directory (about 61 bytes a span, 6 GB at 100M).
set -euo pipefail
cd "$(dirname "$0")/.."
spans="${1:-100000000}"
runs="${2:-3}"
# shellcheck source=benches/common.sh
. benches/common.sh

work=$(mktemp -d)
trap 'kill "${load_pid:-}" 2> /dev/null || true; stop_and_remove' EXIT
data="$work/data"

load_week "$spans"
t1=$(date +%s)
await_compaction "$data"
t2=$(date +%s)
stop_server
python3 benches/delta_files.py "$data/spans" --list > "$work/files.txt"
files=$(wc -l < "$work/files.txt")
bytes=$(file_bytes "$work/files.txt")
all_bytes=$(python3 benches/delta_files.py "$data")
python3 - "$work/load.json" "$files" "$bytes" "$all_bytes" "$load_secs" "$(( t2 - t1 ))" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
files, spans_bytes, all_bytes, load_s, settle_s = map(int, sys.argv[2:7])
n = load["accepted_spans"]
print(f"### A week of history: {n:,} spans")
print()
print(f"Loaded in {load_s} s ({n / load_s:,.0f} spans/s over 4 connections); compaction "
      f"settled {settle_s} s later. `spans`: {files} files, {spans_bytes / 2**30:.2f} GiB; "
      f"every table: {all_bytes / n:.1f} Parquet B/span.")
print()
PY

# The default settings, compaction on: the week is merged already, and the spans sent
# while the queries run are merged as a user's would be. A query over the week may take
# longer than the default 30 s timeout, so it is raised to 110 s (under the API's
# 120 s idle timeout), as a user querying that much would.
# The restart rebuilds the claim book from the week's coordination_events before it is
# ready; the evaluation's log lines say what it restored and what it could not store.
export RUST_LOG="warn,swarmscope_collector::evaluation=info"
r0=$(date +%s%N)
start_server "$data" interval $'[query]\ntimeout_ms = 110000'
r1=$(date +%s%N)
echo "Restart over the week: ready in $(( (r1 - r0) / 1000000 )) ms; $(grep -o 'work item claims restored.*\|cannot restore work item claims.*' "$work/out.log" | tail -1 | cut -c1-200)"
echo
python3 - "$api" "$runs" "$loadgen" <<'PY'
import json, re, statistics, subprocess, sys, time, urllib.error, urllib.request

api, runs, loadgen = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def sql(q):
    req = urllib.request.Request(f"{api}/api/v1/query", data=json.dumps({"sql": q}).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as r:
            return 200, json.load(r)["rows"]
    except urllib.error.HTTPError as e:
        return e.code, json.load(e).get("error", "")

def accepted():
    with urllib.request.urlopen(f"{api}/metrics") as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(
        r'^swarmscope_receiver_accepted_spans_total\{[^}]*\} (\S+)$', text, re.M))

latest = sql("SELECT to_unixtime(max(start_time)) FROM spans")[1][0][0]
day = f"start_time >= to_timestamp_seconds({int(latest) - 86400})"
week = "true"
trace = sql(f"SELECT trace_id FROM spans WHERE {day} LIMIT 1")[1][0][0]

def queries(window):
    return [
        ("count by service",
         f"SELECT service_name, count(*) AS spans FROM spans WHERE {window} "
         "GROUP BY service_name ORDER BY spans DESC"),
        ("p95 duration by service and name",
         f"SELECT service_name, name, approx_percentile_cont(duration_ns, 0.95) AS p95 FROM spans "
         f"WHERE {window} GROUP BY service_name, name ORDER BY service_name, name"),
        ("exact p95 duration by service and name",
         "SELECT service_name, name, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) "
         f"AS p95 FROM spans WHERE {window} GROUP BY service_name, name ORDER BY service_name, name"),
        ("one trace by id",
         f"SELECT * FROM spans WHERE {window} AND trace_id = '{trace}' ORDER BY start_time"),
        ("top error operations",
         f"SELECT service_name, name, count(*) AS errors FROM spans WHERE status_code = 'ERROR' "
         f"AND {window} GROUP BY service_name, name ORDER BY errors DESC LIMIT 10"),
        ("slowest operations of one model (map filter, top-k)",
         "SELECT service_name, name, max(duration_ns) AS slowest FROM spans "
         f"WHERE attributes['gen_ai.request.model'] = 'gpt-4o' AND {window} "
         "GROUP BY service_name, name ORDER BY slowest DESC LIMIT 10"),
        ("tokens by team",
         "SELECT attributes['coordination.team'] AS team, "
         "sum(CAST(attributes['gen_ai.usage.input_tokens'] AS BIGINT)) AS input_tokens "
         f"FROM spans WHERE {window} GROUP BY team ORDER BY team"),
        ("coordination velocity by team",
         "SELECT attributes['coordination.team'] AS team, count(*) AS completed, "
         "count(DISTINCT attributes['coordination.work.id']) AS work_items FROM spans "
         f"WHERE name = 'work.complete' AND {window} GROUP BY team ORDER BY team"),
    ]

def timed(q):
    status, rows = sql(q)
    if status != 200:
        return f"HTTP {status}: {rows[:80]}"
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        status, rows = sql(q)
        if status != 200:
            return f"HTTP {status} after the warm-up: {rows[:80]}"
        times.append((time.perf_counter() - t) * 1000)
    return f"{statistics.median(times):,.0f}"

def query_set():
    out = {}
    for window, name in ((day, "day"), (week, "week")):
        for title, q in queries(window):
            out[(title, name)] = timed(q)
    return out

def load(seconds):
    return subprocess.Popen(
        [loadgen, "--endpoint", "http://127.0.0.1:14317", "--concurrency", "1",
         "--duration", str(seconds), "--distinct-requests", "2000", "--json"],
        stdout=subprocess.PIPE, text=True)

# One connection idle, for the share the queries leave it.
idle = json.loads(load(15).communicate()[0])["spans_per_sec"]
quiet = query_set()
gen = load(100000)
a0, t0 = accepted(), time.monotonic()
busy = query_set()
rate = (accepted() - a0) / (time.monotonic() - t0)
gen.terminate()
gen.wait()

print(f"Queries, median of {runs} after a warm-up, ms (the last day: "
      f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(int(latest) - 86400))} on):")
print()
print("| query | last day, idle | week, idle | last day, ingesting | week, ingesting |")
print("|---|---|---|---|---|")
for title, _ in queries(week):
    print(f"| {title} | {quiet[(title, 'day')]} | {quiet[(title, 'week')]} | "
          f"{busy[(title, 'day')]} | {busy[(title, 'week')]} |")
print()
print(f"Ingest on one connection while the queries ran: {rate:,.0f} spans/s, "
      f"{rate / idle:.0%} of the same connection with no query ({idle:,.0f}).")
PY
stop_server
echo
echo "Analytics evaluations not stored during the run (one every 10 s): $(grep -c 'cannot store the analytics evaluation' "$work/out.log" || true)"
