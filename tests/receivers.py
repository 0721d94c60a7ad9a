"""A real local HTTP receiver for alert tests: records every POST (path,
headers, body, arrival time) and answers as the path says."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    wall: float = field(default_factory=time.time)  # time.time() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers ``/status/N[/…]`` with N (``?retry_after=S`` adds Retry-After), hangs on ``/hang``, else 200."""

    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path_prefix: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.startswith(path_prefix)]

    def wait_for(self, path_prefix: str, count: int = 1, timeout: float = 15) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path_prefix)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path_prefix}: {len(self.at(path_prefix))} of {count} requests arrived")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # bursts of alerts: the default 5 would refuse connections


@contextmanager
def recording_receiver(port: int = 0, answer: Callable[[str], int] | None = None) -> Iterator[Receiver]:
    """The receiver on ``port`` (0: any free one); ``answer(path)`` may pick the status of other paths."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            target = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            with target.lock:
                target.seen.append(seen)
            path, _, query = self.path.partition("?")
            if path.startswith("/hang"):
                target.release.wait(10)
                return
            if path.startswith("/status/"):
                status = int(path.split("/")[2])
            else:
                status = answer(path) if answer is not None else 200
            self.send_response(status)
            if query.startswith("retry_after="):
                self.send_header("Retry-After", query.removeprefix("retry_after="))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        holder[0].release.set()
        server.shutdown()
        server.server_close()
