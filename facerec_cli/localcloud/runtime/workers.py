"""Where Lambda handlers actually run in the local cloud: warm worker processes, or the caller's process.

A worker process plays one Lambda execution environment: it is started with the function's environment,
imports the handler once (so models load once per worker, like a warm Lambda container) and then serves
invocations one at a time over a pipe. The parent notices a worker that dies mid-invocation through the
process sentinel, so a killed worker becomes a failed attempt instead of a hang.

This module must stay importable without moto: spawned workers import it, and dragging the moto server
into every worker would only cost start-up time. What they run (:class:`~.functions.LocalFunction`,
:class:`~.functions.Outcome`) is in :mod:`.functions`.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facerec_cli import lifeline
from facerec_cli.localcloud.environ import applied_environ, real_aws_keys, redirect_output
from facerec_cli.localcloud.runtime.functions import (
    Handler,
    LocalFunction,
    Outcome,
    call_handler,
    error_outcome,
    lambda_environ,
    load_handler,
)


def worker_environ(spec: LocalFunction, cloud_env: Mapping[str, str]) -> dict[str, str]:
    """A worker's whole environment: ours (PATH, HOME, ...) without real-AWS credentials, plus the
    function's Lambda environment."""
    dropped = real_aws_keys(os.environ)
    inherited = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**inherited, **lambda_environ(spec, cloud_env)}


# ---------------------------------------------------------------------------------------------------
# Worker processes

# Workers are forked by multiprocessing's fork server, a fresh interpreter (no moto threads, no locks to
# copy) that has imported once what every handler imports: a worker then starts without ~0.5-1 s of
# imports of its own (four workers starting at once on two cores took seconds). The handlers are not
# preloaded: each worker imports its own, so that its module-level warm-up (the models, Lambda's init
# phase) runs there, in the function's environment.
PRELOAD = (
    "numpy", "PIL.Image", "av", "onnxruntime", "boto3", "botocore.session",
    "lambdas.core.recognise", "lambdas.storage", "facerec_cli.localcloud.runtime.workers",
    "facerec_cli.localcloud.runtime.preload",  # botocore's data, parsed once for every worker
)  # fmt: skip


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def stop_fork_server(timeout_s: float = 5.0) -> None:
    """Stop the fork server (after the workers) and reap it, so that it does not outlive this process
    re-parented, its CPU time lost to whoever measures this one. Waits at most ``timeout_s`` (a worker
    still alive keeps it up); either way a later worker starts a new one. Reaches into CPython's
    ForkServer (as its own ``_stop`` does, which would wait without limit): nothing if its fields moved."""
    from multiprocessing import forkserver, util

    server = forkserver._forkserver
    if not all(hasattr(server, f) for f in ("_lock", "_forkserver_pid", "_forkserver_alive_fd", "_forkserver_address")):
        return
    with server._lock:
        pid, alive, address = server._forkserver_pid, server._forkserver_alive_fd, server._forkserver_address
        if pid is None:
            return
        os.close(alive)  # EOF on its "alive" pipe once no worker holds that end either: it exits
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ChildProcessError):
        while not os.waitpid(pid, os.WNOHANG)[0] and time.monotonic() < deadline:
            time.sleep(0.02)
    if address and not util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)


# run-local's default warm workers per function: one per core, so that recognitions run side by side
# (with one, 100 uploads queued on a single recognition worker while the other core idled), at most
# this many (each recognition worker holds the models: ~300 MB).
MAX_DEFAULT_WORKERS = 4


