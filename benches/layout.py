#!/usr/bin/env python3
"""What laying out a store's quiet hours costs: copies the data directory SRC to DST,
starts the server BIN on DST with the default compaction (every hour of a store loaded a
minute or more ago is quiet), and prints the server's CPU seconds and wall time until
every current file of every table is laid out (named `-optimized.parquet`), with its
peak RSS. DST is left laid out, for `INGEST=0 DATASET_DIR=DST bash benches/e2e.sh`.

    python3 benches/layout.py BIN SRC DST [API_PORT]

The server's own API port and the two OTLP ports after it must be free (18100-18102 by
default).
"""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from delta_files import current_files  # noqa: E402


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    binary, src, dst = sys.argv[1:4]
    port = int(sys.argv[4]) if len(sys.argv) == 5 else 18100
    dst = os.path.abspath(dst)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    config = dst + ".toml"
    with open(config, "w") as f:
        f.write(f"""[receivers.otlp]
grpc_address = "127.0.0.1:{port + 1}"
http_address = "127.0.0.1:{port + 2}"
[api]
address = "127.0.0.1:{port}"
[storage]
data_dir = "{dst}"
wal_fsync = "interval"
retention_hours = 1000000
""")
    tables = [
        t for t in os.listdir(dst)
        if not t.startswith("_") and os.path.isdir(os.path.join(dst, t, "_delta_log"))
    ]

    def not_laid_out():
        return sum(
            not path.endswith("-optimized.parquet")
            for t in tables
            for path in current_files(os.path.join(dst, t))
        )

    print(f"{not_laid_out()} files not laid out", flush=True)
    ticks = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    with open(dst + ".log", "w") as log:
        server = subprocess.Popen([binary, "serve", "--config", config], stdout=log, stderr=log)
    try:
        while not_laid_out() > 0:
            if server.poll() is not None:
                sys.exit(f"the server exited; see {dst}.log")
            time.sleep(0.5)
        wall = time.monotonic() - start
        with open(f"/proc/{server.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        with open(f"/proc/{server.pid}/status") as f:
            hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
        print(f"laid out in {wall:.1f} s, {cpu:.1f} CPU s (server, start included), "
              f"peak RSS {int(hwm) // 1024} MiB")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
