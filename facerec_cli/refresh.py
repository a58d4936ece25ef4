"""The loop of every `watch` (the pipeline's, ``--iaas``'s): take a snapshot, show it, sleep."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.live import Live

from facerec_cli import render

DEFAULT_INTERVAL = 1.5


class Refreshable(Protocol):
    """What a watch loop shows: a snapshot that knows when it is idle and how to be JSON."""

    @property
    def idle(self) -> bool: ...

    def to_json(self) -> str: ...


S = TypeVar("S", bound=Refreshable)


def refresh_loop(
    take: Callable[[], S],
    draw: Callable[[S, int | None], Any],
    *,
    interval: float = DEFAULT_INTERVAL,
    until_idle: bool = False,
    json_lines: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_refreshes: int | None = None,
) -> S | None:
    """The loop of every `watch`: ``take`` a snapshot every ``interval`` seconds until Ctrl-C, or with
    ``until_idle`` until one is idle (the first one included), or after ``max_refreshes`` (tests).
    ``json_lines``: one snapshot per refresh on stdout, one line each. Otherwise a live view on a
    terminal (``draw(snapshot, terminal height)``); elsewhere the last snapshot is printed once at the
    end (``draw(snapshot, None)``). Returns the last snapshot."""
    console = console or render.out
    live: Live | None = None
    snapshot: S | None = None
    taken = 0
    try:
        if not json_lines and console.is_terminal:
            live = Live(console=console, refresh_per_second=4, transient=False, vertical_overflow="crop")
            live.start()
        while True:
            snapshot = take()
            taken += 1
            if json_lines:
                sys.stdout.write(snapshot.to_json() + "\n")
                sys.stdout.flush()
            elif live is not None:
                live.update(draw(snapshot, console.size.height))
            if (until_idle and snapshot.idle) or (max_refreshes is not None and taken >= max_refreshes):
                break
            sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    finally:
        if live is not None:
            live.stop()
    if snapshot is not None and not json_lines and live is None:
        console.print(draw(snapshot, None))
    return snapshot
