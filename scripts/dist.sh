#!/usr/bin/env bash
# The binary to ship: a release build, stripped, with its debug information split out
# beside it, as distributions package a program and its -dbgsym.
#
#   bash scripts/dist.sh [OUT_DIR]        (default: target/dist)
#
# Writes OUT_DIR/swarmscope, without debug information but with its symbol table (a
# panic's backtrace names its functions without the debug file), and
# OUT_DIR/swarmscope.debug, the line tables (zlib-compressed) for perf, gdb, addr2line and
# backtraces.
# The binary names the debug file (.gnu_debuglink, with a CRC), so these tools find it
# when it lies beside the binary or in /usr/lib/debug/<the binary's directory>/.
# Prints both files' sizes. Needs objcopy (binutils). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
out="${1:-$target_dir/dist}"

cargo build --release --locked --bin swarmscope
mkdir -p "$out"
built="$target_dir/release/swarmscope"
objcopy --only-keep-debug --compress-debug-sections=zlib "$built" "$out/swarmscope.debug"
objcopy --strip-debug --add-gnu-debuglink="$out/swarmscope.debug" "$built" "$out/swarmscope"
ls -l "$out/swarmscope" "$out/swarmscope.debug"
