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
    # Why the face is unknown: beyond_threshold, ambiguous (two enrolled people about as near),
    # unsupported (a timeline's group of faces of one person where this one alone matched),
    # too_small, blurred, profile (not to be trusted); None when named.
    reason: str | None = None
    # The face's unit embedding as base64 of 512 little-endian float16 (1368 characters): what re-answering
    # a result against an edited gallery and `facerec search` need without the video. None in results
    # written before it was stored (absent from their JSON).
    embedding: str | None = None
    # The stranger label (unknown-N) the face's group was given once a result was re-answered: a
    # stranger keeps its number however the groups change (people.reanswer). None until then (absent
    # from the JSON): the groups are numbered by first appearance.
    group: str | None = None

    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass
class View:
    """One sighting of a face: the frame (its index in the sampling grid), its time and box."""

    frame: int
    t: float
    box: list[float]
    prob: float
    distance: float  # to the nearest enrolled person


@dataclass
class Appearance:
    """A timeline row: one person (a gallery name, or ``unknown-N`` for a stranger grouped across
    frames by embedding) and the time ranges in which they are on screen."""

    person: str
    known: bool
    ranges: list[list[float]]  # [[start, end], ...] in seconds: first and last sighting of each stretch
    detections: int  # faces counted for this person
    best_distance: float  # the smallest distance to the gallery among them
    nearest: str  # the enrolled person that smallest distance is to (the person itself when known)
    best: View  # the best view: the smallest distance (known), the largest clear face (unknown)
    image: str | None = None  # where a crop of the best view was stored (output-bucket key or file name)

    @property
    def first(self) -> float:
        return self.ranges[0][0]

    @property
    def last(self) -> float:
        return self.ranges[-1][1]

    @property
    def seconds(self) -> float:
        """Time on screen: the ranges' lengths added up."""
        return sum(end - start for start, end in self.ranges)

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person, "known": self.known,
            "ranges": [[round(a, 3), round(b, 3)] for a, b in self.ranges],
            "first": round(self.first, 3), "last": round(self.last, 3), "detections": self.detections,
            "best_distance": round(self.best_distance, 4), "nearest": self.nearest,
            "best": {"frame": self.best.frame, "t": round(self.best.t, 3), "box": [round(v, 1) for v in self.best.box],
                     "prob": round(self.best.prob, 4), "distance": round(self.best.distance, 4)},
            "image": self.image,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Appearance":
        return cls(
            person=data["person"], known=bool(data.get("known")), ranges=[[float(a), float(b)] for a, b in data["ranges"]],
            detections=int(data.get("detections", 0)), best_distance=float(data.get("best_distance", 0.0)),
            nearest=str(data.get("nearest", "")), best=View(**data["best"]), image=data.get("image"),
        )  # fmt: skip


@dataclass
class Timeline:
    """Who is on screen, and when (``facerec identify --timeline``, ``FACEREC_TIMELINE=1``): frames
    sampled every 1/``fps`` seconds over ``duration``, recognised in ``segments`` parts."""

    fps: float
    duration: float | None
    people: list[Appearance] = field(default_factory=list)
    segments: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "fps": self.fps, "duration": None if self.duration is None else round(self.duration, 3),
            "segments": self.segments, "people": [p.to_dict() for p in self.people],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Timeline":
        return cls(
            fps=float(data["fps"]), duration=None if data.get("duration") is None else float(data["duration"]),
            people=[Appearance.from_dict(p) for p in data.get("people", [])], segments=int(data.get("segments", 1)),
        )  # fmt: skip


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
    # Only with a timeline (FACEREC_TIMELINE=1 / identify --timeline); absent from the JSON otherwise, so
    # results without one read and write as before.
    timeline: Timeline | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.timeline is None:
            del data["timeline"]
        else:
            data["timeline"] = self.timeline.to_dict()
        data["timings_ms"] = {k: round(v, 1) for k, v in self.timings_ms.items()}
        for face in data["faces"]:
            if face["embedding"] is None:
                del face["embedding"]  # as results without embeddings were written
            if face["group"] is None:
                del face["group"]
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
        timeline = data.get("timeline")
        return cls(
            faces=faces,
            frames=int(data.get("frames", 0)),
            timings_ms=dict(data.get("timings_ms", {})),
            timeline=Timeline.from_dict(timeline) if isinstance(timeline, dict) else None,
            **known,  # type: ignore[arg-type]
        )


def pack_embedding(vector: Any) -> str:
    """A unit embedding as a face's ``embedding`` text (float16: half the bytes, distances move < 1e-3)."""
    import base64

    import numpy as np

    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f2").tobytes()).decode("ascii")


def unpack_embedding(text: str) -> Any:
    """The float32 vector of a face's ``embedding`` text."""
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)


def error_result(video: str, message: str, **timings: float) -> Result:
    return Result(video=video, status=ERROR, name=ERROR, error=message, timings_ms=dict(timings))


def frame_votes(faces: list[Face]) -> dict[str, set[int]]:
    """Each name's votes: the frames it was named in (a face within the threshold votes once per frame)."""
    votes: dict[str, set[int]] = {}
    for face in faces:
        if face.name != UNKNOWN:
            votes.setdefault(face.name, set()).add(face.frame)
    return votes


def answer_decided(faces: list[Face], remaining: int) -> bool:
    """Whether :func:`main_identity` gives the same name whatever ``remaining`` more frames show: its
    leader was seen in more frames than any other name (or one not seen yet) could reach."""
    counts = sorted((len(frames) for frames in frame_votes(faces).values()), reverse=True)
    if not counts:
        return False
    runner_up = counts[1] if len(counts) > 1 else 0
    return counts[0] > runner_up + remaining


def main_identity(faces: list[Face]) -> tuple[str, str]:
    """The person the video is about, and the status.

    Rule: every face within the threshold votes for its name, at most once per frame, so the person
    seen in the most sampled frames wins; ties go to the larger total face area (the person nearer the
    camera), then to the smaller best distance. ``unknown`` when faces were found but none matched;
    ``no_face`` when no face was found.
    """
    if not faces:
        return NO_FACE, NO_FACE
    votes = frame_votes(faces)
    area: dict[str, float] = {}
    best: dict[str, float] = {}
    for face in faces:
        if face.name == UNKNOWN:
            continue
        area[face.name] = area.get(face.name, 0.0) + face.area()
        best[face.name] = min(best.get(face.name, float("inf")), face.distance)
    if not votes:
        return UNKNOWN, UNKNOWN
    name = max(votes, key=lambda n: (len(votes[n]), area[n], -best[n]))
    return OK, name
