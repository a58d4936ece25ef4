"""Face detection (facenet-pytorch MTCNN) and aligned crops for the embedder.

Detection runs on a copy downscaled so its long side is at most ``detect_size`` pixels (MTCNN's cost
grows with the pixel count; faces small enough to vanish there are too small to recognise anyway), and
boxes are scaled back so crops come from the full-resolution frame. Frames of one size are detected in
one batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import extract_face
from PIL import Image

CROP_SIZE = 160
# Pixels of the 160-pixel crop given to context around the box (Sandberg's FaceNet was trained on
# crops with a 44-pixel margin). Against margin 20 it brought a profile face in the Hamilton clip from
# 1.15 to 1.06 of its person while strangers stayed beyond 1.15 (README, "Choosing the threshold").
CROP_MARGIN = 44
DEFAULT_DETECT_SIZE = 640
# MTCNN last-stage probability. Real faces in small photos score 0.91-0.95; partial and profile
# faces in crowds 0.83-0.86 (embeddings of those are unreliable). No-face images score nothing.
DEFAULT_MIN_PROB = 0.90

_models: dict[str, MTCNN] = {}
_lock = threading.Lock()


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in full-resolution pixels
    prob: float

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _mtcnn(device: str) -> MTCNN:
    """One MTCNN per device per process: the weights ship in the facenet-pytorch wheel."""
    with _lock:
        if device not in _models:
            _models[device] = MTCNN(keep_all=True, device=torch.device(device))
        return _models[device]


def _as_float_array(value: object) -> np.ndarray | None:
    # With numpy 2, MTCNN returns dtype=object arrays in some paths (DESIGN.md section 4).
    if value is None:
        return None
    arr = np.asarray(value, dtype=object)
    if arr.size == 0 or any(v is None for v in arr.ravel()):
        return None
    return np.asarray(value, dtype=np.float32)


class FaceDetector:
    def __init__(
        self, device: str = "cpu", detect_size: int = DEFAULT_DETECT_SIZE, min_prob: float = DEFAULT_MIN_PROB
    ) -> None:
        self.device = device
        self.detect_size = detect_size
        self.min_prob = min_prob
        self.mtcnn = _mtcnn(device)

    def _scale(self, image: Image.Image) -> float:
        long_side = max(image.size)
        return min(1.0, self.detect_size / long_side) if self.detect_size else 1.0

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        """Faces per image, largest first."""
        results: list[list[Detection]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.size, []).append(i)
        for size, indices in by_size.items():
            scale = self._scale(images[indices[0]])
            small_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            batch = [images[i] if scale == 1.0 else images[i].resize(small_size, Image.BILINEAR) for i in indices]
            with torch.inference_mode():
                boxes, probs = self.mtcnn.detect(batch)
            for i, img_boxes, img_probs in zip(indices, boxes, probs):
                results[i] = self._detections(img_boxes, img_probs, scale, size)
        return results

    def _detections(self, boxes: object, probs: object, scale: float, size: tuple[int, int]) -> list[Detection]:
        b = _as_float_array(boxes)
        p = _as_float_array(probs)
        if b is None or p is None:
            return []
        found = []
        for box, prob in zip(b.reshape(-1, 4), p.reshape(-1)):
            if prob < self.min_prob:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in box)
            x1, y1 = max(0.0, x1), max(0.0, y1)
            x2, y2 = min(float(size[0]), x2), min(float(size[1]), y2)
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                found.append(Detection((x1, y1, x2, y2), float(prob)))
        return sorted(found, key=lambda d: d.area, reverse=True)


def crop(image: Image.Image, det: Detection) -> torch.Tensor:
    """A 3x160x160 crop standardised as the embedder expects ((x - 127.5) / 128)."""
    face = extract_face(image, np.asarray(det.box), image_size=CROP_SIZE, margin=CROP_MARGIN)
    return (face - 127.5) / 128.0
