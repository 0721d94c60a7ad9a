"""A real local HTTP target for monitor tests: its answer can be changed
while monitors check it, and it counts the requests it gets."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Target:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.status = 200
        self.body = b"all good"
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]


@contextmanager
def http_target() -> Iterator[Target]:
    holder: list[Target] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            target = holder[0]
            with target.lock:
                target.hits[self.path] += 1
            self.send_response(target.status)
            self.send_header("content-length", str(len(target.body)))
            self.end_headers()
            self.wfile.write(target.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Target(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
