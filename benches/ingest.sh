#!/usr/bin/env bash
# Ingest benchmark: the ingest part of benches/e2e.sh (the standard workload over OTLP
# gRPC into a release build, once per storage.wal_fsync mode), without the 10M-span
# query comparison.
#
#   bash benches/ingest.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
exec bash "$(dirname "$0")/e2e.sh" "${1:-15}" "${2:-4}" 0
