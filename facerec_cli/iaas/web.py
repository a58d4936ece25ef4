"""The web tier: ``POST /`` with a multipart field ``inputFile`` answers ``<stem>:<name>`` as plain text.

One request: check the upload (present, at most ``max_upload_bytes``, really a JPEG/PNG/WebP/BMP image,
not too many pixels), store it in the in-bucket under its file name (kept as sent, non-ASCII included:
``日本.jpg`` answers ``日本:<name>``), register a waiter for a new request id, send ``{id, key, etag}``
with the deadline of this HTTP request to the request queue, release the body (it is in S3 now: a
waiting request holds no upload), and block this HTTP request (one server thread) until the router
hands the waiter its response or ``timeout_s`` passes (504).

The router (:mod:`facerec_cli.iaas.router`) is the only reader of the response queue, so there must be
one web tier per response queue: :class:`~facerec_cli.iaas.lease.WebLease` refuses a second web tier
on the same prefix.

With a token (``WebConfig.token_sha256``), every route answers 401 unless the request carries it
(``Authorization: Bearer <token>`` or ``X-Facerec-Token: <token>``); only its SHA-256 is kept, and it
is compared in constant time.

Status codes: 200 answer; 400 no ``inputFile`` / empty / no usable file name; 401 no or wrong token;
408 the request was not received in time (sent by the server, see
:class:`~facerec_cli.iaas.web_server.WebServer`); 409 another
upload with the same name but other content is still being recognised; 413 too large (bytes or
pixels); 415 not an image; 422 the app tier could not recognise the image (its message); 503 the
queue or bucket could not be reached, or the server is stopping; 504 no answer in time. ``GET
/healthz`` reports the router, the scaler, the queue depths and the scaler's instances in JSON (503
when the router thread is dead); the depths and instances are cached for ``health_cache_s`` (AWS calls
are not free).

Served by waitress (:mod:`facerec_cli.iaas.web_server`). Over 400 lines because :class:`WebTier` is
one request's whole path (accept, finish, health and the Flask routes over them share its in-flight
table, lease and counters); the router, lease and server are their own modules.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import io
import logging
import re
import threading
import time
import unicodedata
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import IO, Any

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.iaas.messages import REQUEST_MAX_BYTES, Request, deadline_attributes, new_id, queue_counts, queue_depth, queue_url, request_bytes, stem_of
from facerec_cli.iaas.lease import WebLease
from facerec_cli.iaas.names import ACTIVE_STATES, IaasNames, app_instance_index
from facerec_cli.iaas.router import ResponseRouter, Waiter

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


# filename*=charset'lang'percent-encoded (RFC 2231/5987) and filename="..." or a bare token.
_FILENAME_STAR = re.compile(r";\s*filename\*\s*=\s*([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r';\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.IGNORECASE)


def part_filename(disposition: str | None) -> str | None:
    """The file name in a multipart part's raw Content-Disposition, as the client wrote it.

    Parsed here, not by Werkzeug: browsers (HTML5) and urllib3 send backslashes unescaped, and
    Werkzeug 3.1 reads them as RFC 7230 escapes, so ``C:\\fakepath\\x.jpg`` came out as
    ``C:fakepathx.jpg`` and its last component was lost. A backslash is a path separator to
    :func:`upload_key` whether or not a client doubled it; only ``\\"`` is read as a quote.
    ``filename*`` wins over ``filename``. None when the header names no file."""
    if not disposition:
        return None
    star = _FILENAME_STAR.search(disposition)
    if star:
        charset, _, rest = star.group(1).strip().partition("'")
        encoded = rest.partition("'")[2]
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass  # a charset we cannot read: fall back to the plain filename parameter
    plain = _FILENAME.search(disposition)
    if plain is None:
        return None
    quoted, bare = plain.groups()
    return quoted.replace('\\"', '"') if quoted is not None else bare.strip()


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
        if request_bytes(key) > REQUEST_MAX_BYTES:  # not reached with MAX_NAME_BYTES; kept beside the queue's limit
            return 400, f"{key[:40]}…: the request for this file name would not fit the request queue's {REQUEST_MAX_BYTES}-byte messages; use a shorter name"
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
            filename = part_filename(upload.headers.get("Content-Disposition"))
            accepted = tier.accept(filename if filename is not None else upload.filename or "", upload.stream, upload.mimetype)
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
