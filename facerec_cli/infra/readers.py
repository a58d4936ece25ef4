"""Reading what exists: the calls planners make before deciding, and how their answers compare."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import botocore.exceptions

from facerec_cli.infra.aws import error_code

# Error codes that mean "this does not exist" for the describe/get/delete calls used here.
ABSENT = frozenset(
    {
        "NoSuchBucket",
        "NoSuchKey",
        "NotFound",
        "404",
        "NoSuchEntity",
        "ResourceNotFoundException",
        "RepositoryNotFoundException",
        "RepositoryPolicyNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchPublicAccessBlockConfiguration",
        "OwnershipControlsNotFoundError",
        "NoSuchLifecycleConfiguration",
        "NoSuchBucketPolicy",
    }
)


def get_or_none(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, or None when AWS says the thing does not exist."""
    try:
        return fn(**kwargs)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ABSENT:
            return None
        raise


def strip_metadata(resp: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (resp or {}).items() if k != "ResponseMetadata"}


def paginate(client: Any, method: str, key: str, **kwargs: Any) -> list[Any]:
    """Every item under ``key`` of every page of ``method`` (one call where the API has no pages)."""
    if client.can_paginate(method):
        out: list[Any] = []
        for page in client.get_paginator(method).paginate(**kwargs):
            out.extend(page.get(key) or [])
        return out
    return list(getattr(client, method)(**kwargs).get(key) or [])


def canonical_policy(doc: Any) -> Any:
    """A policy document with lists as sorted lists and single strings where AWS allows either, so
    that equal policies compare equal however AWS echoes them back."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            return doc
    if isinstance(doc, dict):
        return {k: canonical_policy(v) for k, v in sorted(doc.items())}
    if isinstance(doc, list):
        items = [canonical_policy(v) for v in doc]
        if len(items) == 1 and isinstance(items[0], str):
            return items[0]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return doc


def owned_buckets(s3: Any) -> set[str]:
    """Buckets this account owns. A name missing here is either free or someone else's."""
    names: set[str] = set()
    kwargs: dict[str, Any] = {}
    while True:
        resp = s3.list_buckets(**kwargs)
        names.update(b["Name"] for b in resp.get("Buckets", []))
        token = resp.get("ContinuationToken")
        if not token:
            return names
        kwargs = {"ContinuationToken": token, "MaxBuckets": 1000}


def bucket_region(s3: Any, name: str) -> str:
    """The region an owned bucket lives in (GetBucketLocation answers None for us-east-1, "EU" for eu-west-1)."""
    location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def bucket_taken(s3: Any, name: str) -> bool:
    """True when a bucket we do not own has this name (HeadBucket: 404 free; 403/301/200 taken)."""
    try:
        s3.head_bucket(Bucket=name)
        return True
    except botocore.exceptions.ClientError as exc:
        return error_code(exc) not in ("404", "NoSuchBucket", "NotFound")


def object_versions(s3: Any, bucket: str) -> Any:
    """Every object version and delete marker of ``bucket``, as DeleteObjects wants them."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
            yield {"Key": item["Key"], "VersionId": item.get("VersionId") or "null"}
