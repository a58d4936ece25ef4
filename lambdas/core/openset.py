"""Open-set decisions: when the nearest enrolled person is really that person, and when the face is a
stranger who merely lies nearest to somebody.

The rule (``OpenSetRule``) has two parts, both on Euclidean distances between unit embeddings and person
centroids: the nearest person must lie within ``threshold`` (``d1 <= threshold``), and stand out from
the people after them by ``margin``: ``mean(d2 .. d6) - d1 >= margin``, the next ``NEIGHBOURS`` people's
mean distance. The second part is what keeps strangers out of a large gallery: a stranger's nearest
centroid comes closer as people are enrolled (the nearest of many chance look-alikes), but the next few
are about as near, while an enrolled person's own centroid stands out from everyone else. Measured on
158 enrolled people (benchmarks/openset.py), the gap to the next five's mean separated known faces from
strangers better than the gap to the second alone (95-96% balanced at best against 94-95%), and
either far better than any threshold (91%).

``calibrate`` chooses both numbers for one gallery from its own photos, at enrol time: every photo of a
person with two or more photos is a *known probe* against that person's centroid made without it
(leave one out), and a *stranger probe* against the gallery without that person (leave one person
out), which is exactly a stranger facing a gallery of this size; so is the photo of a person enrolled
from one photo (a stranger probe only: nothing to match it against). The rule kept is the one that names
the most known probes while naming at most ``STRANGER_BUDGET`` of the stranger probes; its threshold is
never looser than ``DEFAULT_THRESHOLD``, which was chosen against real unenrolled faces (crowd, Friends).
numpy only: it runs in the recognition functions' image too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Without a calibration (a gallery of a few people, or made before calibration existed).
DEFAULT_THRESHOLD = 1.07
DEFAULT_MARGIN = 0.0
# The margin compares the nearest person with the mean of the next NEIGHBOURS (fewer if fewer enrolled).
NEIGHBOURS = 5
# And whatever the margin, a face this close to being as near two people is ambiguous: the mean of the
# next five can hide one look-alike in a small gallery. On the benchmark it cost no known face.
SECOND_GAP = 0.05
# A gallery needs this many people with two or more photos to calibrate: fewer give too few strangers.
MIN_CALIBRATION_PEOPLE = 5
# The share of stranger probes the calibrated rule may name (on the gallery's own photos). 1% kept
# strangers out best but named 91-95% of known faces on the benchmark; 3% named 92-97% of known faces
# and kept out 94-98% of strangers: the better balance for the same embedder.
STRANGER_BUDGET = 0.03
# Calibration looks at this many photos at most (chosen evenly over people): at 100k people the
# distances to every centroid cost ~50 ms per 100 probes.
MAX_PROBES = 3000
MAX_PROBES_PER_PERSON = 5
# How far inside the rule a face's distances must lie for its answer to be *settled*: final, whatever
# more evidence could add (its mirror image, more frames, a finer detection). The mirror average moves a
# distance by at most 0.037 on 5celeb val and Friends (33 faces), a quarter of this room.
SETTLED_MARGIN = 0.15
_THRESHOLDS = np.round(np.arange(0.70, DEFAULT_THRESHOLD + 1e-9, 0.005), 3)
_MARGINS = np.round(np.arange(0.0, 0.401, 0.005), 3)

# Why a face was not given a name (the ``reason`` of an unknown face in results).
BEYOND_THRESHOLD = "beyond_threshold"  # nobody enrolled is near enough
AMBIGUOUS = "ambiguous"  # the nearest person does not stand out from the next: a look-alike, not a match
UNSUPPORTED = "unsupported"  # matched alone: the other faces of its person on screen (its timeline group) do not match


@dataclass(frozen=True)
class OpenSetRule:
    threshold: float = DEFAULT_THRESHOLD
    margin: float = DEFAULT_MARGIN

    def reason(self, d1: float, next_mean: float | None, d2: float | None = None) -> str | None:
        """None when the nearest person (at ``d1``) is accepted; else why not. ``next_mean``: the mean
        distance of the next NEIGHBOURS people, ``d2`` the second's (None when one person is enrolled)."""
        if d1 > self.threshold:
            return BEYOND_THRESHOLD
        if (next_mean is not None and next_mean - d1 < self.margin) or (d2 is not None and d2 - d1 < SECOND_GAP):
            return AMBIGUOUS
        return None

    def settled(self, d1: float, next_mean: float | None, d2: float | None = None) -> bool:
        """The nearest person is accepted with SETTLED_MARGIN to spare on each part of the rule: the one
        definition of a face whose answer no further work would change (recognition stops at it)."""
        return (
            d1 <= self.threshold - SETTLED_MARGIN
            and (next_mean is None or next_mean - d1 >= self.margin + SETTLED_MARGIN)
            and (d2 is None or d2 - d1 >= SECOND_GAP + SETTLED_MARGIN)
        )

    def settled_unknown(self, d1: float) -> bool:
        """The nearest person lies beyond the threshold with SETTLED_MARGIN to spare: this face stays
        unknown whatever its mirror image or a finer detection adds. (More frames may still show someone
        enrolled: a video is not final on strangers alone.)"""
        return d1 >= self.threshold + SETTLED_MARGIN


