#!/usr/bin/env bash
# Sinks benchmark: the standard ingest workload (gRPC, wal_fsync = always) with the
# sinks off, with the Jaeger (OTLP), Elasticsearch and remote-write sinks on and their
# endpoints healthy, and with the Elasticsearch endpoint dead (connection refused).
# The endpoints are in-process stand-ins (benches/standins.rs) on this machine, so
# their CPU, like the load generator's, competes with the server's. Prints a Markdown
# table.
#
#   bash benches/sinks.sh [SECONDS] [CONCURRENCY] [ROUNDS]
#   JAEGER_COMPRESSION=zstd bash benches/sinks.sh     # the exporter's compression (gzip)
#
# Each round runs the three configurations in turn (ROUNDS, default 3), so a slow
# minute of this shared VM lands on one run, not on one configuration; the last rows
# are the medians over the rounds, and each ratio is the median of the rounds' ratios.
#
# "delivered" is how much of what was accepted each endpoint had when the load
# stopped, "dropped" the records (requests) the sinks' disk queues had no room for by
# then (queue_max_bytes), and "drained" how long after the stop the Jaeger endpoint had
# every span (only when nothing was dropped); "CPU s" what the server and the stand-ins
# used while the load ran.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
concurrency="${2:-4}"
rounds="${3:-3}"
# shellcheck source=benches/common.sh
. benches/common.sh
stand=http://127.0.0.1:29200
# STANDINS_NICE=19 runs the stand-ins below the server, as endpoints on other machines
# would be: they then take only the CPU the server leaves idle.
nice -n "${STANDINS_NICE:-0}" "$standins" --otlp 127.0.0.1:24317 --http 127.0.0.1:29200 &
standins_pid=$!
trap 'kill $standins_pid 2> /dev/null || true' EXIT
until curl -sf "$stand/stats" > /dev/null; do sleep 0.1; done

# cpu_ticks PID: user + system clock ticks the process has used so far.
# cpu_seconds PID TICKS_BEFORE
cpu_seconds() { python3 -c "print(f'{($(cpu_ticks "$1") - $2) / $ticks:.1f}')"; }

sinks_toml() { # ELASTICSEARCH_PORT
  cat <<EOF
[sinks.jaeger]
endpoint = "http://127.0.0.1:24317"
compression = "${JAEGER_COMPRESSION:-gzip}"
[sinks.elasticsearch]
endpoint = "http://127.0.0.1:$1"
[sinks.prometheus_remote_write]
url = "http://127.0.0.1:29200/api/v1/write"
interval = "5s"
EOF
}

echo "### Sinks (gRPC, ${concurrency} connections, ${seconds} s, wal_fsync = always)"
echo
echo "| round | sinks | spans/s | of sinks off | peak RSS MiB | delivered at stop: Jaeger / Elasticsearch | dropped records | drained (Jaeger) s | remote-write samples | CPU s during the load: server / stand-ins |"
echo "|---|---|---|---|---|---|---|---|---|---|"
rates=$(mktemp)
trap 'kill $standins_pid 2> /dev/null || true; rm -f "$rates"' EXIT
for round in $(seq 1 "$rounds"); do
  off_rate=""
  for label in off healthy "Elasticsearch dead"; do
    case "$label" in
      off) toml="${STORAGE_TOML:-}" ;;
      healthy) toml="${STORAGE_TOML:-}"$'\n'"$(sinks_toml 29200)" ;;
      # Nothing listens on 29299: connections are refused.
      *) toml="${STORAGE_TOML:-}"$'\n'"$(sinks_toml 29299)" ;;
    esac
    work=$(mktemp -d)
    before=$(curl -sf "$stand/stats")
    start_server "$work/data" always "$toml"
    server_cpu0=$(cpu_ticks "$pid")
    standins_cpu0=$(cpu_ticks "$standins_pid")
    result=$("$loadgen" --endpoint http://127.0.0.1:14317 --concurrency "$concurrency" \
      --duration "$seconds" --distinct-requests 2000 --start-offset-secs 172800 --json)
    at_stop=$(curl -sf "$stand/stats")
    cpu="$(cpu_seconds "$pid" "$server_cpu0") / $(cpu_seconds "$standins_pid" "$standins_cpu0")"
    dropped=$(curl -sf "$api/metrics" | awk '/^swarmscope_sink_dropped_total/ {s += $2} END {print s + 0}')
    peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    accepted=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["accepted_spans"])' "$result")
    drained="-"
    if [ "$label" != off ] && [ "$dropped" = 0 ]; then
      t0=$(date +%s.%N)
      for _ in $(seq 1 1200); do
        got=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["spans"] - json.loads(sys.argv[2])["spans"])' "$(curl -sf "$stand/stats")" "$before")
        if [ "$got" -ge "$accepted" ]; then drained=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')"); break; fi
        sleep 0.1
      done
    fi
    peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    stop_server
    after=$(curl -sf "$stand/stats")
    rate=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["spans_per_sec"])' "$result")
    [ -n "$off_rate" ] || off_rate=$rate
    python3 - "$result" "$before" "$at_stop" "$after" "$peak_kib" "$label" "$off_rate" "$drained" "$dropped" "$cpu" "$round" <<'PY'
import json, sys
r, before, at_stop, after = (json.loads(a) for a in sys.argv[1:5])
peak, label, off_rate, drained, dropped, cpu, round_ = sys.argv[5:12]
spans = r["accepted_spans"]
d = lambda k, s: s[k] - before[k]
share = lambda k: f"{100 * d(k, at_stop) / spans:.0f}%"
delivered = "-" if label == "off" else f"{share('spans')} / {share('documents') if label == 'healthy' else 'dead'}"
samples = "-" if label == "off" else f"{d('samples', after):,}"
print(f"| {round_} | {label} | {r['spans_per_sec']:,.0f} | {100 * r['spans_per_sec'] / float(off_rate):.0f}% | "
      f"{int(peak) / 1024:.0f} | {delivered} | {'-' if label == 'off' else f'{int(float(dropped)):,}'} | {drained} | {samples} | {cpu} |")
PY
    rm -rf "$work"
    echo "$round $label $rate" >> "$rates"
  done
done

[ "$rounds" -gt 1 ] || exit 0
echo
echo "| median of $rounds rounds | spans/s | of sinks off | of healthy |"
echo "|---|---|---|---|"
python3 - "$rates" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    round_, *label, rate = line.split()
    runs.setdefault(" ".join(label), {})[round_] = float(rate)
off, healthy = runs["off"], runs["healthy"]
for label, by_round in runs.items():
    of_off = statistics.median(r / off[k] for k, r in by_round.items())
    of_healthy = statistics.median(r / healthy[k] for k, r in by_round.items())
    print(f"| {label} | {statistics.median(by_round.values()):,.0f} | {100 * of_off:.0f}% | "
          f"{'-' if label == 'off' else f'{100 * of_healthy:.0f}%'} |")
PY
