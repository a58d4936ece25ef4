"""S3's conditional writes, atomic on the local cloud as they are on AWS.

moto 5.2.1 honours ``PutObject`` with ``If-None-Match: *`` (412 when the key exists) and ``If-Match``,
but checks and writes in two steps without a lock, and its server answers requests on many threads:
two conditional writes to one key can both succeed. Timelines rely on the first writer winning
(lambdas/segments.py: a segment's part and the merge claim), so while a local cloud runs, conditional
``PutObject`` requests are serialised. Unconditional writes are untouched.
"""

from __future__ import annotations

import threading
from typing import Any

TESTED_MOTO = "5.2.1"
_lock = threading.Lock()
_installed: Any = None


def check() -> Any:
    """moto's S3Response class, if its ``put_object`` is still the method PutObject goes through."""
    try:
        from moto.s3.responses import S3Response
    except ImportError as exc:
        raise RuntimeError(f"facerec's local cloud cannot make S3 conditional writes atomic: {exc}") from exc
    if not callable(getattr(S3Response, "put_object", None)):
        raise RuntimeError(
            "facerec's local cloud cannot make S3 conditional writes atomic: moto.s3.responses.S3Response.put_object "
            f"is gone (built against moto {TESTED_MOTO}; install it from constraints.txt)"
        )
    return S3Response


def install() -> None:
    """Serialise conditional PutObject requests in this process's moto server(s). Idempotent."""
    global _installed
    cls = check()
    with _lock:
        if _installed is not None:
            return
        original = cls.__dict__["put_object"]
        writes = threading.Lock()

        def put_object(self: Any) -> Any:
            headers = self.headers
            if headers.get("If-None-Match") or headers.get("If-Match"):
                with writes:  # the existence check and the write as one step, as on S3
                    return original(self)
            return original(self)

        put_object.__wrapped__ = original  # type: ignore[attr-defined]
        cls.put_object = put_object
        _installed = original
