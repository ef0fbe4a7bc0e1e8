#!/usr/bin/env python3
"""The Parquet files of the current version of swarmscope's Delta tables.

    python3 benches/delta_files.py DATA_DIR            # total bytes of every table
    python3 benches/delta_files.py DATA_DIR/spans --list   # one absolute path per line

A merge's inputs and retention's removals stay on disk until `storage.vacuum_after`, for
readers of older versions, so counting the `.parquet` files in a directory counts rows
twice. This replays each table's `_delta_log/*.json` commits (add and remove actions) with
the standard library only, so the benchmarks need no Delta reader of their own. The store
deletes the commits a checkpoint stands for once they are older than
`storage.delta_log_retention` (10 minutes by default): such a log is read from its last
checkpoint (`_last_checkpoint`, a Parquet file, read with the Python package `duckdb`,
which the query benchmarks install) and the commits after it; without `duckdb` it is
refused rather than miscounted.
A table directory without a log (a build before the tables were Delta tables) counts
every `.parquet` file under it.
"""
import json
import os
import sys
from urllib.parse import unquote


def current_files(table_dir):
    """{absolute path: size} of the files in the table's latest version."""
    log = os.path.join(table_dir, "_delta_log")
    if not os.path.isdir(log):
        return {
            os.path.join(root, name): os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(table_dir)
            for name in names
            if name.endswith(".parquet")
        }
    commits = sorted(f for f in os.listdir(log) if f.endswith(".json") and f[:-5].isdigit())
    files = {}
    if not commits or int(commits[0][:-5]) != 0:
        version, files = checkpoint_files(log)
        commits = [name for name in commits if int(name[:-5]) > version]
    for name in commits:
        with open(os.path.join(log, name)) as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    add = action["add"]
                    files[unquote(add["path"])] = add["size"]
                elif "remove" in action:
                    files.pop(unquote(action["remove"]["path"]), None)
    return {os.path.join(table_dir, path): size for path, size in files.items()}


def checkpoint_files(log):
    """(version, {relative path: size}) of the log's last checkpoint."""
    try:
        with open(os.path.join(log, "_last_checkpoint")) as f:
            version = int(json.load(f)["version"])
        import duckdb
    except (OSError, ValueError, KeyError, ImportError) as e:
        sys.exit(f"{log}: the log does not start at version 0 and its checkpoint cannot be read: {e}")
    parts = sorted(
        os.path.join(log, name)
        for name in os.listdir(log)
        if name.startswith(f"{version:020d}.checkpoint.") and name.endswith(".parquet")
    )
    if not parts:
        sys.exit(f"{log}: no checkpoint file for version {version}")
    rows = duckdb.sql(
        "SELECT add.path, add.size FROM read_parquet($parts) WHERE add IS NOT NULL",
        params={"parts": parts},
    ).fetchall()
    return version, {unquote(path): size for path, size in rows}


def tables(data_dir):
    for entry in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, entry)
        if os.path.isdir(path) and not entry.startswith("_") and entry != "wal":
            yield path


def main():
    if len(sys.argv) == 3 and sys.argv[2] == "--list":
        for path in sorted(current_files(sys.argv[1])):
            print(path)
    elif len(sys.argv) == 2:
        print(sum(sum(current_files(t).values()) for t in tables(sys.argv[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
