"""The result contract (DESIGN.md section 3): one JSON object per video, written as ``<stem>.json``
(``<stem>.txt`` holds ``name`` alone) and printed by ``--json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"
UNKNOWN = "unknown"
NO_FACE = "no_face"
ERROR = "error"
STATUSES = (OK, UNKNOWN, NO_FACE, ERROR)


@dataclass
class Face:
    frame: int
    t: float
    box: list[float]
    prob: float
    name: str
    distance: float

    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass
class Result:
    video: str
    status: str
    name: str
    faces: list[Face] = field(default_factory=list)
    model: str | None = None
    frames: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timings_ms"] = {k: round(v, 1) for k, v in self.timings_ms.items()}
        for face in data["faces"]:
            face["box"] = [round(v, 1) for v in face["box"]]
            face["prob"] = round(face["prob"], 4)
            face["distance"] = round(face["distance"], 4)
            face["t"] = round(face["t"], 3)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @property
    def names(self) -> list[str]:
        """Distinct names recognised, in order of first appearance (unknown faces excluded)."""
        seen: dict[str, None] = {}
        for face in self.faces:
            if face.name != UNKNOWN:
                seen.setdefault(face.name, None)
        return list(seen)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        faces = [Face(**f) for f in data.get("faces", [])]
        known = {k: data.get(k) for k in ("video", "status", "name", "model", "error")}
        return cls(
            faces=faces,
            frames=int(data.get("frames", 0)),
            timings_ms=dict(data.get("timings_ms", {})),
            **known,  # type: ignore[arg-type]
        )


def error_result(video: str, message: str, **timings: float) -> Result:
    return Result(video=video, status=ERROR, name=ERROR, error=message, timings_ms=dict(timings))


def main_identity(faces: list[Face]) -> tuple[str, str]:
    """The person the video is about, and the status.

    Rule: every face within the threshold votes for its name, at most once per frame, so the person
    seen in the most sampled frames wins; ties go to the larger total face area (the person nearer the
    camera), then to the smaller best distance. ``unknown`` when faces were found but none matched;
    ``no_face`` when no face was found.
    """
    if not faces:
        return NO_FACE, NO_FACE
    votes: dict[str, set[int]] = {}
    area: dict[str, float] = {}
    best: dict[str, float] = {}
    for face in faces:
        if face.name == UNKNOWN:
            continue
        votes.setdefault(face.name, set()).add(face.frame)
        area[face.name] = area.get(face.name, 0.0) + face.area()
        best[face.name] = min(best.get(face.name, float("inf")), face.distance)
    if not votes:
        return UNKNOWN, UNKNOWN
    name = max(votes, key=lambda n: (len(votes[n]), area[n], -best[n]))
    return OK, name
