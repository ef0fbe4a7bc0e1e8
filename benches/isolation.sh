#!/usr/bin/env bash
# Fault-isolation benchmark: what a runaway query costs ingestion and the API.
#
#   bash benches/isolation.sh [SECONDS] [CONCURRENCY] [QUERY_TIMEOUT_MS]
#
# 1. Idle: the standard workload (as benches/e2e.sh sends it) for SECONDS: spans/s.
# 2. Under a runaway query: the same, while a cartesian product of two series runs
#    through POST /api/v1/query with query.timeout_ms = QUERY_TIMEOUT_MS; meanwhile
#    GET /healthz every 50 ms. Reports spans/s and its share of the idle figure,
#    /healthz p50/p99/max, when the query was answered (and with what), and how long
#    after its deadline the server's CPU fell back under a third of a core.
#
# Uses the release build of benches/e2e.sh (benches/common.sh) and its ports.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
concurrency="${2:-4}"
timeout_ms="${3:-20000}"
# shellcheck source=benches/common.sh
. benches/common.sh

work=$(mktemp -d)
trap stop_and_remove EXIT
start_server "$work/data" always "[query]
timeout_ms = $timeout_ms"

load() {
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
    --duration "$seconds" --distinct-requests 2000 --start-offset-secs 172800 --json
}

idle=$(load)
python3 - "$api" "$pid" "$timeout_ms" "$idle" "$loadgen" "$concurrency" "$seconds" <<'PY'
import json, statistics, subprocess, sys, threading, time, urllib.error, urllib.request, http.client

api, pid, timeout_ms, idle, loadgen, concurrency, seconds = sys.argv[1:8]
idle = json.loads(idle)
ticks = 100  # USER_HZ

def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks

runaway = ("SELECT count(*) FROM (SELECT * FROM generate_series(1, 100000000) a, "
           "generate_series(1, 100000000) b)")
answer = {}

def run_query():
    t = time.monotonic()
    req = urllib.request.Request(f"{api}/api/v1/query",
                                 data=json.dumps({"sql": runaway}).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            answer["status"] = r.status
    except urllib.error.HTTPError as e:
        answer["status"] = e.code
        answer["error"] = json.load(e).get("error", "")
    answer["at"] = time.monotonic() - t

started = time.monotonic()
query = threading.Thread(target=run_query)
query.start()
time.sleep(1)  # let the plan take its core

latencies = []
stop = threading.Event()

def probe():
    conn = http.client.HTTPConnection(api.removeprefix("http://"), timeout=30)
    while not stop.is_set():
        t = time.monotonic()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        latencies.append((time.monotonic() - t) * 1000)
        time.sleep(0.05)

prober = threading.Thread(target=probe)
prober.start()
loaded = json.loads(subprocess.run(
    [loadgen, "--endpoint", "http://127.0.0.1:14317", "--concurrency", concurrency,
     "--duration", seconds, "--distinct-requests", "2000", "--start-offset-secs", "172800",
     "--json"], check=True, capture_output=True, text=True).stdout)
query.join()
stop.set()
prober.join()

# CPU back under a third of a core, measured over 500 ms windows.
deadline = timeout_ms and int(timeout_ms) / 1000
while True:
    c0 = cpu_seconds(); t0 = time.monotonic()
    time.sleep(0.5)
    if (cpu_seconds() - c0) / (time.monotonic() - t0) < 0.34:
        idle_at = time.monotonic() - started
        break

lat = sorted(latencies)
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print("| run | spans/s | share of idle | /healthz p50 / p99 / max ms | query answer | CPU idle after deadline |")
print("|---|---|---|---|---|---|")
print(f"| idle | {idle['spans_per_sec']:,.0f} | 100% | | | |")
print(f"| runaway query, timeout_ms = {timeout_ms} | {loaded['spans_per_sec']:,.0f} | "
      f"{loaded['spans_per_sec'] / idle['spans_per_sec']:.0%} | "
      f"{p(0.5):.1f} / {p(0.99):.1f} / {lat[-1]:.1f} ({len(lat)} probes) | "
      f"{answer.get('status')} after {answer.get('at', 0):.2f} s | "
      f"{idle_at - deadline:+.2f} s |")
print()
print(f"Query answer: {answer.get('error', '')}")
PY
