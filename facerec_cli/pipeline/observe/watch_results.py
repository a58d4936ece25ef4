"""`facerec results` and `facerec results --watch`: results from the details bucket, failed invocations
from the failure queue, and which uploads (remembered by `facerec upload`) are still unanswered.

Each refresh costs list calls only (one ListObjectsV2 page per 1000 results, a few ReceiveMessage
calls on the failure queue); a result object is downloaded once, and again only when its ETag changes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import botocore.exceptions
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lambdas.core.results import ERROR, Result
from lambdas.events import RESULT_PREFIX_SKIP

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.errors import MISSING_QUEUE, aws_errors, user_error
from facerec_cli.config import Settings
from facerec_cli.render import err, out, plural, print_errors, results_table
from facerec_cli.pipeline.observe.results import FailedVideo, failure_result, fetch_result, peek_failures
from facerec_cli.pipeline.result_buckets import result_buckets
from facerec_cli.pipeline.upload_ledger import UploadRecord, parse_time

# Seconds between refreshes of --watch (tests lower it).
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ResultObject:
    etag: str
    modified: datetime


def list_result_objects(s3: Any, bucket: str) -> dict[str, ResultObject]:
    """``<stem>.json`` objects -> ETag and LastModified, from list calls only.

    Like :func:`facerec_cli.pipeline.observe.results.list_result_keys`, plus LastModified: `--watch` needs it to tell
    a result of the latest upload of a video from one left by an earlier upload of the same name.
    """
    found: dict[str, ResultObject] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith(".json") and not key.startswith(RESULT_PREFIX_SKIP):
                found[key[: -len(".json")]] = ResultObject(obj["ETag"], obj["LastModified"])
    return found


@dataclass
class ResultsSnapshot:
    """What one refresh saw. ``results``: stem -> result, results and failures merged (a result
    object wins over a failure record of the same video); ``pending``: uploads not yet answered."""

    results: dict[str, Result] = field(default_factory=dict)
    pending: list[UploadRecord] = field(default_factory=list)
    uploads: list[UploadRecord] = field(default_factory=list)

    def answered_items(self) -> list[tuple[str, Result]]:
        """(stem, result) of answered videos by name; a video waiting for a newer answer is left out."""
        waiting = {r.stem for r in self.pending}
        return [(stem, self.results[stem]) for stem in sorted(self.results) if stem not in waiting]

    def ordered(self) -> list[Result]:
        return [result for _, result in self.answered_items()]

    @property
    def errors(self) -> int:
        return sum(r.status == ERROR for r in self.ordered())

    @property
    def answered(self) -> int:
        return len(self.uploads) - len(self.pending)


class ResultsReader:
    """Reads results and failures of one deployment, caching result bodies by ETag."""

    def __init__(self, settings: Settings, s3: Any, sqs: Any) -> None:
        self.settings = settings
        self.s3 = s3
        self.sqs = sqs
        self._bucket: str | None = None  # the details bucket (an older deployment: the output bucket)
        self._cache: dict[str, tuple[str, Result]] = {}
        self._queue_url: str | None = None
        self._queue_checked = False
        self.fetches = 0  # result bodies downloaded (what the cache saves)

    def _queue(self) -> str | None:
        if not self._queue_checked:
            try:
                self._queue_url = self.sqs.get_queue_url(QueueName=self.settings.names.failure_queue)["QueueUrl"]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) not in MISSING_QUEUE:
                    raise
                self._queue_url = None  # an older deployment without a failure queue: results only
            self._queue_checked = True
        return self._queue_url

    @property
    def bucket(self) -> str:
        if self._bucket is None:
            self._bucket = result_buckets(self.s3, self.settings.names).details
        return self._bucket

    def refresh(self, uploads: list[UploadRecord] | None = None) -> ResultsSnapshot:
        which = "output" if self.bucket == self.settings.names.output_bucket else "details"
        with aws_errors(self.settings, f"listing results in {self.bucket}", missing=f"the {which} bucket {self.bucket}"):
            objects = list_result_objects(self.s3, self.bucket)
        results: dict[str, Result] = {}
        for stem, obj in objects.items():
            cached = self._cache.get(stem)
            if cached is None or cached[0] != obj.etag:
                try:
                    result = fetch_result(self.s3, self.bucket, stem)
                except botocore.exceptions.ClientError as exc:
                    if error_code(exc) in ("NoSuchKey", "404"):
                        continue  # deleted between the listing and the download
                    raise user_error(self.settings, f"reading {stem}.json", exc) from exc
                self.fetches += 1
                cached = (obj.etag, result)
                self._cache[stem] = cached
            results[stem] = cached[1]
        for stem in set(self._cache) - set(objects):
            del self._cache[stem]

        failures: dict[str, FailedVideo] = {}
        try:
            url = self._queue()
            if url is not None:
                for failure in peek_failures(self.sqs, url):
                    failures.setdefault(failure.stem, failure)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise user_error(self.settings, f"reading the failure queue {self.settings.names.failure_queue}", exc) from exc
        for stem, failure in failures.items():
            results.setdefault(stem, failure_result(failure))

        uploads = list(uploads or [])
        pending = [u for u in uploads if not _answered(u, objects.get(u.stem), failures.get(u.stem))]
        return ResultsSnapshot(results, pending, uploads)


def _answered(upload: UploadRecord, result: ResultObject | None, failure: FailedVideo | None) -> bool:
    if result is not None and result.modified >= upload.uploaded_at:
        return True
    if failure is None:
        return False
    # A failure record answers the upload unless it is known to be older. Records carry their time
    # only once FailedVideo has a `timestamp` (Lambda's destination record has one).
    stamp = getattr(failure, "timestamp", None)
    if not stamp:
        return True
    try:
        return parse_time(str(stamp)) >= upload.uploaded_at.replace(microsecond=0)
    except ValueError:
        return True


# --------------------------------------------------------------------------------------- rendering


def snapshot_table(snapshot: ResultsSnapshot, *, title: str | None = None, limit: int | None = None) -> Table:
    """The results table plus one row per upload still waiting; ``limit`` keeps the last rows."""
    rows = snapshot.ordered()
    hidden = 0
    if limit is not None and len(rows) + len(snapshot.pending) > limit:
        keep = max(0, limit - len(snapshot.pending))
        hidden = len(rows) - keep
        rows = rows[hidden:]
    table = results_table(rows, title=title)
    for upload in snapshot.pending:
        table.add_row(Text(upload.video), Text("waiting", style="dim"), "", "", "", "", "")
    if hidden:
        table.caption = f"… {plural(hidden, 'earlier result')} not shown"
    return table


def watch_title(snapshot: ResultsSnapshot, started: float, timeout: float) -> str:
    elapsed = time.monotonic() - started
    parts = [f"{snapshot.answered}/{plural(len(snapshot.uploads), 'uploaded video')} answered"]
    if snapshot.errors:
        parts.append(plural(snapshot.errors, "error"))
    parts.append(f"{elapsed:.0f}s (timeout {timeout:.0f}s)")
    return "results · " + " · ".join(parts)


@dataclass
class WatchOutcome:
    snapshot: ResultsSnapshot
    timed_out: bool


def watch_until_answered(
    reader: ResultsReader,
    uploads: Callable[[], list[UploadRecord]],
    *,
    timeout: float,
    json_lines: bool,
    interval: float | None = None,
    sleep: Callable[[float], None] | None = None,
    on_refresh: Callable[[ResultsSnapshot], None] | None = None,
) -> WatchOutcome:
    """Refresh until every upload is answered or ``timeout`` seconds passed; ``on_refresh`` sees each
    snapshot with uploads still pending.

    With ``json_lines`` every answered video is printed as one JSON line when first seen (and again
    if its result object changes); otherwise a live table on a terminal, and the final table on stdout.
    """
    interval = POLL_SECONDS if interval is None else interval
    sleep = time.sleep if sleep is None else sleep  # looked up here, so a test's fake clock is seen
    started = time.monotonic()
    deadline = started + timeout
    printed: dict[str, str] = {}

    def emit(snapshot: ResultsSnapshot) -> None:
        for stem, result in snapshot.answered_items():
            line = result.to_json()
            if printed.get(stem) != line:
                printed[stem] = line
                sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def step() -> tuple[ResultsSnapshot, bool]:
        snapshot = reader.refresh(uploads())
        if snapshot.pending and on_refresh is not None:
            on_refresh(snapshot)
        return snapshot, not snapshot.pending

    live: Live | None = None
    try:
        snapshot, done = step()
        if not json_lines and out.is_terminal:
            live = Live(console=out, refresh_per_second=4, transient=True, vertical_overflow="crop")
            live.start()
        while True:
            if json_lines:
                emit(snapshot)
            elif live is not None:
                limit = max(5, out.size.height - 8)
                live.update(snapshot_table(snapshot, title=watch_title(snapshot, started, timeout), limit=limit))
            if done:
                return WatchOutcome(snapshot, False)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return WatchOutcome(snapshot, True)
            sleep(min(interval, remaining))
            snapshot, done = step()
    finally:
        if live is not None:
            live.stop()


def show(snapshot: ResultsSnapshot, *, json_lines: bool, title: str = "results") -> None:
    """The listing of `facerec results`: JSON Lines on stdout, or the table plus error lines."""
    if json_lines:
        for result in snapshot.ordered():
            sys.stdout.write(result.to_json() + "\n")
        sys.stdout.flush()
        return
    rows = snapshot.ordered()
    if rows or snapshot.pending:
        out.print(snapshot_table(snapshot, title=title))
    print_errors(rows)
    summary = plural(len(rows), "result") + (f", {plural(snapshot.errors, 'error')}" if snapshot.errors else "")
    if snapshot.pending:
        names = ", ".join(u.video for u in snapshot.pending[:5]) + (" …" if len(snapshot.pending) > 5 else "")
        summary += f"; {plural(len(snapshot.pending), 'uploaded video')} still without a result: {names}"
    err.print(Text(summary), highlight=False, soft_wrap=True)


__all__ = [
    "POLL_SECONDS",
    "ResultObject",
    "ResultsReader",
    "ResultsSnapshot",
    "WatchOutcome",
    "list_result_objects",
    "show",
    "snapshot_table",
    "watch_until_answered",
]
