"""The collector's on-disk buffer: a bounded, durable FIFO of opaque byte records.

Each record is one serialized OTLP batch. `DiskBuffer.append` stores it; the shipper reads the
oldest unacknowledged records with `peek` and, once the server took them, calls `ack` with the last
position it shipped. Layout and decisions:

- Segment files ``<id:012d>.seg`` under the directory, append-only. A record is framed as
  ``[length u32 LE][crc32(payload) u32 LE][payload]``. A new segment starts when the current one has
  passed ``segment_bytes`` (default: ``max_bytes / 8`` clamped to 1–16 MiB), and at every open: a
  segment that existed before the open is never written again, so a torn tail from a crash is never
  followed by new records.
- A `Position` is ``(segment, end offset)`` of a record; positions order like the records.
  ``ack(p)`` acknowledges every record up to and including ``p``; it is persisted in the file ``ack``
  (16 bytes + crc32, written to ``ack.tmp``, fsynced, renamed, directory fsynced) before fully
  acknowledged segments are deleted.
- Durability of ``append``: ``fsync="always"`` (the default) fdatasyncs every record before
  returning, so a returned append survives a power loss. ``fsync="batch"`` syncs when
  ``sync_interval`` has passed since the last sync (checked on append), on segment roll, and on
  `sync`/`close`; a returned append then survives a killed process (the page cache keeps it) but the
  last ``sync_interval`` may be lost to a power loss or kernel crash.
- Recovery at open walks every segment's frame headers (one small read per record, no payload
  reads): a frame that is cut short, zero-length or implausibly long ends its segment; the file is
  truncated there and one record is counted in ``corrupt_records``. A payload whose crc does not
  match is found by `peek`, skipped and counted once. A damaged *length* field therefore loses the
  rest of its segment; a damaged payload loses one record.
- At-least-once: records after the persisted ack come back after a restart; their number at open is
  ``redelivered``. Which of them may already have reached the server is known exactly: before
  shipping a record the caller calls ``mark_shipping(position)``, persisted in the file ``shipping``
  (16 bytes + crc32, written in place, synced as appends are); after a restart
  ``shipped_before_restart(position)`` is true for records up to that mark and past the ack: the
  possible duplicates (one request at most when records are shipped one at a time). A damaged mark
  counts every redelivered record as possibly shipped.
- Dropped records can be attributed: ``describe(head)`` (optional) gets the first
  ``DESCRIBE_BYTES`` of each dropped record's payload and returns a label and a weight (for the
  collector: the input's tag and the log records in the request); ``stats().dropped_by`` sums them.
- Bound: segment files never total more than ``max_bytes``. An append that would pass it first
  deletes the oldest whole segments, acknowledged or not, counting their unacknowledged records and
  bytes in ``dropped_records``/``dropped_bytes``. The writer never waits for the shipper, and no
  record is held in memory beyond the list a `peek` returns; per segment only its size and record
  count are kept.
- Corrupt records at the head of the buffer can never be delivered, so `peek` acknowledges past them
  itself; otherwise they would pin the buffer.
- One process per directory (an exclusive ``flock`` on ``lock``; a second open raises
  `BufferLockedError`). Within it the object is thread-safe: one lock serialises all calls, so asyncio
  code may call it through ``asyncio.to_thread``. Every call does blocking file I/O.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple, Self

from collector.config import BufferConfig

MIB = 1024 * 1024
FRAME = struct.Struct("<II")
ACK = struct.Struct("<QQ")  # also the shipping mark
CRC = struct.Struct("<I")
SEGMENT_SUFFIX = ".seg"
# No record is longer; a length field above this is taken for corruption, never allocated.
MAX_RECORD_BYTES = 256 * MIB
DESCRIBE_BYTES = 512

FsyncPolicy = Literal["always", "batch"]


class BufferLockedError(Exception):
    """Another process has the buffer directory open."""


class Position(NamedTuple):
    """Where a record ends: its segment id and the offset just past its frame."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class BufferStats:
    """A snapshot for /metrics.

    ``buffered_records`` counts unacknowledged frames, including corrupt ones not yet reached by a
    `peek`, so it can be a little high after damage; ``buffered_bytes`` is their framed size.
    ``disk_bytes`` is what the segment files take, acknowledged head included (the bounded number).
    """

    buffered_bytes: int
    buffered_records: int
    disk_bytes: int
    segments: int
    corrupt_records: int
    dropped_records: int
    dropped_bytes: int
    redelivered: int
    dropped_by: dict[str, int]


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    size: int
    records: int


