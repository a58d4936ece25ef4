"""Worker processes that end when the process that started them ends, however it ends (SIGKILL too).

A worker calls :func:`follow` with its parent's pid: a daemon thread checks every ``POLL_S`` whether the
parent is still its parent (an orphan is re-parented, so ``os.getppid()`` changes) and ends the worker
with ``os._exit`` when not; nothing a handler is doing (decoding, a model call, a signal handler that
ignores SIGTERM) can hold it. Linux's PR_SET_PDEATHSIG would be quicker, but it fires when the *thread*
that started the child ends, and run-local starts workers from its dispatcher threads.
"""

from __future__ import annotations

import os
import threading
import time

POLL_S = 0.5
ORPHANED_EXIT = 70  # the worker's exit code when its parent was gone


def _watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(ORPHANED_EXIT)  # no cleanup to wait for: the parent that wanted the work is gone
        time.sleep(POLL_S)


def follow(parent: int) -> None:
    """End this process soon after ``parent`` (the pid that started it) ends."""
    threading.Thread(target=_watch, args=(parent,), name="facerec-lifeline", daemon=True).start()
