"""collector/buffer.py: the on-disk buffer, on real files: order, acks across reopen, damage, the bound,
and a writer killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collector.buffer import FRAME, BufferLockedError, DiskBuffer, Position

ROOT = Path(__file__).resolve().parent.parent


def record(index: int, size: int = 500) -> bytes:
    head = f"{index}:".encode()
    return head + bytes([index % 251]) * (size - len(head))


def drain(buffer: DiskBuffer) -> list[bytes]:
    """Everything left, acknowledged as it is read."""
    out: list[bytes] = []
    while batch := buffer.peek(64):
        out.extend(payload for _, payload in batch)
        buffer.ack(batch[-1][0])
    return out


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_it_keeps_fifo_order_across_segments_and_acks_survive_reopen(tmp_path: Path) -> None:
    records = [record(i) for i in range(50)]
    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=4096) as buffer:
        for item in records:
            buffer.append(item)
        assert len(segment_files(tmp_path)) > 5
        with pytest.raises(BufferLockedError):
            DiskBuffer(tmp_path, 1 << 20)

        first = buffer.peek(20)
        assert [payload for _, payload in first] == records[:20]
        assert buffer.peek(20) == first  # a peek consumes nothing
        assert len(buffer.peek(20, max_bytes=1000)) == 2
        assert len(buffer.peek(20, max_bytes=10)) == 1  # the oldest always comes, whatever its size
        assert [position for position, _ in first] == sorted(position for position, _ in first)
        buffer.ack(first[-1][0])
        buffer.ack(first[3][0])  # an older ack changes nothing
        with pytest.raises(ValueError, match="boundary"):
            buffer.ack(Position(first[-1][0].segment, first[-1][0].offset + 1))
        with pytest.raises(ValueError, match="past"):
            buffer.ack(Position(10**6, 0))
        stats = buffer.stats()
        assert stats.buffered_records == 30
        assert stats.buffered_bytes == 30 * (FRAME.size + 500)
        # Segments wholly acknowledged are gone.
        assert first[0][0].segment not in {int(path.stem) for path in segment_files(tmp_path)}

    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=4096) as buffer:
        assert buffer.stats().redelivered == 30
        assert buffer.peek(1)[0][1] == records[20]
        buffer.append(b"after reopen")
        assert drain(buffer) == [*records[20:], b"after reopen"]
        assert buffer.stats().buffered_records == 0

    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=4096) as buffer:
        assert buffer.peek(10) == []
        assert buffer.stats().redelivered == 0
        assert buffer.stats().disk_bytes == 0
        with pytest.raises(ValueError):
            buffer.append(b"")


def test_a_torn_tail_and_flipped_bytes_are_skipped_counted_and_later_records_still_read(tmp_path: Path) -> None:
    frame = FRAME.size + 500
    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=10 * frame, fsync="batch") as buffer:
        for i in range(25):
            buffer.append(record(i))
    first, _, third = segment_files(tmp_path)  # 10, 10 and 5 records
    with open(first, "r+b") as file:
        for index in (0, 3):  # the head record and one in the middle
            file.seek(index * frame + FRAME.size + 100)
            byte = file.read(1)
            file.seek(-1, os.SEEK_CUR)
            file.write(bytes([byte[0] ^ 0xFF]))
    os.truncate(third, third.stat().st_size - 200)  # record 24 cut short

    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=10 * frame, fsync="batch") as buffer:
        assert buffer.stats().corrupt_records == 1  # the torn tail, found by the open
        assert third.stat().st_size == 4 * frame
        buffer.append(record(100))
        assert drain(buffer) == [record(i) for i in (*range(1, 3), *range(4, 24), 100)]
        stats = buffer.stats()
        assert stats.corrupt_records == 3
        assert stats.buffered_records == 0
        assert stats.redelivered == 24

    # A buffer holding only a damaged record does not stay pinned: peek acknowledges past it.
    with DiskBuffer(tmp_path, 1 << 20, fsync="batch") as buffer:
        buffer.append(record(7))
    (only,) = [path for path in segment_files(tmp_path) if path.stat().st_size]
    with open(only, "r+b") as file:
        file.seek(FRAME.size)
        file.write(b"?")
    with DiskBuffer(tmp_path, 1 << 20, fsync="batch") as buffer:
        assert buffer.peek(10) == []
        assert buffer.stats().buffered_records == 0
        assert buffer.stats().corrupt_records == 1


def test_filling_past_max_bytes_drops_the_oldest_segments_and_counts_them(tmp_path: Path) -> None:
    frame = FRAME.size + 1000
    max_bytes = 64 * 1024
    with DiskBuffer(tmp_path, max_bytes, segment_bytes=16 * 1024, fsync="batch") as buffer:
        with pytest.raises(ValueError, match="does not fit"):
            buffer.append(b"x" * max_bytes)
        for i in range(10):
            buffer.append(record(i, 1000))
        acked = buffer.peek(5)
        buffer.ack(acked[-1][0])
        for i in range(10, 200):
            buffer.append(record(i, 1000))
            assert buffer.stats().disk_bytes <= max_bytes
            assert sum(path.stat().st_size for path in segment_files(tmp_path)) <= max_bytes
        stats = buffer.stats()
        assert stats.dropped_records > 100
        assert stats.dropped_records + stats.buffered_records + 5 == 200
        assert stats.dropped_bytes == stats.dropped_records * frame
        rest = drain(buffer)
        # What is left is the newest records, contiguous and in order.
        assert rest == [record(i, 1000) for i in range(5 + stats.dropped_records, 200)]


def test_writers_in_threads_and_a_reader_share_one_buffer(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=8192, fsync="batch") as buffer:

        def write(name: str) -> None:
            for i in range(300):
                buffer.append(f"{name}{i}".encode())

        writers = [threading.Thread(target=write, args=(name,)) for name in "ab"]
        for writer in writers:
            writer.start()
        read: list[bytes] = []
        while any(writer.is_alive() for writer in writers) or buffer.stats().buffered_records:
            read.extend(drain(buffer))
        for writer in writers:
            writer.join()
        for name in "ab":
            assert [item for item in read if item.startswith(name.encode())] == [
                f"{name}{i}".encode() for i in range(300)
            ]
        assert len(read) == 600


CHILD = """
import sys
from collector.buffer import DiskBuffer