class DiskBuffer:
    """A durable FIFO of byte records in ``directory``, at most ``max_bytes`` on disk (see module doc)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        *,
        fsync: FsyncPolicy = "always",
        segment_bytes: int | None = None,
        sync_interval: float = 0.2,
        describe: Callable[[bytes], tuple[str, int]] | None = None,
    ) -> None:
        if max_bytes <= FRAME.size:
            raise ValueError(f"max_bytes must exceed {FRAME.size}")
        if fsync not in ("always", "batch"):
            raise ValueError("fsync must be 'always' or 'batch'")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes or max(MIB, min(16 * MIB, max_bytes // 8))
        self._fsync = fsync
        self._sync_interval = sync_interval
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # oldest first
        self._ack = Position(0, 0)
        self._head_acked = 0  # records of segment ``_ack.segment`` up to ``_ack.offset``
        self._corrupt_mark = Position(0, 0)  # crc failures up to here are already counted
        self._disk_bytes = 0
        self._buffered_records = 0
        self._corrupt_records = 0
        self._dropped_records = 0
        self._dropped_bytes = 0
        self._redelivered = 0
        self._describe = describe
        self._dropped_by: dict[str, int] = {}
        self._resend_mark = Position(0, 0)  # records up to here (past the ack) may have been shipped
        self._last_sync = time.monotonic()
        self._closed = False

        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise BufferLockedError(f"{self._dir} is in use by another process") from None
        self._dir_fd = os.open(self._dir, os.O_RDONLY)
        self._recover()
        self._mark_fd = os.open(self._dir / "shipping", os.O_RDWR | os.O_CREAT, 0o600)
        self._active = self._open_segment(max([self._ack.segment, *self._segments]) + 1)
        self._make_room(0)

    @classmethod
    def open(
        cls,
        config: BufferConfig,
        *,
        fsync: FsyncPolicy = "always",
        describe: Callable[[bytes], tuple[str, int]] | None = None,
    ) -> DiskBuffer:
        """The buffer the collector's ``[buffer]`` section describes."""
        return cls(config.dir, config.max_bytes, fsync=fsync, describe=describe)

    def append(self, record: bytes) -> None:
        """Store ``record`` at the tail; durable on return as the fsync policy says (module doc).

        ``ValueError`` for an empty record or one whose frame exceeds ``max_bytes``.
        """
        if not record:
            raise ValueError("empty record")
        frame_bytes = FRAME.size + len(record)
        if frame_bytes > self._max_bytes or len(record) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(record)} bytes does not fit the buffer")
        header = FRAME.pack(len(record), zlib.crc32(record))
        with self._lock:
            self._check_open()
            if self._active.size >= self._segment_bytes:
                self._roll()
            self._make_room(frame_bytes)
            self._write(header, record)
            if self._fsync == "always" or time.monotonic() - self._last_sync >= self._sync_interval:
                self._sync_active()
            self._active.size += frame_bytes
            self._active.records += 1
            self._disk_bytes += frame_bytes
            self._buffered_records += 1

    def peek(
        self, max_records: int, max_bytes: int | None = None, *, after: Position | None = None
    ) -> list[tuple[Position, bytes]]:
        """The oldest unacknowledged records, at most ``max_records`` of them and, past the first,
        at most ``max_bytes`` of payload; with ``after``, only records past that position (those
        up to it are being shipped). Nothing is consumed until `ack`."""
        out: list[tuple[Position, bytes]] = []
        payload_bytes = 0
        head_skip: Position | None = None
        with self._lock:
            self._check_open()
            begin = max(self._ack, Position(*after)) if after is not None else self._ack
            from_head = begin == self._ack
            for segment in list(self._segments.values()):
                start = begin.offset if segment.id == begin.segment else 0
                if segment.id < begin.segment or start >= segment.size:
                    continue
                with open(segment.path, "rb") as file:
                    file.seek(start)
                    offset = start
                    while offset < segment.size and len(out) < max_records:
                        header = file.read(FRAME.size)
                        length, crc = FRAME.unpack(header) if len(header) == FRAME.size else (0, 0)
                        end = offset + FRAME.size + length
                        if max_bytes is not None and out and payload_bytes + length > max_bytes:
                            return out
                        framed = 0 < length <= MAX_RECORD_BYTES and end <= segment.size
                        payload = file.read(length) if framed else b""
                        if len(payload) != length or not framed:
                            # The frame itself is damaged: nothing after it in this segment can be found.
                            end, payload = segment.size, b""
                        if payload and zlib.crc32(payload) == crc:
                            out.append((Position(segment.id, end), payload))
                            payload_bytes += length
                        else:
                            self._count_corrupt(Position(segment.id, end))
                            if not out and from_head:
                                head_skip = Position(segment.id, end)
                        offset = end
                if len(out) >= max_records:
                    break
            if head_skip is not None:
                self._ack_locked(head_skip)
        return out

    def ack(self, position: Position) -> None:
        """Acknowledge every record up to and including ``position`` (from `peek`), durably.

        Older positions than the current ack are ignored; ``ValueError`` for a position past the tail
        or not at a record boundary.
        """
        with self._lock:
            self._check_open()
            self._ack_locked(Position(*position))

    def mark_shipping(self, position: Position) -> None:
        """Records, durably as appends are, that the records up to ``position`` are being shipped."""
        data = ACK.pack(*position)
        with self._lock:
            self._check_open()
            os.pwrite(self._mark_fd, data + CRC.pack(zlib.crc32(data)), 0)
            if self._fsync == "always":
                os.fdatasync(self._mark_fd)

    def shipped_before_restart(self, position: Position) -> bool:
        """Whether the record at ``position`` (from `peek`) was being shipped when the last process
        stopped without acknowledging it: a possible duplicate."""
        return self._ack < Position(*position) <= self._resend_mark

    def sync(self) -> None:
        """Make every appended record durable now (what ``fsync="always"`` does on each append)."""
        with self._lock:
            self._check_open()
            self._sync_active()

    def stats(self) -> BufferStats:
        with self._lock:
            head_acked_bytes = self._ack.offset if self._ack.segment in self._segments else 0
            return BufferStats(
                buffered_bytes=self._disk_bytes - head_acked_bytes,
                buffered_records=self._buffered_records,
                disk_bytes=self._disk_bytes,
                segments=len(self._segments),
                corrupt_records=self._corrupt_records,
                dropped_records=self._dropped_records,
                dropped_bytes=self._dropped_bytes,
                redelivered=self._redelivered,
                dropped_by=dict(self._dropped_by),
            )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.fdatasync(self._active_fd)
            os.close(self._active_fd)
            os.close(self._mark_fd)
            os.close(self._dir_fd)
            os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- recovery -------------------------------------------------------------------------------

    def _recover(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._dir / "ack.tmp").unlink()
        self._ack = self._read_ack()
        ids = sorted(int(path.stem) for path in self._dir.glob("*" + SEGMENT_SUFFIX) if path.stem.isdigit())
        for segment_id in ids:
            path = self._segment_path(segment_id)
            if segment_id < self._ack.segment:
                path.unlink()
                continue
            ack_offset = self._ack.offset if segment_id == self._ack.segment else 0
            size = path.stat().st_size
            valid_end, records, acked = self._walk_headers(path, size, ack_offset)
            if valid_end < size:
                self._corrupt_records += 1
                with open(path, "r+b") as file:
                    file.truncate(valid_end)
                    os.fsync(file.fileno())
            if valid_end == 0 or ack_offset >= valid_end:
                path.unlink()
                continue
            self._segments[segment_id] = _Segment(segment_id, path, valid_end, records)
            self._disk_bytes += valid_end
            self._buffered_records += records - acked
            if segment_id == self._ack.segment:
                self._head_acked = acked
        self._redelivered = self._buffered_records
        if self._redelivered:
            self._resend_mark = self._read_position("shipping", damaged=Position(2**63, 0))
        os.fsync(self._dir_fd)

    @staticmethod
    def _walk_headers(path: Path, size: int, ack_offset: int) -> tuple[int, int, int]:
        """(end of the last whole frame, frames, frames ending at or before ``ack_offset``)."""
        offset = records = acked = 0
        with open(path, "rb") as file:
            while size - offset >= FRAME.size:
                file.seek(offset)
                length, _ = FRAME.unpack(file.read(FRAME.size))
                end = offset + FRAME.size + length
                if length == 0 or length > MAX_RECORD_BYTES or end > size:
                    break
                records += 1
                acked += end <= ack_offset
                offset = end
        return offset, records, acked

    def _read_ack(self) -> Position:
        """The persisted ack, or the start when there is none or it is damaged (everything comes back)."""
        return self._read_position("ack", damaged=Position(0, 0))

    def _read_position(self, name: str, *, damaged: Position) -> Position:
        """A persisted position; the start when there is none, ``damaged`` when its crc fails."""
        try:
            data = (self._dir / name).read_bytes()
        except FileNotFoundError:
            return Position(0, 0)
        if len(data) != ACK.size + CRC.size or CRC.unpack(data[ACK.size :])[0] != zlib.crc32(data[: ACK.size]):
            return damaged
        return Position(*ACK.unpack(data[: ACK.size]))

    # -- writing --------------------------------------------------------------------------------

    def _segment_path(self, segment_id: int) -> Path:
        return self._dir / f"{segment_id:012d}{SEGMENT_SUFFIX}"

    def _open_segment(self, segment_id: int) -> _Segment:
        path = self._segment_path(segment_id)
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.fsync(self._dir_fd)
        segment = _Segment(segment_id, path, 0, 0)
        self._segments[segment_id] = segment
        return segment

    def _roll(self) -> None:
        self._sync_active()
        os.close(self._active_fd)
        sealed = self._active
        self._active = self._open_segment(sealed.id + 1)
        if Position(sealed.id, sealed.size) <= self._ack:
            self._delete(sealed)

    def _write(self, header: bytes, record: bytes) -> None:
        try:
            written = os.writev(self._active_fd, [header, record])
            data = memoryview(header + record)[written:] if written < len(header) + len(record) else None
            while data:
                data = data[os.write(self._active_fd, data) :]
        except OSError:
            # A partial frame (disk full) must not stay in front of the next append.
            os.ftruncate(self._active_fd, self._active.size)
            raise

    def _sync_active(self) -> None:
        os.fdatasync(self._active_fd)
        self._last_sync = time.monotonic()

    def _make_room(self, frame_bytes: int) -> None:
        """Drop the oldest segments until ``frame_bytes`` more fit in ``max_bytes``."""
        while self._disk_bytes + frame_bytes > self._max_bytes:
            head = next(iter(self._segments.values()))
            if head is self._active:
                if head.size == 0:
                    return
                self._roll()
                continue
            if head.id > self._ack.segment or (head.id == self._ack.segment and head.size > self._ack.offset):
                acked_records, acked_bytes = (
                    (self._head_acked, self._ack.offset) if head.id == self._ack.segment else (0, 0)
                )
                self._dropped_records += head.records - acked_records
                self._dropped_bytes += head.size - acked_bytes
                if self._describe is not None:
                    self._describe_dropped(head, acked_bytes)
                self._buffered_records -= head.records - acked_records
            self._delete(head)

    def _describe_dropped(self, segment: _Segment, start: int) -> None:
        offset = start
        with open(segment.path, "rb") as file:
            while offset + FRAME.size <= segment.size:
                file.seek(offset)
                header = file.read(FRAME.size)
                length = FRAME.unpack(header)[0]
                if length == 0 or offset + FRAME.size + length > segment.size:
                    break
                assert self._describe is not None
                label, weight = self._describe(file.read(min(length, DESCRIBE_BYTES)))
                self._dropped_by[label] = self._dropped_by.get(label, 0) + weight
                offset += FRAME.size + length

    def _delete(self, segment: _Segment) -> None:
        segment.path.unlink()
        self._disk_bytes -= segment.size
        del self._segments[segment.id]

    # -- acknowledging --------------------------------------------------------------------------

    def _ack_locked(self, position: Position) -> None:
        if position <= self._ack:
            return
        if position > Position(self._active.id, self._active.size):
            raise ValueError("ack past the last appended record")
        released = 0
        done: list[_Segment] = []
        head_acked = 0
        for segment in self._segments.values():
            if segment.id > position.segment:
                break
            start, already = (self._ack.offset, self._head_acked) if segment.id == self._ack.segment else (0, 0)
            if segment.id < position.segment or position.offset >= segment.size:
                released += segment.records - already
                head_acked = segment.records
                if segment is not self._active:
                    done.append(segment)
            else:
                head_acked = already + self._count_frames(segment, start, position.offset)
                released += head_acked - already
        self._write_ack(position)
        self._ack = position
        self._head_acked = head_acked
        self._buffered_records -= released
        for segment in done:
            self._delete(segment)

    def _count_frames(self, segment: _Segment, start: int, end: int) -> int:
        count, offset = 0, start
        with open(segment.path, "rb") as file:
            while offset < end:
                file.seek(offset)
                header = file.read(FRAME.size)
                if len(header) != FRAME.size:
                    break
                offset += FRAME.size + FRAME.unpack(header)[0]
                count += 1
        if offset != end:
            raise ValueError("ack position is not at a record boundary")
        return count

    def _write_ack(self, position: Position) -> None:
        data = ACK.pack(*position)
        temporary = self._dir / "ack.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data + CRC.pack(zlib.crc32(data)))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._dir / "ack")
        os.fsync(self._dir_fd)

    def _count_corrupt(self, position: Position) -> None:
        if position > self._corrupt_mark:
            self._corrupt_records += 1
            self._corrupt_mark = position

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the buffer is closed")
