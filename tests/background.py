"""Long runs that mostly wait (a 30 s outage, checkers sharing leases over several intervals) run in a
thread of their own while the rest of the suite goes on: a test marked ``background_start`` (ordered
first by tests/conftest.py) starts one through a session fixture, and a test marked
``background_finish`` (ordered last) waits for it and re-raises whatever it raised."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class BackgroundRun(threading.Thread):
    def __init__(self, name: str, work: Callable[[], str]) -> None:
        super().__init__(daemon=True, name=name)
        self._work = work
        self.error: BaseException | None = None
        self.summary = ""

    def run(self) -> None:
        try:
            self.summary = self._work()
        except BaseException as error:  # re-raised by result()
            self.error = error

    def result(self, timeout: float) -> str:
        """The run's summary once it ended; its exception if it raised one."""
        self.join(timeout=timeout)
        assert not self.is_alive(), f"{self.name} did not finish within {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.summary


def run_beside(
    tmp_path_factory: pytest.TempPathFactory, name: str, work: Callable[[Path], str]
) -> Iterator[BackgroundRun]:
    """For a session fixture: ``work`` started in a thread with a temporary folder of its own."""
    tmp = tmp_path_factory.mktemp(name)
    run = BackgroundRun(name, lambda: work(tmp))
    run.start()
    yield run
    run.join(timeout=120)
