"""The enrolled gallery: embeddings with the person's name, the photo each came from, and the weights
that made them (embeddings of different weights live in different spaces and must never be compared).

File format (version 2): a safetensors file (the container: ``tensor_file.py``), read with numpy alone
(no torch, no pickle):

- tensors: ``embeddings`` F32 [N, 512] (unit rows); ``person`` I32 [N] (row i belongs to
  ``people[person[i]]``); ``centroids`` F32 [512, P] (column j: the unit centroid of ``people[j]``,
  stored transposed, the layout the matching matmul wants); ``people`` U8 (the P names, sorted and
  unique) and ``sources`` U8 (the photo of each row, "" when unknown), UTF-8 joined by NUL;
- ``__metadata__`` (str -> str): ``format`` ("facerec-gallery"), ``version`` ("2"), ``weights``, and
  ``threshold``, ``margin`` (floats' reprs: the open-set rule, ``openset.py``) and ``recipe`` when the
  gallery has them;
- optional: ``reference`` F32 [R, 512], faces nobody enrolled (``reference.py``), and ``reference_rule``
  ("1") in the metadata when the rule was calibrated against them (a small gallery); readers that
  predate them ignore both.

Loading is a small header parse and zero-copy views of the buffer; nothing is recomputed. Measured
at 100k identities (~200k rows, 620 MB, ``benchmarks/gallery_scaling.py``): names and sources as JSON
lists in the metadata cost ~45 ms of a 70 ms load (the escaped header, then each list), as NUL-joined
tensors ~10 ms; recomputing the centroids would cost ~0.9 s, so they are stored. The structure is
checked on load (dtypes, shapes, offsets, sorted people, indices in range); the numbers are trusted to
be what :meth:`Gallery.save` wrote. The bytes are a function of the gallery (``tensor_file.write``).

Old galleries (``torch.save`` of a dict, format version 1) and the course's ``data.pt``
(``[embedding_list, name_list]``, made with vggface2 weights) are torch pickles: this module refuses
them with :class:`LegacyGalleryError`, and the CLI converts them with torch
(``facerec_cli.gallery_files``, ``facerec gallery convert OLD NEW``).
"""

from __future__ import annotations

import hashlib
import math
import operator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from . import quantized, tensor_file
from .centroids import normalise, people_centroids
from .errors import GalleryError, LegacyGalleryError
from .openset import (
    DEFAULT_MARGIN, DEFAULT_THRESHOLD, NEIGHBOURS, Calibration, OpenSetRule, calibrate, distance_of_cosine, nearest_people, next_mean,
    reference_distances,
)
from .weights import is_file_id, weights_id

__all__ = [
    "DEFAULT_THRESHOLD", "DIM", "FORMAT", "LEGACY_VERSION", "UNKNOWN", "VERSION", "Gallery", "GalleryError",
    "LegacyGalleryError", "Match", "looks_like_torch", "weights_for",
]

FORMAT = "facerec-gallery"
VERSION = 2  # 1: torch.save of a dict (converted by the CLI, never read here)
LEGACY_VERSION = 1
UNKNOWN = "unknown"
DIM = 512  # InceptionResnetV1's embedding size
SUFFIX = ".safetensors"

# DEFAULT_THRESHOLD (openset.py): Euclidean distance from a face's unit embedding to a person's centroid
# (0 = same, 2 = opposite). On 5celeb with casia-webface weights (crop margin 44, flip): true matches up
# to 0.97, other people from 1.26, unenrolled faces (crowd clip, Friends cast) from 1.17; 1.07 sits in
# the middle of that gap (README, "Choosing the threshold"). A gallery carries its own, calibrated at
# enrol time, with a margin to the next people (openset.OpenSetRule).


def _as_option(weights_id: str) -> str:
    """What to pass as --weights for these weights: a name as is; a file id (file:<sha256 prefix>) is no
    path, so describe the file instead."""
    if is_file_id(weights_id):
        return f"PATH (the state_dict file whose sha256 starts with {weights_id.removeprefix('file:')})"
    return weights_id


