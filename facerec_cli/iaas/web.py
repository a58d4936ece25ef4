"""The web tier: ``POST /`` with a multipart field ``inputFile`` answers ``<stem>:<name>`` as plain text.

One request: check the upload (present, at most ``max_upload_bytes``, really a JPEG/PNG/WebP/BMP image,
not too many pixels), store it in the in-bucket under its file name (kept as sent, non-ASCII included:
``日本.jpg`` answers ``日本:<name>``), register a waiter for a new request id, send ``{id, key, etag}``
with the deadline of this HTTP request to the request queue, release the body (it is in S3 now: a
waiting request holds no upload), and block this HTTP request (one server thread) until the router
hands the waiter its response or ``timeout_s`` passes (504).

The router is the only reader of the response queue: one background thread long-polls it and routes
every response to the waiter of its request id, so responses may arrive in any order. A response for
an id already answered (a redelivered request answered twice) or given up on (504 sent) is deleted
and counted; one for an id this web tier never issued is deleted after a warning. So there must be one
web tier per response queue: :class:`WebLease` (a lease object in the gallery bucket, written with S3
conditional writes and renewed while the tier runs) refuses a second web tier on the same prefix.

With a token (``WebConfig.token_sha256``), every route answers 401 unless the request carries it
(``Authorization: Bearer <token>`` or ``X-Facerec-Token: <token>``); only its SHA-256 is kept, and it
is compared in constant time.

Status codes: 200 answer; 400 no ``inputFile`` / empty / no usable file name; 401 no or wrong token;
408 the request was not received in time (sent by the server, see :class:`WebServer`); 409 another
upload with the same name but other content is still being recognised; 413 too large (bytes or
pixels); 415 not an image; 422 the app tier could not recognise the image (its message); 503 the
queue or bucket could not be reached, or the server is stopping; 504 no answer in time. ``GET
/healthz`` reports the router, the scaler, the queue depths and the scaler's instances in JSON (503
when the router thread is dead); the depths and instances are cached for ``health_cache_s`` (AWS calls
are not free).

Served by waitress (a production WSGI server: a fixed pool of ``threads`` request threads, each may
wait for one answer, so ``threads`` bounds the requests in flight per web tier). Requests are read by
waitress's event loop, not by those threads; a connection that is idle for ``channel_timeout_s``, or
whose request is not completely received within ``read_timeout_s``, gets a 408 and is closed, so slow
clients cannot hold the connections for long.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import socket
import threading
import time
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import IO, Any

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.errors import UserError
from facerec_cli.iaas.messages import Request, Response, deadline_attributes, new_id, queue_counts, queue_depth, queue_url, stem_of
from facerec_cli.iaas.names import ACTIVE_STATES, WEB_LOCK_KEY, IaasNames, app_instance_index

log = logging.getLogger("facerec.iaas.web")

FIELD = "inputFile"
# PIL format names accepted (the core reads these; MPO is what some cameras call a JPEG).
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})
ERROR_STATUS = "error"
TOKEN_HEADER = "X-Facerec-Token"
MAX_NAME_BYTES = 255  # a file name on most file systems; S3 keys may be longer, out-bucket stems too
_CHUNK = 1 << 16  # the upload is read (hashed) in pieces of this size, never whole


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (threads created from now on). With one arena per
    request thread, each keeps the memory of the uploads it handled (measured: 2.3 MB per waiting
    8 MB upload with the default, 0.6 MB with 2 arenas). False where this is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def token_sha256(token: str) -> str:
    """What the web tier keeps of a token (and what bootstrap puts in the web-instance's user data)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class WebConfig:
    timeout_s: float = 60.0  # per HTTP request: no answer by then -> 504
    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    poll_wait_s: int = 20  # the router's long poll on the response queue
    # /healthz's AWS part (queue depths, instances) is reused this long, so outside traffic cannot
    # turn into GetQueueAttributes/DescribeInstances calls. 0: always fresh.
    health_cache_s: float = 2.0
    token_sha256: str | None = None  # None: no token asked for (anyone the network lets in)
    lease_s: float = 30.0  # the web-tier lease: another web tier may take over this long after we die
    lock: bool = True  # take the lease (one web tier per prefix); False only for tests of parts


def upload_key(filename: str) -> str | None:
    """The in-bucket key for an uploaded file name, kept as the client sent it (any script): NFC
    normalised, its last path component (some browsers send a whole path), control characters and
    surrounding blanks removed. None when nothing usable is left."""
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs")).strip()
    if name in ("", ".", ".."):
        return None
    return name


# ------------------------------------------------------------------------------------------ router


class Waiter:
    __slots__ = ("id", "event", "response", "cancelled")

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.event = threading.Event()
        self.response: Response | None = None
        self.cancelled = False

    def wait(self, timeout: float) -> Response | None:
        self.event.wait(timeout)
        return self.response


class ResponseRouter:
    """Long-polls the response queue in one thread and hands each response to its request's waiter."""

    def __init__(self, sqs: Any, url: str, *, wait_s: int = 20, remember: int = 10_000) -> None:
        self.sqs = sqs
        self.url = url
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._waiters: dict[str, Waiter] = {}
        self._answered: collections.OrderedDict[str, Response] = collections.OrderedDict()  # id -> first response
        self._abandoned: collections.OrderedDict[str, float] = collections.OrderedDict()  # timed out ids
        self._remember = remember
        self.counts: collections.Counter[str] = collections.Counter()  # answered, duplicate, late, unknown, malformed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- for request threads

    def expect(self, request_id: str) -> Waiter:
        """Register before sending the request: its response may come back at once."""
        waiter = Waiter(request_id)
        with self._lock:
            self._waiters[request_id] = waiter
        return waiter

    def abandon(self, request_id: str) -> None:
        """The HTTP request gave up (timeout or a failed send): a later response is 'late'."""
        with self._lock:
            if self._waiters.pop(request_id, None) is not None:
                self._abandoned[request_id] = time.time()
                while len(self._abandoned) > self._remember:
                    self._abandoned.popitem(last=False)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    def answered(self, request_id: str) -> Response | None:
        """The response that answered ``request_id`` (the most recent ``remember`` ids)."""
        with self._lock:
            return self._answered.get(request_id)

    # -- the thread

    def start(self) -> "ResponseRouter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="facerec-response-router", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop polling and wake every waiter (their requests get a 503). The thread may be in a long
        poll of up to ``wait_s``: it is not waited for longer than ``timeout`` (it is a daemon thread; a
        response it receives after this is left in the queue, and the next router deletes it)."""
        self._stop.set()
        with self._lock:
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.cancelled = True
            waiter.event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep routing; a dead router would time out every request
                if self._stop.is_set():
                    return
                log.exception("response router: polling %s failed; retrying in 1 s", self.url)
                self._stop.wait(1.0)

    def poll_once(self) -> int:
        resp = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s)
        messages = resp.get("Messages") or []
        if not messages:
            return 0
        for message in messages:
            self.route_body(message.get("Body") or "")
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        result = self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
        for failed in result.get("Failed") or []:
            log.warning("response router: could not delete a response (%s); a duplicate may follow", failed.get("Code"))
        return len(messages)

    def route_body(self, body: str) -> str:
        """Hand one response to its waiter; returns what happened to it."""
        try:
            response = Response.from_body(body)
        except ValueError as exc:
            self.counts["malformed"] += 1
            log.error("response router: dropping a malformed response: %s", exc)
            return "malformed"
        with self._lock:
            waiter = self._waiters.pop(response.id, None)
            if waiter is not None:
                outcome = "answered"
                self._answered[response.id] = response
                while len(self._answered) > self._remember:
                    self._answered.popitem(last=False)
            elif response.id in self._answered:
                outcome = "duplicate"
            elif response.id in self._abandoned:
                outcome = "late"
            else:
                outcome = "unknown"
            self.counts[outcome] += 1
        if waiter is not None:
            waiter.response = response
            waiter.event.set()
        elif outcome == "unknown":
            log.warning("response router: deleted a response for unknown request %s (%s)", response.id, response.answer)
        else:
            log.info("response router: deleted a %s response for request %s", outcome, response.id)
        return outcome


# ------------------------------------------------------------------------------------------ the lease


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


# ------------------------------------------------------------------------------------------ the tier


@dataclass
class Pending:
    """An accepted request: in S3 and on the queue, its body released; :meth:`WebTier.finish` waits."""

    key: str
    request: Request
    waiter: Waiter
    deadline: float  # time.monotonic() when the answer is given up on


def pool_report(pool: Any) -> dict[str, Any]:
    """The instances of a scaler's pool for /healthz: ``count`` and ``names`` of those starting or
    running (the scaler's capacity), ``list`` with every instance's state. Local worker processes
    are ``running`` or ``stopping`` (with their phase); EC2 instances have their EC2 state."""
    lister = getattr(pool, "instances", None)
    try:
        if lister is None:  # a pool that can only count
            return {"count": pool.active(), "names": None, "list": None}
        rows: list[dict[str, Any]] = []
        for inst in lister():
            if isinstance(inst, dict):  # AsgPool: DescribeInstances rows
                rows.append({"name": inst.get("Name") or "", "state": inst.get("State") or "", "id": inst.get("InstanceId")})
            else:  # LocalProcessPool: InstanceInfo of worker processes
                state = "stopping" if inst.stopping else "running"
                rows.append({"name": inst.name, "state": state, "id": inst.pid, "phase": inst.phase})
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        return {"error": error_code(exc) or type(exc).__name__}
    rows.sort(key=lambda r: (app_instance_index(r["name"]) is None, app_instance_index(r["name"]) or 0, r["name"]))
    active = [r["name"] for r in rows if r["state"] in ACTIVE_STATES]
    return {"count": len(active), "names": active, "list": rows}


def check_image(name: str, data: bytes | IO[bytes], max_pixels: int) -> tuple[int, str] | None:
    """None for an acceptable image, else (HTTP status, message). ``data``: bytes or a seekable file."""
    from PIL import Image, UnidentifiedImageError

    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        stream.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                fmt, (width, height) = img.format, img.size
                if fmt not in IMAGE_FORMATS:
                    return 415, f"{name}: {fmt} images are not accepted; send a JPEG, PNG, WebP or BMP image"
                if width * height > max_pixels:
                    return 413, f"{name}: {width}x{height} pixels, over the limit of {max_pixels} pixels; send a smaller image"
                img.verify()
    except Image.DecompressionBombError:
        return 413, f"{name}: too many pixels (over {max_pixels}); send a smaller image"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return 415, f"{name}: not an image; send a JPEG, PNG, WebP or BMP image"
    return None


class WebTier:
    """The web tier's logic and its Flask app. ``scaler`` (optional) is reported by /healthz; its
    demand should be :meth:`demand` (requests someone still waits for)."""

    def __init__(
        self,
        *,
        s3: Any,
        sqs: Any,
        names: IaasNames,
        config: WebConfig | None = None,
        router: ResponseRouter | None = None,
        scaler: Any = None,
    ) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.names = names
        self.config = config or WebConfig()
        self.request_url = queue_url(sqs, names.request_queue)
        self.router = router or ResponseRouter(sqs, queue_url(sqs, names.response_queue), wait_s=self.config.poll_wait_s)
        self.scaler = scaler
        self.lease: WebLease | None = None
        self.counts: collections.Counter[int] = collections.Counter()  # by HTTP status
        self._inflight: dict[str, tuple[str, int]] = {}  # key -> (content md5, requests using it)
        self._lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._health_cache: tuple[float, dict[str, Any]] | None = None  # (monotonic time, AWS part)
        self._token = bytes.fromhex(self.config.token_sha256) if self.config.token_sha256 else None
        self.app = self._make_app()

    def start(self) -> "WebTier":
        """Take the lease on the prefix (:class:`LeaseHeld` when another web tier serves it), then
        start routing responses."""
        if self.config.lock and self.lease is None:
            self.lease = WebLease(
                self.s3, self.names.gallery_bucket, prefix=self.names.prefix, lease_s=self.config.lease_s, on_lost=self.router.stop,
            ).acquire()
        self.router.start()
        return self

    def stop(self) -> None:
        self.router.stop()
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def demand(self, queue_depth: int) -> int:
        """What the scaler should serve: the request queue's depth, but never more than the requests
        this tier still waits for. Requests whose HTTP client got its 504 (or left) drive no scaling,
        even while they sit in the queue until a worker skips them (the one web tier per prefix knows
        every live request)."""
        return min(queue_depth, self.router.waiting)

    def depth_source(self, sqs: Any | None = None) -> Any:
        """A depth function for :class:`~facerec_cli.iaas.scaler.AutoScaler`: :meth:`demand` of the
        request queue's depth (read with ``sqs``, default this tier's client)."""
        client = sqs or self.sqs
        return lambda: self.demand(queue_depth(client, self.request_url))

    # -- authentication

    def authorised(self, headers: Any) -> bool:
        """True without a configured token; else whether the request carries it. Constant time: the
        SHA-256 of what was sent is compared with the stored one by :func:`hmac.compare_digest`."""
        if self._token is None:
            return True
        given = headers.get(TOKEN_HEADER)
        if given is None:
            scheme, _, value = (headers.get("Authorization") or "").partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest(), self._token)

    # -- one request

    def submit(self, filename: str, data: bytes | IO[bytes], content_type: str | None = None) -> tuple[int, str]:
        """(HTTP status, plain-text body) for one uploaded file: :meth:`accept`, then :meth:`finish`."""
        accepted = self.accept(filename, io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data, content_type)
        return accepted if isinstance(accepted, tuple) else self.finish(accepted)

    def accept(self, filename: str, stream: IO[bytes], content_type: str | None = None) -> Pending | tuple[int, str]:
        """Check the upload (a seekable file: werkzeug spools large ones to disk), store it in the
        in-bucket and queue the request. A refusal is (HTTP status, body); else a :class:`Pending`,
        after which the caller should close ``stream``: nothing of the body is needed any more."""
        key = upload_key(filename)
        shown = filename or "the upload"
        if key is None:
            return 400, f"{shown}: the file has no usable name; send it with a file name such as test_00.jpg"
        if len(key.encode()) > MAX_NAME_BYTES:
            return 400, f"{key[:40]}…: the file name is {len(key.encode())} bytes long; at most {MAX_NAME_BYTES} bytes (UTF-8), rename it"
        if self.lease is not None and self.lease.lost.is_set():
            return 503, f"{key}: this web tier lost its lease on prefix {self.names.prefix} (another web tier may serve it); send it there"
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        if not size:
            return 400, f"{key}: the file is empty"
        if size > self.config.max_upload_bytes:
            return 413, f"{key}: over the upload limit of {self.config.max_upload_bytes} bytes"
        problem = check_image(key, stream, self.config.max_pixels)
        if problem is not None:
            return problem
        digest = hashlib.md5(usedforsecurity=False)
        stream.seek(0)
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
        if not self._claim(key, digest.hexdigest()):
            return 409, f"{key}: another upload with this name and different content is being recognised; send it after that one is answered, or rename it"
        request_id = new_id()
        try:
            stream.seek(0)
            put = self.s3.put_object(Bucket=self.names.in_bucket, Key=key, Body=stream, ContentType=content_type or "application/octet-stream")
            request = Request(request_id, key, put.get("ETag"))
            waiter = self.router.expect(request_id)
            deadline = time.monotonic() + self.config.timeout_s
            self.sqs.send_message(
                QueueUrl=self.request_url, MessageBody=request.to_body(),
                MessageAttributes=deadline_attributes(time.time() + self.config.timeout_s),
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            self.router.abandon(request_id)
            self._release(key)
            log.error("could not queue %s: %s", key, exc)
            return 503, f"{key}: could not queue the request ({error_code(exc) or type(exc).__name__}); try again"
        except BaseException:
            self.router.abandon(request_id)
            self._release(key)
            raise
        return Pending(key, request, waiter, deadline)

    def finish(self, pending: Pending) -> tuple[int, str]:
        """Wait for the answer of an accepted request (until its deadline)."""
        key, request, waiter = pending.key, pending.request, pending.waiter
        try:
            response = waiter.wait(max(0.0, pending.deadline - time.monotonic()))
        finally:
            self._release(key)
        if response is None:
            self.router.abandon(request.id)
            if waiter.cancelled:
                return 503, f"{key}: the web tier is shutting down; send it again"
            return 504, (
                f"{key}: no answer within {self.config.timeout_s:g} s (request {request.id}); "
                "the app tier is busy or has no instances running; try again later"
            )
        if response.status == ERROR_STATUS:
            return 422, f"{stem_of(key)}: could not recognise: {response.error or 'unknown error'}"
        return 200, response.answer

    def _claim(self, key: str, digest: str) -> bool:
        with self._lock:
            current = self._inflight.get(key)
            if current is not None and current[0] != digest:
                return False
            self._inflight[key] = (digest, (current[1] if current else 0) + 1)
            return True

    def _release(self, key: str) -> None:
        with self._lock:
            digest, count = self._inflight[key]
            if count <= 1:
                del self._inflight[key]
            else:
                self._inflight[key] = (digest, count - 1)

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: the router and scaler, the queue depths and the scaler's instances (what
        ``facerec watch --web-url`` shows). The router and scaler parts are live; the queue depths
        and instances (two GetQueueAttributes, plus the pool's Describe calls) are at most
        ``health_cache_s`` old. A failed call is reported in the body, not as an unhealthy tier."""
        lost = self.lease is not None and self.lease.lost.is_set()
        status = "lease lost" if lost else ("ok" if self.router.alive else "router stopped")
        body: dict[str, Any] = {
            "status": status,
            "prefix": self.names.prefix,
            "waiting": self.router.waiting,
            "responses": dict(self.router.counts),
            "http": {str(k): v for k, v in sorted(self.counts.items())},
        }
        last = getattr(self.scaler, "last", None)
        if last is not None:
            body["scaler"] = {"depth": last.depth, "target": last.target, "instances": last.active}
        body.update(self._aws_health())
        return (200 if status == "ok" else 503), body

    def _aws_health(self) -> dict[str, Any]:
        # One caller refreshes while the others wait for its result rather than call AWS too.
        with self._health_lock:
            cached = self._health_cache
            if cached is not None and time.monotonic() - cached[0] < self.config.health_cache_s:
                return cached[1]
            part: dict[str, Any] = {
                "queues": {"request": self._queue_report(self.request_url), "response": self._queue_report(self.router.url)},
            }
            pool = getattr(self.scaler, "pool", None)
            if pool is not None:
                part["instances"] = pool_report(pool)
            self._health_cache = (time.monotonic(), part)
            return part

    def _queue_report(self, url: str) -> dict[str, Any]:
        try:
            waiting, in_flight = queue_counts(self.sqs, url)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            return {"error": error_code(exc) or type(exc).__name__}
        return {"waiting": waiting, "in_flight": in_flight}

    # -- Flask

    def _make_app(self) -> Any:
        from flask import Flask, jsonify, request
        from werkzeug.exceptions import HTTPException

        app = Flask("facerec-web")
        # The whole multipart body; the file itself is checked against max_upload_bytes in accept().
        app.config["MAX_CONTENT_LENGTH"] = self.config.max_upload_bytes + 256 * 1024
        tier = self

        def text(body: str, status: int) -> Any:
            tier.counts[status] += 1
            return app.response_class(body, status=status, mimetype="text/plain")

        @app.before_request
        def authenticate() -> Any:
            # Before the body is parsed: a request without the token costs no multipart parsing.
            if not tier.authorised(request.headers):
                response = text(
                    f"401 Unauthorized: this web tier needs its token: send it as the header 'Authorization: Bearer <token>' "
                    f"(curl -H 'Authorization: Bearer TOKEN' -F {FIELD}=@photo.jpg URL)", 401,
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="facerec"'
                return response
            return None

        @app.post("/")
        def recognise() -> Any:
            upload = request.files.get(FIELD)
            if upload is None:
                return text(f"no file: send the image as the multipart/form-data field {FIELD!r} (curl -F {FIELD}=@photo.jpg URL)", 400)
            accepted = tier.accept(upload.filename or "", upload.stream, upload.mimetype)
            # The upload is in S3 (or refused): let go of the body (its spooled file or buffer)
            # before the wait, so a waiting request holds no upload.
            request.close()
            del upload
            status, body = accepted if isinstance(accepted, tuple) else tier.finish(accepted)
            return text(body, status)

        @app.get("/healthz")
        def healthz() -> Any:
            status, body = tier.health()
            return jsonify(body), status

        @app.errorhandler(HTTPException)
        def http_error(exc: HTTPException) -> Any:
            if exc.code == 413:
                return text(f"upload too large: the limit is {tier.config.max_upload_bytes} bytes", 413)
            return text(f"{exc.code} {exc.name}: {exc.description}", exc.code or 500)

        return app


# ------------------------------------------------------------------------------------------ server


def _timed_channel_class() -> Any:
    """waitress's channel, whose request parser notes when its request's first byte came."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser

    class TimedParser(HTTPRequestParser):
        def __init__(self, adj: Any) -> None:
            super().__init__(adj)
            self.facerec_started = time.monotonic()

    class TimedChannel(HTTPChannel):
        parser_class = TimedParser

    return TimedChannel


class WebServer:
    """waitress serving a WSGI app in a background thread (``port=0``: any free port).

    Slow clients: waitress reads requests in its event loop and hands a request to one of ``threads``
    only once it is complete, so a slow client holds a connection, not a thread. To keep them from
    holding all ``connection_limit`` connections: a connection idle for ``channel_timeout_s`` is
    closed (waitress's own ``channel_timeout``), and a request that is not completely received
    ``read_timeout_s`` after its first byte (headers sent one byte at a time, a body that trickles) is
    answered 408 and its connection closed; an idle connection in the middle of a request gets the
    408 too. Checked every second (waitress's ``cleanup_interval``). ``refused`` counts the 408s (and
    so does ``counts[408]``, given the web tier's HTTP status counter)."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        threads: int = 64,
        max_body: int = 11 * 2**20,
        channel_timeout_s: int = 30,
        read_timeout_s: float = 60.0,
        connection_limit: int | None = None,
        counts: collections.Counter[int] | None = None,
    ) -> None:
        from waitress.server import create_server

        self.read_timeout_s = read_timeout_s
        self.refused = 0
        self.counts = counts
        self.server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit or max(256, threads * 4),
            channel_timeout=max(1, int(channel_timeout_s)),
            cleanup_interval=1,
            max_request_body_size=max_body,
            ident="facerec",
            clear_untrusted_proxy_headers=True,
        )
        self.server.channel_class = _timed_channel_class()
        original = self.server.maintenance

        def maintenance(now: float) -> None:
            self._refuse_slow(now)
            original(now)

        self.server.maintenance = maintenance  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    def _refuse_slow(self, now: float) -> None:
        """(In waitress's event-loop thread.) 408 for every partly received request that is too slow."""
        server = self.server
        idle_before = now - server.adj.channel_timeout
        mono = time.monotonic()
        for channel in list(server.active_channels.values()):
            partial = getattr(channel, "request", None)
            if partial is None or channel.requests or channel.will_close or channel.close_when_flushed:
                continue
            started = getattr(partial, "facerec_started", mono)
            if mono - started < self.read_timeout_s and channel.last_activity >= idle_before:
                continue
            body = (
                f"408 Request Timeout: the request was not received within {self.read_timeout_s:g} s "
                f"(or the connection stayed idle for {server.adj.channel_timeout} s); send it again\n"
            ).encode()
            head = (
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nServer: facerec\r\n\r\n"
            ).encode()
            with contextlib.suppress(Exception):
                partial.close()  # its spooled body, if any
            channel.request = None
            with channel.outbuf_lock:
                channel.outbufs[-1].append(head + body)
                channel.current_outbuf_count += len(head) + len(body)
                channel.total_outbufs_len += len(head) + len(body)
            channel.close_when_flushed = True  # the loop flushes the 408, then closes
            channel.last_activity = now  # (not closed unflushed by waitress's own idle check)
            self.refused += 1
            if self.counts is not None:
                self.counts[408] += 1

    @property
    def url(self) -> str:
        host = self.server.effective_host
        return f"http://{host}:{self.server.effective_port}"

    def start(self) -> "WebServer":
        self._thread = threading.Thread(target=self.server.run, name="facerec-waitress", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.run()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection (in the server's own thread, through its
        trigger), then stop the request threads."""
        server = self.server

        def close_all() -> None:
            for obj in list(server._map.values()):
                if obj is not server.trigger:
                    with contextlib.suppress(OSError):
                        obj.close()
            server.trigger.close()  # the map is empty now: the loop ends

        if self._thread is not None and self._thread.is_alive():
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout)
        else:
            close_all()
        server.task_dispatcher.shutdown(timeout=timeout)
