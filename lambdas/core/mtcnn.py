"""MTCNN face detection (Zhang et al. 2016) in numpy around the three nets, as facenet-pytorch 2.5.3's
``detect_face`` does it: scale pyramid, P-Net, NMS per scale and per image, R-Net, O-Net, box regression.

The nets run on whatever ``Nets`` is given (onnxruntime on the CPU, torch on a GPU); the stages between
them are here, in float32 like the original, so that the same faces come out: tests compare boxes and
probabilities with facenet-pytorch's own MTCNN on every photo and sampled frame of the test data.
Resampling is facenet-pytorch's ``interpolate(mode="area")`` (adaptive average pooling), computed from one
integral image per frame, which serves the whole pyramid and every R-Net/O-Net crop.
"""

from __future__ import annotations

import numpy as np

from .models import Nets

MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
_F32 = np.float32


def _windows(n_in: int | np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of each output cell of adaptive average pooling, as torch computes them;
    ``n_in`` may be a column of lengths (K x 1), giving K rows of windows."""
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out


def integral(image: np.ndarray) -> np.ndarray:
    """(H+1) x (W+1) x C summed-area table of an H x W x C 8-bit image, in integers (exact): int32 while
    the whole image's sum fits (any frame up to 8 megapixels), else int64. Half the bytes of float64 for
    the gathers that resample the pyramid and the crops, with the same sums."""
    h, w, c = image.shape
    dtype = np.int32 if 255 * h * w < 2**31 else np.int64
    table = np.zeros((h + 1, w + 1, c), dtype)
    np.cumsum(image, axis=0, dtype=dtype, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    return table


def area_resize(table: np.ndarray, y0: int, y1: int, x0: int, x1: int, out_h: int, out_w: int) -> np.ndarray:
    """Rows y0:y1, columns x0:x1 of the image behind ``table`` resized to out_h x out_w by area
    averaging (torch's ``interpolate(mode="area")``); out_h x out_w x C float32."""
    rs, re = _windows(y1 - y0, out_h)
    cs, ce = _windows(x1 - x0, out_w)
    rs, re, cs, ce = (rs + y0)[:, None], (re + y0)[:, None], (cs + x0)[None, :], (ce + x0)[None, :]
    # Four out_h x out_w gathers (no out_h x W intermediate rows).
    total = table[re, ce] - table[rs, ce] - table[re, cs] + table[rs, cs]
    count = ((re - rs) * (ce - cs))[..., None]
    return (total / count).astype(_F32)


def _crops(tables: list[np.ndarray], boxes: np.ndarray, image_inds: np.ndarray, w: int, h: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` x ``size`` crops of the (padded, truncated) boxes as N x 3 x size x size network input;
    also which boxes had a non-empty crop. All crops of one image come from its integral image in four
    vectorised gathers (no loop over boxes)."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x, y, ex, ey = b[:, 0].copy(), b[:, 1].copy(), b[:, 2].copy(), b[:, 3].copy()
    x[x < 1], y[y < 1] = 1, 1
    ex[ex > w], ey[ey > h] = w, h
    ok = (ey > y - 1) & (ex > x - 1)
    data = np.zeros((int(ok.sum()), size, size, 3), _F32)
    kept = np.flatnonzero(ok)
    for image in np.unique(image_inds[kept]):
        pick = image_inds[kept] == image
        k = kept[pick]
        y0, x0 = y[k, None] - 1, x[k, None] - 1
        rs, re = (w + y0 for w in _windows(ey[k, None] - y0, size))  # one row of windows per box
        cs, ce = (w + x0 for w in _windows(ex[k, None] - x0, size))
        t = tables[image]
        total = (t[re[:, :, None], ce[:, None, :]] - t[rs[:, :, None], ce[:, None, :]]
                 - t[re[:, :, None], cs[:, None, :]] + t[rs[:, :, None], cs[:, None, :]])
        count = ((re - rs)[:, :, None] * (ce - cs)[:, None, :])[..., None]
        data[pick] = total / count
    return ((data - _F32(127.5)) * _F32(0.0078125)).transpose(0, 3, 1, 2), ok


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union", plus_one: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first. ``union``/no +1 is torchvision's
    ``nms``; ``min`` with +1 is facenet-pytorch's ``nms_numpy`` (O-Net's last pass)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    one = _F32(1) if plus_one else _F32(0)
    x1, y1, x2, y2 = (boxes[:, i].astype(_F32) for i in range(4))
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(_F32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        hh = np.maximum(_F32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * hh
        over = inter / (np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter)
        order = rest[over <= threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, **kwargs: object) -> np.ndarray:
    """NMS within each group (image), indices kept ordered by score."""
    keep = [np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], threshold, **kwargs)] for g in np.unique(groups)]
    if not keep:
        return np.zeros(0, np.int64)
    kept = np.concatenate(keep)
    return kept[np.argsort(-scores[kept], kind="stable")]


def _rerec(b: np.ndarray) -> np.ndarray:
    """Boxes made square around their centres (longest side)."""
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * _F32(0.5) - side * _F32(0.5)
    b[:, 1] = b[:, 1] + h * _F32(0.5) - side * _F32(0.5)
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _bbreg(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = b[:, 2] - b[:, 0] + _F32(1)
    h = b[:, 3] - b[:, 1] + _F32(1)
    b[:, :4] = np.stack([b[:, 0] + reg[:, 0] * w, b[:, 1] + reg[:, 1] * h, b[:, 2] + reg[:, 2] * w, b[:, 3] + reg[:, 3] * h], axis=1)
    return b


def _pyramid(h: int, w: int, min_size: int, factor: float) -> list[float]:
    m = 12.0 / min_size
    minl = min(h, w) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


def _candidates(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """P-Net cells over the threshold as boxes [x1, y1, x2, y2, score, 4 x reg] and their image index."""
    n, y, x = np.nonzero(prob >= threshold)
    score = prob[n, y, x]
    r = reg[n, :, y, x]
    bb = np.stack([x, y], axis=1).astype(_F32)
    s = _F32(scale)
    q1 = np.floor((_F32(2) * bb + _F32(1)) / s)
    q2 = np.floor((_F32(2) * bb + _F32(12)) / s)
    return np.concatenate([q1, q2, score[:, None], r], axis=1).astype(_F32), n


def detect(nets: Nets, images: list[np.ndarray], min_size: int = MIN_FACE_SIZE, thresholds: tuple[float, float, float] = THRESHOLDS,
           factor: float = FACTOR) -> list[np.ndarray]:
    """Faces in each of ``images`` (H x W x 3 uint8 RGB, all one size): per image an N x 15 float32 array
    of [x1, y1, x2, y2, probability, then the five landmarks' x (left eye, right eye, nose, mouth left,
    mouth right) and their y], in facenet-pytorch's order, landmarks as its ``detect(landmarks=True)``."""
    h, w = images[0].shape[:2]
    tables = [integral(img) for img in images]
    empty = [np.zeros((0, 15), _F32) for _ in images]

    # Stage 1: P-Net over the pyramid, NMS per scale and image, then per image.
    found, found_inds = [], []
    for scale in _pyramid(h, w, min_size, factor):
        oh, ow = int(h * scale + 1), int(w * scale + 1)
        batch = np.stack([area_resize(t, 0, h, 0, w, oh, ow) for t in tables])
        batch = ((batch - _F32(127.5)) * _F32(0.0078125)).transpose(0, 3, 1, 2)
        reg, prob = nets.pnet(batch)
        boxes, inds = _candidates(reg, prob[:, 1], scale, thresholds[0])
        pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.5)
        found.append(boxes[pick])
        found_inds.append(inds[pick])
    if not found:
        return empty
    boxes, inds = np.concatenate(found), np.concatenate(found_inds)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    if len(boxes) == 0:
        return empty
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                      boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], axis=1)
    boxes = _rerec(boxes)

    # Stage 2: R-Net on 24 x 24 crops.
    data, ok = _crops(tables, boxes, inds, w, h, 24)
    boxes, inds = boxes[ok], inds[ok]
    if len(boxes) == 0:
        return empty
    reg, prob = nets.rnet(data)
    score = prob[:, 1]
    passed = score > thresholds[1]
    boxes = np.concatenate([boxes[passed, :4], score[passed, None]], axis=1)
    inds, reg = inds[passed], reg[passed]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds, reg = boxes[pick], inds[pick], reg[pick]
    boxes = _rerec(_bbreg(boxes, reg))
    if len(boxes) == 0:
        return empty

    # Stage 3: O-Net on 48 x 48 crops, then NMS by the smaller box's area.
    data, ok = _crops(tables, boxes, inds, w, h, 48)
    boxes, inds = boxes[ok], inds[ok]
    if len(boxes) == 0:
        return empty
    reg, points, prob = nets.onet(data)
    score = prob[:, 1]
    passed = score > thresholds[2]
    boxes = np.concatenate([boxes[passed, :4], score[passed, None]], axis=1)
    inds, reg, points = inds[passed], reg[passed], points[passed]
    # Landmarks are relative to the O-Net crop's box (before its regression), as facenet-pytorch reads them.
    bw, bh = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
    points = np.concatenate([bw * points[:, :5] + boxes[:, 0:1] - 1, bh * points[:, 5:10] + boxes[:, 1:2] - 1], axis=1)
    boxes = _bbreg(boxes, reg)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7, method="min", plus_one=True)
    boxes, inds = np.concatenate([boxes[pick], points[pick]], axis=1), inds[pick]
    return [boxes[inds == i].astype(_F32) for i in range(len(images))]
