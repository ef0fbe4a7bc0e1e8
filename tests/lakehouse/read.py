"""Reads a swarmscope table as an outside engine does: DuckDB's delta_scan.

usage: read.py TABLE SQL [REPEAT]

TABLE is a directory, or an s3:// URL read through the S3 API at the `host:port` in
$S3_ENDPOINT (a local test server: plain HTTP, path-style, any key). SQL names the table `t`. Prints one JSON line per read: the rows the query returned
(each a list), or {"error": "..."} when a read failed. DuckDB's Delta extension comes
from its PyPI wheel (tests/lakehouse/requirements.txt), so nothing is downloaded.
"""

import json
import os
import sys

import duckdb
import duckdb_extension_delta
import duckdb_extension_httpfs


def extension(module, name: str) -> str:
    return os.path.join(
        os.path.dirname(module.__file__),
        "extensions",
        "v" + duckdb.__version__,
        name + ".duckdb_extension",
    )


def main() -> None:
    table, sql = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    con = duckdb.connect(config={"autoinstall_known_extensions": "false"})
    if table.startswith("s3://"):
        con.execute(f"LOAD '{extension(duckdb_extension_httpfs, 'httpfs')}'")
        endpoint = os.environ["S3_ENDPOINT"]
        con.execute(
            "CREATE SECRET (TYPE S3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
            f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)"
        )
    con.execute(f"LOAD '{extension(duckdb_extension_delta, 'delta')}'")
    for _ in range(repeat):
        try:
            con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM delta_scan('{table}')")
            rows = con.execute(sql).fetchall()
            print(json.dumps([list(r) for r in rows], default=str), flush=True)
        except duckdb.Error as e:
            print(json.dumps({"error": str(e)}), flush=True)


if __name__ == "__main__":
    main()
