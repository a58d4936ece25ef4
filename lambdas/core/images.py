"""Image files, in process, with Pillow: which files are images, reading one upright in RGB (within
``MAX_PIXELS``, refused from its header before its pixels are decoded) and encoding a frame as the JPEG
stage-1 stores (:func:`encode_jpeg`, ``JPEG_QUALITY``). Videos are :mod:`.media`'s.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# Pillow's scale; what stage-1 stores. Measured on course-like frames: a mean error of 0.7-1.0 levels
# of 255 and 1.2-1.3x the bytes of the JPEGs the ffmpeg binary wrote before (-q:v 2); 95 doubles them.
JPEG_QUALITY = 90

# Images and video frames with more pixels than this are refused before decoding (a 50-megapixel RGB
# image is 150 MB in memory; Pillow's own decompression-bomb limit is 89 megapixels, with a warning).
MAX_PIXELS = 50_000_000

_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def check_file(path: Path, name: str | None = None, *, fix: str = "upload the video again") -> int:
    """Size of a readable, non-empty file; InputError otherwise (``fix``: what to do about an empty one)."""
    name = name or path.name
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise InputError(f"{name}: file not found") from exc
    if size == 0:
        raise InputError(f"{name}: the file is empty (0 bytes); {fix}")
    return size


def megapixels(pixels: int) -> str:
    """A pixel count as messages give it (images' and video frames' limits)."""
    return f"{pixels / 1e6:.0f} megapixels" if pixels >= 1e6 else f"{pixels / 1e6:.2f} megapixels"


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB image as JPEG bytes (what stage-1 stores)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _image_too_large(path: Path, detail: str) -> InputError:
    return InputError(
        f"{path.name}: the image is {detail}, over the limit of {megapixels(MAX_PIXELS)}; scale it down "
        "(e.g. to 4000 pixels on its long side) and try again"
    )


def load_image(path: Path) -> Image.Image:
    """An RGB image; transparency is composited on white (a PNG cut-out must not turn black). Images
    over ``MAX_PIXELS`` are refused from their header, before their pixels are decoded."""
    check_file(path, fix="replace the photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise _image_too_large(path, f"{width}x{height} ({megapixels(width * height)})")
                # Phone photos store pixels sideways plus an EXIF orientation that viewers apply: apply
                # it too, or the faces reach the detector lying on their side and are not found.
                img = ImageOps.exif_transpose(opened)
                img.load()
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    background = Image.new("RGB", rgba.size, (255, 255, 255))
                    background.paste(rgba, mask=rgba.getchannel("A"))
                    return background
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit (89 megapixels warns, twice that is an error) fires inside Image.open.
        m = _PIL_BOMB_PIXELS.search(str(exc))
        raise _image_too_large(path, megapixels(int(m.group(1))) if m else "too large") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{path.name}: not an image (its content is no JPEG, PNG or WebP picture); replace the photo") from exc
    except (OSError, ValueError) as exc:  # Pillow: "Truncated File Read", "image file is truncated"...
        raise InputError(f"{path.name}: not a readable image, damaged or cut short ({exc}); replace the photo") from exc
