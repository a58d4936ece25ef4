"""``facerec run-local``: the whole pipeline on the embedded local cloud.

The same deploy code as ``bootstrap`` (minus images) provisions buckets, roles, functions, the failure
queue and the notification on the moto server; videos are uploaded to the input bucket, and every
Lambda invocation moto receives runs the real handlers in warm workers. Results are read back from the
details bucket, exactly as ``facerec results`` reads them on AWS.

With ``runtime="containers"`` the functions' container images are built as bootstrap builds them and
the invocations run in them, behind the Lambda Runtime Interface Emulator (``containers.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions

from lambdas import env as fenv
from lambdas.core import media
from lambdas.core.images import is_image
from lambdas.core.models import THREADS_ENV
from lambdas import on_failure
from lambdas.core.results import Result, error_result
from lambdas.events import result_keys
from lambdas.gop import first_frame_key
from lambdas.on_failure import failure_record

from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.executor import NullReporter, apply_plan
from facerec_cli.infra.readers import get_or_none
from facerec_cli.pipeline.deployer import plan_deploy
from facerec_cli.pipeline.stack import DeployOptions
from facerec_cli.errors import UserError
from facerec_cli.pipeline.observe.results import fetch_result, list_result_keys
from facerec_cli.localcloud.server import LocalCloud
from facerec_cli.localcloud.runtime.workers import recognition_threads
from facerec_cli.localcloud.runtime.functions import Allowlist
from facerec_cli.pipeline.local.handlers import pipeline_allowlist

LOCAL_PREFIX = "facerec-local"
RUNTIMES = ("workers", "containers")
POLL_FALLBACK_S = 1.0  # look at the buckets at least this often, even when no invocation finished
# The services the pipeline's handlers and this runner call: IAM's moto corrections for these only.
PIPELINE_SERVICES = ("lambda", "s3", "sqs")


@dataclass
class VideoJob:
    path: Path
    key: str
    stem: str
    state: str = "waiting"  # waiting -> uploaded -> split -> done
    uploaded_at: float | None = None
    result: Result | None = None
    latency_s: float | None = None


@dataclass
class RunOptions:
    workers: int = 1
    frames: int = fenv.DEFAULT_FRAMES
    fps: float = 0.0
    threshold: float | None = None
    weights: str | None = None  # name or state_dict path; None: the gallery's
    timeout_s: float = 900.0
    upload_interval_s: float = 0.0  # 0: upload as a burst
    log_path: str | None = None  # where the functions' output goes (their "CloudWatch")
    extra_env: dict[str, str] = field(default_factory=dict)
    runtime: str = "workers"  # workers: warm processes (or this one); containers: the images, behind the emulator
    base_image: str | None = None  # containers: the images' base (default: bootstrap's)
    docker_host: str | None = None  # containers: the engine (default: $DOCKER_HOST, else the default socket)
    # IAM: each handler runs with its function role's credentials and moto checks every call against the
    # role's policy, as AWS does. None: on with worker processes (--workers >= 1), off in this process.
    enforce_iam: bool | None = None
    # What the runtime runs: None is the pipeline's two handlers with the variables lambdas/env.py names
    # (tests widen it for fault-injecting handlers).
    allow: Allowlist | None = None
    prefix: str = LOCAL_PREFIX  # the resource names' prefix (`run-local --serve --prefix <ASU ID>`)
    port: int = 0  # the local cloud's port on 127.0.0.1; 0: any free one
    # Record each invocation's Lambda metrics (AWS/Lambda Duration, Invocations, Errors,
    # ConcurrentExecutions) in the local cloud's CloudWatch, for outside clients (`run-local --serve`).
    record_metrics: bool = False
    # IAM knows AWS's managed policies, for outside clients that attach them (`run-local --serve`); half a
    # second of moto's start, and nothing facerec deploys uses one.
    aws_managed_policies: bool = False

    @property
    def iam(self) -> bool:
        if self.enforce_iam is not None:
            return self.enforce_iam
        return self.runtime == "workers" and self.workers >= 1


def function_weights(gallery: Path, weights: str | None) -> str:
    """FACEREC_WEIGHTS for the recognition function: ``weights`` (checked against the gallery) or the
    gallery's own. A path is made absolute: the workers do not share the caller's working directory."""
    # Imported here: whatever imports this module at the top (a script that spawned workers re-import
    # as their __main__) must not pay for them in every worker.
    from lambdas.core.gallery import weights_for
    from lambdas.core.weights import WEIGHTS_CHOICES

    from facerec_cli.gallery_files import load_gallery

    resolved = weights_for(load_gallery(gallery), weights)
    return resolved if resolved in WEIGHTS_CHOICES else str(Path(resolved).expanduser().resolve())


def collect_videos(inputs: list[Path]) -> tuple[list[VideoJob], list[Result]]:
    """Jobs for the videos given (folders: their video files, non-recursive), and error results for
    inputs that cannot enter the pipeline."""
    jobs: list[VideoJob] = []
    refused: list[Result] = []
    used: set[str] = set()
    for item in inputs:
        if item.is_dir():
            paths = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in media.VIDEO_SUFFIXES)
            if not paths:
                raise UserError(f"no videos ({', '.join(sorted(media.VIDEO_SUFFIXES))}) in {item}")
        elif not item.exists():
            raise UserError(f"{item} not found")
        else:
            paths = [item]
        for path in paths:
            if path.suffix.lower() not in media.VIDEO_SUFFIXES:
                hint = "use `facerec identify` for images" if is_image(path) else "the input bucket only triggers on video suffixes"
                refused.append(error_result(path.name, f"{path.name}: not a video file name ({hint})"))
                continue
            # Results are stored per stem (<stem>.txt, the course's layout): two inputs with one stem
            # (a/clip.mp4 and b/clip.mp4, or clip.mp4 and clip.mov) get distinct keys, or one result
            # would overwrite the other.
            key, stem = path.name, path.stem
            n = 2
            while stem in used:
                stem = f"{path.stem}-{n}"
                key = f"{stem}{path.suffix}"
                n += 1
            used.add(stem)
            jobs.append(VideoJob(path=path, key=key, stem=stem))
    return jobs, refused


class LocalPipeline:
    """The provisioned local cloud; ``run`` uploads videos and waits for their results."""

    def __init__(
        self, gallery: Path, options: RunOptions, log_path: str | None = None, on_progress: Callable[[str], None] | None = None
    ) -> None:
        self.gallery = gallery
        self.options = options
        self.on_progress = on_progress  # image build lines (containers)
        # Checked here, before anything starts: a missing or foreign gallery or weights costs nothing.
        self.weights = function_weights(gallery, options.weights)
        self.containers: Any = None
        runner_factory = None
        if options.runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {options.runtime!r}", hint=f"choose one of {', '.join(RUNTIMES)}")
        if options.runtime == "containers":
            from facerec_cli.pipeline.images import build_args_for
            from facerec_cli.pipeline.local.containers import ContainerRuntime

            if options.workers < 1:
                raise UserError("--workers 0 runs the handlers in this process, not in containers", hint="use --workers 1 or more with --runtime containers")
            build_args_for("recognition", weights=self.weights)  # weights an image can carry, before any engine
            self.containers = ContainerRuntime.connect(options.docker_host, log_path=log_path)  # one red line without an engine
            runner_factory = self.containers.runner
        allow = options.allow if options.allow is not None else pipeline_allowlist()  # the runtime runs only what it is handed
        self.cloud = LocalCloud(
            workers=options.workers, on_failure=self._on_failure, log_path=log_path, runner_factory=runner_factory,
            allow=allow, enforce_iam=options.iam, iam_services=PIPELINE_SERVICES, port=options.port, record_metrics=options.record_metrics,
            aws_managed_policies=options.aws_managed_policies,
        )  # fmt: skip
        self.settings: Settings | None = None
        self.clients: Clients | None = None
        self.timings: dict[str, float] = {}

    def __enter__(self) -> "LocalPipeline":
        started = time.perf_counter()
        images: dict[str, str] = {}
        if self.containers is not None:  # before the cloud starts: a failed build leaves nothing running
            try:
                images = self.containers.build(self.weights, base_image=self.options.base_image, on_progress=self.on_progress)
            except BaseException:
                self.containers.close()
                raise
            self.timings["images_ms"] = (time.perf_counter() - started) * 1000
        if self.containers is None and self.options.workers >= 1:
            from facerec_cli.localcloud.runtime.workers import start_fork_server

            # The workers' imports and the recognition models, beside moto's start and the deployment.
            start_fork_server(self.gallery, self.weights, self.options.workers)
        self.cloud.start()
        self.timings["cloud_start_ms"] = (time.perf_counter() - started) * 1000
        try:
            self.settings = Settings(prefix=self.options.prefix, region=self.cloud.region, endpoint_url=self.cloud.endpoint_url)
            self.clients = Clients.from_session(self.cloud.session(), self.cloud.endpoint_url)
            opts = self.options
            deploy_options = DeployOptions(
                gallery=self.gallery,
                frames=opts.frames,
                fps=opts.fps,
                threshold=opts.threshold,
                weights=self.weights,
                splitting_env=dict(opts.extra_env),
                recognition_env=dict(opts.extra_env),
                splitting_image=images.get("splitting"),
                recognition_image=images.get("recognition"),
            )
            deploy_options.recognition_env.setdefault(THREADS_ENV, str(recognition_threads(opts.workers)))
            planned = time.perf_counter()
            apply_plan(plan_deploy(self.settings, deploy_options, self.clients), NullReporter())
            self.timings["deploy_ms"] = (time.perf_counter() - planned) * 1000
            names = self.settings.names
            if self.containers is not None:  # the functions' runners run these images
                self.containers.images.update({names.splitting_function: images["splitting"], names.recognition_function: images["recognition"],
                                               names.failure_function: images["splitting"]})  # the on-failure handler is in that image
            self.cloud.prewarm(names.splitting_function, names.recognition_function)
        except BaseException:
            self._stop()
            raise
        self.timings["provision_ms"] = (time.perf_counter() - started) * 1000
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        try:
            self.cloud.stop()
        finally:
            if self.containers is not None:
                self.containers.close()
            elif self.options.workers >= 1:
                from facerec_cli.localcloud.runtime.workers import stop_fork_server

                stop_fork_server()  # after the workers: it waits for the last of them

    @property
    def names(self) -> Any:
        assert self.settings is not None
        return self.settings.names

    def _on_failure(self, function_name: str, event: Any, message: str) -> None:
        """An invocation failed on every attempt: as Lambda does, hand its record to the on-failure
        function (lambdas/on_failure.py, run like the others: in a worker, with its own role), invoked
        with the failing function's role. That function's own failures go to the queue, as on AWS."""
        assert self.clients is not None
        names = self.names
        arn = f"arn:aws:lambda:{self.cloud.region}:{self.clients.account_id}:function:{function_name}"
        record = failure_record(arn, "", event, message, 3)
        role = self.cloud.local_function(function_name).role if self.cloud.enforce_iam else None
        if function_name == names.failure_function:
            sqs = self.cloud.client("sqs", role=role) if role else self.clients.sqs
            sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=names.failure_queue)["QueueUrl"], MessageBody=json.dumps(record))
            return
        lam = self.cloud.client("lambda", role=role) if role else self.clients.lambda_
        try:
            lam.invoke(FunctionName=names.failure_function, InvocationType="Event", Payload=json.dumps(record).encode())
        except botocore.exceptions.ClientError as exc:
            # The role may not invoke the destination: AWS would drop the record. Here the upload still
            # gets its error result, saying so.
            note = f"{message} (and the failure record could not be sent to {names.failure_function}: {exc})"
            on_failure.answer(failure_record(arn, "", event, note, 3), s3=self.clients.s3, output_bucket=names.results)

    def upload(self, job: VideoJob) -> None:
        assert self.clients is not None
        job.uploaded_at = time.monotonic()
        self.clients.s3.upload_file(str(job.path), self.names.input_bucket, job.key)
        job.state = "uploaded"

    def poll(self, jobs: list[VideoJob], track_split: bool = False) -> None:
        """Advance job states from what the buckets hold (list calls; a result is fetched once).
        ``track_split``: also list stage-1 to tell "split" from "uploaded" (a progress display wants it;
        at 100 queued videos that listing, hundreds of frames per poll, cost the moto server more CPU
        than the answers)."""
        assert self.clients is not None
        s3 = self.clients.s3
        pending = [j for j in jobs if j.state in ("uploaded", "split")]
        if not pending:
            return
        # Only the keys from the first pending result on: a burst finishes roughly in upload order, so
        # a poll lists a few keys, not every result so far (listing them all, the polls of 100 videos
        # cost the moto server and this client more CPU than the answers did).
        done = list_result_keys(s3, self.names.details_bucket, min(result_keys(j.stem)[0] for j in pending))
        frames: set[str] = set()
        if track_split and any(j.state == "uploaded" and j.stem not in done for j in pending):
            frames = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.names.stage1_bucket) for o in page.get("Contents", [])}
        now = time.monotonic()
        for job in pending:
            if job.stem in done:
                job.result = fetch_result(s3, self.names.details_bucket, job.stem)
                job.state = "done"
                job.latency_s = now - (job.uploaded_at or now)
            elif first_frame_key(job.stem, frames) is not None:  # either stage-1 layout
                job.state = "split"

    def run(
        self, jobs: list[VideoJob], on_tick: Callable[[list[VideoJob]], None] | None = None, *, track_split: bool = False
    ) -> list[Result]:
        deadline = time.monotonic() + self.options.timeout_s
        to_upload = list(jobs)
        next_upload = time.monotonic()
        dispatcher = self.cloud.dispatcher
        answering = (self.names.recognition_function, self.names.failure_function)
        settled, last_poll = -1, 0.0
        burst: Future[None] | None = None
        if not self.options.upload_interval_s and to_upload:
            # A burst is uploaded on a thread of its own, in order, while this loop already collects
            # results: 100 uploads take ~2 s, and the first result used to wait for the last upload.
            def upload_all() -> None:
                for job in jobs:
                    self.upload(job)

            uploader = ThreadPoolExecutor(1, thread_name_prefix="facerec-upload")
            burst = uploader.submit(upload_all)
            uploader.shutdown(wait=False)
            to_upload = []
        while True:
            now = time.monotonic()
            if burst is not None and burst.done():
                burst.result()  # an upload that failed fails the run, as it did on this thread
                burst = None
            if to_upload and now >= next_upload:  # paced: one upload per interval
                self.upload(to_upload.pop(0))
                next_upload = now + self.options.upload_interval_s
            # The answers come when a face-recognition (or on-failure) invocation finishes: look then (and at
            # least every POLL_FALLBACK_S), not in a tight loop that keeps the moto server busy listing. A
            # split answers only an upload it refuses (rare): the fallback look finds those. Looking after
            # every split too was half the lists of a burst, for nothing.
            wait = min(POLL_FALLBACK_S, max(0.0, next_upload - now) if to_upload else POLL_FALLBACK_S)
            now_settled = dispatcher.wait_settled(settled, wait, answering)
            if now_settled != settled or time.monotonic() - last_poll >= POLL_FALLBACK_S:
                settled, last_poll = now_settled, time.monotonic()
                self.poll(jobs, track_split)
            if on_tick:
                on_tick(jobs)
            if not to_upload and burst is None and all(j.state == "done" for j in jobs):
                break
            if time.monotonic() > deadline:
                for job in jobs:
                    if job.state != "done":
                        job.result = error_result(job.key, f"no result within {self.options.timeout_s:.0f} s (last state: {job.state})")
                        job.state = "done"
                break
        return [j.result for j in jobs if j.result is not None]


def write_outputs(out_dir: Path, jobs: list[VideoJob], refused: list[Result]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(j.stem, j.result) for j in jobs if j.result] + [(r.video.rsplit(".", 1)[0], r) for r in refused]
    for stem, result in pairs:
        json_key, txt_key = result_keys(stem)
        (out_dir / json_key).write_text(result.to_json() + "\n", encoding="utf-8")
        (out_dir / txt_key).write_text(result.name, encoding="utf-8")


def fetch_best_views(s3: Any, bucket: str, results: list[Result], out_dir: Path) -> int:
    """Copy the best-view crops that results name (``timeline.people[].image``, keys beside the result)
    into ``out_dir`` under the same relative keys, so a results folder holds what its JSON refers to."""
    copied = 0
    for result in results:
        for row in result.timeline.people if result.timeline else []:
            target = out_dir / row.image if row.image else None
            if target is None or not target.resolve().is_relative_to(out_dir.resolve()):
                continue  # a key is ours (<stem>.timeline/<n>.jpg): anything else is not written outside the folder
            reply = get_or_none(s3.get_object, Bucket=bucket, Key=row.image)
            if reply is None:  # storing it failed (the function logs why): the row keeps its name, without a picture
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(reply["Body"].read())
            copied += 1
    return copied
