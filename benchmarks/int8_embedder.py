"""What a static int8 (QDQ) InceptionResnetV1 would give, against the float32 model the product runs.

    python benchmarks/int8_embedder.py [--threads 1]

Not used by the product: a measurement for deciding. The embedder is a third to a half of recognition's
CPU (one embedding ~24 ms on one core); onnxruntime runs QDQ int8 convolutions with VNNI/AMX where the CPU
has them. The model is quantised here (per-channel int8 weights, uint8 activations) with the face crops
of ../shared/data/5celeb/train as calibration data, then both models embed the crops of 5celeb/val (held
out from the calibration) and of the multi-face photo; printed: ms per face for each (median of batches
of one), the cosine between the two embeddings of each face, how far each face's distance to its
nearest person moves, and whether any answer of the 5celeb/train gallery changes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))


def crops(encoder, paths: list[Path]) -> np.ndarray:
    from lambdas.core import images
    from lambdas.core.faces import crop

    out = []
    for path in paths:
        image = images.load_image(path)
        for det in encoder.detector.detect([image])[0]:
            out.append(crop(image, det))
    return np.stack(out)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def embed(sess, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    e = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def ms_per_face(sess, x: np.ndarray, rounds: int = 3) -> float:
    name = sess.get_inputs()[0].name
    times = []
    for _ in range(rounds):
        for i in range(len(x)):
            started = time.perf_counter()
            sess.run(None, {name: x[i : i + 1]})
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lambdas.core.enroll import build_gallery
    from lambdas.core.models import model_dir
    from lambdas.core.recognise import FaceEncoder

    encoder = FaceEncoder()
    fp32 = model_dir("casia-webface").file("embedder")
    train = crops(encoder, sorted((DATA / "5celeb" / "train").glob("*/*")))
    val = crops(encoder, [*sorted((DATA / "5celeb" / "val").glob("*/*")), DATA / "multiface" / "friends_cast_6faces.jpg"])
    name = session(fp32, 1).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{name: train[i : i + 1]} for i in range(len(train))])

        def get_next(self):  # noqa: ANN201 - onnxruntime's interface
            return next(self.rows, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, int8 = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True)  # fmt: skip
        a, b = session(fp32, args.threads), session(int8, args.threads)
        ea, eb = embed(a, val), embed(b, val)
        ta, tb = ms_per_face(a, val), ms_per_face(b, val)
    gallery, _ = build_gallery(DATA / "5celeb" / "train", encoder)
    ma, mb = gallery.match(ea), gallery.match(eb)
    moved = [abs(x.distance - y.distance) for x, y in zip(ma, mb)]
    changed = [(x.name, y.name, round(x.distance, 3), round(y.distance, 3)) for x, y in zip(ma, mb) if x.name != y.name]
    cos = (ea * eb).sum(axis=1)
    print(f"{len(train)} calibration crops (5celeb/train), {len(val)} test crops (5celeb/val + the multi-face photo); "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.2f}")
    print(f"ms per face: float32 {ta:.1f}, int8 {tb:.1f} ({ta / tb:.2f}x)")
    print(f"cosine float32 vs int8: min {cos.min():.4f}, median {np.median(cos):.4f}")
    print(f"distance to the nearest person moved: median {statistics.median(moved):.3f}, max {max(moved):.3f}")
    print(f"answers changed: {len(changed)} of {len(ma)}" + (f": {changed}" if changed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
