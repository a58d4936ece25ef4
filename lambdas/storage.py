"""S3 access shared by the handlers: clients made once per container, results written as the pair
``<stem>.json`` + ``<stem>.txt`` with the event id in metadata (so a redelivered event is recognised)."""

from __future__ import annotations

import functools
import json
from typing import Any

import boto3
import botocore.exceptions

from .core.results import Result
from .events import result_keys

EVENT_META = "facerec-event"


@functools.lru_cache(maxsize=None)
def client(service: str) -> Any:
    # boto3 honours AWS_ENDPOINT_URL, so the same code reaches AWS or the local cloud.
    return boto3.client(service)


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
    """JSON first, then the name: a reader that sees ``<stem>.txt`` can rely on ``<stem>.json``."""
    json_key, txt_key = result_keys(stem)
    meta = {EVENT_META: event_id, "status": result.status}
    s3 = client("s3")
    s3.put_object(
        Bucket=bucket, Key=json_key, Body=result.to_json().encode(), ContentType="application/json", Metadata=meta
    )
    s3.put_object(Bucket=bucket, Key=txt_key, Body=result.name.encode(), ContentType="text/plain; charset=utf-8", Metadata=meta)


def log(message: str, **fields: Any) -> None:
    """One JSON line per event in CloudWatch (no payloads, no credentials)."""
    print(json.dumps({"msg": message, **fields}, ensure_ascii=False, default=str), flush=True)
