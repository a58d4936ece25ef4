"""The auto-scaler: the number of app-tier instances follows the request queue's depth.

Policy (checked every ``interval_s``)::

    depth   = ApproximateNumberOfMessages + ApproximateNumberOfMessagesNotVisible
              (requests waiting + requests a worker holds right now), but at most the number of
              HTTP requests the web tier still waits for (WebTier.demand): a request whose client
              had its 504 drives no scaling, though it stays queued until a worker skips it
    wanted  = min(max_instances, ceil(depth / per_instance))
    target  = the largest `wanted` seen during the last `scale_in_after_s` seconds

    instances < target -> launch the difference now     (scale out at once)
    instances > target -> stop the difference            (scale in only after demand stayed lower
                                                          for scale_in_after_s; 0 when idle that long)

Counting held requests (NotVisible) keeps an instance for every request in progress, and a request whose
worker died stays counted until it reappears, so a replacement is launched for it. The window keeps a
burst's instances warm through short gaps instead of stopping and relaunching them (on EC2 a launch
costs a minute or more; locally a worker costs a model load). SQS's approximate counts can lag a little:
scaling reacts within a few intervals.

"Instances" are behind :class:`InstancePool`: the Auto Scaling group's EC2 instances on AWS (the
scaler sets its desired capacity), worker processes on this machine (:mod:`.pools`).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from facerec_cli.iaas.names import MAX_APP_INSTANCES
from lambdas.core.names import plural

log = logging.getLogger("facerec.iaas.scaler")


class InstancePool(Protocol):
    """App-tier instances that the scaler counts, launches and stops."""

    def active(self) -> int:
        """Instances starting or running and not told to stop: the capacity the scaler has."""
        ...

    def scale_to(self, n: int) -> None:
        """Launch or stop instances so that ``active()`` becomes ``n``."""
        ...

    def close(self) -> None: ...


def _maintain(pool: InstancePool) -> None:
    """A pool's optional per-tick upkeep (the EC2 pool names the instances its group started)."""
    maintain = getattr(pool, "maintain", None)
    if maintain is not None:
        maintain()


@dataclass(frozen=True)
class ScalingPolicy:
    max_instances: int = MAX_APP_INSTANCES
    per_instance: int = 1  # requests (waiting or held) per instance
    scale_in_after_s: float = 30.0
    interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_instances < 0:
            raise ValueError("max_instances must be >= 0")
        if self.per_instance < 1:
            raise ValueError("per_instance must be >= 1")

    def wanted(self, depth: int) -> int:
        return min(self.max_instances, math.ceil(max(0, depth) / self.per_instance))


@dataclass(frozen=True)
class Observation:
    t: float  # seconds since the scaler started
    depth: int
    wanted: int
    target: int
    active: int  # instances after this tick's decision


class AutoScaler:
    """Applies a :class:`ScalingPolicy` to a pool from a depth source; ``tick()`` is one decision."""

    def __init__(
        self,
        pool: InstancePool,
        depth: Callable[[], int],
        policy: ScalingPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep: int = 100_000,
    ) -> None:
        self.pool = pool
        self.depth = depth
        self.policy = policy or ScalingPolicy()
        self.clock = clock
        self.started = clock()
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self.history: collections.deque[Observation] = collections.deque(maxlen=keep)
        self.last: Observation | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> Observation:
        now = self.clock()
        depth = self.depth()
        wanted = self.policy.wanted(depth)
        self._window.append((now, wanted))
        while self._window and self._window[0][0] < now - self.policy.scale_in_after_s:
            self._window.popleft()
        target = max(w for _, w in self._window)
        before = self.pool.active()
        if before != target:
            log.info("scaling %d -> %s (queue depth %d)", before, plural(target, "instance"), depth)
            self.pool.scale_to(target)
        else:
            _maintain(self.pool)
        obs = Observation(round(now - self.started, 3), depth, wanted, target, self.pool.active())
        self.history.append(obs)
        self.last = obs
        return obs

    # -- the thread

    def start(self) -> "AutoScaler":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="facerec-autoscaler", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failed AWS call must not end scaling
                log.exception("auto-scaler: tick failed; retrying")
            self._stop.wait(self.policy.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.policy.interval_s + 30)
