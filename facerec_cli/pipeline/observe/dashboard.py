"""`facerec watch`: a live view of the pipeline from what the buckets, the failure queue and the
functions' logs say.

One refresh costs list calls: ListObjectsV2 on the three buckets (one page per 1000 objects), a few
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
``Snapshot.sections[name]``, in ``--json`` under ``"sections"``, and as one table per section.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

import botocore.exceptions
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lambdas.core.results import ERROR
from lambdas.events import RESULT_PREFIX_SKIP
from lambdas.segments import PREFIX as SEGMENTS_PREFIX
from lambdas.segments import parse_state_key, stem_prefix

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.cloud_errors import not_deployed, user_error
from facerec_cli.config import Names, Settings
from facerec_cli.pipeline.observe.results import FailedVideo, peek_failures
from facerec_cli.pipeline.upload_ledger import parse_time, stem_of

UPLOADED, SPLIT, FINISHED, FAILED = "uploaded", "split", "finished", "failed"
IN_FLIGHT = (UPLOADED, SPLIT)
DEFAULT_INTERVAL = 1.5
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


# ---------------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    modified: datetime


@dataclass
class VideoState:
    stem: str
    video: str
    state: str
    uploaded_at: datetime | None = None
    answered_at: datetime | None = None
    latency_s: float | None = None  # answered - uploaded; for a video in flight, its age so far
    error: str | None = None
    segments: tuple[int, int] | None = None  # a timeline's segments (done, planned), while in flight

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"video": self.video, "stem": self.stem, "state": self.state}
        if self.segments is not None:
            data["segments"] = {"done": self.segments[0], "total": self.segments[1]}
        if self.latency_s is not None:
            data["age_s" if self.state in IN_FLIGHT else "latency_s"] = round(self.latency_s, 3)
        if self.error:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class LogError:
    timestamp: int  # ms since the epoch
    function: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": _iso(datetime.fromtimestamp(self.timestamp / 1000, timezone.utc)), "function": self.function, "message": self.message}


@dataclass
class Snapshot:
    """What one refresh saw. ``videos``: one state per video, by stem."""

    taken_at: datetime
    prefix: str
    buckets: dict[str, int]
    videos: dict[str, VideoState] = field(default_factory=dict)
    failures: list[VideoState] = field(default_factory=list)  # the latest failed videos, newest first
    errors: list[LogError] = field(default_factory=list)  # the latest error lines in the logs, oldest first
    notes: list[str] = field(default_factory=list)  # what could not be read (a log group missing or denied)
    sections: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # extension point (IaaS)

    def count(self, *states: str) -> int:
        return sum(v.state in states for v in self.videos.values())

    @property
    def in_flight(self) -> list[VideoState]:
        """Videos uploaded but not answered, oldest first."""
        waiting = [v for v in self.videos.values() if v.state in IN_FLIGHT]
        return sorted(waiting, key=lambda v: (v.uploaded_at or self.taken_at, v.stem))

    @property
    def idle(self) -> bool:
        return not any(v.state in IN_FLIGHT for v in self.videos.values())

    @property
    def latencies(self) -> list[float]:
        return sorted(v.latency_s for v in self.videos.values() if v.state in (FINISHED, FAILED) and v.latency_s is not None)

    def latency(self) -> dict[str, float | int | None]:
        values = self.latencies
        return {
            "n": len(values),
            "p50": _round(percentile(values, 50)),
            "p95": _round(percentile(values, 95)),
            "max": _round(values[-1] if values else None),
        }

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "time": _iso(self.taken_at),
            "prefix": self.prefix,
            "buckets": dict(self.buckets),
            "videos": len(self.videos),
            "in_flight": self.count(*IN_FLIGHT),
            "uploaded": self.count(UPLOADED),
            "split": self.count(SPLIT),
            "finished": self.count(FINISHED),
            "failed": self.count(FAILED),
            "idle": self.idle,
            "latency_s": self.latency(),
            "in_flight_videos": [v.to_dict() for v in self.in_flight],
            "failures": [v.to_dict() for v in self.failures],
            "errors": [e.to_dict() for e in self.errors],
        }
        if self.notes:
            data["notes"] = list(self.notes)
        running = [v.segments for v in self.in_flight if v.segments is not None]
        if running:  # timelines: segment invocations planned and not finished yet
            data["segments_in_flight"] = sum(total - done for done, total in running)
        if self.sections:
            data["sections"] = {name: dict(values) for name, values in self.sections.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------- reading


def list_objects(s3: Any, bucket: str) -> list[S3Object]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found.append(S3Object(obj["Key"], obj.get("ETag", ""), obj["LastModified"]))
    return found


def first_frames(keys: set[str]) -> set[str]:
    """Stems of the videos in stage-1: ``<stem>.jpg`` keys, less ``<stem>/NNN.jpg`` further frames."""
    stems = set()
    for key in keys:
        if not key.endswith(".jpg"):
            continue
        head, _, tail = key.rpartition("/")
        if head and tail[:-4].isdigit() and f"{head}.jpg" in keys:
            continue  # frame NNN of video <head>
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

    # -- pieces

    def _list(self, bucket: str) -> list[S3Object]:
        try:
            return list_objects(self.s3, bucket)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "NoSuchBucket":
                raise not_deployed(self.settings, f"the bucket {bucket}") from exc
            raise user_error(self.settings, f"listing {bucket}", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise user_error(self.settings, f"listing {bucket}", exc) from exc

    def _statuses_of(self, results: dict[str, S3Object]) -> dict[str, str | None]:
        """stem -> the status a result object carries in its metadata (None when it carries none)."""
        todo = [obj for obj in results.values() if self._statuses.get(obj.key, ("", None))[0] != obj.etag]

        def head(obj: S3Object) -> tuple[S3Object, str | None]:
            try:
                meta = self.s3.head_object(Bucket=self.names.output_bucket, Key=obj.key).get("Metadata", {})
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
                    if error_code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
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

    def snapshot(self) -> Snapshot:
        n = self.names
        taken = datetime.now(timezone.utc)
        inputs = {stem_of(o.key): o for o in self._list(n.input_bucket)}
        stage1_keys = {o.key: o for o in self._list(n.stage1_bucket)}
        frames = {stem: stage1_keys[f"{stem}.jpg"] for stem in first_frames(set(stage1_keys))}
        segments = segment_progress(stage1_keys.values())
        results = {
            o.key[: -len(".json")]: o
            for o in self._list(n.output_bucket)
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
        return Snapshot(
            taken_at=taken,
            prefix=n.prefix,
            buckets={"input": len(inputs), "stage1_videos": len(frames), "output_results": len(results)},
            videos=videos,
            failures=failed[:KEEP_FAILURES],
            errors=list(self._errors),
            notes=notes,
            sections=sections,
        )


def take_snapshot(
    s3: Any,
    sqs: Any | None,
    logs: Any | None,
    names: Names,
    *,
    settings: Settings | None = None,
    sections: Mapping[str, Section] | None = None,
    errors_since_ms: int | None = None,
) -> Snapshot:
    """One snapshot with a fresh :class:`Dashboard` (``facerec watch`` keeps one across refreshes)."""
    return Dashboard(s3, sqs, logs, names, settings=settings, sections=sections, errors_since_ms=errors_since_ms).snapshot()


# --------------------------------------------------------------------------------------- rendering

STATE_STYLE = {UPLOADED: "blue", SPLIT: "magenta", FINISHED: "green", FAILED: "bold red"}


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def render(snapshot: Snapshot, *, interval: float | None = None, rows: int = 10) -> Group:
    """The dashboard: a header line, then counts, videos in flight, failures, errors, extra sections."""
    when = snapshot.taken_at.astimezone().strftime("%H:%M:%S")
    state = Text("idle", style="green") if snapshot.idle else Text(f"{snapshot.count(*IN_FLIGHT)} in flight", style="bold yellow")
    segments = [v.segments for v in snapshot.in_flight if v.segments is not None]
    if segments:  # timelines: segment invocations not finished yet
        state.append(f" ({sum(t - d for d, t in segments)} segments)", style="yellow")
    header = Text.assemble(("facerec watch", "bold"), f" · prefix {snapshot.prefix} · {when}", " · ", state)
    if interval:
        header.append(f" · every {interval:g}s, Ctrl-C to stop", style="dim")

    counts = Table(title="pipeline", title_justify="left", show_header=True, box=None, pad_edge=False)
    for column in ("input", "stage-1", "output", "in flight", "finished", "failed", "latency p50", "p95", "max"):
        counts.add_column(column, justify="right")
    lat = snapshot.latency()
    b = snapshot.buckets
    counts.add_row(
        str(b["input"]), str(b["stage1_videos"]), str(b["output_results"]),
        Text(str(snapshot.count(*IN_FLIGHT)), style="yellow" if not snapshot.idle else ""),
        Text(str(snapshot.count(FINISHED)), style="green"),
        Text(str(snapshot.count(FAILED)), style="bold red" if snapshot.count(FAILED) else ""),
        _seconds(lat["p50"]), _seconds(lat["p95"]), _seconds(lat["max"]),  # type: ignore[arg-type]
    )  # fmt: skip
    counts.caption = f"videos per bucket; latency from upload to result over {lat['n']} answered video(s)"
    counts.caption_justify = "left"
    parts: list[Any] = [header, counts]

    waiting = snapshot.in_flight
    if waiting:
        table = Table(title="in flight (oldest first)", title_justify="left", box=None, pad_edge=False)
        table.add_column("video", overflow="fold")
        table.add_column("state")
        table.add_column("age", justify="right")
        timelines = any(v.segments is not None for v in waiting)
        if timelines:
            table.add_column("segments", justify="right")
        for v in waiting[:rows]:
            cells = [v.video, Text(v.state, style=STATE_STYLE[v.state]), _seconds(v.latency_s)]
            if timelines:
                cells.append(f"{v.segments[0]}/{v.segments[1]} done" if v.segments else "")
            table.add_row(*cells)
        if len(waiting) > rows:
            table.caption = f"… and {len(waiting) - rows} more"
        parts.append(table)
    if snapshot.failures:
        table = Table(title="failed (newest first)", title_justify="left", box=None, pad_edge=False)
        table.add_column("video", overflow="fold")
        table.add_column("why", overflow="fold")
        for v in snapshot.failures[: max(3, rows // 2)]:
            table.add_row(Text(v.video, style="red"), v.error or "")
        parts.append(table)
    if snapshot.errors or snapshot.notes:
        table = Table(title="last errors in the function logs", title_justify="left", box=None, pad_edge=False)
        table.add_column("time")
        table.add_column("function")
        table.add_column("message", overflow="fold")
        for e in snapshot.errors[-max(3, rows // 2):]:
            stamp = datetime.fromtimestamp(e.timestamp / 1000).strftime("%H:%M:%S")
            table.add_row(stamp, e.function, Text(e.message, style="red"))
        if snapshot.notes:
            table.caption = "; ".join(snapshot.notes)
            table.caption_justify = "left"
        parts.append(table)
    for name, values in snapshot.sections.items():
        table = Table(title=name, title_justify="left", box=None, pad_edge=False)
        for key in values:
            table.add_column(str(key), justify="right")
        table.add_row(*(str(v) for v in values.values()))
        parts.append(table)
    return Group(*parts)


# ------------------------------------------------------------------------------------------ the loop


class Refreshable(Protocol):
    """What a watch loop shows: a snapshot that knows when it is idle and how to be JSON."""

    @property
    def idle(self) -> bool: ...

    def to_json(self) -> str: ...


S = TypeVar("S", bound=Refreshable)


def refresh_loop(
    take: Callable[[], S],
    draw: Callable[[S, int | None], Any],
    *,
    interval: float = DEFAULT_INTERVAL,
    until_idle: bool = False,
    json_lines: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_refreshes: int | None = None,
) -> S | None:
    """The loop of every `watch`: ``take`` a snapshot every ``interval`` seconds until Ctrl-C, or with
    ``until_idle`` until one is idle (the first one included), or after ``max_refreshes`` (tests).
    ``json_lines``: one snapshot per refresh on stdout, one line each. Otherwise a live view on a
    terminal (``draw(snapshot, terminal height)``); elsewhere the last snapshot is printed once at the
    end (``draw(snapshot, None)``). Returns the last snapshot."""
    from facerec_cli.render import out

    console = console or out
    live: Live | None = None
    snapshot: S | None = None
    taken = 0
    try:
        if not json_lines and console.is_terminal:
            live = Live(console=console, refresh_per_second=4, transient=False, vertical_overflow="crop")
            live.start()
        while True:
            snapshot = take()
            taken += 1
            if json_lines:
                sys.stdout.write(snapshot.to_json() + "\n")
                sys.stdout.flush()
            elif live is not None:
                live.update(draw(snapshot, console.size.height))
            if (until_idle and snapshot.idle) or (max_refreshes is not None and taken >= max_refreshes):
                break
            sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    finally:
        if live is not None:
            live.stop()
    if snapshot is not None and not json_lines and live is None:
        console.print(draw(snapshot, None))
    return snapshot


def watch(
    dashboard: Dashboard,
    *,
    interval: float = DEFAULT_INTERVAL,
    until_idle: bool = False,
    json_lines: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Snapshot | None:
    """`facerec watch` on a pipeline: :func:`refresh_loop` over ``dashboard``'s snapshots."""

    def draw(snapshot: Snapshot, height: int | None) -> Group:
        if height is None:
            return render(snapshot)
        return render(snapshot, interval=interval, rows=max(3, (height - 12) // 2))

    return refresh_loop(
        dashboard.snapshot, draw, interval=interval, until_idle=until_idle, json_lines=json_lines, console=console, sleep=sleep
    )


def run_watch(settings: Settings, *, interval: float, until_idle: bool, json_lines: bool, sections: Mapping[str, Section] | None = None) -> Snapshot | None:
    """``facerec watch`` for the deployment ``settings`` names."""
    from facerec_cli.infra import aws

    sess = aws.session(settings)
    dashboard = Dashboard(
        aws.client(settings, "s3", sess=sess),
        aws.client(settings, "sqs", sess=sess),
        aws.client(settings, "logs", sess=sess),
        settings.names,
        settings=settings,
        sections=sections,
    )
    return watch(dashboard, interval=interval, until_idle=until_idle, json_lines=json_lines)


__all__ = [
    "FAILED",
    "FINISHED",
    "SPLIT",
    "UPLOADED",
    "Dashboard",
    "LogError",
    "Snapshot",
    "VideoState",
    "first_frames",
    "percentile",
    "refresh_loop",
    "render",
    "run_watch",
    "take_snapshot",
    "watch",
]
