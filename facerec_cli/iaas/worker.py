"""The app tier: a worker long-polls the request queue and answers one request at a time.

For each request: read the image from the in-bucket (``IfMatch`` the ETag the web tier stored), name
the face with the recognition core (models and gallery loaded once per worker), write ``<stem>`` ->
name to the out-bucket, send the response message, and only then delete the request message.

Delivery is at-least-once: a worker that dies before the delete leaves its message to reappear after
the queue's visibility timeout, and another worker answers it; a worker that dies between the response
and the delete makes a second, identical response, which the web tier ignores (it answers each request
id once). A message that keeps failing reaches the dead-letter queue after the redrive policy's
``maxReceiveCount`` receives. A request that cannot succeed (its image is not a readable image, its
upload is gone) is answered with ``status: error`` rather than retried. A request received after its
``deadline`` attribute (its HTTP client has had its 504) is deleted unanswered: recognising it would
only delay the requests someone still waits for.

Stopping: :func:`install_stop_signals` turns SIGTERM/SIGINT into a stop event; the worker finishes the
message it holds (and one that a long poll returns after the signal), then exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlparse

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.iaas.messages import DEADLINE, Request, Response, message_deadline, queue_url
from facerec_cli.iaas.names import IaasNames
from lambdas.core.names import plural

log = logging.getLogger("facerec.iaas.worker")

# Worker phases, as a local worker process publishes them (tests and the benchmark read them):
# HOLDING from receiving a request until just before its response is sent (nobody has an answer
# yet), ANSWERING from then until the request message is deleted.
LOADING, IDLE, HOLDING, ANSWERING, STOPPED = 0, 1, 2, 3, 4
PHASES = {LOADING: "loading", IDLE: "idle", HOLDING: "holding", ANSWERING: "answering", STOPPED: "stopped"}


class WorkerState(Protocol):
    """Where a worker publishes what it is doing (the phases above)."""

    def set(self, phase: int, request_id: str = "") -> None: ...


class NullState:
    def set(self, phase: int, request_id: str = "") -> None:
        pass


@dataclass(frozen=True)
class WorkerConfig:
    gallery: str  # s3://bucket/key or a path on this machine
    threshold: float | None = None
    device: str = "cpu"
    weights: str | None = None  # a name or state_dict path; None: the gallery's (refused if they differ)
    poll_wait_s: int = 20  # SQS long poll (0-20 s)
    threads: int = 0  # onnxruntime intra-op threads; 0: its default (all cores)
    exit_when_idle_s: float | None = None  # stop after this long without a request; None: never


def load_gallery(uri: str, s3: Any) -> Any:
    from lambdas.core.errors import GalleryError
    from lambdas.core.gallery import Gallery

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        try:
            body = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        except botocore.exceptions.ClientError as exc:
            raise GalleryError(
                f"cannot read the gallery {uri} ({error_code(exc)}): upload one with `facerec iaas bootstrap --gallery G`"
            ) from exc
        return Gallery.from_bytes(body, origin=uri)
    from facerec_cli.gallery_files import load_gallery  # a file on this machine may be an old torch gallery: converted

    return load_gallery(Path(parsed.path if parsed.scheme == "file" else uri))


class AppWorker:
    """One app-tier worker. ``load()`` once (models, gallery, queue URLs), then ``run(stop)``."""

    def __init__(
        self,
        sqs: Any,
        s3: Any,
        names: IaasNames,
        config: WorkerConfig,
        *,
        state: WorkerState | None = None,
        name: str | None = None,
    ) -> None:
        self.sqs = sqs
        self.s3 = s3
        self.names = names
        self.config = config
        self.state = state or NullState()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.recogniser: Any = None
        self.handled = 0
        self.skipped = 0  # requests received after their deadline, deleted unanswered
        self._req_url: str | None = None
        self._resp_url: str | None = None

    def load(self) -> None:
        started = time.perf_counter()
        self.state.set(LOADING)
        if self.config.threads > 0:
            from lambdas.core.models import THREADS_ENV

            os.environ[THREADS_ENV] = str(self.config.threads)  # read when the sessions are made
        from lambdas.core.recognise import Recogniser

        gallery = load_gallery(self.config.gallery, self.s3)
        # weights None: the gallery's; others are refused (by id) before any model loads
        self.recogniser = Recogniser(gallery, weights=self.config.weights, device=self.config.device, threshold=self.config.threshold)
        self._req_url = queue_url(self.sqs, self.names.request_queue)
        self._resp_url = queue_url(self.sqs, self.names.response_queue)
        self.state.set(IDLE)
        log.info(
            "%s ready in %.1f s: %d people, %s weights; polling %s",
            self.name, time.perf_counter() - started, len(gallery.people), gallery.weights, self.names.request_queue,
        )

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Serve requests until ``stop`` is set (or the idle limit passes); returns how many."""
        if self.recogniser is None:
            self.load()
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                got = self.poll_once()
            except Exception:  # noqa: BLE001 - an AWS hiccup must not end the worker; the message comes back
                log.exception("%s: request failed; it will be delivered again after the visibility timeout", self.name)
                self.state.set(IDLE)
                stop.wait(1.0)
                continue
            now = time.monotonic()
            if got:
                idle_since = now
            elif self.config.exit_when_idle_s is not None and now - idle_since >= self.config.exit_when_idle_s:
                log.info("%s: idle for %.0f s, exiting", self.name, now - idle_since)
                break
        self.state.set(STOPPED)
        log.info("%s stopped after %s", self.name, plural(self.handled, "request"))
        return self.handled

    def poll_once(self) -> bool:
        """One long poll; handles the request it returns. False when none came."""
        resp = self.sqs.receive_message(
            QueueUrl=self._req_url,
            MaxNumberOfMessages=1,  # one at a time: what this worker holds is what it works on
            WaitTimeSeconds=self.config.poll_wait_s,
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=[DEADLINE],
        )
        messages = resp.get("Messages") or []
        for message in messages:
            self.handle(message)
        return bool(messages)

    def handle(self, message: dict[str, Any]) -> Response | None:
        receipt = message["ReceiptHandle"]
        receive_count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount") or 1)
        try:
            request = Request.from_body(message.get("Body") or "")
        except ValueError as exc:
            # It can never succeed: drop it (with a log line) rather than cycle it to the DLQ.
            log.error("%s: dropping a malformed request message: %s", self.name, exc)
            self._delete(receipt)
            return None
        deadline = message_deadline(message)
        if deadline is not None and time.time() > deadline:
            log.info("%s: skipping %s (request %s): its HTTP request gave up %.1f s ago", self.name, request.key, request.id, time.time() - deadline)
            self._delete(receipt)
            self.skipped += 1
            return None
        self.state.set(HOLDING, request.id)
        started = time.perf_counter()
        result = self.recognise(request)
        self.s3.put_object(
            Bucket=self.names.out_bucket,
            Key=request.stem,
            Body=result.name.encode(),
            ContentType="text/plain; charset=utf-8",
            Metadata={"request-id": request.id, "status": result.status},
        )
        response = Response(
            id=request.id,
            key=request.key,
            name=result.name,
            status=result.status,
            error=result.error,
            worker=self.name,
            receive_count=receive_count,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        self.state.set(ANSWERING, request.id)
        self.sqs.send_message(QueueUrl=self._resp_url, MessageBody=response.to_body())
        self._delete(receipt)
        self.handled += 1
        self.state.set(IDLE)
        log.info("%s: %s -> %s (%s, %.0f ms, receive %d)", self.name, request.key, result.name, result.status, response.ms, receive_count)
        return response

    def recognise(self, request: Request) -> Any:
        """The core's Result for the request's image; problems with the input become error results."""
        from lambdas.core.images import load_image
        from lambdas.core.media import Frame
        from lambdas.core.results import error_result

        bucket = self.names.in_bucket
        kwargs = {"IfMatch": request.etag} if request.etag else {}
        try:
            body = self.s3.get_object(Bucket=bucket, Key=request.key, **kwargs)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                return error_result(request.key, f"{request.key}: the upload is no longer in s3://{bucket}; send it again")
            if code in ("PreconditionFailed", "412"):
                return error_result(request.key, f"{request.key}: replaced by another upload with the same name before it was recognised; send it again")
            raise  # transient or permissions: let the message come back (or reach the DLQ)
        suffix = PurePosixPath(request.key).suffix[:10]
        with tempfile.TemporaryDirectory(prefix="facerec-app-") as tmp:
            path = Path(tmp) / f"input{suffix}"
            path.write_bytes(body)
            try:
                # Loaded when recognition asks for it: an unreadable image is an error result.
                return self.recogniser.recognise_loaded(request.key, 1, lambda _: Frame(0, 0.0, load_image(path)))[0]
            except Exception as exc:  # noqa: BLE001 - the same image would fail again: answer, don't retry
                log.exception("%s: recognition of %s failed", self.name, request.key)
                return error_result(request.key, f"{request.key}: recognition failed ({type(exc).__name__}: {exc})")

    def _delete(self, receipt: str) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self._req_url, ReceiptHandle=receipt)
        except botocore.exceptions.ClientError as exc:
            # The visibility timeout passed first: the request comes back and is answered again; the
            # web tier ignores the second answer.
            log.warning("%s: could not delete a request message (%s); it will be answered twice", self.name, error_code(exc))


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the current request is finished, then the worker exits."""

    def handler(signum: int, frame: Any) -> None:
        log.info("signal %d: finishing the current request, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ------------------------------------------------------------------------------------------ local processes


class SharedState:
    """A worker's phase and request id in shared memory, for a local pool's parent process."""

    def __init__(self, ctx: Any) -> None:
        self.phase = ctx.Value("i", LOADING, lock=False)
        self.request = ctx.Array("c", 64, lock=False)

    def set(self, phase: int, request_id: str = "") -> None:
        self.request.value = request_id.encode()[:63]
        self.phase.value = phase

    def read(self) -> tuple[int, str]:
        return self.phase.value, self.request.value.decode()


def process_main(
    prefix: str,
    config: WorkerConfig,
    env: dict[str, str],
    state: SharedState,
    name: str,
    log_path: str | None,
) -> None:
    """Entry point of a local worker process (multiprocessing spawn): one "instance" of the app tier."""
    stop = threading.Event()
    install_stop_signals(stop)
    from facerec_cli.localcloud.environ import redirect_output

    redirect_output(log_path)
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s", force=True)
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import boto3

    session = boto3.Session(region_name=env.get("AWS_DEFAULT_REGION"))
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    worker = AppWorker(
        session.client("sqs", endpoint_url=endpoint),
        session.client("s3", endpoint_url=endpoint),
        IaasNames(prefix),
        config,
        state=state,
        name=name,
    )
    worker.load()
    worker.run(stop)
