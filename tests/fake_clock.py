"""A clock that moves only when told: installed as a module's ``time`` so that what a test asserts about
waits and deadlines is counted in the code's own seconds, never measured on a loaded machine."""

from __future__ import annotations


class FakeClock:
    """Stands in for the ``time`` module: ``sleep`` records the wait and advances ``monotonic``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds
