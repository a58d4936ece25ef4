"""Faces to people: the rows of a timeline from the faces a scan observed (``timeline.py`` samples and
scans; this module groups), and the result they make.

Observations to rows (:func:`build_timeline`), on the observations alone (sorted), so that a timeline
merged from segments is the one a single pass gives:

1. a face the gallery names (within its threshold) belongs to that person;
2. every other face, in time order, joins the group (a named person's faces, or strangers grouped so
   far) whose centroid is nearest, if nearer than ``JOIN_DISTANCE`` and the group has no face in the
   same frame (two faces in one frame are two people); otherwise it starts a new group;
3. groups whose centroids are nearer than ``MERGE_DISTANCE`` and never share a frame are merged, the
   closest pair first (a stranger seen in two shots; a named person's profile views the gallery missed);
4. each group's sightings become time ranges, merged across gaps of up to ``MERGE_GAP_SAMPLES``
   sampling intervals; strangers are numbered ``unknown-1``, ``unknown-2``... by first appearance.

The distances were measured on the test data (``../shared/data``), unit embeddings of this project's
recipe, faces tracked frame to frame at 10-12.5 fps for ground truth:

- same person within a shot, face to the centroid of its own track: at most 0.87 on the crowd clip
  (10 tracks) and 0.59 on the Hamilton clip, except one track where Lacamoire turns from profile to
  three-quarter view (1.02);
- different people: centroid to centroid at least 0.99 (Hamilton), 1.10 (crowd); a face to another
  person's centroid at least 0.93; the six faces of the Friends photo at least 1.09 apart.

``JOIN_DISTANCE`` 0.85 sits under the 0.93 that separates a face from another person's centroid, and
``MERGE_DISTANCE`` 0.95 under the 0.99 between two people's centroids; the cannot-link rule (step 2/3)
keeps people who are on screen together apart whatever their distance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .openset import AMBIGUOUS, BEYOND_THRESHOLD, UNSUPPORTED
from .results import UNKNOWN, Appearance, Face, Result, Timeline, View, main_identity, pack_embedding, unpack_embedding

MERGE_GAP_SAMPLES = 2  # a person's sightings merge into one range across gaps of up to two intervals
JOIN_DISTANCE = 0.85
MERGE_DISTANCE = 0.95
CLEAR_PROB = 0.95  # an unknown person's best view: the largest face at least this sure


# ---------------------------------------------------------------------------------- observations


@dataclass
class Observation:
    """One face in one sampled frame, as the recogniser saw it."""

    frame: int  # grid number: t of the sample = frame / fps
    t: float  # the decoded frame's own time
    box: list[float]
    prob: float
    name: str  # a gallery name, or UNKNOWN beyond the threshold
    distance: float
    nearest: str
    embedding: np.ndarray  # 512 float16, unit length before rounding
    reason: str | None = None  # why the face is unknown (as Face.reason): a re-answer must keep untrusted faces unknown
    group: str | None = None  # the stranger label the face kept from before a re-answer (Face.group)

    def face(self) -> Face:
        return Face(frame=self.frame, t=self.t, box=list(self.box), prob=self.prob, name=self.name, distance=self.distance,
                    reason=self.reason, embedding=pack_embedding(self.embedding), group=self.group)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self) -> dict[str, Any]:
        """Exact: floats as JSON writes them (they read back bit for bit), the embedding's bytes."""
        data = {
            "frame": self.frame, "t": self.t, "box": list(self.box), "prob": self.prob, "name": self.name,
            "distance": self.distance, "nearest": self.nearest,
            "e": pack_embedding(self.embedding),
        }  # fmt: skip
        if self.reason is not None:
            data["reason"] = self.reason
        if self.group is not None:
            data["group"] = self.group
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Observation":
        embedding = unpack_embedding(data["e"]).astype(np.float16)  # float16 -> float32 -> float16: exact
        return cls(
            frame=int(data["frame"]), t=float(data["t"]), box=[float(v) for v in data["box"]], prob=float(data["prob"]),
            name=str(data["name"]), distance=float(data["distance"]), nearest=str(data["nearest"]), embedding=embedding,
            reason=data.get("reason"), group=data.get("group"),
        )  # fmt: skip


# -------------------------------------------------------------------------------------- grouping


