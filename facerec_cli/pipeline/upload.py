"""`facerec upload`: check every file first, then send each to the input bucket (multipart above 8 MiB)
with a progress bar in bytes, and remember what was sent for `facerec results --watch`."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from lambdas.core.media import VIDEO_SUFFIXES

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.errors import MISSING_BUCKET, not_deployed, user_error
from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.pipeline.upload_ledger import UploadLedger, UploadRecord, iso, stem_of

MIB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4, use_threads=True)

# Explicit, because platforms' mimetypes tables differ (.3gp is audio/3gpp on some, .mkv missing on others).
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".3gp": "video/3gpp",
}


@dataclass(frozen=True)
class UploadItem:
    path: Path
    key: str
    size: int
    content_type: str


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def check_files(paths: Sequence[Path]) -> list[UploadItem]:
    """Every file, checked before anything is sent: a video suffix (in any case: the input bucket's
    trigger has no suffix filter, facerec_cli/pipeline/stack.py says why), not empty, one key per file
    name and one result name (stem) per video. All problems in one error."""
    problems: list[str] = []
    items: list[UploadItem] = []
    keys: dict[str, Path] = {}
    stems: dict[str, Path] = {}
    for path in paths:
        if not path.exists():
            problems.append(f"{path}: no such file")
            continue
        if path.is_dir():
            problems.append(f"{path}: is a folder (pass the videos in it, e.g. {path}/*.mp4)")
            continue
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            problems.append(f"{path}: not a video (expected one of {' '.join(sorted(VIDEO_SUFFIXES))})")
            continue
        size = path.stat().st_size
        if size == 0:
            problems.append(f"{path}: empty file")
            continue
        key = path.name
        if key in keys:
            problems.append(f"{path}: same name as {keys[key]} (both would be s3 key {key!r})")
            continue
        stem = stem_of(key)
        if stem in stems:
            problems.append(f"{path}: same name without suffix as {stems[stem]} (both would answer as {stem}.json)")
            continue
        keys[key] = path
        stems[stem] = path
        items.append(UploadItem(path, key, size, content_type(key)))
    if problems:
        head = "nothing was uploaded: " + ("1 file was" if len(problems) == 1 else f"{len(problems)} files were") + " refused"
        raise UserError(head + ": " + "; ".join(problems))
    if not items:
        raise UserError("no videos given")
    return items




def check_bucket(s3: Any, settings: Settings) -> None:
    bucket = settings.names.input_bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in MISSING_BUCKET:
            raise not_deployed(settings, f"the input bucket {bucket}") from exc
        raise user_error(settings, f"checking the input bucket {bucket}", exc) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise user_error(settings, f"checking the input bucket {bucket}", exc) from exc


def upload_files(
    s3: Any,
    settings: Settings,
    items: Sequence[UploadItem],
    *,
    console: Console,
    ledger: UploadLedger | None = None,
) -> list[UploadRecord]:
    """Upload ``items`` in order with one progress bar per file. Each finished upload is recorded in
    the ledger at once, so an interrupted run still remembers what it sent."""
    bucket = settings.names.input_bucket
    check_bucket(s3, settings)
    ledger = ledger or UploadLedger(settings)
    done: list[UploadRecord] = []
    columns = (
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        for item in items:
            task = progress.add_task(item.key, total=item.size)
            try:
                s3.upload_file(
                    str(item.path),
                    bucket,
                    item.key,
                    ExtraArgs={"ContentType": item.content_type},
                    Config=TRANSFER,
                    Callback=lambda n, task=task: progress.advance(task, n),
                )
                head = s3.head_object(Bucket=bucket, Key=item.key)
            except (boto3.exceptions.S3UploadFailedError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise _upload_failed(settings, item, exc, done) from exc
            progress.update(task, completed=item.size)
            record = UploadRecord(item.key, str(head.get("ETag", "")).strip('"'), item.size, iso(head["LastModified"]))
            ledger.add([record])
            done.append(record)
    return done


def _upload_failed(settings: Settings, item: UploadItem, exc: BaseException, done: list[UploadRecord]) -> UserError:
    cause: BaseException = exc
    if isinstance(exc, boto3.exceptions.S3UploadFailedError) and exc.__context__ is not None:
        cause = exc.__context__  # the ClientError the transfer manager wrapped
    error = user_error(settings, f"uploading {item.path}", cause, bucket=settings.names.input_bucket)
    before = f"uploaded before it: {', '.join(r.key for r in done)}" if done else "nothing was uploaded before it"
    return UserError(f"{error.args[0]} ({before})", hint=error.hint)
