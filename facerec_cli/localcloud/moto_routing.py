"""moto's request routing without its per-request directory listing.

moto 5.2.1's server picks the backend of every request with ``host in backends.list_of_moto_modules()``,
a generator that lists moto's package directory and stats each of its ~170 entries: on the local cloud
that was the largest single cost of a request after the response itself (at 100 videos, ~1,600
requests). The directory does not change while the process runs, so the list is read once; routing is
otherwise moto's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Cache moto's module list (idempotent; a moto without the function is left as it is)."""
    global _installed
    with _lock:
        if _installed:
            return
        from moto import backends

        listing = getattr(backends, "list_of_moto_modules", None)
        if listing is None:
            return
        modules = tuple(listing())

        def list_of_moto_modules() -> Iterable[str]:
            return modules

        backends.list_of_moto_modules = list_of_moto_modules  # type: ignore[assignment]
        _installed = True