def looks_like_torch(data: bytes) -> bool:
    """A ``torch.save`` file: a zip (``PK\\x03\\x04``, torch >= 1.6) or a bare pickle (protocol byte
    0x80, older torch). Told by its first bytes only: nothing is unpickled to find out."""
    return not tensor_file.is_safetensors(data) and (data[:4] == b"PK\x03\x04" or data[:1] == b"\x80")


def _unit_rows(x: Any, what: str) -> np.ndarray:
    """A float32 N x DIM copy of ``x`` (the gallery owns it: the caller's array may change later),
    rows normalised."""
    try:
        arr = np.array(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"{what} are not numbers ({exc})") from exc
    if arr.ndim == 1 and arr.size == DIM:
        arr = arr.reshape(1, DIM)
    if arr.size == 0:
        return np.zeros((0, DIM), np.float32)
    if arr.ndim != 2 or arr.shape[1] != DIM:
        raise GalleryError(f"{what} have shape {tuple(arr.shape)}; expected N x {DIM}")
    return normalise(arr, inplace=True)


@dataclass
class Match:
    name: str  # UNKNOWN beyond the threshold, or too near a second person (see ``reason``)
    distance: float  # to the nearest person's centroid
    nearest: str  # that person's name, even when beyond the threshold
    second: float | None = None  # to the second-nearest person's centroid (None: one person enrolled)
    next_mean: float | None = None  # mean distance of the next NEIGHBOURS people (the rule's margin is to it)
    reason: str | None = None  # why the face is unknown (openset.BEYOND_THRESHOLD, AMBIGUOUS); None when named


