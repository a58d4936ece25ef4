"""S3 access shared by the handlers: clients made once per container, results written as the pair
``<stem>.txt`` + ``<stem>.json`` with the event id in metadata (so a redelivered event is recognised).

``<stem>.json`` is written last, and it is both what readers (the CLI) take as "answered" and what the
duplicate check looks at: a failure between the two writes leaves no ``.json``, so the retry writes
both again instead of skipping a half-written result."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any

import boto3
import botocore.exceptions

from .core.results import Result
from .events import result_keys

EVENT_META = "facerec-event"


def client(service: str) -> Any:
    """One client per service per container. boto3 honours AWS_ENDPOINT_URL, so the same code reaches
    AWS or the local cloud; the endpoint is part of the cache key for handlers run in-process
    (``run-local --workers 0``), where a later cloud has another endpoint."""
    return _client(service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))


@functools.lru_cache(maxsize=None)
def _client(service: str, endpoint_url: str | None, region: str | None) -> Any:
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region)


def head_metadata(bucket: str, key: str) -> dict[str, str] | None:
    try:
        return client("s3").head_object(Bucket=bucket, Key=key).get("Metadata", {})
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def already_done(bucket: str, key: str, event_id: str) -> bool:
    meta = head_metadata(bucket, key)
    return meta is not None and meta.get(EVENT_META) == event_id


def write_result(bucket: str, stem: str, result: Result, event_id: str) -> None:
    """The name first, then the JSON: a reader that sees ``<stem>.json`` can rely on ``<stem>.txt``,
    and ``result_done`` (which looks at the JSON) never counts half a result as done."""
    json_key, txt_key = result_keys(stem)
    meta = {EVENT_META: event_id, "status": result.status}
    s3 = client("s3")
    started = time.perf_counter()
    s3.put_object(Bucket=bucket, Key=txt_key, Body=result.name.encode(), ContentType="text/plain; charset=utf-8", Metadata=meta)
    # What one result write costs (the .txt; the .json that follows is the same kind of call).
    result.timings_ms["write"] = (time.perf_counter() - started) * 1000
    s3.put_object(
        Bucket=bucket, Key=json_key, Body=result.to_json().encode(), ContentType="application/json", Metadata=meta
    )


def result_done(bucket: str, stem: str, event_id: str) -> bool:
    """This event's result is complete in ``bucket`` (its ``<stem>.json``, written last, carries the event id)."""
    return already_done(bucket, result_keys(stem)[0], event_id)


def log(message: str, **fields: Any) -> None:
    """One JSON line per event in CloudWatch (no payloads, no credentials). stderr: Lambda captures
    it like stdout, and in-process runs keep stdout for ``--json``."""
    print(json.dumps({"msg": message, **fields}, ensure_ascii=False, default=str), file=sys.stderr, flush=True)
