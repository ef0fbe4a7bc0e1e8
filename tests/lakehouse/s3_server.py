"""A local S3 API for the tests: moto's server, single-threaded.

usage: s3_server.py PORT [BUCKET ...]

Serves on 127.0.0.1:PORT and creates the buckets named. One request at a time, so that
moto's in-memory store checks a conditional write (If-None-Match: *) and takes it in one
step, as S3 does; moto_server's threaded mode could let two racing commits both win.
"""

import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple
from werkzeug.test import Client


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    client = Client(app)
    for bucket in sys.argv[2:]:
        client.put(f"/{bucket}", headers={"Host": f"127.0.0.1:{port}"})
    run_simple(
        "127.0.0.1",
        port,
        app,
        threaded=False,
        use_reloader=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