buffer = DiskBuffer(sys.argv[1], 1 << 26, segment_bytes=1 << 16)
i = 0
while True:
    buffer.append(f"{i}:".encode() + bytes([i % 251]) * (1000 + i * 7919 % 20000))
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_every_append_that_returned_before_a_sigkill_is_read_after_reopen(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    returned = -1
    deadline = time.monotonic() + 10
    while returned < 400 and time.monotonic() < deadline:
        line = child.stdout.readline()
        assert line, "the writer exited early"
        returned = int(line)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    for line in child.stdout:  # appends that returned while the kill was on its way
        returned = int(line)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with DiskBuffer(tmp_path, 1 << 26, segment_bytes=1 << 16) as buffer:
        assert buffer.stats().corrupt_records <= 1  # at most the append the kill interrupted
        found = drain(buffer)
    assert len(found) >= returned + 1
    assert found == [f"{i}:".encode() + bytes([i % 251]) * (1000 + i * 7919 % 20000) for i in range(len(found))]


def test_the_request_in_flight_at_a_stop_is_known_as_a_possible_duplicate(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path, 1 << 20) as buffer:
        for i in range(5):
            buffer.append(record(i))
        batch = buffer.peek(5)
        buffer.mark_shipping(batch[0][0])
        buffer.ack(batch[0][0])
        buffer.mark_shipping(batch[1][0])  # shipped, then the process stops before the ack
        assert not any(buffer.shipped_before_restart(position) for position, _ in batch)
    with DiskBuffer(tmp_path, 1 << 20) as buffer:
        batch = buffer.peek(5)
        assert [payload for _, payload in batch] == [record(i) for i in range(1, 5)]
        assert [buffer.shipped_before_restart(position) for position, _ in batch] == [True, False, False, False]
        buffer.mark_shipping(batch[1][0])
        buffer.ack(batch[1][0])
    (tmp_path / "shipping").write_bytes(b"damaged")
    with DiskBuffer(tmp_path, 1 << 20) as buffer:  # a damaged mark: every redelivered record may be a duplicate
        assert all(buffer.shipped_before_restart(position) for position, _ in buffer.peek(5))


def test_records_dropped_for_room_are_described_by_their_head(tmp_path: Path) -> None:
    def describe(head: bytes) -> tuple[str, int]:
        label, _, _ = head.partition(b":")
        return ("even" if int(label) % 2 == 0 else "odd"), 10

    frame = FRAME.size + 500
    with DiskBuffer(tmp_path, 12 * frame, segment_bytes=4 * frame, describe=describe) as buffer:
        for i in range(4):
            buffer.append(record(i))
        buffer.ack(buffer.peek(1)[0][0])  # record 0 was shipped: not a loss
        for i in range(4, 16):
            buffer.append(record(i))
        stats = buffer.stats()
        assert stats.dropped_records == 3
        assert stats.dropped_by == {"odd": 20, "even": 10}
        assert buffer.peek(1)[0][1] == record(4)


def test_peek_after_a_position_reads_past_the_records_in_flight(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path, 1 << 20, segment_bytes=4096) as buffer:
        for i in range(20):
            buffer.append(record(i))
        first = buffer.peek(4)
        later = buffer.peek(4, after=first[-1][0])
        assert [payload for _, payload in later] == [record(i) for i in range(4, 8)]
        buffer.ack(later[-1][0])  # acknowledging a later one acknowledges the ones before it
        assert buffer.stats().buffered_records == 12
        assert buffer.peek(1, after=first[0][0])[0][1] == record(8)  # an after behind the ack reads from the ack
