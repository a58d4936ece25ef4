"""`facerec watch`: a live view of the pipeline from what the buckets, the failure queue and the
functions' logs say.

One refresh costs list calls: ListObjectsV2 on the input, stage-1 and details buckets (one page per 1000 objects), a few
ReceiveMessage calls that peek at the failure queue, and one FilterLogEvents per function for the
error lines logged since the last refresh. Objects are never downloaded; a result's status is read
once from its metadata (HeadObject, cached by ETag, so only results that are new since the last
refresh cost a call).

Each video (an input key, or a result without one) is in one state:

``uploaded``  in the input bucket, no frames yet             (in flight)
``split``     its first frame ``<stem>.jpg`` is in stage-1  (in flight)
``finished``  ``<stem>.json`` newer than the upload, not an error
``failed``    an ``error`` result, or a failure-queue record of this upload

Latency is the result's LastModified minus the input's (S3 stores times to the second).

Extension point: IaaS deployments add queue depths and app-tier instances as *sections*: callables
given to :class:`Dashboard` (``sections={"queues": read_queue_depths}``) whose dict lands in
``PipelineSnapshot.sections[name]``, in ``--json`` under ``"sections"``, and as one table per section.

The snapshot's model is in :mod:`.snapshot`, its drawing and the watch loop in :mod:`.dashboard_view`.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import botocore.exceptions

from lambdas.core.results import ERROR
from lambdas.events import RESULT_PREFIX_SKIP
from lambdas.gop import FIRST_NAME as GOP_FIRST_NAME
from lambdas.gop import first_frame_key
from lambdas.segment_state import PREFIX as SEGMENTS_PREFIX
from lambdas.segment_state import parse_state_key, stem_prefix

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.errors import MISSING_QUEUE, aws_errors, user_error
from facerec_cli.config import Names, Settings
from facerec_cli.pipeline.observe.results import FailedVideo, peek_failures
from facerec_cli.pipeline.result_buckets import result_buckets
from facerec_cli.pipeline.observe.snapshot import FAILED, FINISHED, SPLIT, UPLOADED, LogError, PipelineSnapshot, VideoState
from facerec_cli.pipeline.upload_ledger import parse_time, stem_of

ERRORS_LOOKBACK_S = 3600  # the first refresh shows errors logged in the last hour
KEEP_ERRORS = 8  # log errors kept and shown
KEEP_FAILURES = 8
HEAD_THREADS = 8
# CloudWatch term filter (any of the terms, case-sensitive there); moto ignores it, so the same
# match runs again here, case-insensitively.
LOG_FILTER = '?error ?Error ?ERROR ?refused ?Traceback ?"timed out"'
LOG_ERROR = re.compile(r"error|refused|traceback|timed out", re.IGNORECASE)
MAX_LOG_PAGES = 5

Section = Callable[[], Mapping[str, Any]]


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    modified: datetime


def list_objects(s3: Any, bucket: str) -> list[S3Object]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found.append(S3Object(obj["Key"], obj.get("ETag", ""), obj["LastModified"]))
    return found


def first_frames(keys: set[str]) -> set[str]:
    """Stems of the videos in stage-1: ``<stem>.jpg`` keys, less ``<stem>/NNN.jpg`` further frames, and
    ``<stem>`` of Part 1's ``<stem>/output-00.jpg`` (lambdas/gop.py), less its other ``output-NN.jpg``."""
    stems = set()
    for key in keys:
        if not key.endswith(".jpg"):
            continue
        head, _, tail = key.rpartition("/")
        if head and tail[:-4].isdigit() and f"{head}.jpg" in keys:
            continue  # frame NNN of video <head>
        if head and tail.startswith("output-") and tail[len("output-"):-4].isdigit():
            if tail == GOP_FIRST_NAME:
                stems.add(head)
            continue  # Part 1's frames of video <head>
        stems.add(key[: -len(".jpg")])
    return stems


def segment_progress(objects: Any) -> dict[str, tuple[int, int, datetime]]:
    """Timelines in stage-1 (lambdas/segments.py), from a listing alone: stem folder -> (segments done,
    segments planned, when planned) of the newest upload of each video."""
    runs: dict[tuple[str, str], list[Any]] = {}
    for obj in objects:
        parsed = parse_state_key(obj.key)
        if parsed is None:
            continue
        stem_hash, event_hash, kind, _, count = parsed
        run = runs.setdefault((stem_hash, event_hash), [0, count, None])
        if kind == "part":
            run[0] += 1
        else:
            run[2] = obj.modified
        run[1] = count
    newest: dict[str, tuple[int, int, datetime]] = {}
    for (stem_hash, _), (done, total, planned) in runs.items():
        if planned is None:
            continue
        folder = f"{SEGMENTS_PREFIX}{stem_hash}/"
        if folder not in newest or planned > newest[folder][2]:
            newest[folder] = (done, total, planned)
    return newest


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _failure_time(failure: FailedVideo) -> datetime | None:
    try:
        return parse_time(str(failure.timestamp)) if failure.timestamp else None
    except ValueError:
        return None