@dataclass
class _Group:
    name: str | None  # the gallery name, None for strangers
    members: list[int] = field(default_factory=list)
    frames: set[int] = field(default_factory=set)
    total: np.ndarray = field(default_factory=lambda: np.zeros(512, np.float64))

    def add(self, i: int, frame: int, embedding: np.ndarray) -> None:
        self.members.append(i)
        self.frames.add(frame)
        self.total += embedding

    def absorb(self, other: "_Group") -> None:
        self.members += other.members
        self.frames |= other.frames
        self.total += other.total

    @property
    def centroid(self) -> np.ndarray:
        norm = np.linalg.norm(self.total)
        return (self.total / norm if norm else self.total).astype(np.float32)


def _canonical(observations: Iterable[Observation]) -> list[Observation]:
    """One order whatever the order of arrival (segments finish in any order)."""
    return sorted(observations, key=lambda o: (o.frame, o.box[0], o.box[1], o.box[2], o.box[3], o.name))


def group_faces(observations: list[Observation]) -> list[_Group]:
    """Steps 1-3 of the module's rule: groups of observation indices (into ``observations``, which must
    be in canonical order), named groups first."""
    if not observations:
        return []
    emb = np.stack([o.embedding.astype(np.float32) for o in observations])
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    named: dict[str, _Group] = {}
    for i, o in enumerate(observations):
        if o.name != UNKNOWN:
            named.setdefault(o.name, _Group(o.name)).add(i, o.frame, emb[i])
    groups: list[_Group] = [named[n] for n in sorted(named)]
    # Centroids as rows of one matrix (grown by doubling): each face is one matrix-vector product.
    centroids = np.zeros((max(16, 2 * len(groups)), 512), np.float32)
    for j, g in enumerate(groups):
        centroids[j] = g.centroid
    for i, o in enumerate(observations):
        if o.name != UNKNOWN:
            continue
        chosen = None
        if groups:
            distances = np.sqrt(np.clip(2.0 - 2.0 * (centroids[: len(groups)] @ emb[i]), 0.0, None))
            for j in np.argsort(distances, kind="stable"):
                if distances[j] >= JOIN_DISTANCE:
                    break
                if o.frame not in groups[j].frames:
                    chosen = int(j)
                    break
        if chosen is None:
            groups.append(_Group(None))
            chosen = len(groups) - 1
            if chosen >= len(centroids):
                centroids = np.concatenate([centroids, np.zeros_like(centroids)])
        groups[chosen].add(i, o.frame, emb[i])
        centroids[chosen] = groups[chosen].centroid
    # Step 3: merge the closest pair (at least one of them strangers) while one is under MERGE_DISTANCE.
    while len(groups) > 1:
        matrix = np.stack([g.centroid for g in groups])
        dist = np.sqrt(np.clip(2.0 - 2.0 * (matrix @ matrix.T), 0.0, None))  # unit centroids: |a-b|^2 = 2 - 2 a.b
        close = np.argwhere(np.triu(dist < MERGE_DISTANCE, 1))
        best: tuple[float, int, int] | None = None
        for a, b in sorted(close.tolist(), key=lambda ab: (float(dist[ab[0], ab[1]]), ab[0], ab[1])):
            if groups[a].name is not None and groups[b].name is not None:
                continue  # two enrolled people stay two people
            if groups[a].frames & groups[b].frames:
                continue  # on screen together: two people
            best = (float(dist[a, b]), a, b)
            break
        if best is None:
            break
        _, a, b = best
        keep, gone = (a, b) if groups[a].name is not None or groups[b].name is None else (b, a)
        groups[keep].absorb(groups[gone])
        del groups[gone]
    return groups


def ranges_of(frames: list[tuple[int, float]], gap: int = MERGE_GAP_SAMPLES) -> list[list[float]]:
    """``[[start, end], ...]`` from sightings ``(grid frame, time)``: one range per run of frames with
    gaps of at most ``gap`` grid steps between consecutive sightings."""
    ranges: list[list[float]] = []
    last = None
    for frame, t in sorted(frames):
        if last is not None and frame - last <= gap:
            ranges[-1][1] = t
        elif last is None or frame != last:
            ranges.append([t, t])
        last = frame
    return ranges


def _view(o: Observation) -> View:
    return View(frame=o.frame, t=o.t, box=list(o.box), prob=o.prob, distance=o.distance)