@dataclass(eq=False)
class Gallery:
    weights: str
    embeddings: np.ndarray  # N x 512 float32, unit rows (read-only when loaded from bytes)
    names: list[str]
    sources: list[str] = field(default_factory=list)
    threshold: float | None = None
    recipe: str | None = None  # how faces were cropped and embedded; None: unknown (a course data.pt)
    margin: float | None = None  # how much nearer the nearest person must be than the next ones' mean
    # Faces nobody enrolled (R x 512 unit rows, the gallery's weights): a small gallery's strangers for
    # calibration and its next ones for the margin, so the rule works from the first person (reference.py).
    reference: np.ndarray | None = field(default=None, repr=False)
    reference_rule: bool = False  # the rule was calibrated against the reference: match ranks the next ones with it too
    # What the last calibrate() found (per-person consistency...); not part of the file.
    calibration: Calibration | None = field(default=None, repr=False)
    # int8 centroids for large galleries, made at the first match (quantized.py); not part of the file.
    _quantized: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        self.embeddings = _unit_rows(self.embeddings, "gallery embeddings")
        if self.embeddings.shape[0] != len(self.names):
            raise GalleryError(f"gallery is inconsistent: {self.embeddings.shape[0]} embeddings for {len(self.names)} names")
        if not np.isfinite(self.embeddings).all():
            raise GalleryError("gallery embeddings contain NaN or infinity")
        self.sources = [str(s) for s in self.sources] if self.sources else [""] * len(self.names)
        if len(self.sources) != len(self.names):
            raise GalleryError(f"gallery is inconsistent: {len(self.sources)} sources for {len(self.names)} names")
        if tensor_file.TEXT_SEP in "".join(self.names) or tensor_file.TEXT_SEP in "".join(self.sources):
            raise GalleryError("a name or source in the gallery holds a NUL character")
        if self.threshold is not None:
            self.threshold = float(self.threshold)
        if self.margin is not None:
            self.margin = float(self.margin)
        if self.reference is not None:
            self.reference = _unit_rows(self.reference, "reference faces")
        self._people, self._person, self._centroids_t = people_centroids(self.embeddings, self.names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Gallery):
            return NotImplemented
        return (
            (self.weights, self.names, self.sources, self.threshold, self.margin, self.recipe, self.reference_rule)
            == (other.weights, other.names, other.sources, other.threshold, other.margin, other.recipe, other.reference_rule)
            and np.array_equal(self.embeddings, other.embeddings)
        )

    @property
    def threshold_or_default(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLD

    def calibrate(self) -> Calibration:
        """Choose this gallery's open-set rule from its own photos (openset.calibrate) and keep it: a
        gallery of too few people keeps the defaults (threshold and margin unset)."""
        self.calibration = calibrate(self.embeddings, self.names, self.sources, reference=self.reference)
        if self.calibration.calibrated:
            self.threshold, self.margin = self.calibration.rule.threshold, self.calibration.rule.margin
        else:
            self.threshold = self.margin = None
        self.reference_rule = self.calibration.reference > 0
        return self.calibration

    def rule(self, threshold: float | None = None) -> OpenSetRule:
        """The gallery's open-set rule; ``threshold`` (identify --threshold) overrides its threshold."""
        return OpenSetRule(
            threshold if threshold is not None else self.threshold_or_default,
            self.margin if self.margin is not None else DEFAULT_MARGIN,
        )

    @property
    def people(self) -> list[str]:
        return list(self._people)

    @property
    def centroids(self) -> np.ndarray:
        """P x 512, row j: the unit centroid of ``people[j]`` (a view)."""
        return self._centroids_t.T

    def check_weights(self, weights_id: str, recipe: str | None = None) -> None:
        """Refuse to compare embeddings from other weights (or another crop/embedding recipe)."""
        if weights_id != self.weights:
            raise GalleryError(
                f"the gallery was made with {self.weights!r} weights but faces are embedded with {weights_id!r}; "
                f"enrol again with --weights {_as_option(weights_id)} or recognise with --weights {_as_option(self.weights)}"
            )
        if recipe and self.recipe and recipe != self.recipe:
            raise GalleryError(
                f"the gallery's faces were embedded as {self.recipe!r}, this facerec embeds them as {recipe!r}; "
                "enrol the photos again with `facerec enroll`"
            )

    def match(self, embeddings: np.ndarray, threshold: float | None = None) -> list[Match]:
        """Nearest person (by centroid) for each embedding (a B x 512 array; one 512 vector is one face),
        named under the gallery's open-set rule (``threshold`` overrides its threshold): UNKNOWN beyond
        the threshold, or when the next few people are not on average the rule's margin further.
        One float32 matmul scores every centroid (the largest cosines are the nearest); the best few are
        found by repeated argmax passes."""
        if len(self.names) == 0:
            raise GalleryError("the gallery is empty: enrol at least one person")
        rule = self.rule(threshold)
        if np.size(embeddings) == 0:
            return []
        q = np.asarray(embeddings, dtype=np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self._centroids_t.shape[0]:
            raise GalleryError(f"faces embedded as {tuple(q.shape)}; the gallery holds {self._centroids_t.shape[0]}-d embeddings")
        q = normalise(q)
        if len(self._people) >= quantized.MIN_PEOPLE:  # exact too, a quarter of the memory traffic
            if self._quantized is None:
                self._quantized = quantized.QuantizedCentroids(self._centroids_t)
            top, cos = self._quantized.nearest(q, NEIGHBOURS + 1)
        else:
            top, cos = nearest_people(q @ self._centroids_t, NEIGHBOURS + 1)
        near = distance_of_cosine(cos).astype(np.float32)
        # The nearest distance exactly, |q - c|: sqrt(2 - 2 cos) loses precision near 0.
        diff = q - self._centroids_t[:, top[:, 0]].T
        near[:, 0] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        if self.reference_rule and self.reference is not None and len(self.reference):
            # Calibrated with its reference: the next ones are the other people and the reference faces.
            ref = reference_distances(q, self.reference, NEIGHBOURS + 1).astype(np.float32)
            near = np.column_stack([near[:, :1], np.sort(np.concatenate([near[:, 1:], ref], axis=1), axis=1)[:, :NEIGHBOURS + 1]])
        after = next_mean(near)
        out = []
        for row, i in enumerate(top[:, 0].tolist()):
            d1 = float(near[row, 0])
            rest = None if np.isnan(after[row]) else float(after[row])
            second = float(near[row, 1]) if near.shape[1] > 1 else None
            reason = rule.reason(d1, rest, second)
            person = self._people[i]
            out.append(Match(UNKNOWN if reason else person, d1, person, second, rest, reason))
        return out

    # ------------------------------------------------------------------------------------ the file

    def to_bytes(self) -> bytes:
        metadata = {
            "format": FORMAT,
            "version": str(VERSION),
            "weights": self.weights,
        }
        if self.threshold is not None:
            metadata["threshold"] = repr(float(self.threshold))
        if self.margin is not None:
            metadata["margin"] = repr(float(self.margin))
        if self.recipe is not None:
            metadata["recipe"] = self.recipe
        if self.reference_rule:
            metadata["reference_rule"] = "1"
        tensors = {
            "embeddings": np.ascontiguousarray(self.embeddings, dtype=tensor_file.DTYPES["F32"]),
            "person": np.ascontiguousarray(self._person, dtype=tensor_file.DTYPES["I32"]),
            "centroids": np.ascontiguousarray(self._centroids_t, dtype=tensor_file.DTYPES["F32"]),
            "people": tensor_file.text_tensor(self._people),
            "sources": tensor_file.text_tensor(self.sources),
        }
        if self.reference is not None:
            tensors["reference"] = np.ascontiguousarray(self.reference, dtype=tensor_file.DTYPES["F32"])
        return tensor_file.write(tensors, metadata)

    def save(self, path: Path) -> None:
        """Write the file atomically (a temporary file beside it, then a rename); a folder in the way
        is a GalleryError and leaves nothing behind."""
        path = Path(path)
        if path.is_dir():
            raise GalleryError(f"{path} is a folder: give the gallery file's name, e.g. {path / ('gallery' + SUFFIX)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(self.to_bytes())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "gallery") -> "Gallery":
        """A gallery from the bytes of a gallery file. Never unpickles: a torch file (an old gallery,
        a course data.pt) raises :class:`LegacyGalleryError` saying how to convert it."""
        if not data:
            raise GalleryError(f"{origin} is empty")
        data = bytes(data)
        if not tensor_file.is_safetensors(data):
            if looks_like_torch(data):
                local = "://" not in origin
                shown = origin if local else "OLD"
                raise LegacyGalleryError(
                    f"{origin} is a torch file (a facerec gallery of format version {LEGACY_VERSION} or a course data.pt), "
                    "which the runtime does not read (it never unpickles): convert it with "
                    f"`facerec gallery convert {shown} gallery{SUFFIX}`, or run `facerec bootstrap --gallery "
                    f"{shown if local else 'YOUR_GALLERY'}` again, which uploads it converted"
                )
            raise GalleryError(_not_a_gallery(origin, "unknown content"))
        return cls._from_safetensors(data, origin)

    @classmethod
    def _from_safetensors(cls, data: bytes, origin: str) -> "Gallery":
        try:
            header, body = tensor_file.read_header(data)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise GalleryError(_not_a_gallery(origin, f"a damaged safetensors header: {exc}")) from exc
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise GalleryError(_not_a_gallery(origin, "a safetensors file without facerec's gallery metadata"))
        if meta.get("version") != str(VERSION):
            raise GalleryError(f"{origin} has gallery format version {meta.get('version')}; this facerec reads {VERSION}")
        try:
            embeddings = tensor_file.tensor(header, body, "embeddings", "F32", 2)
            person = tensor_file.tensor(header, body, "person", "I32", 1)
            centroids_t = tensor_file.tensor(header, body, "centroids", "F32", 2)
            people = tensor_file.texts(tensor_file.tensor(header, body, "people", "U8", 1), centroids_t.shape[1], "people")
            sources = tensor_file.texts(tensor_file.tensor(header, body, "sources", "U8", 1), embeddings.shape[0], "sources")
            threshold = float(meta["threshold"]) if meta.get("threshold") is not None else None
            margin = float(meta["margin"]) if meta.get("margin") is not None else None
            weights, recipe = meta["weights"], meta.get("recipe")
            reference = tensor_file.tensor(header, body, "reference", "F32", 2) if "reference" in header else None
        except (KeyError, TypeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise GalleryError(f"{origin} is a damaged facerec gallery ({type(exc).__name__}: {exc})") from exc
        rows, dim = embeddings.shape
        problem = None
        if not isinstance(weights, str) or not (recipe is None or isinstance(recipe, str)):
            problem = "its weights or recipe are not text"
        elif any(v is not None and not math.isfinite(v) for v in (threshold, margin)):
            problem = "its threshold or margin is not a number"
        elif dim != DIM or person.shape[0] != rows or centroids_t.shape[0] != DIM:
            problem = f"{rows} x {dim} embeddings, {person.shape[0]} row indices, {centroids_t.shape} centroids for {len(people)} people"
        elif not all(map(operator.lt, people, islice(people, 1, None))):
            problem = "its people are not sorted and unique"
        elif rows and (person.min() < 0 or person.max() >= len(people) or np.bincount(person, minlength=len(people)).min() == 0):
            problem = "its row indices do not cover its people"
        elif not rows and people:
            problem = "people without embeddings"
        elif reference is not None and reference.shape[1] != DIM:
            problem = f"reference faces of {reference.shape[1]} dimensions"
        if problem:
            raise GalleryError(f"{origin} is a damaged facerec gallery: {problem}")
        # Built without __post_init__: the checks above stand in for it, and the centroids are read,
        # not recomputed (they are what save() computed from these very rows).
        gallery = cls.__new__(cls)
        gallery.weights, gallery.recipe, gallery.threshold, gallery.margin = weights, recipe, threshold, margin
        gallery.reference, gallery.reference_rule = reference, meta.get("reference_rule") == "1"
        gallery.calibration = gallery._quantized = None
        gallery.embeddings = embeddings
        gallery.names = np.asarray(people, dtype=object)[person].tolist() if rows else []
        gallery.sources = sources
        gallery._people, gallery._person, gallery._centroids_t = people, person, centroids_t
        return gallery

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        return cls.from_bytes(read_gallery_file(Path(path)), origin=str(path))


def _not_a_gallery(origin: str, what: str) -> str:
    return f"{origin} is not a facerec gallery or course data.pt ({what}); make one with `facerec enroll PHOTOS_DIR -o gallery{SUFFIX}`"


def read_gallery_file(path: Path) -> bytes:
    """The bytes of a gallery file, or a GalleryError a person can act on."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise GalleryError(f"gallery {path} not found; make one with `facerec enroll PHOTOS_DIR -o {path}`") from exc
    except IsADirectoryError as exc:
        raise GalleryError(f"gallery {path} is a folder; to enrol photos use `facerec enroll {path} -o gallery{SUFFIX}`") from exc


def weights_for(gallery: Gallery, weights: str | None = None) -> str:
    """The weights to embed faces with for ``gallery``: ``weights`` (a name or a state_dict path) when
    given, refused unless they are the ones the gallery was made with; else the gallery's own. Checked
    by id before any model loads, so a mismatch costs nothing."""
    if weights is None:
        if is_file_id(gallery.weights):
            # The gallery records only the file's hash: the file itself must be given again.
            raise GalleryError(
                "this gallery was made with weights from a file; pass --weights PATH (FACEREC_WEIGHTS on a "
                f"function): the state_dict file it was enrolled with ({gallery.weights}: its sha256 starts "
                f"with {gallery.weights.removeprefix('file:')})"
            )
        return gallery.weights
    given = weights_id(weights)
    if given != gallery.weights:
        shown = weights if given == weights else f"{weights} ({given})"
        raise GalleryError(
            f"weights {shown} are not the weights the gallery was made with ({gallery.weights}); "
            "pass the gallery's weights, or enrol the photos again with these"
        )
    return weights
