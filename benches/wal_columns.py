#!/usr/bin/env python3
"""Bytes per row of each column in swarmscope's write-ahead log, by table.

    python3 benches/wal_columns.py DATA_DIR/_wal

The log holds what the server acknowledged and has not flushed yet, so stop the server
with `kill -9` while it is under load to find records there (a clean shutdown flushes
them). Each record is `[len: u32 LE][crc32: u32 LE][payload]`, the payload one or more
entries: `[table: u8][ipc_len: u32 LE][Arrow IPC stream]`, or a trace request logged as
received, `[0x80][len: u32 LE][first_hour: i64 LE][OTLP protobuf]` (see
sinks/src/frame.rs), whose bytes are counted whole. Needs pyarrow (the venv `.ci/run`
makes has it).
"""
import collections
import glob
import os
import struct
import sys

import pyarrow as pa

# The tables' codes in the log (`TableDef::code` in processors/src).
TABLES = {
    1: "spans",
    2: "metrics",
    3: "logs",
    4: "coordination_events",
    6: "health",
    7: "alerts",
    8: "dead_letters",
    9: "genai_attribution",
    10: "graph_edges",
}
# The code of a trace request logged as received.
OTLP_TRACES = 0x80


def records(path):
    """The payloads of the file's intact records, in order."""
    data = open(path, "rb").read()
    at = 0
    while at + 8 <= len(data):
        length, _crc = struct.unpack_from("<II", data, at)
        if length == 0 or at + 8 + length > len(data):
            return
        yield data[at + 8 : at + 8 + length]
        at += 8 + length


def main(wal_dir):
    column_bytes = collections.Counter()
    ipc_bytes = collections.Counter()
    rows = collections.Counter()
    requests = request_bytes = 0
    for path in sorted(glob.glob(os.path.join(wal_dir, "wal-*.log"))):
        for payload in records(path):
            at = 0
            while at < len(payload):
                table = payload[at]
                (ipc_len,) = struct.unpack_from("<I", payload, at + 1)
                ipc = payload[at + 5 : at + 5 + ipc_len]
                at += 5 + ipc_len
                if table == OTLP_TRACES:
                    requests += 1
                    request_bytes += ipc_len - 8
                    continue
                ipc_bytes[table] += ipc_len
                for batch in pa.ipc.open_stream(ipc):
                    rows[table] += batch.num_rows
                    for name, column in zip(batch.schema.names, batch.columns):
                        column_bytes[(table, name)] += sum(
                            b.size for b in column.buffers() if b is not None
                        )
    if not rows and not requests:
        sys.exit(f"{wal_dir}: no records (was the server stopped cleanly?)")
    if requests:
        print(f"trace requests logged as received: {requests}, "
              f"{request_bytes / requests:.0f} bytes of protobuf a request")
    for table, n in sorted(rows.items()):
        name = TABLES.get(table, f"table {table}")
        print(f"{name}: {n} rows, {ipc_bytes[table] / n:.1f} bytes of IPC a row")
        columns = [(c, b) for (t, c), b in column_bytes.items() if t == table]
        for column, size in sorted(columns, key=lambda cb: -cb[1]):
            print(f"  {column:40s} {size / n:7.1f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
