"""Lambda ``<prefix>-on-failure``: the on-failure destination of video-splitting and face-recognition.

Lambda invokes it with the record of an asynchronous invocation it gave up on: every attempt failed
(``RetriesExhausted``: an error, a timeout, out of memory, where the handler's own error path never ran),
or it never ran (``EventAgeExceeded``: throttled past the maximum event age). Without it nothing would
answer for that upload and a timeline would wait for its segment forever. It writes the video's ``error``
result (unless one is there), fails a timeline segment (``segments.fail_segment``: the video's error names
the segment), then forwards the record to the failure queue, where ``facerec watch`` and ``results`` read
failures. run-local's failure hook invokes this same handler (facerec_cli/pipeline/local/runner.py).

Its own failures go to the queue (its asynchronous invoke configuration): no loop. Such a record's
``requestPayload`` is the record this function was given (:func:`chain` unwraps it).

It runs in the splitting image (av, Pillow, boto3; no numpy): every module it imports must import there
(``lambdas.segments`` imports the timeline code, which needs numpy, on first use). Dockerfile.splitting
checks it when the image is built.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .core.results import error_result
from .env import FAILURE_QUEUE, ResultBuckets, require
from .events import RecognitionRequest, uploads
from .segment_state import SegmentRequest, is_segment_event
from .segments import fail_segment
from .storage import client, log, result_state, write_result


def failure_record(function_arn: str, request_id: str, event: Any, message: str, attempts: int,
                   condition: str = "RetriesExhausted") -> dict[str, Any]:  # fmt: skip
    """What Lambda sends to an on-failure destination (the shape ``facerec results`` reads on AWS too)."""
    return {
        "version": "1.0",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "requestContext": {"requestId": request_id, "functionArn": function_arn, "condition": condition, "approximateInvokeCount": attempts},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": message},
    }


def is_record(value: Any) -> bool:
    """A destination record (rather than an S3 event or a function's request)."""
    return isinstance(value, dict) and isinstance(value.get("requestContext"), dict) and "requestPayload" in value


def chain(record: dict[str, Any]) -> list[dict[str, Any]]:
    """``[record, the record it is about, ...]``: when the on-failure function itself fails, Lambda sends a
    record whose ``requestPayload`` is the record it was given. The last one is about the upload."""
    out = [record]
    while is_record(out[-1].get("requestPayload")) and len(out) < 8:
        out.append(out[-1]["requestPayload"])
    return out


def error_of(record: dict[str, Any]) -> str:
    """The record's error: the runtime's ``errorMessage``, else its condition."""
    payload = record.get("responsePayload")
    message = payload.get("errorMessage") if isinstance(payload, dict) else None
    return str(message or (record.get("requestContext") or {}).get("condition") or "failed")


def videos_of_event(event: Any) -> list[tuple[str, str, str]]:
    """(stem, video, event id) of each upload an invocation was about, for either function's event."""
    if isinstance(event, dict) and "Records" in event:
        return [(u.stem, u.video, u.event_id) for u in uploads(event)]
    if is_segment_event(event):  # one segment of a timeline (lambdas/segments.py)
        request = SegmentRequest.from_dict(event)
        return [(request.stem, request.video, request.event_id)]
    if isinstance(event, dict) and "stem" in event:
        request = RecognitionRequest.from_dict(event)
        return [(request.stem, request.video, str(request.source.get("event_id") or ""))]
    return []


def function_of(record: dict[str, Any]) -> str:
    """``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`` -> NAME."""
    parts = str((record.get("requestContext") or {}).get("functionArn", "")).split(":")
    return parts[6] if len(parts) >= 7 and parts[5] == "function" else parts[-1]


def failure_message(record: dict[str, Any]) -> str:
    """The error a person reads in the video's result (of the record about the upload, and of each
    on-failure invocation that failed on it)."""
    *answering, first = chain(record)
    context = first.get("requestContext") or {}
    function, condition = function_of(first), context.get("condition") or "failed"
    if condition == "EventAgeExceeded":
        message = (f"{function} never ran it: the event waited longer than the maximum event age "
                   "(throttled: raise the account's Lambda concurrency, then upload again)")  # fmt: skip
    else:
        message = f"{function} failed on every attempt: {error_of(first)}"
    for outer in reversed(answering):
        message += f" ({function_of(outer)} failed recording it: {error_of(outer)})"
    return message


def answer(record: dict[str, Any], *, s3: Any, output_bucket: ResultBuckets | str) -> list[str]:
    """Write the error result of each upload in the record (a segment: fail it); what was done, per upload."""
    event, message = chain(record)[-1].get("requestPayload"), failure_message(record)
    if is_segment_event(event):
        return [fail_segment(s3, output_bucket, event, message)]
    done = []
    for stem, video, event_id in videos_of_event(event):
        _, there = result_state(output_bucket, stem, event_id, s3)
        if there is not None:  # a result was written before the failure (or by a newer upload): it stands
            done.append("result already written")
        elif write_result(output_bucket, stem, error_result(video, message), event_id, s3, replaces=None):
            done.append("error result written")
        else:
            done.append("result already written")
    return done


def handler(record: dict[str, Any], context: Any) -> dict[str, Any]:
    s3, sqs = client("s3"), client("sqs")
    try:
        done = answer(record, s3=s3, output_bucket=ResultBuckets.from_environ())
    finally:  # the record reaches the queue even when the result could not be written (this is retried)
        queue_url = sqs.get_queue_url(QueueName=require(FAILURE_QUEUE))["QueueUrl"]
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))
    log("failure answered", function=function_of(record), condition=(record.get("requestContext") or {}).get("condition"), done=done)
    return {"outcome": done}
