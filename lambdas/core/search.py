"""Where was a person seen: over many results, without the videos.

``find_person``: the videos and time ranges in which a gallery name was recognised (a timeline's row, or
the sampled faces named so). Results that never mention the name are skipped before JSON parsing: the
name must appear in the text, so at 10,000 results the cost is reading the files, not parsing them.

``FaceIndex`` + ``find_face``: every stored face embedding of every result in one float16 matrix;
a query face (``facerec search --photo``) is compared with all of them in chunked float32 matmuls,
and a face counts as the query's person under the open-set rule, as if the photo were enrolled in the
gallery: nearer the photo than the threshold, nearer it than any enrolled person, and standing out from
the enrolled people after it by the rule's margin. numpy only.
"""

from __future__ import annotations

import binascii
import difflib
import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .gallery import Gallery
from .openset import NEIGHBOURS, OpenSetRule, distance_of_cosine, nearest_people
from .face_groups import ranges_of

DIM = 512
_CHUNK = 65536  # index rows converted to float32 at once: bounded memory however many faces


@dataclass
class Sighting:
    """One video in which the person (or the photo's face) was seen."""

    stem: str
    video: str
    ranges: list[list[float]]  # [[start, end], ...] seconds; a point [t, t] for a result without a timeline
    faces: int  # faces counted
    timeline: bool  # ranges from a timeline (continuous) or from a few sampled frames (points)
    distance: float | None = None  # photo search: the nearest face's distance to the photo

    def to_dict(self) -> dict[str, Any]:
        out = {"video": self.video, "stem": self.stem, "ranges": [[round(a, 3), round(b, 3)] for a, b in self.ranges],
               "faces": self.faces, "timeline": self.timeline}  # fmt: skip
        if self.distance is not None:
            out["distance"] = round(self.distance, 4)
        return out


def _points(times: list[tuple[int, float]]) -> list[list[float]]:
    return [[t, t] for t in sorted({t for _, t in times})]


def _same_name(a: Any, b: str) -> bool:
    """Names match without regard to case or Unicode form (``b`` already folded by ``_folded``)."""
    return isinstance(a, str) and _folded(a) == b


