"""The README's threshold row ("person centroid (44, flip)"), measured anew with the current runtime.

    python benchmarks/thresholds.py [--threshold T]

Enrols 5celeb/train and measures, with the recogniser's own crops and embeddings (Euclidean distance
between unit embeddings and person centroids): the worst true match over 5celeb/val, the nearest other
enrolled person over 5celeb/val, the nearest unenrolled face (the six Friends faces and every face of
the crowd clip's sampled frames) and Alex Lacamoire's best distance in the Hamilton clip (gallery from
enroll/). Prints one JSON line and whether the threshold still sits in the gap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))

from lambdas.core import sampling  # noqa: E402
from lambdas.core.enroll import build_gallery  # noqa: E402
from lambdas.core.gallery import DEFAULT_THRESHOLD  # noqa: E402
from lambdas.core.recognise import FaceEncoder  # noqa: E402


def centroids(gallery) -> tuple[list[str], np.ndarray]:
    people = sorted(set(gallery.names))
    names = np.asarray(gallery.names)
    means = np.stack([gallery.embeddings[names == p].mean(axis=0) for p in people])
    return people, means / np.linalg.norm(means, axis=1, keepdims=True)


def distances(encoder: FaceEncoder, people: list[str], cents: np.ndarray, path: Path, frames: int = 3) -> list[np.ndarray]:
    found, _ = sampling.read_frames(path, count=frames)  # an image: its one frame
    faces = encoder.encode(found)
    return [np.linalg.norm(cents - f.embedding[None, :], axis=1) for f in faces]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args()
    encoder = FaceEncoder()
    gallery, _ = build_gallery(DATA / "5celeb" / "train", encoder)
    people, cents = centroids(gallery)
    true_worst, other_nearest = 0.0, 9.0
    for photo in sorted((DATA / "5celeb" / "val").glob("*/*")):
        d = distances(encoder, people, cents, photo)[0]  # largest face: the person the photo is of
        own = people.index(photo.parent.name)
        true_worst = max(true_worst, float(d[own]))
        other_nearest = min(other_nearest, float(np.delete(d, own).min()))
    strangers = [data for data in (DATA / "multiface" / "friends_cast_6faces.jpg", DATA / "videos" / "crowd_unlabeled_4s.mp4")]
    unenrolled = min(float(d.min()) for path in strangers for d in distances(encoder, people, cents, path))
    hamilton, _ = build_gallery(DATA / "enroll", encoder)
    h_people, h_cents = centroids(hamilton)
    clip = DATA / "videos" / "hamilton_miranda_lacamoire_10s.mp4"
    lacamoire = min(float(d[h_people.index("alex_lacamoire")]) for d in distances(encoder, h_people, h_cents, clip))
    row = {"true_match_worst": round(true_worst, 3), "other_enrolled_nearest": round(other_nearest, 3),
           "unenrolled_nearest": round(unenrolled, 3), "lacamoire_in_clip_best": round(lacamoire, 3),
           "threshold": args.threshold, "threshold_in_gap": true_worst < args.threshold < unenrolled}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
