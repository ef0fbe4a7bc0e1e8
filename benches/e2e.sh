#!/usr/bin/env bash
# End-to-end benchmark: the standard workload over OTLP gRPC into a release build of
# swarmscope, then typical queries over a 10M-span store, timed against DuckDB on the
# same Parquet files. Prints Markdown tables.
#
#   bash benches/e2e.sh [SECONDS] [CONCURRENCY] [DATASET_SPANS]
#
# DATASET_SPANS=0 runs the ingest part only (what benches/ingest.sh does).
# STORAGE_TOML adds [storage] settings to every server it starts, to compare them:
#   STORAGE_TOML='zstd_level = 1' bash benches/e2e.sh
# MODES picks the wal_fsync modes of the ingest part (default: always interval never):
#   MODES=always bash benches/e2e.sh 15 4 0
# LOADGEN_ARGS adds load generator options to the ingest part, e.g. the second workload,
# where a tenth of the spans name a work item and a tenth carry token usage:
#   LOADGEN_ARGS='--work-item-share 0.1 --token-usage-share 0.1' bash benches/e2e.sh 15 4 0
# FLOOR_ARGS adds options to the floor's server (benches/standins.rs), e.g. HTTP/2
# frames as large as swarmscope's receiver takes: FLOOR_ARGS='--max-frame-size 262144'.
# DATASET_DIR keeps the query part's dataset there, and queries the one it holds
# instead of loading a new one (to compare builds or settings on the same files);
# INGEST=0 skips the ingest part:
#   INGEST=0 DATASET_DIR=$HOME/ds2m bash benches/e2e.sh 3 4 2000000
# START_OFFSET_SECS dates the ingest part's load (default two days back, out of the
# live analytics' window, which run on the wall clock); 0 puts it in the present, where
# health and the detectors count every span too:
#   START_OFFSET_SECS=0 bash benches/e2e.sh 15 4 0
#
# 1. Ingest, once per storage.wal_fsync mode: sustained accepted spans/s (and its share
#    of the decode-and-drop floor, measured first with the same load), server CPU
#    seconds per million spans (and its multiple of the floor's), peak RSS, Parquet
#    and OTLP bytes per span, request latency, and acknowledged → visible in SQL (a
#    one-span probe every 200 ms, found by trace id; its timestamps are now, the load's
#    two days ago, so the probe query prunes to its own partition as a "what happened
#    just now" query does), and the batches the analytics' observers shed
#    (swarmscope_processor_dropped_batches_total).
# 2. Dataset: DATASET_SPANS (10M) distinct spans over 10 hours, sent with --unique;
#    the server runs on until compaction has merged what the burst left (each hour
#    whole, once it has been quiet for compaction_quiet_after).
# 3. Queries: each run once to warm up, then 5 times; the median is reported, for
#    swarmscope through POST /api/v1/query at its default settings (compaction off, so
#    both engines read the same files) and for DuckDB (Python package `duckdb` 2.0.1,
#    installed with pip when missing or another version) through
#    read_parquet(..., hive_partitioning = true) over the files of the
#    spans table's current version (benches/delta_files.py).
#
# Builds the server and the load generator with --release (slow the first time); both
# run on this machine, so the generator's CPU competes with the server's. Uses ports 14317/14318/18080/18081 and temporary directories.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
concurrency="${2:-4}"
dataset_spans="${3:-10000000}"
# shellcheck source=benches/common.sh
. benches/common.sh

# ingest_load [OPTION...]: the ingest part's load for $seconds, its result as JSON.
ingest_load() {
  # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of options
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --duration "$seconds" --distinct-requests 2000 --start-offset-secs "${START_OFFSET_SECS:-172800}" \
    "$@" ${LOADGEN_ARGS:-} --json
}

if [ "${INGEST:-1}" != 0 ]; then
# The decode-and-drop floor: the same load into benches/standins.rs's OTLP receiver on
# every core, which decodes each request with prost and keeps nothing.
# shellcheck disable=SC2086 # FLOOR_ARGS: more stand-in options, e.g. --max-frame-size 262144
"$standins" --otlp 127.0.0.1:14317 --http 127.0.0.1:18081 --worker-threads "$(nproc)" ${FLOOR_ARGS:-} > /dev/null 2>&1 &
floor_pid=$!
until curl -sf http://127.0.0.1:18081/stats > /dev/null; do
  kill -0 "$floor_pid" 2> /dev/null || { echo "the floor's server did not start" >&2; exit 1; }
  sleep 0.1
done
floor_cpu0=$(cpu_ticks "$floor_pid")
floor=$(ingest_load)
floor_cpu1=$(cpu_ticks "$floor_pid")
kill "$floor_pid"
wait "$floor_pid" 2> /dev/null || true
floor_rate=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["spans_per_sec"])' "$floor")
floor_cpu=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print((float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4]) / r["accepted_spans"] * 1e6)' \
  "$floor" "$floor_cpu0" "$floor_cpu1" "$ticks")

echo "### Ingest (gRPC, ${concurrency} connections, ${seconds} s per mode)"
echo
printf 'Decode-and-drop floor: %.0f spans/s, %.2f CPU s per 1M spans.\n\n' "$floor_rate" "$floor_cpu"
echo "| wal_fsync | spans/s | share of the floor | CPU s per 1M spans (× the floor's) | peak RSS MiB | Parquet B/span | OTLP B/span | request p50 / p99 ms | ack → visible p50 / p99 / max ms | batches the analytics shed |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for mode in ${MODES:-always interval never}; do
  work=$(mktemp -d)
  start_server "$work/data" "$mode" "${STORAGE_TOML:-}"
  cpu0=$(cpu_ticks "$pid")
  result=$(ingest_load --probe-api "$api")
  cpu1=$(cpu_ticks "$pid")
  peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  shed=$(curl -sf "$api/metrics" | awk '/^swarmscope_processor_dropped_batches_total/ {s += $2} END {print s + 0}')
  stop_server
  # The current version's files: a merge's inputs stay on disk until vacuum_after.
  parquet_bytes=$(python3 benches/delta_files.py "$work/data")
  python3 - "$result" "$cpu0" "$cpu1" "$ticks" "$peak_kib" "$parquet_bytes" "$mode" "$shed" "$floor_rate" "$floor_cpu" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
cpu0, cpu1, ticks, peak, parquet, mode, shed, floor, floor_cpu = sys.argv[2:11]
spans = r["accepted_spans"]
cpu = (float(cpu1) - float(cpu0)) / float(ticks)
print(f"| {mode} | {r['spans_per_sec']:,.0f} | {r['spans_per_sec'] / float(floor):.2f} | {cpu / spans * 1e6:.2f} ({cpu / spans * 1e6 / float(floor_cpu):.2f}×) | {int(peak) / 1024:.0f} | "
      f"{int(parquet) / spans:.1f} | {r['otlp_bytes_per_span']:.0f} | "
      f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} | "
      f"{r['visible_p50_ms']:.1f} / {r['visible_p99_ms']:.1f} / {r['visible_max_ms']:.1f} ({r['probes']} probes) | {int(float(shed)):,} |")
PY
  rm -rf "$work"
done
fi

[ "$dataset_spans" -gt 0 ] || exit 0
# The comparator is pinned: DuckDB's speed changes between releases (2.0.1 finds a trace
# by id 2.6 times faster than 1.5.5 did), so figures of different days compare only
# against the same version.
duckdb_version=2.0.1
python3 -c "import duckdb, pytz, sys; sys.exit(duckdb.__version__ != '$duckdb_version')" 2> /dev/null ||
  pip install -q "duckdb==$duckdb_version" pytz
echo
work=$(mktemp -d)
data="${DATASET_DIR:-$work/data}"
# A dataset kept in DATASET_DIR is served again later: its Delta logs are kept whole,
# not cleaned up behind a checkpoint after the default 10 minutes (benches/delta_files.py
# reads such a log from its checkpoint, with duckdb, when a server with the default
# settings has opened the dataset since).
keep_log='delta_log_retention = "1000000h"'
# Ten hours of data ending about now: 200 distinct requests, each cycle an hour / 10 later.
cycles=$(( dataset_spans / 500 / 200 ))
if [ -d "$data/spans" ]; then
  load_note="kept in $data"
else
  start_server "$data" interval "$keep_log
${STORAGE_TOML:-}"
  t0=$(date +%s)
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --spans "$dataset_spans" --distinct-requests 200 --unique \
    --cycle-shift-secs $(( 36000 / cycles )) --start-offset-secs 36000 --json > "$work/load.json"
  t1=$(date +%s)
  # Queries read the history as the server leaves it once compaction has caught up with
  # the burst.
  await_compaction "$data"
  stop_server
  load_note="loaded in $(( t1 - t0 )) s"
fi
# Both engines read the files of the spans table's current version.
python3 benches/delta_files.py "$data/spans" --list > "$work/files.txt"
files=$(wc -l < "$work/files.txt")
bytes=$(file_bytes "$work/files.txt")
echo "### Queries over ${dataset_spans} spans (${files} Parquet files after compaction, $(( bytes / 1048576 )) MiB, ${load_note})"
echo
# Compaction off: the files must not change between the two engines' runs. Queries
# run at the default settings (every core, at a lower priority than ingestion).
# The storage keys go before STORAGE_TOML, which may open a section of its own.
start_server "$data" interval "$keep_log
compaction_min_files = 1000000
compaction_quiet_after = \"100000h\"
${STORAGE_TOML:-}"
python3 - "$api" "$work/files.txt" <<'PY'
import json, statistics, sys, time, urllib.request
import duckdb

