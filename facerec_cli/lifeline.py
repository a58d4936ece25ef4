"""Worker processes that end when the process that started them ends, however it ends (SIGKILL too).

A worker calls :func:`follow` with its parent's pid: a daemon thread checks every ``POLL_S`` whether the
parent is still its parent (an orphan is re-parented, so ``os.getppid()`` changes) and ends the worker
with ``os._exit`` when not; nothing a handler is doing (decoding, a model call, a signal handler that
ignores SIGTERM) can hold it. Linux's PR_SET_PDEATHSIG would be quicker, but it fires when the *thread*
that started the child ends, and run-local starts workers from its dispatcher threads. run-local's
workers are forked by a fork server (localcloud/runtime/workers.py), which lives on while any of them
does: they follow it and run-local itself (``origin``).
"""

from __future__ import annotations

import os
import threading
import time

POLL_S = 0.5
ORPHANED_EXIT = 70  # the worker's exit code when its parent was gone


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie (dead, waiting for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)


def _watch(parent: int, origin: int | None) -> None:
    while True:
        if os.getppid() != parent or (origin is not None and not alive(origin)):
            os._exit(ORPHANED_EXIT)  # no cleanup to wait for: the parent that wanted the work is gone
        time.sleep(POLL_S)


def follow(parent: int, origin: int | None = None) -> None:
    """End this process soon after ``parent`` (the pid that started it) ends, or ``origin`` (the process
    that asked ``parent`` for it: a fork server outlives its owner while the processes it forked live)."""
    if origin is not None and not alive(origin):
        os._exit(ORPHANED_EXIT)
    threading.Thread(target=_watch, args=(parent, origin), name="facerec-lifeline", daemon=True).start()