@dataclass
class PersonConsistency:
    """How well one person's photos agree: each photo's distance to the centroid of the others."""

    person: str
    photos: int
    mean: float | None  # None: a single photo, nothing to compare with
    worst: float | None
    outliers: list[str] = field(default_factory=list)  # photos farther than OUTLIER_DISTANCE from the others


@dataclass
class Calibration:
    rule: OpenSetRule
    calibrated: bool  # False: too few people with two or more photos; the rule is the default
    known_probes: int = 0
    stranger_probes: int = 0
    known_named: float = 0.0  # share of known probes the rule names right
    strangers_rejected: float = 0.0  # share of stranger probes the rule answers unknown
    people: list[PersonConsistency] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # photos kept in the gallery but not used to calibrate: likely mislabels
    reference: int = 0  # reference faces (not enrolled) the strangers were drawn from: a small gallery's (see ``calibrate``)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def distance_of_cosine(cos: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their cosine: sqrt(2 - 2 cos)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))


def person_sums(embeddings: np.ndarray, person: np.ndarray, n_people: int) -> np.ndarray:
    """Each person's sum of unit embeddings (float64: a centroid without one photo is a subtraction)."""
    sums = np.zeros((n_people, embeddings.shape[1]), np.float64)
    np.add.at(sums, person, embeddings)
    return sums


