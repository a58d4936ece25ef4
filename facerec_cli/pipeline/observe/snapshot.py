"""What one refresh of `facerec watch` saw: each video's state (``uploaded``, ``split``, ``finished``,
``failed``), the latest failures and log errors, and its JSON form. Read by :mod:`.dashboard`, drawn
by :mod:`.dashboard_view`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

UPLOADED, SPLIT, FINISHED, FAILED = "uploaded", "split", "finished", "failed"
IN_FLIGHT = (UPLOADED, SPLIT)


@dataclass
class VideoState:
    stem: str
    video: str
    state: str
    uploaded_at: datetime | None = None
    answered_at: datetime | None = None
    latency_s: float | None = None  # answered - uploaded; for a video in flight, its age so far
    error: str | None = None
    segments: tuple[int, int] | None = None  # a timeline's segments (done, planned), while in flight

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"video": self.video, "stem": self.stem, "state": self.state}
        if self.segments is not None:
            data["segments"] = {"done": self.segments[0], "total": self.segments[1]}
        if self.latency_s is not None:
            data["age_s" if self.state in IN_FLIGHT else "latency_s"] = round(self.latency_s, 3)
        if self.error:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class LogError:
    timestamp: int  # ms since the epoch
    function: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": _iso(datetime.fromtimestamp(self.timestamp / 1000, timezone.utc)), "function": self.function, "message": self.message}


@dataclass
class PipelineSnapshot:
    """What one refresh saw. ``videos``: one state per video, by stem."""

    taken_at: datetime
    prefix: str
    buckets: dict[str, int]
    videos: dict[str, VideoState] = field(default_factory=dict)
    failures: list[VideoState] = field(default_factory=list)  # the latest failed videos, newest first
    errors: list[LogError] = field(default_factory=list)  # the latest error lines in the logs, oldest first
    notes: list[str] = field(default_factory=list)  # what could not be read (a log group missing or denied)
    sections: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # extension point (IaaS)

    def count(self, *states: str) -> int:
        return sum(v.state in states for v in self.videos.values())

    @property
    def in_flight(self) -> list[VideoState]:
        """Videos uploaded but not answered, oldest first."""
        waiting = [v for v in self.videos.values() if v.state in IN_FLIGHT]
        return sorted(waiting, key=lambda v: (v.uploaded_at or self.taken_at, v.stem))

    @property
    def idle(self) -> bool:
        return not any(v.state in IN_FLIGHT for v in self.videos.values())

    @property
    def latencies(self) -> list[float]:
        return sorted(v.latency_s for v in self.videos.values() if v.state in (FINISHED, FAILED) and v.latency_s is not None)

    def latency(self) -> dict[str, float | int | None]:
        values = self.latencies
        return {
            "n": len(values),
            "p50": _round(percentile(values, 50)),
            "p95": _round(percentile(values, 95)),
            "max": _round(values[-1] if values else None),
        }

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "time": _iso(self.taken_at),
            "prefix": self.prefix,
            "buckets": dict(self.buckets),
            "videos": len(self.videos),
            "in_flight": self.count(*IN_FLIGHT),
            "uploaded": self.count(UPLOADED),
            "split": self.count(SPLIT),
            "finished": self.count(FINISHED),
            "failed": self.count(FAILED),
            "idle": self.idle,
            "latency_s": self.latency(),
            "in_flight_videos": [v.to_dict() for v in self.in_flight],
            "failures": [v.to_dict() for v in self.failures],
            "errors": [e.to_dict() for e in self.errors],
        }
        if self.notes:
            data["notes"] = list(self.notes)
        running = [v.segments for v in self.in_flight if v.segments is not None]
        if running:  # timelines: segment invocations planned and not finished yet
            data["segments_in_flight"] = sum(total - done for done, total in running)
        if self.sections:
            data["sections"] = {name: dict(values) for name, values in self.sections.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
