"""S3 event records and the payload video-splitting sends to face-recognition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

RESULT_PREFIX_SKIP = ".facerec/"  # bucket keys under this prefix are facerec's own (gallery), not results


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str  # URL-decoded: spaces, '+' and unicode as the user wrote them
    etag: str
    size: int
    event_id: str  # the same for a redelivered event, new for a new upload of the same key

    @property
    def stem(self) -> str:
        """The key without its suffix: ``clips/test_00.mp4`` -> ``clips/test_00``."""
        path = PurePosixPath(self.key)
        return str(path.with_suffix("")) if path.suffix else self.key

    @property
    def video(self) -> str:
        return PurePosixPath(self.key).name


def uploads(event: dict[str, Any]) -> list[Upload]:
    """The ObjectCreated records of an S3 notification (one or many)."""
    found = []
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        obj = s3["object"]
        if str(obj.get("key", "")).endswith("/"):  # a console "folder": the trigger has no suffix filter to skip it
            continue
        etag = str(obj.get("eTag", "")).strip('"')
        # S3 gives each PUT of a key a sequencer; a redelivered event repeats it. moto sends none, so
        # fall back to the event time, which a redelivery also repeats.
        event_id = f"{etag}:{obj.get('sequencer') or record.get('eventTime', '')}"
        found.append(Upload(s3["bucket"]["name"], unquote_plus(obj["key"]), etag, int(obj.get("size", 0)), event_id))
    return found


@dataclass
class FrameRef:
    key: str
    t: float


@dataclass
class RecognitionRequest:
    """What video-splitting sends to face-recognition (InvocationType=Event, well under 256 KB)."""

    stage1_bucket: str
    stem: str
    video: str
    frames: list[FrameRef]
    source: dict[str, Any]  # bucket, key, etag, size, event_id
    timings_ms: dict[str, float] = field(default_factory=dict)
    sent_at: float | None = None  # epoch seconds of the Invoke: the hand-over is timed from it
    # Times (s) of the samples after ``frames``, not stored: face-recognition decodes them from the
    # upload itself, and only when the frames before do not settle the answer.
    samples: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecognitionRequest":
        return cls(
            stage1_bucket=data["stage1_bucket"],
            stem=data["stem"],
            video=data["video"],
            frames=[FrameRef(**f) for f in data["frames"]],
            source=dict(data.get("source", {})),
            timings_ms=dict(data.get("timings_ms", {})),
            sent_at=data.get("sent_at"),
            samples=[float(t) for t in data.get("samples", [])],
        )


def result_keys(stem: str) -> tuple[str, str]:
    return f"{stem}.json", f"{stem}.txt"
