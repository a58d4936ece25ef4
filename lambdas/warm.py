"""The face-recognition function's warm state: one recogniser (gallery and models) per container, kept
across invocations and rebuilt only when the gallery object or the function's settings change. Used by
the handler and by timeline segments (:mod:`.segments`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import botocore.exceptions

from .core.errors import GalleryError
from .core.gallery import Gallery, weights_for
from .core.recognise import Recogniser, SamplingOptions
from .env import RecognitionEnv
from .storage import client, log

_lock = threading.Lock()
_state: dict[str, Any] = {}  # gallery version -> Recogniser, kept warm across invocations


def _gallery_version(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        try:
            head = client("s3").head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("403", "AccessDenied", "Forbidden"):
                raise GalleryError(f"access to the gallery {uri} was denied: the function's role needs s3:GetObject on it "
                                   "(run `facerec bootstrap` again to restore its policy)") from exc
            raise GalleryError(f"no gallery at {uri}: upload one with `facerec bootstrap --gallery G`") from exc
        return f"{uri}#{head['ETag']}"
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    if not path.is_file():
        raise GalleryError(f"no gallery at {path} in this image: rebuild it with a gallery or set FACEREC_GALLERY")
    stat = path.stat()
    return f"{path}#{stat.st_mtime_ns}:{stat.st_size}"


def _load_gallery(uri: str) -> Gallery:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        body = client("s3").get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        return Gallery.from_bytes(body, origin=uri)
    return Gallery.load(Path(parsed.path if parsed.scheme == "file" else uri))


def recogniser(env: RecognitionEnv) -> Recogniser:
    """The warm recogniser; rebuilt when the gallery object or the function's settings change. Faces are
    embedded with the function's weights (FACEREC_WEIGHTS: the ones its image carries) when set, else
    the gallery's, and a gallery made with other weights is refused."""
    version = f"{_gallery_version(env.gallery_uri)}|all_frames={env.all_frames}|weights={env.weights}"
    with _lock:
        if _state.get("version") != version:
            gallery = _load_gallery(env.gallery_uri)
            weights = weights_for(gallery, env.weights)  # refuses a mismatch before any model loads
            previous = _state.get("recogniser")
            # A new gallery of the same weights keeps the loaded models.
            encoder = previous.encoder if previous and previous.encoder.weights == gallery.weights else None
            sampling = SamplingOptions(early_exit=not env.all_frames)
            _state["recogniser"] = Recogniser(
                gallery, encoder, weights=weights, device=env.device, threshold=env.threshold, sampling=sampling
            )
            _state["version"] = version
            log("gallery loaded", uri=env.gallery_uri, people=len(gallery.people), weights=gallery.weights)
        return _state["recogniser"]
