"""The in-process sliding-window counters (core.rpc.windows), with time
driven by the test: the limits library's algorithm, kept per key, renewed
lazily and swept."""

from __future__ import annotations

from limits import parse

from core.rpc import windows
from core.rpc.windows import LocalWindows


def test_the_previous_window_counts_by_the_part_still_in_view() -> None:
    item = parse("3/minute")
    w = LocalWindows()
    start = 6_000_000.0  # a window boundary (a multiple of 60)
    assert [w.hit(item, "k", start + s).allowed for s in (0, 1, 2, 3)] == [True, True, True, False]
    assert w.hit(item, "other", start + 3).allowed  # another key has its own count
    # Next window: the 3 of the last one still weigh 3 × 60/60, then fade.
    assert not w.hit(item, "k", start + 60).allowed
    first = w.hit(item, "k", start + 79)  # 3 × 41/60 = 2.05: floor 2, + 1 ≤ 3
    assert first.allowed
    assert first.remaining == 0  # floor(2.05 + 1) = 3 used of 3
    assert start + 79 < first.reset_time <= start + 120
    assert not w.hit(item, "k", start + 79).allowed
    # Two windows later nothing of it is left.
    assert w.hit(item, "k", start + 180).remaining == 2


def test_refused_calls_are_not_counted_and_reset_says_when_to_retry() -> None:
    item = parse("2/second")
    w = LocalWindows()
    now = 7_000_000.25
    assert w.hit(item, "k", now).allowed
    assert w.hit(item, "k", now).allowed
    refused = w.hit(item, "k", now)
    assert not refused.allowed
    assert refused.remaining == 0
    assert now < refused.reset_time <= now + 1


def test_stale_counters_are_swept() -> None:
    item = parse("10/second")
    w = LocalWindows()
    now = 8_000_000.0
    for n in range(1000):
        w.hit(item, f"k{n}", now)
    assert len(w) == 1000
    w._next_sweep = 0.0  # the sweep is due (it runs at most once a minute)
    w.hit(item, "late", now + windows.SWEEP_SEC)
    assert len(w) == 1