def _log_message(message: str) -> str:
    """A function's JSON log line (``{"msg": "refused", "key": ..., "error": ...}``) as one short line."""
    text = message.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "msg" in data:
        what = str(data.get("stem") or data.get("key") or data.get("video") or "")
        detail = str(data.get("error") or data.get("message") or "")
        line = str(data["msg"])
        if what and not detail.startswith(what.rsplit("/", 1)[-1]):  # messages often start with the video
            line += f" {what}"
        if detail:
            line += f": {detail}"
        elif data.get("status"):
            line += f" ({data['status']})"
        text = line
    first = text.splitlines()[0] if text else ""
    if "Traceback" in first and len(text.splitlines()) > 1:
        first = text.splitlines()[-1]  # the exception line says more than the header
    return first[:300]


class Dashboard:
    """Takes snapshots of one deployment; keeps what makes the next refresh cheap (result statuses by
    ETag, the failure queue's URL, the time of the last log line read)."""

    def __init__(
        self,
        s3: Any,
        sqs: Any | None,
        logs: Any | None,
        names: Names,
        *,
        settings: Settings | None = None,
        sections: Mapping[str, Section] | None = None,
        errors_since_ms: int | None = None,
    ) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.logs = logs
        self.names = names
        self.settings = settings or Settings(prefix=names.prefix)
        self.sections = dict(sections or {})
        self._statuses: dict[str, tuple[str, str | None]] = {}  # result key -> (etag, status)
        self._queue_url: str | None = None
        self._queue_checked = False
        self._log_start = errors_since_ms if errors_since_ms is not None else int((time.time() - ERRORS_LOOKBACK_S) * 1000)
        self._errors: deque[LogError] = deque(maxlen=KEEP_ERRORS)
        self._seen_log_ids: dict[str, int] = {}  # event id -> timestamp, to skip lines read before
        self.heads = 0  # HeadObject calls made (what the status cache saves)
        self._details: str | None = None  # where <stem>.json lives (an older deployment: the output bucket)

    # -- pieces

    def _list(self, bucket: str) -> list[S3Object]:
        with aws_errors(self.settings, f"listing {bucket}", missing=f"the bucket {bucket}"):
            return list_objects(self.s3, bucket)

    def _details_bucket(self) -> str:
        if self._details is None:
            try:
                self._details = result_buckets(self.s3, self.names).details
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                raise user_error(self.settings, f"looking for {self.names.details_bucket}", exc) from exc
        return self._details

    def _statuses_of(self, results: dict[str, S3Object]) -> dict[str, str | None]:
        """stem -> the status a result object carries in its metadata (None when it carries none)."""
        todo = [obj for obj in results.values() if self._statuses.get(obj.key, ("", None))[0] != obj.etag]

        def head(obj: S3Object) -> tuple[S3Object, str | None]:
            try:
                meta = self.s3.head_object(Bucket=self._details_bucket(), Key=obj.key).get("Metadata", {})
            except botocore.exceptions.ClientError:
                return obj, None  # deleted since the listing: counted as whatever it was
            return obj, meta.get("status")

        if todo:
            with ThreadPoolExecutor(max_workers=min(HEAD_THREADS, len(todo))) as pool:
                for obj, status in pool.map(head, todo):
                    self._statuses[obj.key] = (obj.etag, status)
            self.heads += len(todo)
        live = {obj.key for obj in results.values()}
        for key in set(self._statuses) - live:
            del self._statuses[key]
        return {stem: self._statuses.get(obj.key, ("", None))[1] for stem, obj in results.items()}

    def _failures(self) -> list[FailedVideo]:
        if self.sqs is None:
            return []
        try:
            if not self._queue_checked:
                try:
                    self._queue_url = self.sqs.get_queue_url(QueueName=self.names.failure_queue)["QueueUrl"]
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) not in MISSING_QUEUE:
                        raise
                    self._queue_url = None
                self._queue_checked = True
            return peek_failures(self.sqs, self._queue_url) if self._queue_url else []
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise user_error(self.settings, f"reading the failure queue {self.names.failure_queue}", exc) from exc

    def _read_errors(self) -> list[str]:
        """New error lines from both functions' log groups; returns notes on groups that could not be
        read (missing, or no permission: the dashboard goes on without them)."""
        if self.logs is None:
            return []
        notes = []
        newest = self._log_start
        found: list[LogError] = []
        for function in (self.names.splitting_function, self.names.recognition_function):
            group = self.names.log_group(function)
            kwargs: dict[str, Any] = {"logGroupName": group, "startTime": self._log_start, "filterPattern": LOG_FILTER}
            try:
                for n, page in enumerate(self.logs.get_paginator("filter_log_events").paginate(**kwargs)):
                    for event in page.get("events", []):
                        message = str(event.get("message", ""))
                        stamp = int(event.get("timestamp", 0))
                        event_id = str(event.get("eventId") or f"{group}:{event.get('logStreamName')}:{stamp}:{message}")
                        if event_id in self._seen_log_ids or not LOG_ERROR.search(message):
                            continue
                        self._seen_log_ids[event_id] = stamp
                        newest = max(newest, stamp)
                        found.append(LogError(stamp, function, _log_message(message)))
                    if n + 1 >= MAX_LOG_PAGES:
                        break
            except botocore.exceptions.ClientError as exc:
                code = error_code(exc)
                notes.append(f"no log group {group}" if code == "ResourceNotFoundException" else f"log group {group} not read: {code}")
            except botocore.exceptions.BotoCoreError as exc:
                notes.append(f"log group {group} not read: {exc}")
        for error in sorted(found, key=lambda e: (e.timestamp, e.function)):
            self._errors.append(error)
        # Next time start at the newest line read (same-millisecond lines are told apart by event id).
        self._log_start = newest
        self._seen_log_ids = {e: t for e, t in self._seen_log_ids.items() if t >= newest}
        return notes

    # -- the snapshot

    def snapshot(self) -> PipelineSnapshot:
        names = self.names
        taken = datetime.now(timezone.utc)
        inputs = {stem_of(o.key): o for o in self._list(names.input_bucket)}
        stage1_keys = {o.key: o for o in self._list(names.stage1_bucket)}
        frames = {stem: stage1_keys[first_frame_key(stem, stage1_keys) or f"{stem}.jpg"] for stem in first_frames(set(stage1_keys))}
        segments = segment_progress(stage1_keys.values())
        results = {
            o.key[: -len(".json")]: o
            for o in self._list(self._details_bucket())
            if o.key.endswith(".json") and not o.key.startswith(RESULT_PREFIX_SKIP)
        }
        statuses = self._statuses_of(results)
        failures: dict[str, FailedVideo] = {}
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        for failure in self._failures():  # the newest record of each video
            current = failures.get(failure.stem)
            if current is None or (_failure_time(failure) or oldest) >= (_failure_time(current) or oldest):
                failures[failure.stem] = failure
        notes = self._read_errors()

        videos: dict[str, VideoState] = {}
        for stem in sorted(set(inputs) | set(results) | set(failures)):
            upload = inputs.get(stem)
            uploaded_at = upload.modified if upload else None
            since = _second(uploaded_at) if uploaded_at else None
            failure = failures.get(stem)
            if upload is not None:
                video = upload.key.rsplit("/", 1)[-1]
            else:
                video = failure.video if failure is not None else stem.rsplit("/", 1)[-1]
            state = VideoState(stem, video, UPLOADED, uploaded_at)
            result = results.get(stem)
            if result is not None and (since is None or result.modified >= since):
                state.answered_at = result.modified
                state.state = FAILED if statuses.get(stem) == ERROR else FINISHED
                if state.state == FAILED:
                    state.error = "error result (its message: `facerec results`)"
            when = _failure_time(failure) if failure else None
            if failure is not None and (since is None or when is None or when >= since):
                state.state = FAILED
                state.answered_at = state.answered_at or when
                state.error = f"{failure.function}: {failure.message}"
            if state.state == UPLOADED:
                if upload is None:
                    continue  # an old failure record of a video no longer in any bucket
                frame = frames.get(stem)
                if frame is not None and frame.modified >= since:  # type: ignore[operator]
                    state.state = SPLIT
                progress = segments.get(stem_prefix(stem))
                if progress is not None and (since is None or progress[2] >= since):
                    state.segments = progress[:2]
                state.latency_s = max(0.0, (taken - uploaded_at).total_seconds()) if uploaded_at else None
            elif uploaded_at is not None and state.answered_at is not None:
                state.latency_s = max(0.0, (state.answered_at - uploaded_at).total_seconds())
            videos[stem] = state

        failed = [v for v in videos.values() if v.state == FAILED]
        failed.sort(key=lambda v: (v.answered_at or taken, v.stem), reverse=True)
        sections = {name: dict(read()) for name, read in self.sections.items()}
        return PipelineSnapshot(
            taken_at=taken,
            prefix=names.prefix,
            buckets={"input": len(inputs), "stage1_videos": len(frames), "output_results": len(results)},
            videos=videos,
            failures=failed[:KEEP_FAILURES],
            errors=list(self._errors),
            notes=notes,
            sections=sections,
        )
