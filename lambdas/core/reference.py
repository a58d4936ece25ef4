"""Faces nobody enrolled, for calibrating a small gallery (``openset.calibrate(reference=...)``).

A gallery of fewer than ``MIN_CALIBRATION_PEOPLE`` people with two photos has too few people to draw
strangers from, so without a reference it falls back to the default threshold and no margin. These
faces play the strangers instead, and the next ones for the margin (``Gallery.match``).

Source: the 100 faces of scikit-image's ``data.lfw_subset()`` (25 x 25 grey crops of Labeled Faces in
the Wild, which scikit-image ships in its wheel; facerec already depends on scikit-image for the demo).
Nothing is copied into this repository or downloaded: they are embedded at enrol time with the
gallery's own weights, and the embeddings (200 KB) travel in the gallery file, so the functions need
neither scikit-image nor the photos. Measured with casia-webface weights: detected on a 320 px canvas
(all 100), they lie 0.94-1.3 from the 5celeb people (true matches: up to 0.97) and 1.29 apart from
each other (median): as unenrolled faces do.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

CANVAS = 320  # px: each 25 px face scaled to 160 on a grey canvas, where MTCNN finds it
SOURCE = "scikit-image data.lfw_subset() faces"


def reference_faces(encoder: Any) -> np.ndarray:
    """Unit embeddings (R x 512) of the reference faces, by ``encoder`` (a FaceEncoder: the gallery's
    weights and recipe); the faces the detector does not find are left out."""
    from PIL import Image
    from skimage import data  # only here: enrol time, on the user's machine

    from .media import Frame

    faces = data.lfw_subset()[:100]  # the first 100 are faces, the rest background patches
    canvases = []
    for face in faces:
        picture = Image.fromarray((np.clip(face, 0, 1) * 255).astype(np.uint8)).convert("RGB").resize((160, 160), Image.BICUBIC)
        canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
        canvas.paste(picture, ((CANVAS - 160) // 2, (CANVAS - 160) // 2))
        canvases.append(canvas)
    found = encoder.detector.detect(canvases)  # one batch: same-size canvases share the pyramid's passes
    pairs = [(Frame(k, 0.0, canvas), dets[0]) for k, (canvas, dets) in enumerate(zip(canvases, found)) if dets]
    embedded = encoder.embed_detections(pairs)
    return np.stack([e.embedding for e in embedded]).astype(np.float32) if embedded else np.zeros((0, 512), np.float32)


def cached_reference_faces(encoder: Any) -> np.ndarray:
    """``reference_faces`` kept in the weights cache per weights and recipe (embedding them costs ~5 s
    on 2 busy cores; every enrolment with the same weights gets the same rows)."""
    import hashlib

    from .weights import weights_cache_dir

    key = hashlib.sha256(f"{SOURCE}|{encoder.weights}|{encoder.recipe}".encode()).hexdigest()[:16]
    path = weights_cache_dir() / f"reference-{key}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.ndim == 2 and cached.shape[1] == 512:
            return cached.astype(np.float32)
    except (OSError, ValueError):
        pass  # absent or damaged: embed again
    faces = reference_faces(encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, faces, allow_pickle=False)
    tmp.replace(path)
    return faces
