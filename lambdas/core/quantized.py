"""The nearest people of large galleries with a quarter of the memory traffic, exactly.

Matching is one pass over every centroid per batch of faces: at 100k people that is 200 MB of float32,
and on these machines the pass is memory-bound (2.5-6 ms per face at batch 8). Here the pass reads int8
centroids (51 MB; onnxruntime's MatMulInteger, ``int8_scores.onnx``), and the few people it ranks
highest are scored again in float32. The result is exact, not approximate: each approximate cosine is
within ``bound`` of the true one (the quantisation errors of the face and of the worst centroid, by
Cauchy-Schwarz), so every person among the true best ``count`` scores at least ``s - 2 * bound``,
where ``s`` is the ``count``-th best approximate score. Those are re-scored exactly, best approximate
first, until the next could not beat the exact ``count``-th best even by ``bound``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .models import session
from .openset import nearest_people

# Below this many people the float32 pass is cheap (10k: ~0.5 ms per face) and quantising not worth it.
MIN_PEOPLE = 20_000
_MODEL = Path(__file__).with_name("int8_scores.onnx")
_CHUNK = 16  # people re-scored exactly at a time


class QuantizedCentroids:
    """int8 columns of a DIM x P float32 centroid matrix (unit columns), one scale per column."""

    def __init__(self, centroids_t: np.ndarray) -> None:
        self.exact = centroids_t
        scale = np.maximum(np.abs(centroids_t).max(axis=0), 1e-12) / 127.0
        self.q8 = np.round(centroids_t / scale).astype(np.int8)
        self.scale = scale.astype(np.float32)
        self.col_sums = self.q8.sum(axis=0, dtype=np.int32)
        # The largest quantisation error of any column, as a vector norm (computed in blocks: a float32
        # copy of the whole matrix would double the memory for a moment).
        worst = 0.0
        for start in range(0, centroids_t.shape[1], 8192):
            block = slice(start, start + 8192)
            err = centroids_t[:, block] - self.q8[:, block].astype(np.float32) * self.scale[block]
            worst = max(worst, float(np.sqrt(np.einsum("ij,ij->j", err, err)).max()))
        self.column_error = worst
        self._session = session(_MODEL, 0)

    def nearest(self, q: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, exact cosines) of the ``count`` best people for each unit row of ``q``, best first."""
        qscale = np.maximum(np.abs(q).max(axis=1, keepdims=True), 1e-12) / 127.0
        qi = np.round(q / qscale)
        approx_q = qi * qscale
        # |q.c - q~.c~| <= |q - q~| |c| + |q~| |c - c~|, with |c| = 1
        bound = np.linalg.norm(q - approx_q, axis=1) + np.linalg.norm(approx_q, axis=1) * self.column_error
        raw = self._session.run(None, {"q": (qi + 128).astype(np.uint8), "centroids": self.q8})[0]
        # raw = sum((qi + 128) * c8): take the 128 offset out, then both scales
        approx = (raw - 128 * self.col_sums).astype(np.float32) * (qscale.astype(np.float32) * self.scale)
        count = min(count, approx.shape[1])
        top = np.empty((len(q), count), np.int64)
        cos = np.empty((len(q), count), np.float32)
        for row in range(len(q)):
            kth = nearest_people(approx[row : row + 1].copy(), count)[1][0, -1]
            candidates = np.flatnonzero(approx[row] >= kth - 2 * bound[row])
            # Best approximate first; stop once the next could not reach the exact count-th best.
            candidates = candidates[np.argsort(-approx[row, candidates], kind="stable")]
            ids, scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
            for start in range(0, len(candidates), _CHUNK):
                if len(scores) >= count and approx[row, candidates[start]] + bound[row] < scores[count - 1]:
                    break
                chunk = candidates[start : start + _CHUNK]
                ids, scores = np.concatenate([ids, chunk]), np.concatenate([scores, q[row] @ self.exact[:, chunk]])
                order = np.lexsort((ids, -scores))[:count]  # best first; ties to the lower index, as argmax
                ids, scores = ids[order], scores[order]
            top[row], cos[row] = ids, scores
        return top, cos
