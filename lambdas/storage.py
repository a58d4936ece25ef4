"""S3 access shared by the handlers: clients made once per container, results written as the pair
``<stem>.json`` (details bucket) + ``<stem>.txt`` (output bucket) with the event id in metadata (so a
redelivered event is recognised).

The output bucket holds the answers alone: the course's grader downloads every object there and stops
at the first key that is not ``test_NN.txt``. ``<stem>.json`` is written first, conditionally: it is
the point where concurrent writers are ordered, and what readers (the CLI) take as "answered". The
duplicate check looks at both halves: a failure between the two writes leaves the ``.txt`` without this
event's id, so the retry writes both again instead of skipping a half-written result."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import quote, urlencode
from typing import Any

import boto3
import botocore.exceptions

from .core.results import Result
from .env import ResultBuckets
from .events import result_keys

EVENT_META = "facerec-event"
# Results carry this tag so that `bootstrap --retain-days` can expire them (an S3 lifecycle rule cannot
# exclude one key, and a prefix-wide rule would expire the gallery beside them).
RESULT_TAG_KEY, RESULT_TAG_VALUE = "facerec:kind", "result"
RESULT_TAGGING = urlencode({RESULT_TAG_KEY: RESULT_TAG_VALUE})


def metadata_text(value: str) -> str:
    """``value`` as S3 user metadata can hold it: botocore refuses non-ASCII metadata before sending,
    so anything outside printable ASCII (and ``%``) is percent-encoded (UTF-8); ``unquote`` reads it."""
    return quote(value, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def client(service: str) -> Any:
    """One client per service per container. boto3 honours AWS_ENDPOINT_URL, so the same code reaches
    AWS or the local cloud; the endpoint is part of the cache key for handlers run in-process
    (``run-local --workers 0``), where a later cloud has another endpoint."""
    return _client(service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))


@functools.lru_cache(maxsize=None)
def _client(service: str, endpoint_url: str | None, region: str | None) -> Any:
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region)


# Objects up to this size are fetched with one GetObject; larger ones with s3transfer's ranged, parallel
# GETs (download_file, whose first call is a HeadObject for the size: one request more per object).
SINGLE_GET_BYTES = 8 * 1024 * 1024


def download(bucket: str, key: str, path: Path, size: int | None = None, *, small: bool = False, s3: Any = None) -> None:
    """The object into ``path``. ``size``: its size when the caller knows it (an S3 event carries it);
    ``small``: known to be small without a size (a stage-1 frame). Neither: s3transfer finds out."""
    s3 = s3 or client("s3")
    if not small and (size is None or size > SINGLE_GET_BYTES):
        s3.download_file(bucket, key, str(path))
        return
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    with open(path, "wb") as out:
        shutil.copyfileobj(body, out, 1024 * 1024)


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """HeadObject's answer, or None when there is no such object."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def head_metadata(bucket: str, key: str, s3: Any = None) -> dict[str, str] | None:
    head = _head(s3 or client("s3"), bucket, key)
    return None if head is None else head.get("Metadata", {})


def already_done(bucket: str, key: str, event_id: str, s3: Any = None) -> bool:
    meta = head_metadata(bucket, key, s3)
    return meta is not None and meta.get(EVENT_META) == event_id


ANY = object()  # write_result(replaces=ANY): overwrite whatever result is there

Where = ResultBuckets | str  # a bare bucket name: answer and details in one bucket (an older deployment)


def result_state(where: Where, stem: str, event_id: str, s3: Any = None) -> tuple[bool, str | None]:
    """(this event's result is complete, ETag of the ``<stem>.json`` there now or None): what
    ``write_result(replaces=...)`` needs to write the result exactly once. Complete means both halves
    carry the event id: the details, written first, and the answer after them (a crash between the two
    leaves the retry to write both again)."""
    buckets, s3 = ResultBuckets.of(where), s3 or client("s3")
    json_key, txt_key = result_keys(stem)
    head = _head(s3, buckets.details, json_key)
    if head is None:
        return False, None
    done = head.get("Metadata", {}).get(EVENT_META) == event_id
    if done:
        answer = _head(s3, buckets.output, txt_key)
        done = answer is not None and answer.get("Metadata", {}).get(EVENT_META) == event_id
    return done, head["ETag"]


def write_result(where: Where, stem: str, result: Result, event_id: str, s3: Any = None, *, replaces: Any = ANY) -> bool:
    """The details (``<stem>.json``, in the details bucket) first, then the answer (``<stem>.txt``, in the
    output bucket). ``s3``: a client other than the function's (the local runtime's failure hook).

    ``replaces``: the ETag of the ``<stem>.json`` this result may replace (None: there must be none), as
    ``result_state`` saw it; the JSON is then a conditional write, and a write that loses the race (a
    concurrent duplicate of the same event, `results --reidentify` against a newer answer) fails there,
    before the answer is touched: it changes neither. Returns False when it lost (nothing more to do),
    True when the result was written."""
    buckets, s3 = ResultBuckets.of(where), s3 or client("s3")
    json_key, txt_key = result_keys(stem)
    meta = {EVENT_META: event_id, "status": result.status}
    condition = {} if replaces is ANY else {"IfNoneMatch": "*"} if replaces is None else {"IfMatch": replaces}
    try:
        s3.put_object(
            Bucket=buckets.details, Key=json_key, Body=result.to_json().encode(), ContentType="application/json", Metadata=meta,
            Tagging=RESULT_TAGGING, **condition,
        )
    except botocore.exceptions.ClientError as exc:
        if condition and exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            return False
        raise
    s3.put_object(Bucket=buckets.output, Key=txt_key, Body=result.name.encode(), ContentType="text/plain; charset=utf-8", Metadata=meta,
                  Tagging=RESULT_TAGGING)
    return True


def write_result_once(where: Where, stem: str, result: Result, event_id: str, s3: Any = None) -> bool:
    """This event's result, written exactly once, optimistically: a write conditional on there being no
    result yet (no HeadObject before it, the common case); when there is one, its state decides: this
    event's own (a duplicate invocation: nothing written, False) or an older upload's (replaced,
    conditionally on the ETag seen, so a concurrent writer still wins or loses whole)."""
    if not event_id:
        return write_result(where, stem, result, event_id, s3)
    if write_result(where, stem, result, event_id, s3, replaces=None):
        return True
    done, current = result_state(where, stem, event_id, s3)
    return not done and write_result(where, stem, result, event_id, s3, replaces=current)


def result_done(where: Where, stem: str, event_id: str, s3: Any = None) -> bool:
    """This event's result is complete: its details and its answer both carry the event id."""
    return result_state(where, stem, event_id, s3)[0]


def log(message: str, **fields: Any) -> None:
    """One JSON line per event in CloudWatch (no payloads, no credentials). stderr: Lambda captures
    it like stdout, and in-process runs keep stdout for ``--json``."""
    print(json.dumps({"msg": message, **fields}, ensure_ascii=False, default=str), file=sys.stderr, flush=True)
