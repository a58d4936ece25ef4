"""Editing a gallery without enrolling everything again: add photos, remove a person or one photo,
rename a person. Each edit returns a new :class:`Gallery` (the one given is left as it was) whose
open-set rule is calibrated again from its own photos, so the threshold and margin always fit the
people it holds now. Nothing here touches a file: the caller saves (atomically) only when an edit
succeeded, so an error leaves the gallery file as it was.

Also the check for two people enrolled under one name (``two_groups``): a person's photos split by
2-means; two groups of 2+ photos whose centroids lie farther apart than ``OUTLIER_DISTANCE`` are
almost surely two people. On 5celeb (casia-webface), one person's two groups lie 0.61-0.80 apart,
two people merged 1.33-1.56 (every pair of the five; tests/test_gallery_cli.py).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from . import names as names_rule
from .errors import GalleryError
from .gallery import Gallery
from .openset import OUTLIER_DISTANCE

__all__ = [
    "SAME_PHOTO", "TwoGroups", "enrolled_person", "find_source", "new_names", "person_name", "renamed", "same_photos", "two_groups", "two_people",
    "with_photos", "without_person", "without_source",
]

# Two embeddings this close are the same photo added again (the same file embeds to the same vector; the
# nearest two different photos of 5celeb/train, 91 photos, lie 0.25 apart).
SAME_PHOTO = 0.02
_ITERATIONS = 10


def person_name(name: str) -> str:
    """A new name as stored (NFC, stripped), or a GalleryError: the one rule of ``names.person_name``."""
    return names_rule.person_name(name)


def new_names(gallery: Gallery, names: list[str]) -> list[str]:
    """``names`` checked for adding to ``gallery``: each valid, and none that differs from an enrolled
    person (or from another new name) only by case: a reader takes them for one person."""
    out = [person_name(n) for n in names]
    known = list(gallery.people)
    for name in dict.fromkeys(out):
        clash = names_rule.case_clash(name, known)
        if clash is not None:
            raise GalleryError(f"{name!r} differs from {clash!r} only by case: use {clash!r} for the same person "
                               f"(or `facerec gallery rename -g GALLERY {clash!r} {name!r}` to change its spelling)")  # fmt: skip
        known.append(name)
    return out


def _calibrated(gallery: Gallery, embeddings: np.ndarray, names: list[str], sources: list[str]) -> Gallery:
    if not names:
        raise GalleryError("this would leave the gallery empty: delete the file instead, or enrol again")
    new = Gallery(weights=gallery.weights, embeddings=embeddings, names=names, sources=sources, recipe=gallery.recipe,
                  reference=gallery.reference)
    new.calibrate()
    return new


def _unknown_person(gallery: Gallery, name: str) -> GalleryError:
    close = difflib.get_close_matches(name, gallery.people, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; it holds {names_rule.plural(len(gallery.people), 'person', 'people')} (`facerec gallery list`)"
    return GalleryError(f"{name!r} is not in the gallery{hint}")


def enrolled_person(gallery: Gallery, name: str) -> str:
    """An enrolled person's name as given (surrounding whitespace ignored, NFC), or a GalleryError."""
    clean = names_rule.lookup_name(name)
    if not clean:
        raise GalleryError(f"a person's name cannot be empty or only whitespace (got {name!r})")
    if clean not in gallery.people:
        raise _unknown_person(gallery, clean)
    return clean


def with_photos(gallery: Gallery, names: list[str], embeddings: np.ndarray, sources: list[str]) -> Gallery:
    """``gallery`` with these photos' embeddings added (each of ``names[i]``, from ``sources[i]``); the
    embeddings must come from the gallery's own weights (see ``weights_for``)."""
    if len(names) != len(sources) or len(names) != len(embeddings):
        raise GalleryError(f"{len(embeddings)} embeddings for {len(names)} names and {len(sources)} sources")
    names = new_names(gallery, names)
    rows = np.concatenate([np.asarray(gallery.embeddings, np.float32), np.asarray(embeddings, np.float32).reshape(-1, gallery.embeddings.shape[1])])
    return _calibrated(gallery, rows, list(gallery.names) + names, list(gallery.sources) + list(sources))


def _keep(gallery: Gallery, keep: np.ndarray) -> Gallery:
    rows = np.flatnonzero(keep)
    return _calibrated(gallery, np.asarray(gallery.embeddings)[rows], [gallery.names[i] for i in rows], [gallery.sources[i] for i in rows])


def without_person(gallery: Gallery, name: str) -> Gallery:
    """``gallery`` without ``name`` and all their photos."""
    name = enrolled_person(gallery, name)
    return _keep(gallery, np.array([n != name for n in gallery.names], bool))


