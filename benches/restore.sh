#!/usr/bin/env bash
# Restoring the work item claims over a week of history: SPANS (default 20M) spans of
# the standard workload with --work-events (the work.claim, work.progress and
# work.complete spans say so, so agents hold items) dated over the seven days before
# now, then a restart. Prints a Markdown table.
#
#   bash benches/restore.sh [SPANS]
#
# The load repeats its 200 distinct requests, each cycle a week / cycles later: at 20M
# spans that is every 50 minutes, within the default one-hour lease, so every item
# claimed or worked on is renewed all week, the worst case for the restore (it must
# read back to each item's first claim). Reports the restart's time to /readyz (the
# claims are restored before it answers), the windows the restore read, the items
# held, and the restarted server's peak RSS.
#
# Uses the release build of benches/e2e.sh (benches/common.sh), its ports, and a
# temporary directory (about 61 bytes a span).
set -euo pipefail
cd "$(dirname "$0")/.."
spans="${1:-20000000}"
# shellcheck source=benches/common.sh
. benches/common.sh

work=$(mktemp -d)
trap stop_and_remove EXIT
data="$work/data"

load_week "$spans" --work-events
await_compaction "$data"
stop_server
events=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted_spans"])' "$work/load.json")

export RUST_LOG="warn,swarmscope_collector::evaluation=info"
r0=$(date +%s%N)
start_server "$data" interval ""
r1=$(date +%s%N)
peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
held=$(grep -o 'held=[0-9]*' "$work/out.log" | tail -1 | cut -d= -f2)
windows=$(grep -o 'windows=[0-9]*' "$work/out.log" | tail -1 | cut -d= -f2)
failed=$(grep -o 'cannot restore work item claims.*' "$work/out.log" | head -1 || true)
stop_server

echo "### Restoring the claims over a week: $events spans (loaded in $load_secs s), cycle $cycle_secs s"
echo
echo "| restart to ready | windows read | items held | peak RSS MiB |"
echo "|---|---|---|---|"
echo "| $(( (r1 - r0) / 1000000 )) ms | ${windows:--} | ${held:--} | $(( peak / 1024 )) |"
[ -z "$failed" ] || { echo; echo "$failed"; }
