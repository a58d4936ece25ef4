"""``facerec enroll`` as a plain workflow: a folder of photos (one sub-folder per person) into a new
gallery file, with the reference faces that calibrate a small gallery's open-set rule; it reports each
photo, and any person whose photos look like two people. Printing is ``render.print_enrolment``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lambdas.core.enroll import PhotoReport, build_gallery, find_photos
from lambdas.core.gallery import Gallery
from lambdas.core.gallery_edit import TwoGroups, two_people
from lambdas.core.recognise import FaceEncoder
from lambdas.core.reference import cached_reference_faces

from facerec_cli.gallery_files import check_new_gallery_path


@dataclass
class Enrolment:
    output: Path
    gallery: Gallery
    reports: list[PhotoReport]  # one per photo (a note unless "ok")
    two_people: list[TwoGroups]  # people whose photos form two far-apart groups


@dataclass
class Enrolling:
    """An enrolment checked before any photo is embedded (an existing gallery at ``output`` is replaced
    only with ``force``; a folder or a file that is not a gallery never); :meth:`run` does it."""

    photos_dir: Path
    output: Path
    photos: int  # how many photos there are to embed

    @classmethod
    def check(cls, photos_dir: Path, output: Path, *, force: bool = False) -> Enrolling:
        check_new_gallery_path(output, force=force)
        return cls(photos_dir, output, len(find_photos(photos_dir)))

    def run(self, *, weights: str = "casia-webface", device: str = "cpu", on_step: Callable[[str, int], None] | None = None) -> Enrolment:
        """Embed every photo and write the gallery. ``on_step(what it is doing, photos just done)``."""
        step = on_step or (lambda what, done: None)
        encoder = FaceEncoder(weights=weights, device=device)
        step("enrolling", 0)
        step("embedding the reference faces (strangers for calibrating a small gallery)", 0)
        reference = cached_reference_faces(encoder)
        gallery, reports = build_gallery(self.photos_dir, encoder, lambda r: step(f"enrolling {r.person}", 1), reference=reference)
        gallery.save(self.output)
        return Enrolment(self.output, gallery, reports, two_people(gallery))
