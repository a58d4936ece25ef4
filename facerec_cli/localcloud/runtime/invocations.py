"""What one Lambda invocation is to the local runtime, and what the dispatcher (:mod:`.dispatch`) reports
of them: the invocation types, an :class:`Invocation` and its state, the :class:`Counters` progress
displays read, a :class:`Failure` (an asynchronous invocation given up on) and the hooks called then and
after every attempt.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facerec_cli.localcloud.runtime.functions import LocalFunction, Outcome

EVENT = "Event"
REQUEST_RESPONSE = "RequestResponse"
DRY_RUN = "DryRun"

FailureHook = Callable[[str, Any, str], None]
"""on_failure(function_name, event, error_message): an asynchronous invocation was given up on."""

FinishedHook = Callable[[str, float, bool, int], None]
"""on_finished(function_name, duration_ms, ok, concurrent): an invocation attempt ended; ``concurrent``:
the function's attempts running when it started, itself included (what Lambda's metrics report)."""


@dataclass(frozen=True)
class Counters:
    """A snapshot for progress displays. ``succeeded``/``failed`` count finished invocations of both
    types; ``retried`` counts extra attempts."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def in_flight(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class Failure:
    """An asynchronous invocation that failed on every attempt."""

    function_name: str
    request_id: str
    event: Any
    error_message: str
    attempts: int


@dataclass(eq=False)
class Invocation:
    """One invocation and its state: queued -> running -> (queued again on retry) -> succeeded |
    failed | abandoned (the dispatcher closed first)."""

    spec: LocalFunction
    event_text: str
    kind: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "queued"
    attempts: int = 0
    outcome: Outcome | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _counted: bool = field(default=False, repr=False)  # included in the dispatcher's outstanding count

    def wait(self, timeout: float | None = None) -> Outcome | None:
        self._done.wait(timeout)
        return self.outcome

    @property
    def event(self) -> Any:
        try:
            return json.loads(self.event_text) if self.event_text else {}
        except ValueError:
            return self.event_text

