"""A timeline segment's request, and its state in stage-1: the keys of the protocol ``segments.py``
runs (the plan marker, each segment's part, the merge claim, the attempt markers) and the S3 conditional
writes it rests on. Numpy-free and light: ``facerec watch`` reads segment progress from a listing with
:func:`parse_state_key`, and the on-failure function (in the splitting image, no numpy) builds a
:class:`SegmentRequest` from a failed invocation's record.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import botocore.exceptions

SEGMENT_KIND = "timeline-segment"
PREFIX = ".facerec/segments/"

# ---------------------------------------------------------------------------------------- requests


@dataclass
class SegmentRequest:
    """What video-splitting sends to face-recognition for one segment (InvocationType=Event)."""

    stage1_bucket: str
    stem: str
    video: str
    source: dict[str, Any]  # bucket, key, etag, size, event_id of the upload
    segment: int  # 0-based
    count: int
    start: float
    end: float | None  # None: to the end of a video whose length the container does not give
    fps: float
    duration: float | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    kind: str = SEGMENT_KIND

    @property
    def event_id(self) -> str:
        return str(self.source.get("event_id", ""))

    @property
    def label(self) -> str:
        """``segment 3 of 20 (60-90 s)``: how messages name it."""
        end = "end" if self.end is None else f"{self.end:g} s"
        return f"segment {self.segment + 1} of {self.count} ({self.start:g}-{end})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentRequest":
        return cls(
            stage1_bucket=data["stage1_bucket"], stem=data["stem"], video=data["video"], source=dict(data.get("source", {})),
            segment=int(data["segment"]), count=int(data["count"]), start=float(data["start"]),
            end=None if data.get("end") is None else float(data["end"]),
            fps=float(data["fps"]), duration=None if data.get("duration") is None else float(data["duration"]),
            timings_ms=dict(data.get("timings_ms", {})),
        )  # fmt: skip


def is_segment_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("kind") == SEGMENT_KIND


def segment_label(event: Any) -> str | None:
    """``segment 3 of 20 (60-90 s)`` for a segment's event, None for any other."""
    if not is_segment_event(event):
        return None
    try:
        return SegmentRequest.from_dict(event).label
    except (KeyError, TypeError, ValueError):
        return "a segment"


# -------------------------------------------------------------------------------------------- keys


def short_hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def stem_prefix(stem: str) -> str:
    """The folder of a video's segment state in stage-1 (fixed length, whatever the stem)."""
    return f"{PREFIX}{short_hash(stem, 40)}/"


def run_prefix(stem: str, event_id: str) -> str:
    """The folder of one upload's (event's) segments: a new upload of the same key starts afresh."""
    return f"{stem_prefix(stem)}{short_hash(event_id, 16)}/"


def plan_key(stem: str, event_id: str, count: int) -> str:
    return f"{run_prefix(stem, event_id)}plan-of-{count:04d}"


def part_key(stem: str, event_id: str, segment: int, count: int) -> str:
    return f"{run_prefix(stem, event_id)}part-{segment:04d}-of-{count:04d}.json"


def claim_key(stem: str, event_id: str) -> str:
    return f"{run_prefix(stem, event_id)}merge"


def attempt_key(stem: str, event_id: str, segment: int, request_id: str, n: int) -> str:
    return f"{run_prefix(stem, event_id)}attempt-{segment:04d}-{short_hash(request_id, 16)}-{n}"


def parse_state_key(key: str) -> tuple[str, str, str, int, int] | None:
    """``(stem hash, event hash, "plan" | "part", segment, count)`` of a plan or part key, else None
    (what ``facerec watch`` counts, from a listing alone)."""
    if not key.startswith(PREFIX):
        return None
    parts = key[len(PREFIX):].split("/")
    if len(parts) != 3:
        return None
    stem_hash, event_hash, name = parts
    try:
        if name.startswith("plan-of-"):
            return stem_hash, event_hash, "plan", -1, int(name[len("plan-of-"):])
        if name.startswith("part-") and name.endswith(".json"):
            segment, _, count = name[len("part-"): -len(".json")].partition("-of-")
            return stem_hash, event_hash, "part", int(segment), int(count)
    except ValueError:
        return None
    return None


# ------------------------------------------------------------------------------- conditional writes


def _code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    return str(exc.response.get("Error", {}).get("Code", "")), int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def create(s3: Any, bucket: str, key: str, body: bytes, **extra: Any) -> bool:
    """Create ``key`` only if it does not exist (S3 conditional write): True when this call created
    it, False when it was there. A 409 (another conditional write to the key in progress) is retried."""
    for attempt in range(5):
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", **extra)
            return True
        except botocore.exceptions.ClientError as exc:
            code, status = _code(exc)
            if status == 412 or code == "PreconditionFailed":
                return False
            if status == 409 or code == "ConditionalRequestConflict":
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
    return False


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError as exc:
        if _code(exc)[0] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except botocore.exceptions.ClientError as exc:
        if _code(exc)[0] in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys
