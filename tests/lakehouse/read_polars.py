"""Reads a swarmscope table as Polars users do: pl.read_delta (through the deltalake package).

usage: read_polars.py TABLE_DIR

Prints one JSON object: the rows, the distinct span ids, and the type of each column.
"""

import json
import sys

import polars as pl


def main() -> None:
    frame = pl.read_delta(sys.argv[1])
    print(
        json.dumps(
            {
                "rows": frame.height,
                "distinct_span_ids": frame["span_id"].n_unique(),
                "exact_starts_agree": frame.filter(
                    pl.col("start_time_unix_nano") // 1000
                    != pl.col("start_time").dt.epoch("us")
                ).height
                == 0,
                "types": {name: str(dtype) for name, dtype in frame.schema.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
