"""Reads a swarmscope table as an outside engine does: DuckDB's delta_scan.

usage: read.py TABLE_DIR SQL [REPEAT]

SQL names the table `t`. Prints one JSON line per read: the rows the query returned
(each a list), or {"error": "..."} when a read failed. DuckDB's Delta extension comes
from its PyPI wheel (tests/lakehouse/requirements.txt), so nothing is downloaded.
"""

import json
import os
import sys

import duckdb
import duckdb_extension_delta


def main() -> None:
    table, sql = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    extension = os.path.join(
        os.path.dirname(duckdb_extension_delta.__file__),
        "extensions",
        "v" + duckdb.__version__,
        "delta.duckdb_extension",
    )
    con = duckdb.connect(config={"autoinstall_known_extensions": "false"})
    con.execute(f"LOAD '{extension}'")
    for _ in range(repeat):
        try:
            con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM delta_scan('{table}')")
            rows = con.execute(sql).fetchall()
            print(json.dumps([list(r) for r in rows], default=str), flush=True)
        except duckdb.Error as e:
            print(json.dumps({"error": str(e)}), flush=True)


if __name__ == "__main__":
    main()
