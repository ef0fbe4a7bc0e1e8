#!/usr/bin/env bash
# Soak benchmark: SECONDS (default 1800) of steady load at RATE spans/s (default 3000)
# from 200 agents at a time that each send SPANS_PER_AGENT spans (default 20: a new
# agent id 150 times a second) into a release build of swarmscope with its analytics
# on, dated now.
# Prints one Markdown row per minute: RSS, agent ids so far, and the overall health
# score's agents_known, agents_live and liveness component. Flat RSS after the first
# minutes and a liveness near 1 mean idle keys expire and finished agents do not count
# as silent.
#
#   bash benches/soak.sh [SECONDS] [RATE] [SPANS_PER_AGENT]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-1800}"
rate="${2:-3000}"
spans_per_agent="${3:-20}"
# shellcheck source=benches/common.sh
. benches/common.sh
start_soak_server
echo "### Soak: ${rate} spans/s for ${seconds} s, a new agent every ${spans_per_agent} spans"
echo
"$soak" --endpoint http://127.0.0.1:14317 --api "$api" --pid "$pid" --rate "$rate" \
  --spans-per-agent "$spans_per_agent" --duration "$seconds"
echo
echo "Peak RSS: $(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status") MiB"
