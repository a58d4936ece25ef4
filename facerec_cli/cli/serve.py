"""``facerec run-local --serve``: the embedded local cloud kept up for outside clients.

The pipeline is deployed on it as ``run-local`` deploys it (the very bootstrap code), under ``--prefix``
(the course's ``<ASU ID>``) with the course's function names, and stays up on 127.0.0.1:PORT until
Ctrl-C or SIGTERM: any AWS client pointed at it (``AWS_ENDPOINT_URL``, any credentials) uploads to
``<prefix>-input`` and reads ``<prefix>-stage-1`` and ``<prefix>-output``, asks Lambda ``get_function``
and CloudWatch ``get_metric_data`` for the functions' ``AWS/Lambda`` metrics: the course's workload
generator and grader, unmodified. IAM is not enforced: outside clients sign with credentials the local
cloud never issued.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.exceptions
from rich.markup import escape

from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions
from facerec_cli.pipeline.observe.dashboard import first_frames
from facerec_cli.render import err, out

PROGRESS_S = 1.0  # seconds between two looks at the buckets


@dataclasses.dataclass(frozen=True)
class Progress:
    uploads: int
    frames: int  # first frames in stage-1 (<stem>.jpg, or <stem>/output-00.jpg in the gop layout): videos split
    answers: int  # <stem>.txt in the output bucket
    running: int
    queued: int
    failed: int

    def line(self) -> str:
        return (f"uploads {self.uploads} · split {self.frames} · answered {self.answers} · "
                f"invocations running {self.running}, queued {self.queued}, failed {self.failed}")  # fmt: skip


def _count(s3: Any, bucket: str, suffix: str) -> int:
    """Top-level keys ending in ``suffix``."""
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/"):
        n += sum(o["Key"].endswith(suffix) for o in page.get("Contents", []))
    return n


def _split(s3: Any, bucket: str) -> int:
    """Videos with their first frame in stage-1, in either layout (Part 1's frames sit under ``<stem>/``)."""
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])}
    return len(first_frames(keys))


def progress(pipeline: LocalPipeline) -> str:
    """The progress line; a listing an outside client made fail (a bucket it deleted) says so instead."""
    assert pipeline.clients is not None
    s3, names, c = pipeline.clients.s3, pipeline.names, pipeline.cloud.dispatcher.counters
    try:
        counts = [_count(s3, names.input_bucket, ""), _split(s3, names.stage1_bucket), _count(s3, names.output_bucket, ".txt")]
    except botocore.exceptions.ClientError as exc:
        return f"cannot list the buckets ({exc.response.get('Error', {}).get('Code')}); invocations running {c.running}, queued {c.queued}"
    return Progress(*counts, c.running, c.queued, c.failed).line()


@contextmanager
def sigterm_stops() -> Iterator[threading.Event]:
    """An event SIGTERM sets, so that the serve loop ends as Ctrl-C does (through the cleanup) instead of
    this process dying with its workers left behind. The handler only sets the event: an exception raised
    from it would land in whatever the main thread is doing, and botocore, listing the buckets for the
    progress line, catches exceptions there and retries the request (a SIGTERM got lost that way)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def announce(pipeline: LocalPipeline, log_path: str) -> None:
    names, endpoint = pipeline.names, pipeline.cloud.endpoint_url
    out.print(f"serving on {endpoint}", highlight=False, soft_wrap=True)
    err.print(
        f"buckets {escape(names.input_bucket)}, {escape(names.stage1_bucket)}, {escape(names.output_bucket)} "
        f"(details in {escape(names.details_bucket)}); functions {names.splitting_function}, {names.recognition_function}; "
        f"region {pipeline.cloud.region}\n"
        f"drive it with any AWS client: AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=any AWS_SECRET_ACCESS_KEY=any "
        f"AWS_DEFAULT_REGION={pipeline.cloud.region}\n"
        f"function logs: {escape(log_path)}; Ctrl-C or SIGTERM stops it",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


def serve(gallery: Path, options: RunOptions, *, log_path: str) -> None:
    """Deploy, serve until Ctrl-C or SIGTERM, stop everything."""
    options = dataclasses.replace(options, enforce_iam=False, record_metrics=True, aws_managed_policies=True)
    with sigterm_stops() as stop:
        pipeline = LocalPipeline(gallery, options, log_path=log_path)
        try:
            with err.status("starting the local cloud and the workers…"):
                pipeline.__enter__()
            if not stop.is_set():
                announce(pipeline, log_path)
                _follow(pipeline, stop)
        except KeyboardInterrupt:
            pass  # Ctrl-C: the way to stop it
        finally:
            pipeline.__exit__(None, None, None)
    err.print("stopped: local cloud and workers shut down", highlight=False)


def _follow(pipeline: LocalPipeline, stop: threading.Event) -> None:
    """The live progress line until ``stop`` is set: redrawn on a terminal, else printed when it changes."""
    last = ""
    settled = -1
    if err.is_terminal:
        with err.status("") as status:
            while not stop.is_set():
                settled = pipeline.cloud.dispatcher.wait_settled(settled, PROGRESS_S)
                status.update(progress(pipeline))
        return
    while not stop.is_set():
        settled = pipeline.cloud.dispatcher.wait_settled(settled, PROGRESS_S)
        line = progress(pipeline)
        if line != last:
            err.print(f"{time.strftime('%H:%M:%S')} {line}", highlight=False, soft_wrap=True)
            last = line
