"""Real faults for tests: a TCP proxy in front of PostgreSQL or Redis that a
test stops, or makes mute (connections accepted, nothing answered), and a
small tmpfs a test can fill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port

CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` from its own thread.

    ``down()`` closes the port and cuts every connection (the service is
    gone); ``mute()`` keeps accepting but forwards nothing either way, on old
    and new connections (a hung service, a black-holed network);
    ``up()`` forwards again on the same port. With ``source``, it connects
    to the target from that address (``127.0.0.2``: another machine, as the
    target sees it)."""

    def __init__(self, host: str, port: int, *, source: str | None = None) -> None:
        self.target = (host, port)
        self.source = source
        self.port = free_port()
        self.muted = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.up()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    def up(self) -> None:
        self.muted = False
        if self._server is None:
            self._call(self._listen())

    def mute(self) -> None:
        self.muted = True
        if self._server is None:
            self._call(self._listen())

    def down(self) -> None:
        self._call(self._close())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.muted:
                await self._swallow(reader)
                return
            try:
                local = (self.source, 0) if self.source else None
                up_reader, up_writer = await asyncio.open_connection(*self.target, local_addr=local)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(CHUNK):
                pass

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self.muted:
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path | None]:
    """A tmpfs of ``size`` mounted at ``path``, or None where this machine
    does not allow mounting (not root, no CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Writes a file in ``directory`` until its filesystem takes not one byte more."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (CHUNK, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return ballast
