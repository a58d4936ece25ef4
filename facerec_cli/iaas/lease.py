"""One web tier per prefix: :class:`WebLease`, a lease object in the gallery bucket, written with S3
conditional writes and renewed while the tier runs, refuses a second web tier on the same prefix (only
one may read the response queue: see :mod:`facerec_cli.iaas.router`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import botocore.exceptions

from facerec_cli.errors import UserError
from facerec_cli.iaas.names import WEB_LOCK_KEY
from facerec_cli.infra.aws import error_code

log = logging.getLogger("facerec.iaas.web")


class LeaseHeld(UserError):
    """Another web tier serves this prefix."""


class WebLease:
    """One web tier per prefix: a lease object (``web-tier.lock`` in the gallery bucket) made with a
    conditional PutObject (``If-None-Match: *``), renewed every ``lease_s / 3`` with ``If-Match`` its
    ETag, deleted on a clean stop. A lease not renewed for ``lease_s`` (its holder died) may be taken
    over (``If-Match`` the stale ETag, so two newcomers cannot both win). Its age is measured on S3's
    clock (the GET's Date header minus the object's LastModified), never against this machine's.

    When a renewal finds the lease gone or taken, or cannot renew for ``lease_s``, :attr:`lost` is set
    and ``on_lost`` runs: the tier stops routing, since another one may now own the responses."""

    def __init__(self, s3: Any, bucket: str, key: str = WEB_LOCK_KEY, *, prefix: str = "", lease_s: float = 30.0, on_lost: Any = None) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix or bucket
        self.key = key
        self.lease_s = lease_s
        self.on_lost = on_lost
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = time.monotonic()

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "lease_s": self.lease_s}).encode()

    def _put(self, **condition: str) -> str:
        resp = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), ContentType="application/json", **condition)
        return resp["ETag"]

    def acquire(self) -> "WebLease":
        try:
            self.etag = self._put(IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            self.etag = self._take_over()
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="facerec-web-lease", daemon=True)
        self._thread.start()
        return self

    def _take_over(self) -> str:
        got = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        body, etag = got["Body"].read(), got["ETag"]
        try:
            holder = json.loads(body).get("owner") or "?"
        except ValueError:
            holder = "?"
        age = _age_s(got)
        if age < self.lease_s:
            raise LeaseHeld(
                f"another web tier ({holder}) serves prefix {self.prefix}: its lease "
                f"s3://{self.bucket}/{self.key} was renewed {age:.0f} s ago",
                hint=f"stop that one first (one web tier per prefix: it alone reads the response queue), or use another --prefix; "
                     f"if it died, its lease expires {self.lease_s - age:.0f} s from now",
            )
        try:
            etag = self._put(IfMatch=etag)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey", "404"):
                raise LeaseHeld(f"another web tier took the lease s3://{self.bucket}/{self.key} at the same moment", hint="stop it first, or use another --prefix") from exc
            raise
        log.warning("took over the web-tier lease of %s (not renewed for %.0f s)", holder, age)
        return etag

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Renew the lease once; False (and :attr:`lost` set, ``on_lost`` run) when it is lost."""
        if self.lost.is_set():
            return False
        try:
            self.etag = self._put(IfMatch=self.etag or "")
            self._renewed = time.monotonic()
            return True
        except botocore.exceptions.ClientError as exc:
            taken = error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey", "404", "ConditionalRequestConflict")
            reason = f"{error_code(exc)}"
        except botocore.exceptions.BotoCoreError as exc:
            taken, reason = False, type(exc).__name__
        if taken or time.monotonic() - self._renewed >= self.lease_s:
            log.error("lost the web-tier lease s3://%s/%s (%s): another web tier may own the responses now; "
                      "this one stops answering", self.bucket, self.key, reason)
            self.lost.set()
            if self.on_lost is not None:
                self.on_lost()
            return False
        log.warning("could not renew the web-tier lease (%s); retrying", reason)
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.etag is not None and not self.lost.is_set():
            with contextlib.suppress(botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
                self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        self.etag = None


def _age_s(got: dict[str, Any]) -> float:
    """Seconds since the object was written, on S3's clock when its Date header says."""
    modified = got["LastModified"]
    date = (got.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    try:
        now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
    except (TypeError, ValueError):
        now = datetime.now(timezone.utc)
    return max(0.0, (now - modified).total_seconds())
