"""Faces drawn on a frame: a box per face with its name and distance (``madonna 0.61``); faces nobody
in the gallery matched get a red box labelled ``unknown 1.21``.

Used by ``facerec identify --annotate DIR`` and by the face-recognition function when
``FACEREC_ANNOTATE=1`` (it stores the frame with the most, then the largest, faces as
``<stem>.annotated.jpg`` beside the result; result listings only count ``.json`` keys).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable

from PIL import Image, ImageDraw, ImageFont

from .results import UNKNOWN, Face

KNOWN_COLOUR = (0, 200, 83)  # green: named within the threshold
UNKNOWN_COLOUR = (230, 20, 20)  # red: a face nobody in the gallery matched
LABEL_TEXT = (255, 255, 255)
ANNOTATED_SUFFIX = ".annotated.jpg"
JPEG_QUALITY = 90


def annotated_key(stem: str) -> str:
    """Key of a video's annotated frame in the output bucket: ``<stem>.annotated.jpg``."""
    return f"{stem}{ANNOTATED_SUFFIX}"


def colour(face: Face) -> tuple[int, int, int]:
    return UNKNOWN_COLOUR if face.name == UNKNOWN else KNOWN_COLOUR


def label(face: Face) -> str:
    return f"{face.name} {face.distance:.2f}"


def line_width(size: tuple[int, int]) -> int:
    """Thick enough to survive JPEG and a thumbnail: 3 px at 640x480, 5 px at 1280x720, 8 px at 1080p."""
    return max(3, round(max(size) / 250))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


def faces_in_frame(faces: Iterable[Face], frame: int) -> list[Face]:
    return [f for f in faces if f.frame == frame]


def best_frame(faces: Iterable[Face]) -> int | None:
    """The frame with the most faces; ties go to the larger total face area, then the earlier frame.
    None when there are no faces."""
    count: dict[int, int] = {}
    area: dict[int, float] = {}
    for face in faces:
        count[face.frame] = count.get(face.frame, 0) + 1
        area[face.frame] = area.get(face.frame, 0.0) + face.area()
    if not count:
        return None
    return max(count, key=lambda f: (count[f], area[f], -f))


def annotate(image: Image.Image, faces: Iterable[Face]) -> Image.Image:
    """A copy of ``image`` (RGB) with every face in ``faces`` drawn on it. Boxes are in the image's
    pixel coordinates (the full-resolution frame, as results record them)."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    width = line_width(canvas.size)
    font = _font(max(12, round(max(canvas.size) / 45)))
    w, h = canvas.size
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face.box)
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        if x2 <= x1 or y2 <= y1:
            continue
        fill = colour(face)
        # The box grows outwards from the face's edge, so the face itself stays visible.
        draw.rectangle((x1 - width + 1, y1 - width + 1, x2 + width - 1, y2 + width - 1), outline=fill, width=width)
        text = label(face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        pad = max(2, width)
        lx = max(0, min(x1 - width + 1, w - tw - 2 * pad))
        ly = y1 - width + 1 - th - 2 * pad
        if ly < 0:  # no room above the box: inside its top edge
            ly = y1 + width
        draw.rectangle((lx, ly, lx + tw + 2 * pad, ly + th + 2 * pad), fill=fill)
        draw.text((lx + pad - left, ly + pad - top), text, fill=LABEL_TEXT, font=font)
    return canvas


def annotate_frame(image: Image.Image, faces: Iterable[Face], frame: int) -> Image.Image:
    """``image`` (sampled frame number ``frame``) with that frame's faces drawn on it."""
    return annotate(image, faces_in_frame(faces, frame))


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    # 4:4:4 chroma: thin coloured lines and label text stay crisp (4:2:0 smears them into the face)
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


__all__ = [
    "ANNOTATED_SUFFIX",
    "KNOWN_COLOUR",
    "UNKNOWN_COLOUR",
    "annotate",
    "annotate_frame",
    "annotated_key",
    "best_frame",
    "faces_in_frame",
    "jpeg_bytes",
    "label",
]
