"""Face detection (MTCNN, ``mtcnn``) and aligned crops for the embedder.

Detection runs on a copy downscaled so its long side is at most ``detect_size`` pixels (MTCNN's cost
grows with the pixel count; faces small enough to vanish there are too small to recognise anyway), and
boxes are scaled back so crops come from the full-resolution frame. Frames of one size are detected in
one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import mtcnn
from .models import Nets, load_models

CROP_SIZE = 160
# Pixels of the 160-pixel crop given to context around the box (Sandberg's FaceNet was trained on
# crops with a 44-pixel margin). Against margin 20 it brought a profile face in the Hamilton clip from
# 1.15 to 1.06 of its person while strangers stayed beyond 1.15 (README, "Choosing the threshold").
CROP_MARGIN = 44
DEFAULT_DETECT_SIZE = 640
# MTCNN last-stage probability. Real faces in small photos score 0.91-0.95; partial and profile
# faces in crowds 0.83-0.86 (embeddings of those are unreliable). No-face images score nothing.
DEFAULT_MIN_PROB = 0.90

@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in full-resolution pixels
    prob: float
    # (x, y) of left eye, right eye, nose, mouth left, mouth right in full-resolution pixels (MTCNN O-Net)
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FaceDetector:
    def __init__(
        self, nets: Nets | None = None, detect_size: int = DEFAULT_DETECT_SIZE, min_prob: float = DEFAULT_MIN_PROB
    ) -> None:
        self.nets = nets or load_models()
        self.detect_size = detect_size
        self.min_prob = min_prob

    def scale(self, image: Image.Image, size: int | None = None) -> float:
        """The factor ``image`` is detected at: its long side brought down to ``size`` (default the
        detector's ``detect_size``; 0: full resolution)."""
        size = self.detect_size if size is None else size
        return min(1.0, size / max(image.size)) if size else 1.0

    def detect(self, images: list[Image.Image], size: int | None = None) -> list[list[Detection]]:
        """Faces per image, largest first; ``size``: the long side to detect at instead of ``detect_size``."""
        results: list[list[Detection]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.size, []).append(i)
        for size_px, indices in by_size.items():
            scale = self.scale(images[indices[0]], size)
            small_size = (max(1, round(size_px[0] * scale)), max(1, round(size_px[1] * scale)))
            batch = [np.asarray(images[i] if scale == 1.0 else images[i].resize(small_size, Image.BILINEAR)) for i in indices]
            for i, found in zip(indices, mtcnn.detect(self.nets, batch)):
                results[i] = self._detections(found, scale, size_px)
        return results

    def _detections(self, found: np.ndarray, scale: float, size: tuple[int, int]) -> list[Detection]:
        detections = []
        for row in found.tolist():
            prob = row[4]
            if prob < self.min_prob:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in row[:4])
            x1, y1 = max(0.0, x1), max(0.0, y1)
            x2, y2 = min(float(size[0]), x2), min(float(size[1]), y2)
            points = tuple((row[5 + k] / scale, row[10 + k] / scale) for k in range(5)) if len(row) >= 15 else None
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                detections.append(Detection((x1, y1, x2, y2), float(prob), points))
        return sorted(detections, key=lambda d: d.area, reverse=True)


# Faces whose embeddings cannot be trusted are answered unknown with one of these reasons. Measured on
# 5celeb val photos degraded on purpose (blurred, downscaled; a one-off measurement): at 16 px a true match drifted to
# 0.92-1.19 (the threshold is 1.07 at most), at 24 px it stayed within 0.70-1.03; a Gaussian blur that
# brought the sharpness below 0.02 pushed true matches to 1.05-1.38, above it they stayed within 1.05.
# The Hamilton clip's 25-px face of Alex Lacamoire (named at 1.06) is the smallest face the test data
# needs named. The profile limit is geometric: the nose beyond an eye by the eyes' whole distance.
# Frontal to three-quarter photos in the test data reach 0.75 and match well; on 1,000 CFP profile
# photos against 158 enrolled people the open-set rule already kept most profiles of strangers out,
# and a limit of 1.0 cost 19 right names to prevent 2 wrong ones, 1.5 cost 3 to prevent 1.
TOO_SMALL, BLURRED, PROFILE = "too_small", "blurred", "profile"
MIN_FACE_SIDE = 20.0  # px of the full-resolution frame, the box's shorter side
MIN_SHARPNESS = 0.02
MAX_YAW = 1.5
_SHARPNESS_SIZE = 48  # sharpness is measured with the face at most this size: blur relative to the face


def yaw(det: Detection) -> float | None:
    """How far the nose lies beside the eyes' midpoint, in eye distances (0 frontal; beyond 0.5 the nose
    is outside the eyes: a face turned far to one side). None without landmarks."""
    if det.landmarks is None:
        return None
    (lx, ly), (rx, ry), (nx, _), _, _ = det.landmarks
    eyes = float(np.hypot(rx - lx, ry - ly))
    return float(nx - (lx + rx) / 2) / max(eyes, 1e-6)


def sharpness(image: Image.Image, det: Detection) -> float:
    """Variance of the Laplacian over the variance of the grey face, with the face at most 48 px: low
    when the face is blurred relative to its own size (a small sharp face is not penalised)."""
    x1, y1, x2, y2 = det.box
    face = image.crop((int(x1), int(y1), max(int(x1) + 1, int(x2)), max(int(y1) + 1, int(y2)))).convert("L")
    side = max(3, min(_SHARPNESS_SIZE, face.size[0], face.size[1]))
    g = np.asarray(face.resize((side, side), Image.BILINEAR), np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var() / max(float(g.var()), 1e-6))


def quality_issue(image: Image.Image, det: Detection) -> str | None:
    """Why this face's embedding is not to be trusted (TOO_SMALL, BLURRED, PROFILE), or None."""
    x1, y1, x2, y2 = det.box
    if min(x2 - x1, y2 - y1) < MIN_FACE_SIDE:
        return TOO_SMALL
    turned = yaw(det)
    if turned is not None and abs(turned) > MAX_YAW:
        return PROFILE
    if sharpness(image, det) < MIN_SHARPNESS:
        return BLURRED
    return None


def crop(image: Image.Image, det: Detection) -> np.ndarray:
    """A 3 x 160 x 160 float32 crop standardised as the embedder expects ((x - 127.5) / 128): the box
    widened by the margin (in crop pixels), clipped to the image, resized bilinearly, as facenet-pytorch's
    ``extract_face`` does."""
    x1, y1, x2, y2 = det.box
    mx = CROP_MARGIN * (x2 - x1) / (CROP_SIZE - CROP_MARGIN)
    my = CROP_MARGIN * (y2 - y1) / (CROP_SIZE - CROP_MARGIN)
    width, height = image.size
    box = (int(max(x1 - mx / 2, 0)), int(max(y1 - my / 2, 0)), int(min(x2 + mx / 2, width)), int(min(y2 + my / 2, height)))
    face = image.crop(box).resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR)
    pixels = np.asarray(face, dtype=np.float32).transpose(2, 0, 1)
    return (pixels - np.float32(127.5)) / np.float32(128.0)