# A group keeps the name its faces were matched to only when at least this share of its faces (those
# whose embedding is trusted) matched it. On the Hamilton clip a named person's groups have 1 of 2 (a
# three-quarter view beyond the threshold) to 10 of 11 faces matched; the crowd clip's pedestrian that
# one gallery (5celeb plus an LFW person) matched at 1.026 had 1 of 7, and named the whole video.
SUPPORT = 1 / 3
_TRUSTED_REASONS = (None, BEYOND_THRESHOLD, AMBIGUOUS)  # a quality problem (too small, blurred, profile) neither supports nor denies


def supported_names(observations: list[Observation]) -> list[str]:
    """Drop the names that their own group does not support (``SUPPORT``): those faces become unknown
    (reason ``unsupported``) and the group a stranger. Changes ``observations`` in place; returns the
    names dropped. Run before :func:`build_timeline` wherever a timeline is made, so it sees one rule."""
    obs = _canonical(observations)
    dropped = []
    for group in group_faces(obs):
        if group.name is None:
            continue
        members = [obs[i] for i in group.members]
        named = [o for o in members if o.name == group.name]
        trusted = sum(o.reason in _TRUSTED_REASONS for o in members)
        if len(named) < SUPPORT * trusted:
            dropped.append(group.name)
            for o in named:
                o.name, o.reason = UNKNOWN, UNSUPPORTED
    return dropped


def labelled_groups(observations: Iterable[Observation]) -> list[tuple[str, bool, list[Observation]]]:
    """Steps 1-3 and the numbering of step 4: ``(person or unknown-N, known, its observations)`` by first
    appearance. ``facerec people`` labels strangers by these names, so they must be the timeline's."""
    obs = _canonical(observations)
    found = []
    for group in group_faces(obs):
        members = [obs[i] for i in group.members]
        found.append((group.name, members, min(o.frame for o in members)))
    found.sort(key=lambda g: (g[2], g[0] is None, g[0] or UNKNOWN))
    # A stranger whose faces kept a label from before a re-answer (Observation.group) keeps it: the
    # label most of its faces carry, if no earlier group took it. Others take the next number after
    # every label ever given (never a number that named someone else); none kept: 1, 2... by appearance.
    n = max((_stranger_number(o.group) for o in obs), default=0)
    out, taken = [], set()
    for name, members, _ in found:
        label = name
        if name is None:
            kept = Counter(o.group for o in members if o.group and o.group not in taken).most_common(1)
            if kept:
                label = kept[0][0]
            else:
                n += 1
                label = f"{UNKNOWN}-{n}"
            taken.add(label)
        out.append((label, name is not None, members))
    return out


def _stranger_number(label: str | None) -> int:
    head, _, number = (label or "").rpartition("-")
    return int(number) if head == UNKNOWN and number.isdigit() else 0


def build_timeline(observations: Iterable[Observation], fps: float, duration: float | None, segments: int = 1) -> Timeline:
    """The rows of the timeline (module docstring, steps 1-4): named people and ``unknown-N`` strangers,
    ordered by first appearance."""
    rows = []
    for person, known, members in labelled_groups(observations):
        # One sighting per frame and person: a person counted twice in a frame is still one sighting.
        sightings = sorted({(o.frame, o.t) for o in members})
        closest = min(members, key=lambda o: (o.distance, o.frame))
        if known:
            named = [o for o in members if o.name == person]
            best = min(named, key=lambda o: (o.distance, o.frame))
        else:
            clear = [o for o in members if o.prob >= CLEAR_PROB] or members
            best = max(clear, key=lambda o: (o.area, -o.frame))
        rows.append(Appearance(
            person=person, known=known, ranges=ranges_of(sightings),
            detections=len(members), best_distance=closest.distance, nearest=closest.nearest, best=_view(best),
        ))  # fmt: skip
    return Timeline(fps=fps, duration=duration, people=rows, segments=segments)


def timeline_result(
    video: str, observations: list[Observation], *, frames: int, model: str | None, fps: float, duration: float | None,
    segments: int = 1, timings_ms: dict[str, float] | None = None,
) -> Result:
    """The result of a video with a timeline: every face, the main identity (the course's answer, as
    without a timeline), and the rows."""
    obs = _canonical(observations)
    supported_names(obs)
    faces = [o.face() for o in obs]
    status, name = main_identity(faces)
    return Result(
        video=video, status=status, name=name, faces=faces, model=model, frames=frames, timings_ms=dict(timings_ms or {}),
        timeline=build_timeline(obs, fps, duration, segments),
    )  # fmt: skip
