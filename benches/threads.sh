#!/usr/bin/env bash
# Where the server's CPU goes by thread under the standard load: one run of SECONDS
# (default 25) over 4 gRPC connections, dated now (so the analytics count every span),
# wal_fsync = "always"; prints spans/s and the server's CPU seconds per 1M spans, in
# all and by thread name (tokio's workers, the Parquet encoder, each observer, the
# write-ahead log). Steadier than benches/e2e.sh for comparing two builds: run them in
# turns.
#
#   SWARMSCOPE_BIN=<build> bash benches/threads.sh [SECONDS] [LOADGEN_OPTION...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-25}"
shift || true
# shellcheck source=benches/common.sh
. benches/common.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start_server "$work/data" always "${STORAGE_TOML:-}"
# Each thread's name and user + system CPU ticks so far.
threads() {
  for task in /proc/"$pid"/task/*; do
    stat=$(cat "$task/stat" 2> /dev/null) || continue
    echo "$(cat "$task/comm") $(echo "${stat##*) }" | awk '{print $12 + $13}')"
  done
}
threads > "$work/before"
"$loadgen" --endpoint http://127.0.0.1:14317 --concurrency 4 --duration "$seconds" \
  --distinct-requests 2000 --start-offset-secs 0 "$@" --json > "$work/load.json"
threads > "$work/after"
stop_server
python3 - "$work" "$ticks" <<'PY'
import collections, json, re, sys
work, ticks = sys.argv[1], int(sys.argv[2])
load = json.load(open(f"{work}/load.json"))
def by_name(path):
    cpu = collections.Counter()
    for line in open(path):
        name, value = line.rsplit(" ", 1)
        cpu[re.sub(r"[-_ ]?\d+$", "", name.strip())] += int(value)
    return cpu
before, after = by_name(f"{work}/before"), by_name(f"{work}/after")
per_million = {n: (after[n] - before.get(n, 0)) / ticks / load["accepted_spans"] * 1e6 for n in after}
print(f"{load['spans_per_sec']:,.0f} spans/s, {sum(per_million.values()):.2f} CPU s per 1M spans: "
      + ", ".join(f"{n} {c:.2f}" for n, c in sorted(per_million.items(), key=lambda x: -x[1]) if c >= 0.01))
PY
