"""Building a gallery from ``PHOTOS_DIR/<person>/*`` photos."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media
from .errors import GalleryError, InputError
from .gallery import Gallery
from .media import Frame
from .recognise import FaceEncoder


@dataclass
class PhotoReport:
    person: str
    path: Path
    faces: int
    error: str | None = None
    quality: str | None = None  # faces.quality_issue of the face taken: kept, but worth replacing

    @property
    def note(self) -> str:
        if self.error:
            return self.error
        if self.faces == 0:
            return "no face found: photo skipped"
        notes = [f"{self.faces} faces: the largest was taken"] if self.faces > 1 else []
        if self.quality:
            notes.append(f"the face is {self.quality.replace('_', ' ')}: kept, but a clearer photo would match better")
        return "; ".join(notes) or "ok"


def find_photos(photos_dir: Path) -> list[tuple[str, Path]]:
    """(person, photo) pairs; the person is the sub-folder's name."""
    if not photos_dir.is_dir():
        raise GalleryError(f"{photos_dir} is not a folder: expected {photos_dir}/<person>/<photo>.jpg")
    pairs = [
        (person_dir.name, photo)
        for person_dir in sorted(p for p in photos_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for photo in sorted(person_dir.iterdir())
        if photo.is_file() and media.is_image(photo)
    ]
    if not pairs:
        raise GalleryError(
            f"no photos found under {photos_dir}: put each person's photos (.jpg, .png, .webp) in "
            f"{photos_dir}/<person>/"
        )
    return pairs


def build_gallery(
    photos_dir: Path, encoder: FaceEncoder, on_photo: Callable[[PhotoReport], None] | None = None
) -> tuple[Gallery, list[PhotoReport]]:
    """Embed the largest face of every photo. Photos without a face are reported and skipped."""
    embeddings: list[np.ndarray] = []
    names: list[str] = []
    sources: list[str] = []
    reports: list[PhotoReport] = []
    for person, photo in find_photos(photos_dir):
        try:
            frame = Frame(0, 0.0, media.load_image(photo))
            dets = encoder.detector.detect([frame.image])[0]
            quality = None
            if dets:  # largest first
                (face,) = encoder.embed_detections([(frame, dets[0])])
                embeddings.append(face.embedding)
                names.append(person)
                sources.append(f"{person}/{photo.name}")
                quality = face.quality
            report = PhotoReport(person, photo, len(dets), quality=quality)
        except InputError as exc:
            report = PhotoReport(person, photo, 0, error=str(exc))
        reports.append(report)
        if on_photo:
            on_photo(report)
    if not embeddings:
        raise GalleryError(f"no face was found in any photo under {photos_dir}")
    gallery = Gallery(weights=encoder.weights, embeddings=np.stack(embeddings), names=names, sources=sources, recipe=encoder.recipe)
    gallery.calibrate()  # its open-set rule, from its own photos; gallery.calibration has the details
    return gallery, reports
