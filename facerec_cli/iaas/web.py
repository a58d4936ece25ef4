"""The web tier: ``POST /`` with a multipart field ``inputFile`` answers ``<stem>:<name>`` as plain text.

One request: check the upload (present, at most ``max_upload_bytes``, really a JPEG/PNG/WebP/BMP image,
not too many pixels), store it in the in-bucket under its file name, register a waiter for a new
request id, send ``{id, key, etag}`` to the request queue, and block this HTTP request (one server
thread) until the router hands the waiter its response or ``timeout_s`` passes (504).

The router is the only reader of the response queue: one background thread long-polls it and routes
every response to the waiter of its request id, so responses may arrive in any order. A response for
an id already answered (a redelivered request answered twice) or given up on (504 sent) is deleted
and counted; one for an id this web tier never issued is deleted after a warning. (So there is one web
tier per response queue, as in the course design.)

Status codes: 200 answer; 400 no ``inputFile`` / empty / no usable file name; 409 another upload with
the same name but other content is still being recognised; 413 too large (bytes or pixels); 415 not an
image; 422 the app tier could not recognise the image (its message); 503 the queue or bucket could not
be reached, or the server is stopping; 504 no answer in time. ``GET /healthz`` reports the router, the
scaler, the queue depths and the scaler's instances in JSON (503 when the router thread is dead); the
depths and instances are cached for ``health_cache_s`` (anyone may call it; AWS calls are not free).

Served by waitress (a production WSGI server: a fixed pool of ``threads`` request threads, each may
wait for one answer, so ``threads`` bounds the requests in flight per web tier).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from ..aws import error_code
from .messages import Request, Response, new_id, queue_counts, queue_url, stem_of
from .names import ACTIVE_STATES, IaasNames, app_instance_index

log = logging.getLogger("facerec.iaas.web")

FIELD = "inputFile"
# PIL format names accepted (the core reads these; MPO is what some cameras call a JPEG).
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})
ERROR_STATUS = "error"


@dataclass(frozen=True)
class WebConfig:
    timeout_s: float = 60.0  # per HTTP request: no answer by then -> 504
    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    poll_wait_s: int = 20  # the router's long poll on the response queue
    # /healthz is unauthenticated: its AWS part (queue depths, instances) is reused this long, so
    # outside traffic cannot turn into GetQueueAttributes/DescribeInstances calls. 0: always fresh.
    health_cache_s: float = 2.0


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


# ------------------------------------------------------------------------------------------ the tier


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
            if isinstance(inst, dict):  # Ec2Pool: DescribeInstances rows
                rows.append({"name": inst.get("Name") or "", "state": inst.get("State") or "", "id": inst.get("InstanceId")})
            else:  # LocalProcessPool: InstanceInfo of worker processes
                state = "stopping" if inst.stopping else "running"
                rows.append({"name": inst.name, "state": state, "id": inst.pid, "phase": inst.phase})
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        return {"error": error_code(exc) or type(exc).__name__}
    rows.sort(key=lambda r: (app_instance_index(r["name"]) is None, app_instance_index(r["name"]) or 0, r["name"]))
    active = [r["name"] for r in rows if r["state"] in ACTIVE_STATES]
    return {"count": len(active), "names": active, "list": rows}


def check_image(name: str, data: bytes, max_pixels: int) -> tuple[int, str] | None:
    """None for an acceptable image, else (HTTP status, message)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
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
    """The web tier's logic and its Flask app. ``scaler`` (optional) is only reported by /healthz."""

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
        self.counts: collections.Counter[int] = collections.Counter()  # by HTTP status
        self._inflight: dict[str, tuple[str, int]] = {}  # key -> (content md5, requests using it)
        self._lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._health_cache: tuple[float, dict[str, Any]] | None = None  # (monotonic time, AWS part)
        self.app = self._make_app()

    def start(self) -> "WebTier":
        self.router.start()
        return self

    def stop(self) -> None:
        self.router.stop()

    # -- one request

    def submit(self, filename: str, data: bytes, content_type: str | None = None) -> tuple[int, str]:
        """(HTTP status, plain-text body) for one uploaded file."""
        from werkzeug.utils import secure_filename

        key = secure_filename(filename or "")
        shown = filename or "the upload"
        if not key:
            return 400, f"{shown}: the file has no usable name; send it with a file name such as test_00.jpg"
        if not data:
            return 400, f"{key}: the file is empty"
        if len(data) > self.config.max_upload_bytes:
            return 413, f"{key}: over the upload limit of {self.config.max_upload_bytes} bytes"
        problem = check_image(key, data, self.config.max_pixels)
        if problem is not None:
            return problem
        digest = hashlib.md5(data).hexdigest()
        if not self._claim(key, digest):
            return 409, f"{key}: another upload with this name and different content is being recognised; send it after that one is answered, or rename it"
        request = Request(new_id(), key)
        try:
            try:
                put = self.s3.put_object(Bucket=self.names.in_bucket, Key=key, Body=data, ContentType=content_type or "application/octet-stream")
                request = Request(request.id, key, put.get("ETag"))
                waiter = self.router.expect(request.id)
                self.sqs.send_message(QueueUrl=self.request_url, MessageBody=request.to_body())
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                self.router.abandon(request.id)
                log.error("could not queue %s: %s", key, exc)
                return 503, f"{key}: could not queue the request ({error_code(exc) or type(exc).__name__}); try again"
            response = waiter.wait(self.config.timeout_s)
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
        and instances (two GetQueueAttributes, plus one DescribeInstances with the EC2 pool) are at
        most ``health_cache_s`` old. A failed call is reported in the body, not as an unhealthy tier."""
        body: dict[str, Any] = {
            "status": "ok" if self.router.alive else "router stopped",
            "prefix": self.names.prefix,
            "waiting": self.router.waiting,
            "responses": dict(self.router.counts),
            "http": {str(k): v for k, v in sorted(self.counts.items())},
        }
        last = getattr(self.scaler, "last", None)
        if last is not None:
            body["scaler"] = {"depth": last.depth, "target": last.target, "instances": last.active}
        body.update(self._aws_health())
        return (200 if self.router.alive else 503), body

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
        # The whole multipart body; the file itself is checked against max_upload_bytes in submit().
        app.config["MAX_CONTENT_LENGTH"] = self.config.max_upload_bytes + 256 * 1024
        tier = self

        def text(body: str, status: int) -> Any:
            tier.counts[status] += 1
            return app.response_class(body, status=status, mimetype="text/plain")

        @app.post("/")
        def recognise() -> Any:
            upload = request.files.get(FIELD)
            if upload is None:
                return text(f"no file: send the image as the multipart/form-data field {FIELD!r} (curl -F {FIELD}=@photo.jpg URL)", 400)
            data = upload.read(tier.config.max_upload_bytes + 1)
            status, body = tier.submit(upload.filename or "", data, upload.mimetype)
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


class WebServer:
    """waitress serving a WSGI app in a background thread (``port=0``: any free port)."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 8000, threads: int = 64, max_body: int = 11 * 2**20) -> None:
        from waitress.server import create_server

        self.server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=max(100, threads * 2),
            max_request_body_size=max_body,
            ident="facerec",
            clear_untrusted_proxy_headers=True,
        )
        self._thread: threading.Thread | None = None

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
