"""The two queue messages, as JSON.

Request (web tier -> ``<prefix>-req-queue``): ``{"id", "key", "etag", "sent_at"}``; the image is the
object ``key`` of the in-bucket, and ``etag`` is the ETag the web tier's PutObject got back: the worker
reads with ``IfMatch`` so that it never answers with the pixels of a later upload that reused the name.
The message attribute ``deadline`` (Number, epoch seconds) is when the HTTP request that waits for it
gives up (504): a worker that receives it later deletes it unanswered (nobody waits any more).

Response (app tier -> ``<prefix>-resp-queue``): ``{"id", "key", "stem", "name", "status", "error",
"worker", "receive_count", "ms"}``; the web tier answers the HTTP request ``id`` with ``<stem>:<name>``.
``status`` is the core's (``ok``, ``unknown``, ``no_face``, ``error``).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any


DEADLINE = "deadline"  # the request message attribute
# The request queue's MaximumMessageSize (SQS's least, and what the course's grader checks). SQS counts
# the body's UTF-8 bytes and each attribute's name, type and value; a request fits with any key of up to
# 255 bytes (the web tier's limit): JSON escapes at most triple a key (2-byte characters as \uXXXX).
REQUEST_MAX_BYTES = 1024
# The longest ETag PutObject can answer with (a multipart upload's: md5 of md5s, "-" and the part count).
_LONGEST_ETAG = '"' + "0" * 32 + '-10000"'


def new_id() -> str:
    return uuid.uuid4().hex


def deadline_attributes(deadline: float) -> dict[str, dict[str, str]]:
    """SendMessage ``MessageAttributes`` carrying the HTTP request's deadline."""
    return {DEADLINE: {"DataType": "Number", "StringValue": f"{deadline:.3f}"}}


def message_deadline(message: dict[str, Any]) -> float | None:
    """The ``deadline`` attribute of a received message (``MessageAttributeNames`` must name it)."""
    value = ((message.get("MessageAttributes") or {}).get(DEADLINE) or {}).get("StringValue")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def message_bytes(body: str, attributes: dict[str, dict[str, str]] | None = None) -> int:
    """A message's size as SQS counts it against MaximumMessageSize: the body's UTF-8 bytes plus each
    attribute's name, data type and value."""
    size = len(body.encode("utf-8"))
    for name, attr in (attributes or {}).items():
        size += len(name.encode()) + len(attr["DataType"].encode()) + len(str(attr.get("StringValue", "")).encode())
    return size


def request_bytes(key: str) -> int:
    """The most bytes the request for an upload stored as ``key`` can take (longest ETag, a deadline
    attribute), so that the web tier can refuse a name that would not fit before it stores anything."""
    body = Request(new_id(), key, _LONGEST_ETAG, sent_at=time.time()).to_body()
    return message_bytes(body, deadline_attributes(time.time() + 86400.0))


def stem_of(key: str) -> str:
    """``test_00.jpg`` -> ``test_00`` (the out-bucket key and the answer's left side)."""
    name = PurePosixPath(key).name
    return PurePosixPath(name).stem if "." in name.lstrip(".") else name


def _load(body: str, kind: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind} message is not JSON: {body[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{kind} message is not a JSON object: {body[:80]!r}")
    return data


@dataclass(frozen=True)
class Request:
    id: str
    key: str
    etag: str | None = None
    sent_at: float = field(default_factory=time.time)

    def to_body(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_body(cls, body: str) -> "Request":
        data = _load(body, "request")
        if not isinstance(data.get("id"), str) or not data["id"]:
            raise ValueError("request message has no id")
        if not isinstance(data.get("key"), str) or not data["key"]:
            raise ValueError(f"request {data['id']} has no key")
        etag = data.get("etag")
        return cls(id=data["id"], key=data["key"], etag=etag if isinstance(etag, str) else None, sent_at=float(data.get("sent_at") or 0.0))

    @property
    def stem(self) -> str:
        return stem_of(self.key)


@dataclass(frozen=True)
class Response:
    id: str
    key: str
    name: str
    status: str
    error: str | None = None
    worker: str = ""
    receive_count: int = 1
    ms: float = 0.0

    @property
    def stem(self) -> str:
        return stem_of(self.key)

    @property
    def answer(self) -> str:
        """What the web tier sends back: ``<stem>:<name>``."""
        return f"{self.stem}:{self.name}"

    def to_body(self) -> str:
        return json.dumps({**asdict(self), "stem": self.stem})

    @classmethod
    def from_body(cls, body: str) -> "Response":
        data = _load(body, "response")
        if not isinstance(data.get("id"), str) or not data["id"]:
            raise ValueError("response message has no id")
        return cls(
            id=data["id"],
            key=str(data.get("key") or ""),
            name=str(data.get("name") or ""),
            status=str(data.get("status") or ""),
            error=data.get("error") if isinstance(data.get("error"), str) else None,
            worker=str(data.get("worker") or ""),
            receive_count=int(data.get("receive_count") or 1),
            ms=float(data.get("ms") or 0.0),
        )


# ------------------------------------------------------------------------------------------ queues


def queue_url(sqs: Any, name: str) -> str:
    """The URL of queue ``name``; a UserError that says to bootstrap when it does not exist."""
    import botocore.exceptions

    from facerec_cli.infra.aws import error_code
    from facerec_cli.errors import UserError

    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise UserError(f"queue {name} does not exist", hint="run `facerec iaas bootstrap` first, or pass the --prefix/--region it used") from exc
        raise


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(waiting, in flight): ApproximateNumberOfMessages and ...NotVisible, in one GetQueueAttributes."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", 0)), int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))


def queue_depth(sqs: Any, url: str) -> int:
    """Requests waiting or being worked on: ApproximateNumberOfMessages + ...NotVisible."""
    return sum(queue_counts(sqs, url))