def cores() -> int:
    """The cores this process may use (as facerec_cli.batch counts them for `identify`; that module is
    below this one and too heavy for the fork server's early start)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(runtime: str = "workers") -> int:
    """Workers per function when the user names none: the cores (at most MAX_DEFAULT_WORKERS); one
    container per function with the containers runtime (each is a whole function image)."""
    return 1 if runtime == "containers" else max(1, min(MAX_DEFAULT_WORKERS, cores()))


def recognition_threads(workers: int) -> int:
    """onnxruntime threads per recognition worker when ``workers`` of them run. They share this machine's
    cores with the splitting workers (decoding) and the moto server: one core is left to those, the rest
    split. Measured on 2 cores, 40 videos in a burst with torch: 1 thread 2.67 videos/s, 2 threads 1.96
    (idle threads spin on the core the decoder needs)."""
    return max(1, (cores() - 1) // max(1, workers))


# What the fork server reads at its start to make the recognition models' sessions for every worker it
# forks (preload.py): the run's gallery, and the weights asked for (else the gallery's own).
PRELOAD_GALLERY_ENV = "FACEREC_PRELOAD_GALLERY"
PRELOAD_WEIGHTS_ENV = "FACEREC_PRELOAD_WEIGHTS"


def start_fork_server(gallery: Path | None = None, weights: str | None = None, workers: int | None = None) -> None:
    """Start the fork server now (its imports run beside whatever the caller does next, e.g. the local
    cloud's start); the first worker waits for them otherwise. With the run's ``gallery`` (and
    ``weights``, and ``workers`` per function): it also makes the recognition models' sessions once,
    which the recognition workers inherit instead of loading their own, when theirs are single-threaded
    (:func:`recognition_threads`; a thread pool does not survive the fork). Nothing more if the fork server
    already runs."""
    from multiprocessing import forkserver

    _context()
    preload: dict[str, str] = {}
    if gallery is not None and recognition_threads(workers or default_workers()) == 1:
        preload[PRELOAD_GALLERY_ENV] = str(Path(gallery).expanduser().resolve())
        if weights:
            preload[PRELOAD_WEIGHTS_ENV] = weights
    # The fork server inherits this process's environment when it starts: these reach it alone.
    with applied_environ(preload, remove=frozenset({PRELOAD_GALLERY_ENV, PRELOAD_WEIGHTS_ENV})):
        forkserver.ensure_running()


# Lambda gives a function CPU in proportion to its memory, one vCPU at 1,769 MB; on a shared machine a
# worker's scheduler weight plays that share (Linux CFS: each nice level is about 1.25x less weight).
FULL_VCPU_MB = 1769
NICE_STEP = 1.25


def nice_for(memory_mb: int) -> int:
    """The nice level whose CFS weight, against a full vCPU's nice 0, is the function's CPU share (0 at
    1,769 MB and above; 1,024 MB: 2; 128 MB: 12)."""
    share = min(1.0, max(memory_mb, 1) / FULL_VCPU_MB)
    return min(19, round(math.log(1 / share) / math.log(NICE_STEP)))


def cpu_share(memory_mb: int) -> None:
    """This process at the nice level of ``memory_mb`` (only ever lower in priority than now)."""
    with contextlib.suppress(OSError):
        wanted = nice_for(memory_mb)
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if wanted > current:
            os.nice(wanted - current)


def _worker_main(
    conn: multiprocessing.connection.Connection,
    spec: LocalFunction,
    env: dict[str, str],
    sys_path: list[str],
    log_path: str | None,
    parent: int | None = None,
) -> None:
    """Entry point of a spawned worker. Protocol: the worker first sends ("ready", None) or
    ("init_error", Outcome); then for each (request_id, event_text) it receives it sends an Outcome;
    None or a closed pipe (the parent is gone) ends it, and so does the parent's end while it works."""
    if parent is not None:  # however run-local ends, SIGKILL included: no worker outlives it
        # Forked by the fork server, which ends when run-local ends (its "alive" pipe closes): follow it.
        lifeline.follow(os.getppid(), origin=parent)
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cpu_share(spec.memory_mb)
    # Keep the CLI's stdout clean (`--json` prints only results there): handler output, including that
    # of subprocesses such as ffmpeg, goes to the log file or to stderr.
    redirect_output(log_path)
    sys.path[:] = sys_path
    os.environ.clear()
    os.environ.update(env)
    try:
        handler = load_handler(spec.handler)
    except Exception as exc:
        traceback.print_exc()
        sys.stdout.flush()
        conn.send(("init_error", error_outcome("Runtime.ImportModuleError", f"{spec.handler}: {exc}")))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        request_id, event_text = message
        outcome = call_handler(handler, spec, request_id, event_text)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(outcome)


class WorkerProcess:
    """One warm worker of one function. Used by one dispatcher thread at a time; ``kill`` may be called
    from any thread (it only signals the process)."""

    def __init__(
        self,
        spec: LocalFunction,
        cloud_env: Mapping[str, str],
        *,
        log_path: str | None = None,
    ) -> None:
        self.spec = spec
        self._env = worker_environ(spec, cloud_env)
        self._log_path = log_path
        # Not a fork of this process: the parent runs moto's server threads, and forking a threaded
        # process can copy held locks into the child. The fork server's children start clean (PRELOAD).
        self._ctx = _context()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._ready = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Spawn the process; it imports the handler in the background while the caller goes on."""
        if self._proc is not None:
            return
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_end, self.spec, self._env, list(sys.path), self._log_path, os.getpid()),
            name=f"facerec-worker-{self.spec.name}",
            # daemon: multiprocessing terminates it at interpreter exit even if close() never ran.
            daemon=True,
        )
        proc.start()
        child_end.close()  # so that the child's death shows up as EOF on our end
        self._proc, self._conn, self._ready = proc, parent_end, False

    def run(self, spec: LocalFunction, request_id: str, event_text: str) -> Outcome:
        self.start()
        if not self._ready:
            first = self._receive()
            if isinstance(first, Outcome):  # died while importing
                return first
            kind, init_error = first
            if kind == "init_error":
                self._reap()
                return init_error
            self._ready = True
        assert self._conn is not None
        try:
            self._conn.send((request_id, event_text))
        except (BrokenPipeError, OSError):
            return self._died()
        received = self._receive()
        return received if isinstance(received, Outcome) else error_outcome("Runtime.Unknown", repr(received))

    def _receive(self) -> Any:
        """The worker's next message, or a 'died' Outcome when the process ends first."""
        assert self._conn is not None and self._proc is not None
        multiprocessing.connection.wait([self._conn, self._proc.sentinel])
        # Prefer the pipe: a worker may answer and exit at once.
        if self._conn.poll():
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                pass
        return self._died()

    def _died(self) -> Outcome:
        exitcode = self._reap()
        return error_outcome(
            "Runtime.ExitError",
            f"worker process of {self.spec.name} exited with code {exitcode} during the invocation",
            died=True,
        )

    def _reap(self) -> int | None:
        """Forget a finished process; the next run starts a fresh one."""
        proc, conn = self._proc, self._conn
        self._proc, self._conn, self._ready = None, None, False
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        proc.join(timeout=5)
        if proc.exitcode is None:
            proc.kill()
            proc.join(timeout=5)
        exitcode = proc.exitcode
        proc.close()
        return exitcode

    def kill(self) -> None:
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ValueError, OSError):  # already closed or gone
                proc.kill()

    def close(self, grace_s: float = 2.0) -> None:
        """Ask the worker to stop, then insist."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        proc.join(timeout=grace_s)
        if proc.exitcode is None:
            proc.terminate()
            proc.join(timeout=2)
        self._reap()


# ---------------------------------------------------------------------------------------------------
# The caller's own process (`--workers 0`, for debuggers and profilers)


class InProcessRunner:
    """Runs handlers in this process, one call at a time, with the function's environment applied
    around each call. The dispatcher gives it a single thread: handlers reading ``os.environ`` must not
    run concurrently for different functions in one process."""

    def __init__(self, cloud_env: Mapping[str, str]) -> None:
        self._cloud_env = dict(cloud_env)
        self._handlers: dict[str, Handler] = {}

    def start(self) -> None:
        pass

    def run(self, spec: LocalFunction, request_id: str, event_text: str) -> Outcome:
        with applied_environ(lambda_environ(spec, self._cloud_env), remove=real_aws_keys(os.environ)):
            handler = self._handlers.get(spec.handler or "")
            if handler is None:
                try:
                    handler = load_handler(spec.handler)  # imported under the function's environment
                except Exception as exc:
                    traceback.print_exc()
                    return error_outcome("Runtime.ImportModuleError", f"{spec.handler}: {exc}")
                self._handlers[spec.handler or ""] = handler
            try:
                return call_handler(handler, spec, request_id, event_text)
            except SystemExit as exc:  # sys.exit() in a handler must not end the dispatcher's thread
                return error_outcome("Runtime.ExitError", f"handler called sys.exit({exc.code!r})")

    def kill(self) -> None:
        pass  # a thread cannot be interrupted; the dispatcher stops waiting for it instead

    def close(self, grace_s: float = 2.0) -> None:
        pass
