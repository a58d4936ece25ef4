"""Reading results back: ``<stem>.json`` objects in the details bucket, and failed invocations from
the functions' failure destination (an SQS queue), shown as ``error`` results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lambdas import on_failure
from lambdas.core.results import Result, error_result
from lambdas.events import RESULT_PREFIX_SKIP
from lambdas.segment_state import segment_label


def list_result_keys(s3: Any, bucket: str, from_key: str = "") -> dict[str, str]:
    """``<stem>.json`` keys in the bucket -> ETag (list calls only, no downloads); ``from_key``: only
    keys from that one on, in S3's order (a poll that waits for a few results need not list them all)."""
    found: dict[str, str] = {}
    # StartAfter is exclusive: every key >= from_key sorts after from_key less its last character.
    after = {"StartAfter": from_key[:-1]} if from_key else {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, **after):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith(".json") and not key.startswith(RESULT_PREFIX_SKIP):
                found[key[: -len(".json")]] = obj["ETag"]
    return found


def fetch_result(s3: Any, bucket: str, stem: str) -> Result:
    body = s3.get_object(Bucket=bucket, Key=f"{stem}.json")["Body"].read()
    try:
        return Result.from_dict(json.loads(body))
    except (ValueError, TypeError, KeyError) as exc:
        return error_result(stem, f"unreadable result object {stem}.json: {exc}")


@dataclass
class FailedVideo:
    stem: str
    video: str
    function: str
    message: str
    timestamp: str | None = None  # when Lambda gave up (an old failure must not answer a re-upload)


def videos_of_event(event: Any) -> list[tuple[str, str]]:
    """(stem, video) pairs an invocation was about, for either function's event."""
    return [(stem, video) for stem, video, _ in on_failure.videos_of_event(event)]


# What Lambda sends to an on-failure destination; the on-failure function makes the same for run-local.
destination_record = on_failure.failure_record


def function_name_of(arn: str) -> str:
    """``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`` -> NAME (AWS's records carry the
    qualified ARN, e.g. ``...:video-splitting:$LATEST``)."""
    parts = arn.split(":")
    return parts[6] if len(parts) >= 7 and parts[5] == "function" else parts[-1]


def parse_destination_record(body: str) -> list[FailedVideo]:
    try:
        # The record about the upload, and those of on-failure invocations that failed on it (innermost last).
        *answering, record = on_failure.chain(json.loads(body))
        function = function_name_of(str(record["requestContext"]["functionArn"]))
        message = on_failure.error_of(record)
        segment = segment_label(record.get("requestPayload"))
        if segment:  # a timeline segment: say which, as its error result does
            message = f"{segment}: {message}"
        for outer in reversed(answering):  # the video's error result may not have been written: it is failed all the same
            message += f" ({on_failure.function_of(outer)} failed recording it: {on_failure.error_of(outer)})"
        when = record.get("timestamp")
        return [FailedVideo(stem, video, function, message, when) for stem, video in videos_of_event(record.get("requestPayload"))]
    except (ValueError, KeyError, TypeError):
        return []


def peek_failures(sqs: Any, queue_url: str, max_messages: int = 100) -> list[FailedVideo]:
    """Failed videos from the failure queue, without consuming them (visibility timeout 0)."""
    failures: list[FailedVideo] = []
    seen: set[str] = set()
    for _ in range(max_messages // 10 + 3):  # bounded: visibility 0 may hand back seen messages
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
        messages = [m for m in reply.get("Messages", []) if m["MessageId"] not in seen]
        if not messages or len(seen) >= max_messages:
            break
        for message in messages:
            seen.add(message["MessageId"])
            failures.extend(parse_destination_record(message["Body"]))
    return failures


def failure_result(failure: FailedVideo) -> Result:
    return error_result(
        failure.video,
        f"{failure.function} failed on every attempt: {failure.message} (see `facerec logs --function {failure.function}`)",
    )
