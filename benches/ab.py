"""Two running servers over copies of the same store, A/B: benches/e2e.sh's typical
queries on each in turns, the median of N runs each, and B's time over A's.

    python3 benches/ab.py A_PORT B_PORT N [QUERY_NAME...]

Start each build with its own config (API port, data_dir on its own copy of a kept
store, compaction off as benches/e2e.sh sets it). With the same port twice it runs the
queries in a loop, for `perf record -p <server>` to profile.
"""
import json, statistics, sys, time, urllib.request
a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def q(port, sql):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/query", data=json.dumps({"sql": sql}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)["rows"]
latest = q(a, "SELECT to_unixtime(max(start_time)) FROM spans")[0][0]
since_s = int(latest) - 3600
trace = q(a, f"SELECT trace_id FROM spans WHERE start_time >= to_timestamp_seconds({since_s}) LIMIT 1")[0][0]
since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since_s))
queries = [
 ("SELECT 1", "SELECT 1"),
 ("count(*)", "SELECT count(*) FROM spans"),
 ("count by service", "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY spans DESC"),
 ("p95 approx", "SELECT service_name, name, approx_percentile_cont(duration_ns, 0.95) AS p95 FROM spans GROUP BY service_name, name ORDER BY service_name, name"),
 ("exact p95", "SELECT service_name, name, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95 FROM spans GROUP BY service_name, name ORDER BY service_name, name"),
 ("one trace", f"SELECT * FROM spans WHERE trace_id = '{trace}' ORDER BY start_time"),
 ("top errors last hour", f"SELECT service_name, name, count(*) AS errors FROM spans WHERE status_code = 'ERROR' AND start_time >= TIMESTAMP '{since}' GROUP BY service_name, name ORDER BY errors DESC LIMIT 10"),
 ("map filter top-k", "SELECT service_name, name, max(duration_ns) AS slowest FROM spans WHERE attributes['gen_ai.request.model'] = 'gpt-4o' GROUP BY service_name, name ORDER BY slowest DESC LIMIT 10"),
 ("tokens by team", "SELECT attributes['coordination.team'] AS team, sum(CAST(attributes['gen_ai.usage.input_tokens'] AS BIGINT)) AS i, sum(CAST(attributes['gen_ai.usage.output_tokens'] AS BIGINT)) AS o FROM spans GROUP BY team ORDER BY team"),
]
only = sys.argv[4:]
print(f"| query | {a} ms | {b} ms | {b}/{a} |\n|---|---|---|---|")
for name, sql in queries:
    if only and name not in only: continue
    ra, rb = q(a, sql), q(b, sql); assert len(ra) == len(rb), name
    ta, tb = [], []
    for i in range(n):
        for port, ts in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t = time.perf_counter(); q(port, sql); ts.append((time.perf_counter() - t) * 1000)
    ma, mb = statistics.median(ta), statistics.median(tb)
    print(f"| {name} | {ma:.2f} | {mb:.2f} | {mb/ma:.2f} |", flush=True)
