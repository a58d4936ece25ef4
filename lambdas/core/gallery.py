"""The enrolled gallery: embeddings with the person's name, the photo each came from, and the weights
that made them (embeddings of different weights live in different spaces and must never be compared).

File format: ``torch.save`` of a dict with plain tensors, strings and lists, loaded with
``weights_only=True`` so a gallery from a bucket cannot run code. A course ``data.pt``
(``[embedding_list, name_list]``) loads as a vggface2 gallery.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import GalleryError
from .weights import is_file_id, weights_id

FORMAT = "facerec-gallery"
VERSION = 1
UNKNOWN = "unknown"

# Euclidean distance from a face's unit embedding to a person's centroid (0 = same, 2 = opposite).
# On 5celeb with casia-webface weights (crop margin 44, flip): true matches up to 0.97, other people
# from 1.26, unenrolled faces (crowd clip, Friends cast) from 1.17; 1.07 sits in the middle of that gap
# (README, "Choosing the threshold"). A gallery may carry its own.
DEFAULT_THRESHOLD = 1.07


def _as_option(weights_id: str) -> str:
    """What to pass as --weights for these weights: a name as is; a file id (file:<sha256 prefix>) is no
    path, so describe the file instead."""
    if is_file_id(weights_id):
        return f"PATH (the state_dict file whose sha256 starts with {weights_id.removeprefix('file:')})"
    return weights_id


@dataclass
class Match:
    name: str  # UNKNOWN beyond the threshold
    distance: float  # to the nearest person's centroid
    nearest: str  # that person's name, even when beyond the threshold


@dataclass
class Gallery:
    weights: str
    embeddings: torch.Tensor  # N x 512, unit length
    names: list[str]
    sources: list[str] = field(default_factory=list)
    threshold: float | None = None
    recipe: str | None = None  # how faces were cropped and embedded; None: unknown (a course data.pt)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.names):
            raise GalleryError(
                f"gallery is inconsistent: {tuple(self.embeddings.shape)} embeddings for {len(self.names)} names"
            )
        self.embeddings = torch.nn.functional.normalize(self.embeddings.float(), dim=1)
        if not self.sources:
            self.sources = [""] * len(self.names)
        # Faces are matched to each person's centroid (mean of their unit embeddings, re-normalised):
        # on 5celeb it widened the gap between true matches and unenrolled faces from 0.03 (nearest
        # single photo) to 0.21, because one odd gallery photo no longer attracts strangers.
        self._people = sorted(set(self.names))
        if self._people:
            rows = [[i for i, n in enumerate(self.names) if n == p] for p in self._people]
            means = torch.stack([self.embeddings[r].mean(dim=0) for r in rows])
            self._centroids = torch.nn.functional.normalize(means, dim=1)

    @property
    def threshold_or_default(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLD

    @property
    def people(self) -> list[str]:
        return list(self._people)

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

    def match(self, embeddings: torch.Tensor, threshold: float | None = None) -> list[Match]:
        """Nearest person (by centroid) for each embedding; UNKNOWN beyond the threshold."""
        if len(self.names) == 0:
            raise GalleryError("the gallery is empty: enrol at least one person")
        limit = threshold if threshold is not None else self.threshold_or_default
        if embeddings.numel() == 0:
            return []
        dist = torch.cdist(torch.nn.functional.normalize(embeddings.float(), dim=1), self._centroids)
        best, idx = dist.min(dim=1)
        out = []
        for d, i in zip(best.tolist(), idx.tolist()):
            nearest = self._people[i]
            out.append(Match(nearest if d <= limit else UNKNOWN, d, nearest))
        return out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "format": FORMAT,
                "version": VERSION,
                "weights": self.weights,
                "embeddings": self.embeddings.contiguous(),
                "names": list(self.names),
                "sources": list(self.sources),
                "threshold": self.threshold,
                "recipe": self.recipe,
            },
            buf,
        )
        return buf.getvalue()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "gallery") -> "Gallery":
        if not data:
            raise GalleryError(f"{origin} is empty")
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for foreign or truncated files
            raise GalleryError(
                f"{origin} is not a facerec gallery or course data.pt ({type(exc).__name__}); "
                "make one with `facerec enroll PHOTOS_DIR -o gallery.pt`"
            ) from exc
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            if obj.get("version") != VERSION:
                raise GalleryError(f"{origin} has gallery format version {obj.get('version')}; this facerec reads {VERSION}")
            return cls(
                weights=obj["weights"],
                embeddings=obj["embeddings"],
                names=list(obj["names"]),
                sources=list(obj.get("sources") or []),
                threshold=obj.get("threshold"),
                recipe=obj.get("recipe"),
            )
        if isinstance(obj, (list, tuple)) and len(obj) == 2 and len(obj[0]) == len(obj[1]):
            # The course's data.pt: [embedding_list, name_list], made with vggface2 weights.
            embeddings = torch.cat([torch.as_tensor(e).reshape(-1, 512) for e in obj[0]]) if len(obj[0]) else torch.zeros(0, 512)
            return cls(weights="vggface2", embeddings=embeddings, names=[str(n) for n in obj[1]], sources=[])
        raise GalleryError(f"{origin} is not a facerec gallery or course data.pt (unexpected content)")

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise GalleryError(f"gallery {path} not found; make one with `facerec enroll PHOTOS_DIR -o {path}`") from exc
        except IsADirectoryError as exc:
            raise GalleryError(f"gallery {path} is a folder; to enrol photos use `facerec enroll {path} -o gallery.pt`") from exc
        return cls.from_bytes(data, origin=str(path))


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
