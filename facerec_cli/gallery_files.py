"""Gallery files on the user's machine: load any gallery a user may have, and convert old ones.

The runtime (``lambdas.core.gallery``) reads only safetensors galleries and never unpickles. Galleries
made before (``torch.save`` of a dict, format version 1) and the course's ``data.pt``
(``[embedding_list, name_list]``, made with vggface2 weights) are torch pickles: they are converted
here, with ``torch.load(weights_only=True)`` (plain tensors, lists and strings only: a file cannot run
code), and torch is imported only when such a file turns up.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

from lambdas.core.errors import GalleryError, LegacyGalleryError
from lambdas.core.gallery import (
    FORMAT,
    LEGACY_VERSION,
    SUFFIX,
    Gallery,
    looks_like_torch,
    read_gallery_file,
)

__all__ = ["check_new_gallery_path", "convert_gallery", "gallery_from_torch", "load_gallery", "upload_body"]


def load_gallery(path: Path) -> Gallery:
    """The gallery in ``path``: a safetensors gallery as the runtime reads it, or an old torch gallery
    or course ``data.pt`` converted in memory. GalleryError on anything else."""
    data = read_gallery_file(Path(path))
    try:
        return Gallery.from_bytes(data, origin=str(path))
    except LegacyGalleryError:
        return _converted(data, str(path))


def check_new_gallery_path(path: Path, *, force: bool = False) -> None:
    """Refuse, before any work, to write a new gallery over what is at ``path``: a folder; a file that is
    not a gallery (whatever ``force`` says: it is not ours to destroy); a gallery unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise GalleryError(f"{path} is a folder: give the gallery file's name, e.g. -o {path / ('gallery' + SUFFIX)}")
    if not path.exists():
        return
    try:
        load_gallery(path)
    except GalleryError as exc:
        raise GalleryError(f"{path} exists and is not a gallery ({exc}): choose another file name, or move it away first") from exc
    if not force:
        raise GalleryError(f"{path} is a gallery already: pass --force to replace it, or add photos to it with "
                           f"`facerec gallery add -g {path} PHOTOS...`")  # fmt: skip


def convert_gallery(src: Path, dst: Path) -> Gallery:
    """Write ``src`` (any gallery ``load_gallery`` reads) to ``dst`` as a safetensors gallery."""
    src, dst = Path(src), Path(dst)
    gallery = load_gallery(src)
    if dst.resolve() == src.resolve():
        raise GalleryError(f"convert {src} to another file (e.g. {src.with_suffix(SUFFIX)}): it would overwrite its own source")
    gallery.save(dst)
    return gallery


def upload_body(path: Path) -> tuple[bytes, bool]:
    """(bytes to upload for the gallery file ``path``, whether they were converted): a torch file is
    converted to safetensors, anything else goes as it is (``bootstrap`` checks the gallery itself
    before it plans)."""
    data = read_gallery_file(Path(path))
    if looks_like_torch(data):
        return _converted(data, str(path)).to_bytes(), True
    return data, False


def gallery_object(bucket: str, key: str, path: Path) -> Any:
    """The deploy spec (an S3 object) of uploading gallery file ``path`` to ``s3://bucket/key``: a
    safetensors gallery as it is, an old torch gallery or a course data.pt converted (the runtime reads
    only safetensors and never unpickles). The same bytes at every run, so a second bootstrap with the
    same file has nothing to change."""
    import hashlib

    from facerec_cli.infra.resources.s3 import ObjectSpec

    body, converted = upload_body(path)
    md5 = hashlib.md5(body).hexdigest()
    description = f"gallery {path} ({len(body) / 1e6:.1f} MB{', converted from torch to safetensors' if converted else ''}, md5 {md5})"
    return ObjectSpec(bucket, key, body, md5, description)


@functools.lru_cache(maxsize=2)
def _converted(data: bytes, origin: str) -> Gallery:
    # bootstrap and run-local read the user's file twice (to check its weights, then to upload it):
    # torch (seconds to import) converts it once.
    return gallery_from_torch(data, origin)


def gallery_from_torch(data: bytes, origin: str = "gallery") -> Gallery:
    """A gallery from a torch file: a facerec gallery of format version 1 or a course ``data.pt``."""
    import torch  # only here: converting is the one thing the CLI needs torch for in galleries

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign, truncated or unsafe files
        raise GalleryError(
            f"{origin} is not a facerec gallery or course data.pt ({type(exc).__name__}); "
            f"make one with `facerec enroll PHOTOS_DIR -o gallery{SUFFIX}`"
        ) from exc
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version") != LEGACY_VERSION:
            raise GalleryError(f"{origin} is a torch gallery of format version {obj.get('version')}; this facerec converts version {LEGACY_VERSION}")
        return Gallery(
            weights=str(obj["weights"]),
            embeddings=_numpy(obj["embeddings"], origin),
            names=list(obj["names"]),
            sources=list(obj.get("sources") or []),
            threshold=obj.get("threshold"),
            recipe=obj.get("recipe"),
        )
    if isinstance(obj, (list, tuple)) and len(obj) == 2 and len(obj[0]) == len(obj[1]):
        # The course's data.pt: [embedding_list, name_list], made with vggface2 weights.
        rows = [_numpy(e, origin) for e in obj[0]]
        if any(r.size != 512 for r in rows):
            raise GalleryError(f"{origin} looks like a course data.pt, but not every entry is one 512-d embedding")
        import numpy as np

        embeddings = np.stack([r.reshape(512) for r in rows]) if rows else np.zeros((0, 512), np.float32)
        return Gallery(weights="vggface2", embeddings=embeddings, names=[str(n) for n in obj[1]], sources=[])
    raise GalleryError(f"{origin} is a torch file but not a facerec gallery or course data.pt (unexpected content)")


def _numpy(value: Any, origin: str) -> Any:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32).numpy()
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"{origin}: its embeddings are not numbers ({exc})") from exc