api, file_list = sys.argv[1], sys.argv[2]
with open(file_list) as f:
    files = [line.strip() for line in f if line.strip()]

def swarmscope(sql):
    req = urllib.request.Request(f"{api}/api/v1/query", data=json.dumps({"sql": sql}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)["rows"]

con = duckdb.connect()
con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)")

def duck(sql):
    return con.execute(sql).fetchall()

# In seconds, whatever unit the stored timestamps have.
latest = swarmscope("SELECT to_unixtime(max(start_time)) FROM spans")[0][0]
since_s = int(latest) - 3600
trace = swarmscope(f"SELECT trace_id FROM spans WHERE start_time >= to_timestamp_seconds({since_s}) LIMIT 1")[0][0]
since_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since_s))
ds_since = f"TIMESTAMP '{since_iso}Z'"
duck_since = f"'{since_iso}+00'"

# (name, swarmscope SQL, DuckDB SQL): the same query, spelled for each engine where
# they differ (approximate percentile; timestamp literal).
queries = [
    ("count by service",
     "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY spans DESC",
     None),
    # The same groups summed, as BI tools count records; GroupByViewExec runs it as it
    # runs count (DataFusion's own hash aggregate did before 4cbe1e1).
    ("count by service as sum(1)",
     "SELECT service_name, sum(1) AS spans FROM spans GROUP BY service_name ORDER BY spans DESC",
     None),
    ("p95 duration by service and name",
     "SELECT service_name, name, approx_percentile_cont(duration_ns, 0.95) AS p95 FROM spans "
     "GROUP BY service_name, name ORDER BY service_name, name",
     "SELECT service_name, name, approx_quantile(duration_ns, 0.95) AS p95 FROM spans "
     "GROUP BY service_name, name ORDER BY service_name, name"),
    ("exact p95 duration by service and name",
     "SELECT service_name, name, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95 "
     "FROM spans GROUP BY service_name, name ORDER BY service_name, name", None),
    ("one trace by id",
     f"SELECT * FROM spans WHERE trace_id = '{trace}' ORDER BY start_time", None),
    ("top error operations, last hour",
     f"SELECT service_name, name, count(*) AS errors FROM spans WHERE status_code = 'ERROR' "
     f"AND start_time >= {ds_since} GROUP BY service_name, name ORDER BY errors DESC LIMIT 10",
     f"SELECT service_name, name, count(*) AS errors FROM spans WHERE status_code = 'ERROR' "
     f"AND start_time >= {duck_since} GROUP BY service_name, name ORDER BY errors DESC LIMIT 10"),
    ("slowest operations of one model (map filter, top-k)",
     "SELECT service_name, name, max(duration_ns) AS slowest FROM spans "
     "WHERE attributes['gen_ai.request.model'] = 'gpt-4o' "
     "GROUP BY service_name, name ORDER BY slowest DESC LIMIT 10", None),
    ("tokens by team",
     "SELECT attributes['coordination.team'] AS team, "
     "sum(CAST(attributes['gen_ai.usage.input_tokens'] AS BIGINT)) AS input_tokens, "
     "sum(CAST(attributes['gen_ai.usage.output_tokens'] AS BIGINT)) AS output_tokens "
     "FROM spans GROUP BY team ORDER BY team", None),
    ("coordination velocity by team",
     "SELECT attributes['coordination.team'] AS team, count(*) AS completed, "
     "count(DISTINCT attributes['coordination.work.id']) AS work_items FROM spans "
     "WHERE name = 'work.complete' GROUP BY team ORDER BY team", None),
]

def timed(run, sql, n=5):
    rows = run(sql)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run(sql)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), len(rows)

print("| query | swarmscope ms | DuckDB ms | ratio | rows (swarmscope / DuckDB) |")
print("|---|---|---|---|---|")
ratios = []
for name, sql, duck_sql in queries:
    s_ms, s_rows = timed(swarmscope, sql)
    d_ms, d_rows = timed(duck, duck_sql or sql)
    ratio = s_ms / d_ms
    ratios.append(ratio)
    print(f"| {name} | {s_ms:.0f} | {d_ms:.0f} | {ratio:.2f} | {s_rows} / {d_rows} |")
print()
print(f"Geometric mean of the ratios: {statistics.geometric_mean(ratios):.2f}; "
      f"the worst: {max(ratios):.2f}.")
print()
print(f"DuckDB {duckdb.__version__}; one trace: {trace}; last hour from {since_iso}Z.")
PY
stop_server
rm -rf "$work"
