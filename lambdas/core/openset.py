"""Open-set decisions: when the nearest enrolled person is really that person, and when the face is a
stranger who merely lies nearest to somebody.

The rule (``OpenSetRule``) has two parts, both on Euclidean distances between unit embeddings and person
centroids: the nearest person must lie within ``threshold`` (``d1 <= threshold``), and clearly nearer
than the second-nearest person (``d2 - d1 >= margin``). The second part is what keeps strangers out of a
large gallery: a stranger's nearest centroid comes closer as people are enrolled (the nearest of many
chance look-alikes), but a stranger lies about as far from two or three of them, while an enrolled
person's own centroid stands out (benchmarks/openset.py measures both).

``calibrate`` chooses both numbers for one gallery from its own photos, at enrol time: every photo of a
person with two or more photos is a *known probe* against that person's centroid made without it
(leave one out), and a *stranger probe* against the gallery without that person (leave one person
out), which is exactly a stranger facing a gallery of this size. The rule kept is the one that names
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
# A gallery needs this many people with two or more photos to calibrate: fewer give too few strangers.
MIN_CALIBRATION_PEOPLE = 5
# The share of stranger probes the calibrated rule may name (on the gallery's own photos).
STRANGER_BUDGET = 0.01
# Calibration looks at this many photos at most (chosen evenly over people): at 100k people the
# distances to every centroid cost ~50 ms per 100 probes.
MAX_PROBES = 3000
MAX_PROBES_PER_PERSON = 5
_THRESHOLDS = np.round(np.arange(0.70, DEFAULT_THRESHOLD + 1e-9, 0.005), 3)
_MARGINS = np.round(np.arange(0.0, 0.301, 0.005), 3)

# Why a face was not given a name (the ``reason`` of an unknown face in results).
BEYOND_THRESHOLD = "beyond_threshold"  # nobody enrolled is near enough
AMBIGUOUS = "ambiguous"  # two enrolled people are about as near: a look-alike, not a match


@dataclass(frozen=True)
class OpenSetRule:
    threshold: float = DEFAULT_THRESHOLD
    margin: float = DEFAULT_MARGIN

    def reason(self, d1: float, d2: float | None) -> str | None:
        """None when the nearest person is accepted; else why not."""
        if d1 > self.threshold:
            return BEYOND_THRESHOLD
        if d2 is not None and d2 - d1 < self.margin:
            return AMBIGUOUS
        return None


@dataclass
class PersonConsistency:
    """How well one person's photos agree: each photo's distance to the centroid of the others."""

    person: str
    photos: int
    mean: float | None  # None: a single photo, nothing to compare with
    worst: float | None
    outliers: list[str] = field(default_factory=list)  # photos far from their person or nearer someone else


@dataclass
class Calibration:
    rule: OpenSetRule
    calibrated: bool  # False: too few people with two or more photos; the rule is the default
    known_probes: int = 0
    stranger_probes: int = 0
    known_named: float = 0.0  # share of known probes the rule names right
    strangers_rejected: float = 0.0  # share of stranger probes the rule answers unknown
    people: list[PersonConsistency] = field(default_factory=list)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _dist(cos: np.ndarray) -> np.ndarray:
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
    return np.where(norms > 1e-6, _dist(cos), np.nan)


def probe_distances(embeddings: np.ndarray, person: np.ndarray, n_people: int, probes: np.ndarray) -> dict[str, np.ndarray]:
    """For each probe row: ``own`` (to its person's centroid without that photo), ``other1``/``other2``
    (the nearest and second-nearest other people's full centroids) and ``nearest_other`` (who that is)."""
    sums = person_sums(embeddings, person, n_people)
    centroids = _unit(sums).astype(np.float32)
    q = embeddings[probes]
    own_idx = person[probes]
    own = own_distances(q, own_idx, sums)
    others = np.full((len(probes), 2), np.inf)
    nearest = np.full(len(probes), -1, np.int64)
    k = min(2, n_people - 1)
    for start in range(0, len(probes) if k > 0 else 0, 256):  # blocks keep the probes x people matrix small
        block = slice(start, start + 256)
        cos = q[block] @ centroids.T
        cos[np.arange(cos.shape[0]), own_idx[block]] = -np.inf  # the person themself is not an "other"
        top = np.argpartition(-cos, k - 1, axis=1)[:, :k]
        top_cos = np.take_along_axis(cos, top, axis=1)
        order = np.argsort(-top_cos, axis=1)
        top, top_cos = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_cos, order, axis=1)
        others[block, :k] = _dist(top_cos.astype(np.float64))
        nearest[block] = top[:, 0]
    return {"own": own, "other1": others[:, 0], "other2": others[:, 1], "nearest_other": nearest}


def rates(d: dict[str, np.ndarray], thresholds: np.ndarray, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(known named right, strangers named) as shares, each a len(thresholds) x len(margins) grid.
    A known probe is named right when its own centroid is nearest, within the threshold and clear of the
    nearest other by the margin; a stranger probe (its person left out) is named when the nearest other
    is within the threshold and clear of the second by the margin."""
    t = thresholds[:, None, None]
    m = margins[None, :, None]
    known = (d["own"] <= t) & (d["other1"] - d["own"] >= m)
    stranger = (d["other1"] <= t) & (d["other2"] - d["other1"] >= m)
    return known.mean(axis=2), stranger.mean(axis=2)


def choose_rule(known: np.ndarray, stranger: np.ndarray, budget: float = STRANGER_BUDGET) -> OpenSetRule:
    """The (threshold, margin) naming the most known probes with at most ``budget`` of strangers named;
    among equals the smallest margin, then the largest threshold (the rule nearest the default)."""
    ok = stranger <= budget + 1e-12
    score = np.where(ok, known, -1.0)
    best = score.max()
    candidates = np.argwhere(score >= best - 1e-12)
    # smallest margin first, then the largest threshold
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


def calibrate(embeddings: np.ndarray, names: list[str], sources: list[str] | None = None, seed: int = 0) -> Calibration:
    """The open-set rule for a gallery of these (unit) embeddings and names, and how consistent each
    person's photos are. Deterministic for the same gallery."""
    people = sorted(set(names))
    index = {p: i for i, p in enumerate(people)}
    person = np.fromiter((index[n] for n in names), np.int64, count=len(names))
    counts = np.bincount(person, minlength=len(people))
    emb = np.asarray(embeddings, np.float32)
    probes = _probe_rows(person, counts, np.random.default_rng(seed))
    consistency = _consistency(emb, person, people, counts, sources or [""] * len(names))
    if np.count_nonzero(counts >= 2) < MIN_CALIBRATION_PEOPLE:
        return Calibration(OpenSetRule(), calibrated=False, people=consistency)
    d = probe_distances(emb, person, len(people), probes)
    known, stranger = rates(d, _THRESHOLDS, _MARGINS)
    rule = choose_rule(known, stranger)
    i, j = int(np.searchsorted(_THRESHOLDS, rule.threshold)), int(np.searchsorted(_MARGINS, rule.margin))
    return Calibration(
        rule, calibrated=True, known_probes=len(probes), stranger_probes=len(probes),
        known_named=float(known[i, j]), strangers_rejected=float(1.0 - stranger[i, j]), people=consistency,
    )


# A photo this far from the centroid of its person's other photos is reported as a likely mislabel
# (same-person photos reach ~1.0 at worst on 5celeb; different people start near 1.1-1.2).
OUTLIER_DISTANCE = 1.15


def _consistency(emb: np.ndarray, person: np.ndarray, people: list[str], counts: np.ndarray, sources: list[str]) -> list[PersonConsistency]:
    """Every photo against the centroid of its person's other photos (O(N)); outliers beyond
    OUTLIER_DISTANCE are named with their source."""
    own = own_distances(emb, person, person_sums(emb, person, len(people)))
    report = [PersonConsistency(p, int(counts[i]), None, None) for i, p in enumerate(people)]
    for row in np.flatnonzero(~np.isnan(own)).tolist():
        entry, d = report[person[row]], float(own[row])
        entry.worst = d if entry.worst is None else max(entry.worst, d)
        entry.mean = (entry.mean or 0.0) + d / entry.photos
        if d > OUTLIER_DISTANCE:
            entry.outliers.append(sources[row] or f"photo {row}")
    return report