def find_source(gallery: Gallery, photo: str) -> int:
    """The row of one photo: its source as the gallery records it (``person/file.jpg``, see ``show``), a
    path ending in that, or a bare file name when only one photo has it."""
    given = str(photo).strip().replace("\\", "/")
    if not given:
        raise GalleryError("name the photo to remove, as `facerec gallery show` lists it (person/photo.jpg)")
    exact = [i for i, s in enumerate(gallery.sources) if s and s == given]
    if not exact:
        exact = [i for i, s in enumerate(gallery.sources) if s and (given.endswith("/" + s) or s.rsplit("/", 1)[-1] == given)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        listed = ", ".join(gallery.sources[i] for i in exact[:5])
        raise GalleryError(f"{given!r} names {len(exact)} photos ({listed}): give it as person/photo")
    close = difflib.get_close_matches(given, [s for s in gallery.sources if s], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `facerec gallery show -g GALLERY PERSON` lists a person's photos"
    raise GalleryError(f"no photo {given!r} in the gallery{hint}")


def without_source(gallery: Gallery, photo: str) -> tuple[Gallery, str]:
    """(``gallery`` without one photo, the source removed). A person's last photo takes the person with it."""
    row = find_source(gallery, photo)
    keep = np.ones(len(gallery.names), bool)
    keep[row] = False
    return _keep(gallery, keep), gallery.sources[row]


def renamed(gallery: Gallery, old: str, new: str, *, merge: bool = False) -> Gallery:
    """``gallery`` with person ``old`` called ``new``. Renaming onto a person already enrolled makes the
    two one person, so it needs ``merge``. Sources keep the photo's original path."""
    old = enrolled_person(gallery, old)
    new = person_name(new)
    if new == old:
        raise GalleryError(f"{old!r} already has that name: nothing to change")
    clash = names_rule.case_clash(new, [p for p in gallery.people if p != old])
    if clash is not None:
        if not merge:
            raise GalleryError(f"{new!r} differs from {clash!r} only by case: pass --merge to make {old!r} and {clash!r} one person")
        new = clash  # merged under the spelling already enrolled
    if new in gallery.people and not merge:
        count = gallery.names.count(new)
        raise GalleryError(f"{new!r} is already in the gallery ({names_rule.plural(count, 'photo')}): pass --merge to make {old!r} and {new!r} one person")
    names = [new if n == old else n for n in gallery.names]
    return _calibrated(gallery, np.asarray(gallery.embeddings), names, list(gallery.sources))


def same_photos(gallery: Gallery, embeddings: np.ndarray, sources: list[str]) -> list[str | None]:
    """For each new photo, the source of the same photo (within SAME_PHOTO) in the gallery or earlier
    among the new ones; None for a photo not seen before."""
    q = np.asarray(embeddings, np.float32).reshape(-1, gallery.embeddings.shape[1])
    within = q @ q.T
    within[np.triu_indices(len(q))] = -np.inf  # a new photo is compared with the new photos before it
    cos = np.concatenate([q @ np.asarray(gallery.embeddings, np.float32).T, within], axis=1)
    known = list(gallery.sources) + list(sources)
    out: list[str | None] = []
    for i, j in enumerate(np.argmax(cos, axis=1).tolist()):
        near = np.sqrt(max(2.0 - 2.0 * float(cos[i, j]), 0.0)) <= SAME_PHOTO
        out.append((known[j] or f"photo {j}") if near else None)
    return out


@dataclass
class TwoGroups:
    """One person's photos split in two far-apart groups: most likely two people under one name."""

    person: str
    distance: float  # between the two groups' centroids
    groups: tuple[list[str], list[str]]  # the sources of each group


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def two_groups(embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """(group 0/1 of each row, distance between the groups' unit centroids): 2-means on unit
    embeddings, seeded by the farthest pair; a few iterations settle it for a person's photos."""
    x = np.asarray(embeddings, np.float64)
    if len(x) < 2:
        return np.zeros(len(x), np.int64), 0.0
    i, j = np.unravel_index(np.argmin(x @ x.T), (len(x), len(x)))
    centres = np.stack([x[i], x[j]])
    labels = np.zeros(len(x), np.int64)
    for _ in range(_ITERATIONS):
        labels = np.argmax(x @ centres.T, axis=1)
        if labels.min() == labels.max():
            return labels, 0.0
        new = _unit(np.stack([x[labels == 0].mean(axis=0), x[labels == 1].mean(axis=0)]))
        if np.allclose(new, centres):
            break
        centres = new
    return labels, float(np.linalg.norm(centres[0] - centres[1]))


def two_people(gallery: Gallery, people: list[str] | None = None, *, min_group: int = 2, distance: float = OUTLIER_DISTANCE) -> list[TwoGroups]:
    """The people (all, or ``people``) whose photos form two groups of ``min_group``+ photos farther
    apart than ``distance``: likely two people enrolled under one name."""
    found = []
    names = np.asarray(gallery.names, dtype=object)
    for person in gallery.people if people is None else people:
        rows = np.flatnonzero(names == person)
        if len(rows) < 2 * min_group:
            continue
        labels, d = two_groups(np.asarray(gallery.embeddings)[rows])
        counts = np.bincount(labels, minlength=2)
        if counts.min() >= min_group and d > distance:
            groups = tuple([gallery.sources[r] or f"photo {r}" for r in rows[labels == k]] for k in (0, 1))
            found.append(TwoGroups(person, d, groups))  # type: ignore[arg-type]
    return found
