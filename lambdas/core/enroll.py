"""Building a gallery from ``PHOTOS_DIR/<person>/*`` photos."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import images
from .errors import GalleryError, InputError
from .gallery import Gallery
from .media import Frame
from .names import person_name
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
        (folder_person(person_dir), photo)
        for person_dir in sorted(p for p in photos_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for photo in sorted(person_dir.iterdir())
        if photo.is_file() and images.is_image(photo)
    ]
    seen: dict[str, str] = {}
    for person in dict.fromkeys(p for p, _ in pairs):
        other = seen.setdefault(person.casefold(), person)
        if other != person:
            raise GalleryError(f"the folders {other!r} and {person!r} under {photos_dir} differ only by case: one person or two? "
                               "rename one, or put all the photos in one folder")  # fmt: skip
    if not pairs:
        raise GalleryError(
            f"no photos found under {photos_dir}: put each person's photos (.jpg, .png, .webp) in "
            f"{photos_dir}/<person>/"
        )
    return pairs


def folder_person(folder: Path) -> str:
    """The person a folder of photos is named after (``names.person_name``: NFC; a folder named
    ``unknown-2`` or holding a control character is refused, naming the folder)."""
    try:
        return person_name(folder.name)
    except GalleryError as exc:
        raise GalleryError(f"folder {folder}: {exc}; rename the folder") from exc


def collect_photos(paths: list[Path], person: str | None = None) -> list[tuple[str, Path]]:
    """(person, photo) pairs for ``facerec gallery add``. With ``person``: photos, and folders of photos,
    all of that person. Without: a folder of photos is the person the folder is named after, and a
    folder of such folders (enroll's PHOTOS_DIR) gives each sub-folder's person; a bare photo needs
    ``person``. Every problem is a GalleryError before anything is embedded."""
    pairs: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if path.is_file():
            if not images.is_image(path):
                raise GalleryError(f"{path} is not a photo (.jpg, .png, .webp)")
            if person is None:
                raise GalleryError(f"whose photo is {path}? pass --person NAME (or add the folder named after the person)")
            pairs.append((person, path))
        elif path.is_dir():
            photos = sorted(p for p in path.iterdir() if p.is_file() and images.is_image(p))
            if photos:
                pairs += [(person or folder_person(path.resolve()), p) for p in photos]
            elif person is not None:
                raise GalleryError(f"{path} holds no photos (.jpg, .png, .webp) of {person}")
            else:
                pairs += find_photos(path)
        else:
            raise GalleryError(f"{path}: no such file or folder")
    return pairs


@dataclass
class Embedded:
    """Embeddings of photos, one row per photo in which a face was found."""

    embeddings: np.ndarray  # N x 512, unit rows
    names: list[str]
    sources: list[str]  # "<person>/<photo file name>"


def source_of(person: str, photo: Path) -> str:
    return f"{person}/{photo.name}"


def embed_photos(
    pairs: list[tuple[str, Path]], encoder: FaceEncoder, on_photo: Callable[[PhotoReport], None] | None = None
) -> tuple[Embedded, list[PhotoReport]]:
    """Embed the largest face of each (person, photo): enroll and the gallery edits share it, so a photo
    added later is embedded exactly as one enrolled at first. Photos without a face are reported and
    skipped."""
    embeddings: list[np.ndarray] = []
    names: list[str] = []
    sources: list[str] = []
    reports: list[PhotoReport] = []
    for person, photo in pairs:
        try:
            frame = Frame(0, 0.0, images.load_image(photo))
            dets = encoder.detector.detect([frame.image])[0]
            quality = None
            if dets:  # largest first
                (face,) = encoder.embed_detections([(frame, dets[0])])
                embeddings.append(face.embedding)
                names.append(person)
                sources.append(source_of(person, photo))
                quality = face.quality
            report = PhotoReport(person, photo, len(dets), quality=quality)
        except InputError as exc:  # reported as person/photo: the message's own "photo: " would repeat it
            report = PhotoReport(person, photo, 0, error=str(exc).removeprefix(f"{photo.name}: "))
        reports.append(report)
        if on_photo:
            on_photo(report)
    stacked = np.stack(embeddings).astype(np.float32) if embeddings else np.zeros((0, 512), np.float32)
    return Embedded(stacked, names, sources), reports


def build_gallery(
    photos_dir: Path, encoder: FaceEncoder, on_photo: Callable[[PhotoReport], None] | None = None, *, reference: np.ndarray | None = None
) -> tuple[Gallery, list[PhotoReport]]:
    """Embed the largest face of every photo. Photos without a face are reported and skipped.
    ``reference``: faces nobody enrolled (``reference.reference_faces``), kept in the gallery for
    calibrating it while it is small."""
    embedded, reports = embed_photos(find_photos(photos_dir), encoder, on_photo)
    if not embedded.names:
        raise GalleryError(f"no face was found in any photo under {photos_dir}")
    gallery = Gallery(weights=encoder.weights, embeddings=embedded.embeddings, names=embedded.names, sources=embedded.sources,
                      recipe=encoder.recipe, reference=reference)
    gallery.calibrate()  # its open-set rule, from its own photos; gallery.calibration has the details
    return gallery, reports
