"""The WSGI application every benchmark target serves (bench/run.py copies it).

Routes (the same for Apache with either module, gunicorn and granian):

- ``/hello``: ``Hello, World!`` (13 bytes).
- ``/stream?size=N``: N bytes, yielded in 64 KiB blocks (N a multiple of 64 KiB), with a
  Content-Length.
- ``/file``: ``data/100m.bin`` (100 MiB) through ``wsgi.file_wrapper``.
- ``/upload``: reads the request body through ``wsgi.input`` in 64 KiB reads and answers
  with the number of bytes read.
- ``/flask/...``: the Flask application of ``flask_app.py`` (imported on first use, so that
  the other routes work without Flask installed).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

BLOCK_SIZE = 64 * 1024
BLOCK = b"x" * BLOCK_SIZE
FILE_PATH = os.path.join(HERE, "data", "100m.bin")
HELLO = b"Hello, World!"

_flask_app = None


def _stream(count):
    for _ in range(count):
        yield BLOCK


def _flask(environ, start_response):
    global _flask_app
    if _flask_app is None:
        from flask_app import app

        _flask_app = app
    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/flask"
    environ["PATH_INFO"] = environ["PATH_INFO"][len("/flask") :]
    return _flask_app(environ, start_response)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/hello":
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
        )
        return [HELLO]
    if path == "/stream":
        size = 1024 * 1024
        for part in environ.get("QUERY_STRING", "").split("&"):
            if part.startswith("size="):
                size = int(part[5:])
        count = size // BLOCK_SIZE
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(count * BLOCK_SIZE)),
            ],
        )
        return _stream(count)
    if path == "/file":
        handle = open(FILE_PATH, "rb")
        size = os.fstat(handle.fileno()).st_size
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
        )
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(handle, BLOCK_SIZE)
        return iter(lambda: handle.read(BLOCK_SIZE), b"")
    if path == "/upload":
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        total = 0
        while remaining > 0:
            chunk = stream.read(min(BLOCK_SIZE, remaining))
            if not chunk:
                break
            total += len(chunk)
            remaining -= len(chunk)
        body = str(total).encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    if path.startswith("/flask/"):
        return _flask(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]
