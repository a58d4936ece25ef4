"""Lambda's asynchronous-invocation destination records and S3's event notifications, written out as AWS
documents them (Lambda developer guide, "Asynchronous invocation" > "Destinations": the invocation
record; S3 user guide, "Event message structure"), not built by the product's own
``lambdas.on_failure.failure_record``: a mismatch between the product and the real shape cannot hide
behind a record the product made itself."""

from __future__ import annotations

from typing import Any


def s3_put_event(region: str, bucket: str, key: str, *, size: int = 1048576, etag: str = "d41d8cd98f00b204e9800998ecf8427e") -> dict[str, Any]:
    """S3's ObjectCreated:Put notification of one object (``key`` URL-encoded, as S3 sends it)."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region, "eventTime": "2026-11-01T12:00:00.000Z",
        "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {
            "s3SchemaVersion": "1.0", "configurationId": "facerec-videos",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": size, "eTag": etag, "sequencer": "0A1B2C3D4E5F678901"},
        },
    }]}  # fmt: skip


def function_arn(region: str, account: str, function: str, qualifier: str = "") -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{function}{qualifier}"


def retries_exhausted(arn: str, payload: Any, error: str = "ffmpeg could not read the video: moov atom not found",
                      error_type: str = "RuntimeError", request_id: str = "e4b46cbf-b738-4d32-8880-a18cdf61200e") -> dict[str, Any]:  # fmt: skip
    """Every attempt failed: the record carries the last attempt's error payload (the Python runtime's
    payload of an unhandled exception)."""
    return {
        "version": "1.0",
        "timestamp": "2026-11-01T12:00:07.512Z",
        "requestContext": {"requestId": request_id, "functionArn": arn, "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorMessage": error, "errorType": error_type, "requestId": request_id,
            "stackTrace": ["  File \"/var/task/lambdas/handler.py\", line 41, in handler\n    raise RuntimeError(...)\n"],
        },
    }  # fmt: skip


def event_age_exceeded(arn: str, payload: Any, request_id: str = "5b0bdfb3-8d4f-4d6b-a1c5-7f3c1e8a2b90") -> dict[str, Any]:
    """The event waited past the maximum event age (throttled) and never ran: no response at all."""
    return {
        "version": "1.0",
        "timestamp": "2026-11-01T13:00:00.204Z",
        "requestContext": {"requestId": request_id, "functionArn": arn, "condition": "EventAgeExceeded", "approximateInvokeCount": 0},
        "requestPayload": payload,
    }
