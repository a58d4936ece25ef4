"""What the web tier accepts as an upload, before anything reaches S3: the file name a multipart part
gives (parsed here, see :func:`part_filename`), the in-bucket key made of it, and a real image of an
accepted format and size. Plain functions of the request's bytes and headers: no AWS, no Flask."""

from __future__ import annotations

import io
import re
import unicodedata
import urllib.parse
import warnings
from typing import IO

# PIL format names accepted (the core reads these; MPO is what some cameras call a JPEG).
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})
MAX_NAME_BYTES = 255  # a file name on most file systems; S3 keys may be longer, out-bucket stems too


# filename*=charset'lang'percent-encoded (RFC 2231/5987) and filename="..." or a bare token.
_FILENAME_STAR = re.compile(r";\s*filename\*\s*=\s*([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r';\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.IGNORECASE)


def part_filename(disposition: str | None) -> str | None:
    """The file name in a multipart part's raw Content-Disposition, as the client wrote it.

    Parsed here, not by Werkzeug: browsers (HTML5) and urllib3 send backslashes unescaped, and
    Werkzeug 3.1 reads them as RFC 7230 escapes, so ``C:\\fakepath\\x.jpg`` came out as
    ``C:fakepathx.jpg`` and its last component was lost. A backslash is a path separator to
    :func:`upload_key` whether or not a client doubled it; only ``\\"`` is read as a quote.
    ``filename*`` wins over ``filename``. None when the header names no file."""
    if not disposition:
        return None
    star = _FILENAME_STAR.search(disposition)
    if star:
        charset, _, rest = star.group(1).strip().partition("'")
        encoded = rest.partition("'")[2]
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass  # a charset we cannot read: fall back to the plain filename parameter
    plain = _FILENAME.search(disposition)
    if plain is None:
        return None
    quoted, bare = plain.groups()
    return quoted.replace('\\"', '"') if quoted is not None else bare.strip()


def upload_key(filename: str) -> str | None:
    """The in-bucket key for an uploaded file name, kept as the client sent it (any script): NFC
    normalised, its last path component (some browsers send a whole path), control characters and
    surrounding blanks removed. None when nothing usable is left."""
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs")).strip()
    if name in ("", ".", ".."):
        return None
    return name


def check_image(name: str, data: bytes | IO[bytes], max_pixels: int) -> tuple[int, str] | None:
    """None for an acceptable image, else (HTTP status, message). ``data``: bytes or a seekable file."""
    from PIL import Image, UnidentifiedImageError

    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        stream.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as img:
                fmt, (width, height) = img.format, img.size
                if fmt not in IMAGE_FORMATS:
                    return 415, f"{name}: {fmt} images are not accepted; send a JPEG, PNG, WebP or BMP image"
                if width * height > max_pixels:
                    return 413, f"{name}: {width}x{height} pixels, over the limit of {max_pixels} pixels; send a smaller image"
                img.verify()
    except Image.DecompressionBombError:
        return 413, f"{name}: too many pixels (over {max_pixels}); send a smaller image"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return 415, f"{name}: not an image; send a JPEG, PNG, WebP or BMP image"
    return None


__all__ = ["IMAGE_FORMATS", "MAX_NAME_BYTES", "check_image", "part_filename", "upload_key"]