def _folded(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _mentions(text: str | bytes, folded: str) -> bool:
    """A cheap test before parsing: the text may hold the name (any case). ASCII names are looked for
    in the lowered bytes; others in the decoded, folded text."""
    needles = {json.dumps(folded, ensure_ascii=False), json.dumps(folded)}
    if isinstance(text, bytes):
        if folded.isascii():
            lowered = text.lower()
            return any(n.encode() in lowered for n in needles)
        text = text.decode("utf-8", "replace")
    folded_text = unicodedata.normalize("NFC", text).casefold()
    return any(n in folded_text for n in needles) or "\\u" in text  # escaped non-ASCII: decide after parsing


def person_in(stem: str, data: dict[str, Any], name: str) -> Sighting | None:
    """Where ``name`` (any case) is in one result (a dict as read from JSON), or None."""
    video = str(data.get("video") or stem)
    timeline = data.get("timeline")
    folded = _folded(name)
    if isinstance(timeline, dict):
        for row in timeline.get("people", []):
            if _same_name(row.get("person"), folded):
                return Sighting(stem, video, [[float(a), float(b)] for a, b in row["ranges"]], int(row.get("detections", 0)), True)
        return None
    seen = [(int(f.get("frame", 0)), float(f.get("t", 0.0))) for f in data.get("faces", []) if _same_name(f.get("name"), folded)]
    return Sighting(stem, video, _points(seen), len(seen), False) if seen else None


def find_person(items: Iterable[tuple[str, str | bytes]], name: str) -> tuple[list[Sighting], int]:
    """(sightings in the order given, results looked at) over ``(stem, JSON text)`` pairs; names match
    without regard to case."""
    found, count = [], 0
    folded = _folded(name)
    for stem, text in items:
        count += 1
        if not _mentions(text, folded):
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        hit = person_in(stem, data, name) if isinstance(data, dict) else None
        if hit:
            found.append(hit)
    return found, count


def close_names(items: Iterable[tuple[str, str | bytes]], name: str, n: int = 3) -> list[str]:
    """The names results give people (strangers aside) that are closest to ``name``: what to suggest
    when a search finds nobody. Parses every result: only for a miss."""
    from .names import is_stranger

    names: set[str] = set()
    for _, text in items:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        rows = (data.get("timeline") or {}).get("people", []) if isinstance(data.get("timeline"), dict) else []
        names.update(r.get("person") for r in rows if isinstance(r.get("person"), str))
        names.update(f.get("name") for f in data.get("faces", []) if isinstance(f.get("name"), str))
    names = {m for m in names if m and not is_stranger(m)}
    by_folded = {_folded(m): m for m in sorted(names)}
    return [by_folded[m] for m in difflib.get_close_matches(_folded(name), list(by_folded), n=n, cutoff=0.6)]


@dataclass
class FaceIndex:
    """Every stored face embedding of a set of results."""

    embeddings: np.ndarray  # N x 512 float16, unit rows before rounding
    owner: np.ndarray  # N int32: index into ``results``
    frame: np.ndarray  # N int32
    t: np.ndarray  # N float64
    results: list[tuple[str, str, bool, str | None]] = field(default_factory=list)  # (stem, video, timeline, model)
    skipped: int = 0  # results with faces but no stored embeddings (written before they were stored)
    unreadable: int = 0
    looked: int = 0  # results read, with faces or not

    @classmethod
    def build(cls, items: Iterable[tuple[str, str | bytes | dict[str, Any]]]) -> "FaceIndex":
        """From ``(stem, JSON text or parsed dict)`` pairs."""
        texts: list[bytes] = []
        owner: list[int] = []
        frames: list[int] = []
        times: list[float] = []
        results: list[tuple[str, str, bool, str | None]] = []
        skipped = unreadable = looked = 0
        for stem, item in items:
            looked += 1
            try:
                data = item if isinstance(item, dict) else json.loads(item)
                faces = data.get("faces") or []
            except (ValueError, AttributeError):
                unreadable += 1
                continue
            if not faces:
                continue
            if not all(f.get("embedding") for f in faces):
                skipped += 1
                continue
            k = len(results)
            results.append((stem, str(data.get("video") or stem), isinstance(data.get("timeline"), dict), data.get("model")))
            for f in faces:
                texts.append(binascii.a2b_base64(f["embedding"]))
                owner.append(k)
                frames.append(int(f.get("frame", 0)))
                times.append(float(f.get("t", 0.0)))
        raw = b"".join(texts)
        if len(raw) != len(texts) * DIM * 2:
            raise ValueError("a stored embedding is not 512 float16 values")
        embeddings = np.frombuffer(raw, dtype="<f2").reshape(-1, DIM)
        return cls(embeddings, np.asarray(owner, np.int32), np.asarray(frames, np.int32), np.asarray(times, np.float64),
                   results, skipped, unreadable, looked)  # fmt: skip

    def __len__(self) -> int:
        return len(self.owner)

    def models(self) -> dict[str | None, int]:
        """Results per model (weights id) in the index."""
        counts: dict[str | None, int] = {}
        for *_, model in self.results:
            counts[model] = counts.get(model, 0) + 1
        return counts

    def distances(self, query: np.ndarray) -> np.ndarray:
        """Euclidean distance of every face to the unit ``query`` (float32, in chunks)."""
        q = np.asarray(query, np.float32).reshape(DIM)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        cos = np.empty(len(self), np.float32)
        for start in range(0, len(self), _CHUNK):
            cos[start : start + _CHUNK] = self.embeddings[start : start + _CHUNK].astype(np.float32) @ q
        return distance_of_cosine(cos)


def photo_rule(gallery: Gallery | None, threshold: float | None = None) -> OpenSetRule:
    """The gallery's open-set rule (its threshold overridden by ``threshold``); without a gallery, the
    default threshold alone."""
    return gallery.rule(threshold) if gallery is not None else OpenSetRule() if threshold is None else OpenSetRule(threshold)


def find_face(index: FaceIndex, query: np.ndarray, gallery: Gallery | None = None, *, threshold: float | None = None,
              model: str | None = None) -> list[Sighting]:  # fmt: skip
    """The videos in which the query face appears, nearest first (module docstring: the rule). ``model``:
    only results of these weights (embeddings of other weights are not comparable)."""
    if not len(index):
        return []
    rule = photo_rule(gallery, threshold)
    d = index.distances(query)
    hit = d <= rule.threshold
    if model is not None:
        same = np.array([m in (None, model) for *_, m in index.results], bool)
        hit &= same[index.owner]
    rows = np.flatnonzero(hit)
    if gallery is not None and len(gallery.people) and len(rows):
        # The photo as one more enrolled person: the face must be nearer it than anyone enrolled, and stand out.
        cand = index.embeddings[rows].astype(np.float32)
        cand /= np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), 1e-12)
        _, cos = nearest_people(cand @ gallery.centroids.T, NEIGHBOURS)
        g = distance_of_cosine(cos)
        ok = [rule.reason(float(d[r]), float(g[i].mean()), float(g[i, 0])) is None and d[r] < g[i, 0] for i, r in enumerate(rows)]
        rows = rows[np.asarray(ok, bool)]
    by_result: dict[int, list[int]] = {}
    for r in rows.tolist():
        by_result.setdefault(int(index.owner[r]), []).append(r)
    out = []
    for k, members in by_result.items():
        stem, video, timeline, _ = index.results[k]
        times = [(int(index.frame[r]), float(index.t[r])) for r in members]
        ranges = ranges_of(sorted(set(times))) if timeline else _points(times)
        out.append(Sighting(stem, video, ranges, len(members), timeline, float(d[members].min())))
    out.sort(key=lambda s: (s.distance, s.stem))
    return out

