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

# (status, extra headers), or None: no answer until the receiver is released.
Answer = tuple[int, list[tuple[str, str]]] | None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    wall: float = field(default_factory=time.time)  # time.time() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


def standard_answer(path: str, seen: int) -> Answer:
    """``/status/N[/…]`` answers N (``?retry_after=S`` adds Retry-After), ``/hang…`` never answers, else 200.
    ``seen``: how many requests the same path had before this one."""
    path, _, query = path.partition("?")
    if path.startswith("/hang"):
        return None
    status = int(path.split("/")[2]) if path.startswith("/status/") else 200
    extra = [("Retry-After", query.removeprefix("retry_after="))] if query.startswith("retry_after=") else []
    return status, extra


@dataclass
class Receiver:
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
def recording_receiver(port: int = 0, answer: Callable[[str, int], Answer] = standard_answer) -> Iterator[Receiver]:
    """The receiver on ``port`` (0: any free one); ``answer(path, seen)`` picks each reply."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            target = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            arrival = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            with target.lock:
                seen = sum(1 for s in target.seen if s.path == self.path)
                target.seen.append(arrival)
            reply = answer(self.path, seen)
            if reply is None:
                target.release.wait(15)
                return
            status, extra = reply
            self.send_response(status)
            for name, value in [*extra, ("Content-Length", "2")]:
                self.send_header(name, value)
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
