# What the end-to-end benchmarks share: the release build, and starting and stopping a
# server on ports 14317/14318/18080. Sourced by the benches' scripts.

release_dir="${RELEASE_TARGET_DIR:-$HOME/.cache/swarmscope-release}"
api=http://127.0.0.1:18080

# One release build for the server and the load generator (the same feature set as
# `cargo bench`, so it does not rebuild DataFusion); SWARMSCOPE_BIN names the server to
# run instead of the one built. SKIP_BUILD=1 builds nothing and runs the binaries the
# last build left: comparing given servers with SWARMSCOPE_BIN after a change under
# vendor/ (which even a `git checkout` touches) spares a rebuild of parquet and
# everything above it.
release_build() {
  if [ -n "${SKIP_BUILD:-}" ]; then return; fi
  CARGO_TARGET_DIR="$release_dir" cargo build --release --locked "$@" -q
}
# release_bench NAME: the newest release build of the bench target NAME.
release_bench() {
  local found
  found=$(ls -t "$release_dir"/release/deps/"$1"-* 2> /dev/null | grep -v '\.d$' | head -1) || true
  [ -n "$found" ] || { echo "no release build of $1 in $release_dir (unset SKIP_BUILD)" >&2; exit 1; }
  echo "$found"
}
release_build --bin swarmscope --bench hotpaths --bench loadgen --bench standins
server="${SWARMSCOPE_BIN:-$release_dir/release/swarmscope}"
loadgen=$(release_bench loadgen)
standins=$(release_bench standins)
ticks=$(getconf CLK_TCK)

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_server DATA_DIR WAL_FSYNC [EXTRA_STORAGE_TOML]: sets $pid and $work.
start_server() {
  cat > "$work/config.toml" <<EOF
[receivers.otlp]
grpc_address = "127.0.0.1:14317"
http_address = "127.0.0.1:14318"
[api]
address = "127.0.0.1:18080"
[storage]
data_dir = "$1"
wal_fsync = "$2"
retention_hours = 1000000
$3
EOF
  RUST_LOG="${RUST_LOG:-warn}" "$server" serve --config "$work/config.toml" >> "$work/out.log" 2>&1 &
  pid=$!
  until curl -sf "$api/readyz" > /dev/null; do
    kill -0 "$pid" 2> /dev/null || { cat "$work/out.log"; exit 1; }
    sleep 0.1
  done
}

stop_server() {
  kill -TERM "$pid"
  wait "$pid" || true
  pid=
}

# stop_and_remove: the EXIT trap of a script whose server keeps its data in $work. The
# server still writes there while it shuts down, so it is waited for before $work goes.
stop_and_remove() {
  if [ -n "${pid:-}" ] && kill -TERM "$pid" 2> /dev/null; then wait "$pid" || true; fi
  rm -rf "$work"
}

# await_compaction DATA_DIR: returns once compaction has caught up with a burst, the
# spans table's files unchanged for 90 s (longer than compaction_quiet_after, a minute,
# when the burst's hours are laid out, and a tick; an hour of one file is written
# again under a new name, so names are compared, not counts).
await_compaction() {
  local before=-1 same=0 now
  while [ "$same" -lt 18 ]; do
    sleep 5
    now=$(python3 benches/delta_files.py "$1/spans" --list | sort | md5sum)
    if [ "$now" = "$before" ]; then same=$(( same + 1 )); else same=0; fi
    before=$now
  done
}

# file_bytes LIST: the total size of the files named one a line in LIST (past 2 GiB,
# where awk's print turns to exponents).
file_bytes() {
  python3 -c 'import os, sys; print(sum(os.path.getsize(p.rstrip("\n")) for p in open(sys.argv[1])))' "$1"
}


# The soak generator's release build ($soak), and a server with wal_fsync = "interval"
# in a temporary folder, stopped and removed on exit: for soak.sh and graph.sh.
start_soak_server() {
  release_build --bench soak
  soak=$(release_bench soak)
  work=$(mktemp -d)
  start_server "$work/data" interval ""
  trap stop_and_remove EXIT
}

# load_week SPANS [LOADGEN_OPTION...]: starts a server on $data and sends it SPANS
# distinct spans of the standard workload dated over the seven days before now, with
# --unique over 4 connections (each cycle through the 200 distinct requests moves a
# week / cycles on). Sets $load_secs and $cycle_secs; the load's JSON is
# $work/load.json.
load_week() {
  local spans=$1 week=604800 cycles t0
  shift
  cycles=$(( spans / 500 / 200 ))
  [ "$cycles" -gt 0 ] || { echo "SPANS must be at least 100000" >&2; exit 2; }
  cycle_secs=$(( week / cycles ))
  start_server "$data" interval ""
  t0=$(date +%s)
  "$loadgen" --endpoint http://127.0.0.1:14317 --concurrency 4 --spans "$spans" \
    --distinct-requests 200 --unique --cycle-shift-secs "$cycle_secs" \
    --start-offset-secs "$week" "$@" --json > "$work/load.json"
  load_secs=$(( $(date +%s) - t0 ))
}
