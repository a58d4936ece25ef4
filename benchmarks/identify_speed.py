"""Speed of the recognition core on each video of a folder, against a naive path, in the same run.

    python benchmarks/identify_speed.py [VIDEO_DIR] [--gallery G] [--frames N] [--repeat R]

Designed path (what `identify` and the Lambda run): frames sampled across the video, decoded in process (PyAV),
MTCNN on copies downscaled to 640 px (crops from full resolution), one embedding batch, gallery and
models loaded once. Naive path (how the course seeds do it): first frame only, MTCNN at full
resolution, gallery reloaded from disk per video, batch of one. Prints decode/detect/embed ms per
video for both and the ratio of per-frame cost (the designed path looks at several frames).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lambdas.core import media, sampling  # noqa: E402
from lambdas.core.enroll import build_gallery  # noqa: E402
from lambdas.core.faces import FaceDetector, crop  # noqa: E402
from lambdas.core.gallery import Gallery  # noqa: E402
from lambdas.core.recognise import FaceEncoder, Recogniser, SamplingOptions  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def naive(video: Path, gallery_path: Path, encoder: FaceEncoder, full_res: FaceDetector) -> dict[str, float]:
    ms: dict[str, float] = {}
    t = time.perf_counter()
    gallery = Gallery.load(gallery_path)
    ms["gallery"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    frames, _ = sampling.read_frames(video, count=1)
    ms["decode"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    dets = full_res.detect([frames[0].image])[0]
    ms["detect"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    if dets:
        emb = encoder.nets.embed(crop(frames[0].image, dets[0])[None])
        gallery.match(emb)
    ms["embed"] = (time.perf_counter() - t) * 1000
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="?", type=Path, default=DATA / "videos")
    parser.add_argument("--gallery", type=Path, help="gallery file (default: enrol ../shared/data/5celeb/train)")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="runs per video; the median is printed")
    args = parser.parse_args()

    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, FACEREC_THREADS={os.environ.get('FACEREC_THREADS', 'unset')}")
    t = time.perf_counter()
    encoder = FaceEncoder()
    print(f"models loaded in {(time.perf_counter() - t) * 1000:.0f} ms")
    gallery_path = args.gallery
    if gallery_path is None:
        gallery_path = Path(tempfile.mkdtemp()) / "5celeb.pt"
        build_gallery(DATA / "5celeb" / "train", encoder)[0].save(gallery_path)
    recogniser = Recogniser(Gallery.load(gallery_path), encoder, sampling=SamplingOptions(frames=args.frames))
    full_res = FaceDetector(detect_size=0)
    videos = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in media.VIDEO_SUFFIXES)

    header = f"{'video':38s} {'size':>9s} | {'designed: frames decode detect embed total ms/frame':>52s} | {'naive: decode detect embed total ms/frame':>42s} | ratio"
    print(header)
    print("-" * len(header))
    ratios = []
    for video in videos:
        info = media.probe(video)
        ours, theirs = [], []
        for _ in range(args.repeat):
            r = recogniser.recognise_file(video)
            ours.append((r.frames, r.timings_ms))
            theirs.append(naive(video, gallery_path, encoder, full_res))
        frames = ours[0][0]
        med = {k: statistics.median(t.get(k, 0.0) for _, t in ours) for k in ("decode", "detect", "embed", "match")}
        nmed = {k: statistics.median(t[k] for t in theirs) for k in ("gallery", "decode", "detect", "embed")}
        total, ntotal = sum(med.values()), sum(nmed.values())
        per_frame, nper_frame = total / max(frames, 1), ntotal
        ratios.append(nper_frame / per_frame)
        print(
            f"{video.name[:38]:38s} {info.width:>4d}x{info.height:<4d} | {frames:>6d} {med['decode']:>7.0f} {med['detect']:>6.0f} "
            f"{med['embed']:>5.0f} {total:>5.0f} {per_frame:>9.0f} | {nmed['decode']:>6.0f} {nmed['detect']:>6.0f} {nmed['embed']:>5.0f} "
            f"{ntotal:>5.0f} {nper_frame:>9.0f} | {nper_frame / per_frame:4.1f}x"
        )
    if ratios:
        print(f"per-frame speed-up, designed vs naive: median {statistics.median(ratios):.1f}x over {len(ratios)} videos")


if __name__ == "__main__":
    main()
