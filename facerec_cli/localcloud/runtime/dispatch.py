"""The dispatcher: Lambda's invocation semantics over warm runners.

Asynchronous invocations (S3 notifications, ``InvocationType=Event``) are queued and return at once; a
handler error or a dead worker is retried (up to ``max_attempts`` in all, like Lambda's two retries),
then reported through ``on_failure``. Synchronous ones wait for the handler's answer. Each function gets
a lane (a queue and one thread per runner); a changed configuration gets fresh runners. How moto's
Lambda hands invocations to a dispatcher is in :mod:`.seam`; what an invocation is, and what the
dispatcher reports of them (counters, failures, hooks), in :mod:`.invocations`.

:class:`Dispatcher` is one lock's worth of state (lanes, counters, retries, shutdown): its parts keep
each other's invariants under that lock, so they stay together here.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from facerec_cli.localcloud.runtime.functions import Allowlist, LocalFunction, Outcome, Runner, error_outcome
from facerec_cli.localcloud.runtime.invocations import EVENT, REQUEST_RESPONSE, Counters, Failure, FailureHook, FinishedHook, Invocation
from facerec_cli.localcloud.runtime.workers import InProcessRunner, WorkerProcess

log = logging.getLogger(__name__)

RunnerFactory = Callable[[LocalFunction, Mapping[str, str]], Runner]
"""runner_factory(spec, cloud_env): a runner for one of a function's lanes, instead of a worker process
(``run-local --runtime containers``: a container behind the Lambda emulator)."""

CredentialsFor = Callable[[LocalFunction], Mapping[str, str]]
"""credentials(spec): the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN a function's handlers get
in place of the cloud's own (IAM enforcement: credentials bound to the function's role)."""

REFUSED = "Runtime.ConfigurationRefused"

_STOP = object()  # tells a lane thread to finish


@dataclass(eq=False)
class _Lane:
    """A queue and the threads that serve it, each thread driving one runner."""

    spec: LocalFunction | None  # None: the shared in-process lane
    queue: queue.Queue[Any] = field(default_factory=queue.Queue)
    threads: list[threading.Thread] = field(default_factory=list)
    runners: list[Runner] = field(default_factory=list)


class Dispatcher:
    """Runs Lambda invocations on warm workers (``workers`` processes per function) or, with
    ``workers=0``, serially on one thread of this process; with a ``runner_factory``, on ``workers``
    (at least one) runners per function that it makes."""

    def __init__(
        self,
        cloud_env: Mapping[str, str],
        *,
        workers: int = 1,
        on_failure: FailureHook | None = None,
        max_attempts: int = 3,
        log_path: str | None = None,
        shutdown_grace_s: float = 1.0,
        runner_factory: RunnerFactory | None = None,
        allow: Allowlist | None = None,
        credentials: CredentialsFor | None = None,
        on_finished: FinishedHook | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if credentials is not None and workers == 0 and runner_factory is None:
            # Handlers keep module-level boto3 clients: in one process, a client made under one function's
            # credentials would serve the other function too, and the check would prove nothing.
            raise ValueError("per-function credentials need worker processes (workers >= 1), not the caller's process")
        self._cloud_env = dict(cloud_env)
        self._allow = allow if allow is not None else Allowlist.nothing()  # the caller says what runs (run-local: the pipeline)
        self._credentials = credentials
        self._refusals_logged: set[tuple[Any, ...]] = set()
        self._workers = workers
        self._on_failure = on_failure
        self._on_finished = on_finished
        self._running_by: dict[str, int] = {}  # function name -> attempts running now
        self._max_attempts = max(1, max_attempts)
        self._log_path = log_path
        self._grace = shutdown_grace_s
        self._runner_factory = runner_factory
        self._cond = threading.Condition()
        self._lanes: dict[str, _Lane] = {}  # current lane per function name (process mode)
        self._all_lanes: list[_Lane] = []  # current and retired, for shutdown
        self._shared: _Lane | None = None  # the in-process lane
        self._records: list[Invocation] = []
        self._failures: list[Failure] = []
        self._queued = self._running = self._succeeded = self._failed = self._retried = 0
        self._outstanding = 0  # submitted and not finished, retries included
        self._settled = 0  # invocations finished so far (any state): what observers wait on
        self._settled_by: Counter[str] = Counter()  # the same, per function name
        self._closing = False
        atexit.register(self.close)  # no orphan workers even if the owner forgets

    # -- submitting --------------------------------------------------------------------------------

    def submit(self, spec: LocalFunction, event_text: str, kind: str = EVENT) -> Invocation:
        """Queue an invocation and return at once."""
        inv = Invocation(spec=spec, event_text=event_text, kind=kind)
        with self._cond:
            if self._closing:
                self._finish_locked(inv, "abandoned", error_outcome("Runtime.Shutdown", "the local cloud is stopping"))
                return inv
            self._records.append(inv)
            self._outstanding += 1
            inv._counted = True
            self._queued += 1
            lane = self._lane_locked(spec, retry=False)
            lane.queue.put(inv)
        return inv

    def invoke(self, spec: LocalFunction, event_text: str, timeout: float | None = None) -> Outcome:
        """A synchronous (RequestResponse) invocation: no retries, the caller gets the error."""
        outcome = self.submit(spec, event_text, REQUEST_RESPONSE).wait(timeout)
        return outcome or error_outcome("Runtime.Timeout", f"no answer from {spec.name} within {timeout} s")

    def prewarm(self, spec: LocalFunction) -> None:
        """Start a function's workers now, so that models load while the caller uploads."""
        with self._cond:
            if not self._closing:
                self._lane_locked(spec, retry=False)

    # -- observing ---------------------------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (retries and failure hooks included); False on
        timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    def wait_settled(self, seen: int, timeout: float, functions: Collection[str] | None = None) -> int:
        """Block until more than ``seen`` invocations have finished (of ``functions`` only, when given),
        or ``timeout`` seconds; returns the number finished. Lets a watcher look at the buckets when
        something happened instead of listing them in a tight loop (each list is work for the embedded
        moto server)."""

        def finished() -> int:
            return self._settled if functions is None else sum(self._settled_by[f] for f in functions)

        with self._cond:
            self._cond.wait_for(lambda: finished() > seen, max(0.0, timeout))
            return finished()

    @property
    def counters(self) -> Counters:
        with self._cond:
            return Counters(self._queued, self._running, self._succeeded, self._failed, self._retried)

    @property
    def failures(self) -> list[Failure]:
        with self._cond:
            return list(self._failures)

    @property
    def invocations(self) -> list[Invocation]:
        with self._cond:
            return list(self._records)

    # -- lanes -------------------------------------------------------------------------------------

    def worker_pids(self) -> dict[str, list[int]]:
        """Live worker processes per function (empty with workers=0), e.g. to read their memory."""
        with self._cond:
            return {
                name: [pid for r in lane.runners if (pid := getattr(r, "pid", None))]
                for name, lane in self._lanes.items()
            }

    def _lane_locked(self, spec: LocalFunction, *, retry: bool) -> _Lane:
        if self._workers == 0 and self._runner_factory is None:
            if self._shared is None:
                self._shared = self._start_lane(None, [InProcessRunner(self._cloud_env)])
            return self._shared
        lane = self._lanes.get(spec.name)
        if lane is not None and (retry or lane.spec is None or lane.spec.fingerprint == spec.fingerprint):
            return lane
        if lane is not None:
            # The function's configuration changed (e.g. update_function_configuration): fresh workers
            # with the new environment; the old ones finish what they hold and stop.
            for _ in lane.threads:
                lane.queue.put(_STOP)
        refusal = self._allow.refusal(spec)
        env: dict[str, str] = {}
        if refusal is None:
            try:
                env = self._env_for(spec)
            except Exception as exc:  # noqa: BLE001 - e.g. no role to take credentials from: the invocation fails
                log.exception("no credentials for %s", spec.name)
                refusal = f"could not get credentials for {spec.name}: {exc}"
        if refusal is not None:  # no process or container is ever started with such a configuration
            runners: list[Runner] = [_RefusingRunner(refusal)]
        else:
            if self._runner_factory is not None:
                runners = [self._runner_factory(spec, env) for _ in range(max(1, self._workers))]
            else:
                runners = [WorkerProcess(spec, env, log_path=self._log_path) for _ in range(self._workers)]
        lane = self._start_lane(spec, runners)
        self._lanes[spec.name] = lane
        return lane

    def _env_for(self, spec: LocalFunction) -> dict[str, str]:
        """The cloud's variables for this function's runners, with its role's credentials when asked."""
        if self._credentials is None:
            return self._cloud_env
        return {**self._cloud_env, **self._credentials(spec)}

    def _refuse(self, spec: LocalFunction) -> Outcome | None:
        """A failed outcome when the allowlist refuses ``spec``; logged (stderr and the run's log file)
        once per configuration."""
        refusal = self._allow.refusal(spec)
        if refusal is None:
            return None
        with self._cond:
            first = spec.fingerprint not in self._refusals_logged
            self._refusals_logged.add(spec.fingerprint)
        if first:
            log.error("%s", refusal)
            if self._log_path:
                append_log(self._log_path, f"[local runtime] ERROR {refusal}\n")
        return error_outcome(REFUSED, refusal)

    def _start_lane(self, spec: LocalFunction | None, runners: list[Runner]) -> _Lane:
        lane = _Lane(spec=spec, runners=runners)
        for i, runner in enumerate(runners):
            name = f"facerec-lane-{spec.name if spec else 'inprocess'}-{i}"
            thread = threading.Thread(target=self._serve, args=(lane, runner), name=name, daemon=True)
            lane.threads.append(thread)
            thread.start()
        self._all_lanes.append(lane)
        return lane

    def _serve(self, lane: _Lane, runner: Runner) -> None:
        try:
            try:
                runner.start()  # early, so the handler loads before the first event arrives
            except Exception:
                log.exception("could not start a worker for %s; retrying at the first invocation", lane.spec)
            while True:
                inv = lane.queue.get()
                if inv is _STOP:
                    return
                with self._cond:
                    if inv.state != "queued":  # abandoned while it waited
                        continue
                    inv.state = "running"
                    inv.attempts += 1
                    self._queued -= 1
                    self._running += 1
                    name = inv.spec.name
                    concurrent = self._running_by[name] = self._running_by.get(name, 0) + 1
                started = time.perf_counter()
                try:
                    outcome = self._refuse(inv.spec) or runner.run(inv.spec, inv.request_id, inv.event_text)
                except Exception as exc:  # a runtime bug must not kill the lane and hang wait_idle
                    log.exception("local runtime error while running %s", inv.spec.name)
                    outcome = error_outcome("Runtime.LocalError", repr(exc))
                with self._cond:
                    self._running_by[name] -= 1
                if self._on_finished is not None:
                    try:
                        self._on_finished(name, (time.perf_counter() - started) * 1000, outcome.ok, concurrent)
                    except Exception:
                        log.exception("on_finished hook raised for %s", name)
                self._settle(inv, outcome)
        except Exception:
            log.exception("lane thread crashed")
        finally:
            runner.close(self._grace)

    # -- outcomes ----------------------------------------------------------------------------------

    def _settle(self, inv: Invocation, outcome: Outcome) -> None:
        failure: Failure | None = None
        with self._cond:
            self._running -= 1
            if outcome.ok:
                self._succeeded += 1
                self._finish_locked(inv, "succeeded", outcome)
                return
            if self._closing:
                self._finish_locked(inv, "abandoned", outcome)
                return
            if inv.kind == EVENT and inv.attempts < self._max_attempts:
                log.info("retrying %s %s after: %s", inv.spec.name, inv.request_id, outcome.message)
                self._retried += 1
                self._queued += 1
                inv.state = "queued"
                # Retries go to the function's current workers (its configuration may have changed).
                self._lane_locked(inv.spec, retry=True).queue.put(inv)
                return
            self._failed += 1
            if inv.kind != EVENT:  # the synchronous caller gets the error itself
                self._finish_locked(inv, "failed", outcome)
                return
            failure = Failure(inv.spec.name, inv.request_id, inv.event, outcome.message, inv.attempts)
            self._failures.append(failure)
        # Outside the lock (the hook may take a while, e.g. write an error result to S3), and before the
        # invocation counts as finished, so that wait_idle() returning means the hook has run.
        assert failure is not None
        if self._on_failure is not None:
            try:
                self._on_failure(failure.function_name, failure.event, failure.error_message)
            except Exception:
                log.exception("on_failure hook raised for %s %s", failure.function_name, failure.request_id)
        with self._cond:
            self._finish_locked(inv, "failed", outcome)

    def _finish_locked(self, inv: Invocation, state: str, outcome: Outcome) -> None:
        if inv._counted:
            inv._counted = False
            self._outstanding -= 1
        inv.state, inv.outcome, inv.finished_at = state, outcome, time.monotonic()
        inv._done.set()
        self._settled += 1
        self._settled_by[inv.spec.name] += 1
        self._cond.notify_all()

    # -- shutdown ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop all workers: queued invocations are abandoned, running ones get a short grace, then
        their workers are killed. Safe to call twice and from KeyboardInterrupt handling."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            for inv in self._records:
                if inv.state == "queued":
                    self._queued -= 1
                    self._finish_locked(inv, "abandoned", error_outcome("Runtime.Shutdown", "the local cloud stopped"))
            lanes = list(self._all_lanes)
        atexit.unregister(self.close)
        for lane in lanes:
            for _ in lane.threads:
                lane.queue.put(_STOP)
        deadline = time.monotonic() + self._grace
        for lane in lanes:
            for thread in lane.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        for lane in lanes:  # still busy in a handler: kill its worker, the lane thread then exits
            for thread, runner in zip(lane.threads, lane.runners):
                if thread.is_alive():
                    runner.kill()
        for lane in lanes:
            for thread in lane.threads:
                thread.join(5)
                if thread.is_alive():  # only an in-process handler can hold us here; it is a daemon thread
                    log.warning("%s still running a handler at shutdown", thread.name)

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RefusingRunner:
    """The runner of a lane whose function's configuration the allowlist refuses: it starts nothing."""

    def __init__(self, refusal: str) -> None:
        self.refusal = refusal

    def start(self) -> None:
        pass

    def run(self, spec: LocalFunction, request_id: str, event_text: str) -> Outcome:
        return error_outcome(REFUSED, self.refusal)

    def kill(self) -> None:
        pass

    def close(self, grace_s: float) -> None:
        pass


def append_log(path: str, text: str) -> None:
    """Append to the run's log file, creating it private (0600) if it is not there."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode("utf-8", errors="replace"))
    finally:
        os.close(fd)