def own_distances(embeddings: np.ndarray, person: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Each row's distance to its person's centroid made without that row (leave one out); nan for a
    person's only photo."""
    rest = sums[person] - embeddings
    norms = np.linalg.norm(rest, axis=1)
    cos = np.einsum("ij,ij->i", embeddings, rest) / np.maximum(norms, 1e-12)
    return np.where(norms > 1e-6, distance_of_cosine(cos), np.nan)


def nearest_people(scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines) of the ``count`` largest scores of each row, best first, by repeated argmax:
    at 100k people a few passes cost far less than one partial sort. ``scores`` is overwritten."""
    rows = np.arange(scores.shape[0])
    count = min(count, scores.shape[1])
    top = np.empty((scores.shape[0], count), np.int64)
    cos = np.empty((scores.shape[0], count), scores.dtype)
    for k in range(count):
        top[:, k] = np.argmax(scores, axis=1)
        cos[:, k] = scores[rows, top[:, k]]
        scores[rows, top[:, k]] = -np.inf
    return top, cos


def next_mean(distances: np.ndarray) -> np.ndarray:
    """The mean of the NEIGHBOURS distances after the first of each row (sorted rows); nan without any."""
    rest = distances[:, 1 : 1 + NEIGHBOURS]
    return rest.mean(axis=1) if rest.shape[1] else np.full(len(distances), np.nan)


def probe_distances(embeddings: np.ndarray, person: np.ndarray, n_people: int, probes: np.ndarray) -> dict[str, np.ndarray]:
    """For each probe row: ``own`` (to its person's centroid without that photo) and, among the other
    people (full centroids), ``others``: the nearest NEIGHBOURS + 1 distances, sorted."""
    sums = person_sums(embeddings, person, n_people)
    centroids = _unit(sums).astype(np.float32)
    q = embeddings[probes]
    own_idx = person[probes]
    own = own_distances(q, own_idx, sums)
    others = np.full((len(probes), min(NEIGHBOURS + 1, n_people - 1)), np.inf)
    for start in range(0, len(probes) if others.shape[1] else 0, 256):  # blocks keep probes x people small
        block = slice(start, start + 256)
        cos = q[block] @ centroids.T
        cos[np.arange(cos.shape[0]), own_idx[block]] = -np.inf  # the person themself is not an "other"
        others[block] = distance_of_cosine(nearest_people(cos, others.shape[1])[1].astype(np.float64))
    return {"own": own, "others": others}


def features(d: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(known, stranger) probes as the rule sees them: ``d1``, ``d2`` and ``next`` (the next people's
    mean). Known: its own centroid first, then the other people (``right``: own nearest); stranger (its
    person left out): the nearest other first, then the ones after it."""
    own, others = d["own"], d["others"]
    inf = np.full(len(own), np.inf)
    known = {"d1": own, "next": next_mean(np.column_stack([own, others])), "d2": others[:, 0] if others.shape[1] else inf,
             "right": own <= (others[:, 0] if others.shape[1] else inf)}
    stranger = {"d1": others[:, 0] if others.shape[1] else inf, "next": next_mean(others), "d2": others[:, 1] if others.shape[1] > 1 else inf}
    return known, stranger


def accepted(f: dict[str, np.ndarray], thresholds: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """A len(thresholds) x len(margins) x probes grid: would the rule name each probe's nearest person?"""
    gap = np.nan_to_num(f["next"] - f["d1"], nan=np.inf)  # nobody after the nearest: no look-alike
    clear = np.nan_to_num(f["d2"] - f["d1"], nan=np.inf) >= SECOND_GAP
    named = (f["d1"][None, None, :] <= thresholds[:, None, None]) & (gap[None, None, :] >= margins[None, :, None]) & clear
    return named & f["right"] if "right" in f else named  # a known probe counts only when named right


def choose_rule(known: np.ndarray, stranger: np.ndarray, budget: float = STRANGER_BUDGET) -> OpenSetRule:
    """The (threshold, margin) naming the most known probes (``known``: shares on the grid) with at most
    ``budget`` of strangers named (``stranger``); among equals the smallest margin, then the largest
    threshold (the rule nearest the default)."""
    score = np.where(stranger <= budget + 1e-12, known, -1.0)
    candidates = np.argwhere(score >= score.max() - 1e-12)
    i, j = sorted(candidates.tolist(), key=lambda ij: (ij[1], -ij[0]))[0]
    return OpenSetRule(float(_THRESHOLDS[i]), float(_MARGINS[j]))


def _probe_rows(person: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to MAX_PROBES rows, at most MAX_PROBES_PER_PERSON per person, of people with 2+ photos."""
    eligible = np.flatnonzero(counts >= 2)
    per_person = max(1, min(MAX_PROBES_PER_PERSON, MAX_PROBES // max(1, len(eligible))))
    if len(eligible) * per_person > MAX_PROBES:
        eligible = np.sort(rng.choice(eligible, MAX_PROBES // per_person, replace=False))
    order = np.argsort(person, kind="stable")
    first = np.cumsum(counts) - counts
    rows = [order[first[p] : first[p] + counts[p]][:per_person] for p in eligible]
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def _single_rows(person: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rows of people enrolled from one photo (up to MAX_PROBES, chosen evenly): stranger probes.
    Without them a gallery of a few people with several photos and many with one is calibrated on the
    few alone: 5celeb/train with half the reference faces as one-photo people (10 draws) then named 5.7%
    of the faces left out of its calibration, nearly twice the budget; with them, 0.4% (tests/test_trust.py)."""
    rows = np.flatnonzero(counts[person] == 1)
    return np.sort(rng.choice(rows, MAX_PROBES, replace=False)) if len(rows) > MAX_PROBES else rows


def calibrate(
    embeddings: np.ndarray, names: list[str], sources: list[str] | None = None, seed: int = 0, reference: np.ndarray | None = None
) -> Calibration:
    """The open-set rule for a gallery of these (unit) embeddings and names, and how consistent each
    person's photos are. Deterministic for the same gallery. A gallery of too few people to draw
    strangers from its own photos is calibrated against ``reference`` (unit embeddings of faces not
    enrolled, ``Gallery.reference``) when given."""
    people = sorted(set(names))
    index = {p: i for i, p in enumerate(people)}
    person = np.fromiter((index[n] for n in names), np.int64, count=len(names))
    counts = np.bincount(person, minlength=len(people))
    emb = np.asarray(embeddings, np.float32)
    sources = sources or [""] * len(names)
    consistency, suspects = _consistency(emb, person, people, counts, sources)
    # Photos far from the rest of their person (likely mislabelled: real photo folders hold some) would
    # each be a known probe beyond any sane threshold and a stranger probe sitting on its true person:
    # three of them pulled a gallery's threshold from 1.07 to 0.95. They stay enrolled, but do not steer.
    keep = np.ones(len(names), bool)
    keep[suspects] = False
    left_out = [sources[i] or f"photo {i}" for i in suspects]
    emb, person = emb[keep], person[keep]
    counts = np.bincount(person, minlength=len(people))
    probes = _probe_rows(person, counts, np.random.default_rng(seed))
    if np.count_nonzero(counts >= 2) < MIN_CALIBRATION_PEOPLE:
        if reference is not None and len(reference) and len(people):
            return _calibrate_with_reference(emb, person, len(people), probes, np.asarray(reference, np.float32), consistency, left_out)
        return Calibration(OpenSetRule(), calibrated=False, people=consistency, left_out=left_out)
    strangers = np.concatenate([probes, _single_rows(person, counts, np.random.default_rng(seed + 1))])
    known, stranger = features(probe_distances(emb, person, len(people), strangers))
    known = {k: v[: len(probes)] for k, v in known.items()}  # a one-photo person's photo is a stranger probe only
    known_grid = accepted(known, _THRESHOLDS, _MARGINS).mean(axis=2)
    stranger_grid = accepted(stranger, _THRESHOLDS, _MARGINS).mean(axis=2)
    rule = choose_rule(known_grid, stranger_grid)
    i, j = int(np.searchsorted(_THRESHOLDS, rule.threshold)), int(np.searchsorted(_MARGINS, rule.margin))
    return Calibration(
        rule, calibrated=True, known_probes=len(probes), stranger_probes=len(strangers),
        known_named=float(known_grid[i, j]), strangers_rejected=float(1.0 - stranger_grid[i, j]), people=consistency, left_out=left_out,
    )


def reference_distances(q: np.ndarray, reference: np.ndarray, count: int, skip_self: bool = False) -> np.ndarray:
    """Each row's ``count`` nearest reference faces' distances, sorted (``skip_self``: ``q`` is the
    reference itself, and a face is not its own neighbour)."""
    cos = q @ reference.T
    if skip_self:
        np.fill_diagonal(cos, -np.inf)
    return distance_of_cosine(nearest_people(cos, min(count, reference.shape[0] - int(skip_self)))[1].astype(np.float64))


def _calibrate_with_reference(
    emb: np.ndarray, person: np.ndarray, n_people: int, probes: np.ndarray, reference: np.ndarray,
    consistency: list[PersonConsistency], left_out: list[str],
) -> Calibration:
    """A small gallery's rule: the reference faces are its strangers (each against the enrolled people,
    with the other reference faces as the next ones), and the leave-one-out photos of its people with
    two or more photos its known probes (their next ones: the other people and the reference faces),
    as ``Gallery.match`` ranks them when the gallery carries its reference."""
    sums = person_sums(emb, person, n_people)
    centroids = _unit(sums).astype(np.float32)
    enrolled = np.sort(distance_of_cosine((reference @ centroids.T).astype(np.float64)), axis=1)
    around = reference_distances(reference, reference, NEIGHBOURS + 1, skip_self=True)
    rest = np.sort(np.concatenate([enrolled[:, 1:], around], axis=1), axis=1)[:, : NEIGHBOURS + 1]
    stranger = {"d1": enrolled[:, 0], "next": next_mean(np.column_stack([enrolled[:, 0], rest])), "d2": rest[:, 0]}
    stranger_grid = accepted(stranger, _THRESHOLDS, _MARGINS).mean(axis=2)
    if len(probes):
        d = probe_distances(emb, person, n_people, probes)
        others = np.sort(np.concatenate([d["others"], reference_distances(emb[probes], reference, NEIGHBOURS + 1)], axis=1), axis=1)
        known = features({"own": d["own"], "others": others[:, : NEIGHBOURS + 1]})[0]
        known_grid = accepted(known, _THRESHOLDS, _MARGINS).mean(axis=2)
    else:  # nobody with two photos: the loosest rule that keeps the strangers out
        known_grid = np.zeros_like(stranger_grid)
    rule = choose_rule(known_grid, stranger_grid)
    i, j = int(np.searchsorted(_THRESHOLDS, rule.threshold)), int(np.searchsorted(_MARGINS, rule.margin))
    return Calibration(
        rule, calibrated=True, known_probes=len(probes), stranger_probes=len(reference), known_named=float(known_grid[i, j]),
        strangers_rejected=float(1.0 - stranger_grid[i, j]), people=consistency, left_out=left_out, reference=len(reference),
    )


# A photo this far from the centroid of its person's other photos is reported as a likely mislabel
# (same-person photos reach ~1.0 at worst on 5celeb; different people start near 1.1-1.2).
OUTLIER_DISTANCE = 1.15


def _consistency(
    emb: np.ndarray, person: np.ndarray, people: list[str], counts: np.ndarray, sources: list[str]
) -> tuple[list[PersonConsistency], list[int]]:
    """Every photo against the centroid of its person's other photos (O(N)); outliers beyond
    OUTLIER_DISTANCE are named with their source. Also the rows calibration leaves out: the outliers of
    people with 3+ photos whose other photos stay the majority (of two photos far apart, neither is
    known to be the wrong one)."""
    own = own_distances(emb, person, person_sums(emb, person, len(people)))
    report = [PersonConsistency(p, int(counts[i]), None, None) for i, p in enumerate(people)]
    outlier_rows: list[list[int]] = [[] for _ in people]
    for row in np.flatnonzero(~np.isnan(own)).tolist():
        entry, d = report[person[row]], float(own[row])
        entry.worst = d if entry.worst is None else max(entry.worst, d)
        entry.mean = (entry.mean or 0.0) + d / entry.photos
        if d > OUTLIER_DISTANCE:
            entry.outliers.append(sources[row] or f"photo {row}")
            outlier_rows[person[row]].append(row)
    suspects = [r for i, rows in enumerate(outlier_rows) if counts[i] >= 3 and 2 * len(rows) < counts[i] for r in rows]
    return report, sorted(suspects)
