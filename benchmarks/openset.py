"""Open-set accuracy: enrolled people named right, strangers answered unknown, as the gallery grows.

    python benchmarks/openset.py embed PHOTOS_DIR --cache all.safetensors   # once: every photo's largest face
    python benchmarks/openset.py evaluate --cache all.safetensors [--known 158] [--photos 5] [--probes 3]
                                          [--plot openset.png] [--json]

``embed`` enrols PHOTOS_DIR/<person>/* with the product's own encoder (``build_gallery``: MTCNN, crop,
InceptionResnetV1 with the mirror average) into one gallery file used as a cache of embeddings.

``evaluate`` builds the protocol of the acceptance set from it, with people drawn by a seed: ``--known``
people enrolled from ``--photos`` photos each and recognised from ``--probes`` other photos each; as many
stranger photos, of people never enrolled (``--probes`` each). It prints, for the rule calibrated by
``facerec enroll`` (``lambdas/core/openset.calibrate``) and for fixed rules around it:

- known probes named right and strangers answered unknown;
- the distances behind them: to the nearest centroid and the nearest single photo, the margin to the
  second-nearest person, for known probes and strangers;
- how the stranger's nearest distance moves with the gallery's size (10 .. all enrolled people) and with
  photos per person (1, 3, 5);
- with ``--plot``, the curve (known named right vs strangers rejected) of the threshold alone and of the
  threshold with the calibrated margin, as a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lambdas.core.gallery import Gallery  # noqa: E402
from lambdas.core.openset import DEFAULT_THRESHOLD, NEIGHBOURS, OpenSetRule, calibrate, distance_of_cosine, nearest_people, next_mean  # noqa: E402


def embed(photos: Path, cache: Path) -> None:
    from lambdas.core.enroll import build_gallery
    from lambdas.core.recognise import FaceEncoder

    started = time.perf_counter()
    encoder = FaceEncoder()
    done = [0]

    def on_photo(report) -> None:  # noqa: ANN001
        done[0] += 1
        if done[0] % 100 == 0:
            print(f"{done[0]} photos, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    gallery, reports = build_gallery(photos, encoder, on_photo)
    gallery.save(cache)
    skipped = sum(r.faces == 0 for r in reports)
    print(f"{cache}: {len(gallery.names)} faces of {len(gallery.people)} people ({skipped} photos without a face), "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


def split(gallery: Gallery, known: int, photos: int, probes: int, seed: int) -> dict:
    """Enrolled rows, known probe rows and stranger probe rows, people drawn by ``seed``."""
    names = np.asarray(gallery.names)
    rng = np.random.default_rng(seed)
    eligible = [p for p in gallery.people if np.count_nonzero(names == p) >= photos + probes]
    strangers_pool = [p for p in gallery.people if np.count_nonzero(names == p) >= probes]
    rng.shuffle(eligible)
    if len(eligible) < known:
        raise SystemExit(f"only {len(eligible)} people have {photos + probes} photos; ask for fewer --known")
    enrolled = eligible[:known]
    rest = [p for p in strangers_pool if p not in set(enrolled)]
    rng.shuffle(rest)
    n_strangers = min(len(rest), known)
    enrol_rows, known_rows, stranger_rows = [], [], []
    for p in enrolled:
        rows = rng.permutation(np.flatnonzero(names == p))
        enrol_rows += rows[:photos].tolist()
        known_rows += rows[photos : photos + probes].tolist()
    for p in rest[:n_strangers]:
        stranger_rows += rng.permutation(np.flatnonzero(names == p))[:probes].tolist()
    return {"enrolled": enrolled, "enrol": np.array(enrol_rows), "known": np.array(known_rows), "strangers": np.array(stranger_rows)}


def distances(gallery: Gallery, rows: np.ndarray, all_emb: np.ndarray) -> dict[str, np.ndarray]:
    """Per probe: the nearest person (by centroid) and its distance, the second's, the next people's
    mean (the rule's margin is to it), and the nearest single photo; and what the product answers
    (``Gallery.match`` under the gallery's own rule)."""
    q = all_emb[rows]
    top, cos = nearest_people(q @ gallery.centroids.T, NEIGHBOURS + 1)
    d = distance_of_cosine(cos)
    photo = distance_of_cosine((q @ gallery.embeddings.T).max(axis=1))
    people = np.asarray(gallery.people)
    answers = np.asarray([m.name for m in gallery.match(q)])
    return {"d1": d[:, 0], "d2": d[:, 1], "next": next_mean(d), "nearest": people[top[:, 0]], "photo": photo, "answer": answers}


def score(rule: OpenSetRule, known: dict, known_truth: np.ndarray, strangers: dict) -> tuple[float, float]:
    """(known named right, strangers answered unknown) under ``rule``."""
    def named(f: dict) -> np.ndarray:
        return np.array([rule.reason(d1, None if np.isnan(n) else n, d2) is None for d1, n, d2 in zip(f["d1"], f["next"], f["d2"])])

    return float((named(known) & (known["nearest"] == known_truth)).mean()), float(1 - named(strangers).mean())


def threshold_only(t: float, known: dict, known_truth: np.ndarray, strangers: dict) -> tuple[float, float]:
    """The rule before this one: the nearest person within ``t``, nothing else."""
    return float(((known["d1"] <= t) & (known["nearest"] == known_truth)).mean()), float((strangers["d1"] > t).mean())


def quantiles(x: np.ndarray) -> dict[str, float]:
    q = np.percentile(x, [1, 5, 50, 95, 99])
    return {k: round(float(v), 3) for k, v in zip(("p1", "p5", "p50", "p95", "p99"), q)}


def evaluate(args: argparse.Namespace) -> None:
    everyone = Gallery.load(args.cache)
    all_emb = np.asarray(everyone.embeddings)
    names = np.asarray(everyone.names)
    s = split(everyone, args.known, args.photos, args.probes, args.seed)
    gallery = Gallery(weights=everyone.weights, embeddings=all_emb[s["enrol"]], names=names[s["enrol"]].tolist(),
                      sources=[everyone.sources[i] for i in s["enrol"]], recipe=everyone.recipe)
    started = time.perf_counter()
    cal = gallery.calibrate()  # as enroll does: the gallery now answers under its calibrated rule
    cal_ms = (time.perf_counter() - started) * 1000
    known, strangers = distances(gallery, s["known"], all_emb), distances(gallery, s["strangers"], all_emb)
    truth = names[s["known"]]
    rules = {
        "calibrated": cal.rule,
        "default (1.07, no margin; second gap 0.05)": OpenSetRule(DEFAULT_THRESHOLD, 0.0),
        "calibrated threshold, no margin": OpenSetRule(cal.rule.threshold, 0.0),
    }
    report = {
        "people": {"enrolled": len(s["enrolled"]), "photos_each": args.photos, "known_probes": len(s["known"]),
                   "stranger_probes": len(s["strangers"])},
        "calibration": {"threshold": cal.rule.threshold, "margin": cal.rule.margin, "calibrated": cal.calibrated,
                        "own_photos_named": round(cal.known_named, 4), "own_strangers_rejected": round(cal.strangers_rejected, 4),
                        "ms": round(cal_ms, 1)},
        "rules": {},
        "distances": {
            "known: own centroid": quantiles(known["d1"][known["nearest"] == truth]),
            "known: margin to 2nd": quantiles((known["d2"] - known["d1"])[known["nearest"] == truth]),
            "known: margin to the next 5": quantiles((known["next"] - known["d1"])[known["nearest"] == truth]),
            "known: nearest photo": quantiles(known["photo"]),
            "stranger: nearest centroid": quantiles(strangers["d1"]),
            "stranger: margin to 2nd": quantiles(strangers["d2"] - strangers["d1"]),
            "stranger: margin to the next 5": quantiles(strangers["next"] - strangers["d1"]),
            "stranger: nearest photo": quantiles(strangers["photo"]),
        },
    }
    old_k, old_r = threshold_only(DEFAULT_THRESHOLD, known, truth, strangers)
    report["rules"]["before (1.07 alone)"] = {"threshold": DEFAULT_THRESHOLD, "known_named_right": round(old_k, 4), "strangers_unknown": round(old_r, 4)}
    seed_k, seed_r = threshold_only(np.inf, known, truth, strangers)
    report["rules"]["seed (nearest, no threshold)"] = {"known_named_right": round(seed_k, 4), "strangers_unknown": round(seed_r, 4)}
    for label, rule in rules.items():
        k, r = score(rule, known, truth, strangers)
        report["rules"][label] = {"threshold": rule.threshold, "margin": rule.margin, "known_named_right": round(k, 4),
                                  "strangers_unknown": round(r, 4)}
    # What the product itself answers (Gallery.match with the calibrated gallery): must equal "calibrated".
    report["product"] = {"known_named_right": round(float((known["answer"] == truth).mean()), 4),
                         "strangers_unknown": round(float((strangers["answer"] == "unknown").mean()), 4)}
    report["by_gallery_size"] = by_gallery_size(everyone, all_emb, names, s, args)
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    if args.plot:
        curve_plot(args.plot, known, truth, strangers, cal.rule, DEFAULT_THRESHOLD)
        print(f"plot: {args.plot}", file=sys.stderr)


def by_gallery_size(everyone: Gallery, all_emb: np.ndarray, names: np.ndarray, s: dict, args: argparse.Namespace) -> list[dict]:
    """The same probes against the first N enrolled people (N = 10 .. all) and fewer photos each: the
    stranger's nearest centroid, the calibrated rule, and its figures."""
    rows = []
    enrolled = s["enrolled"]
    sizes = sorted({n for n in (10, 25, 50, 100, len(enrolled)) if n <= len(enrolled)})
    for photos in sorted({1, 3, args.photos}):
        for n in sizes:
            people = set(enrolled[:n])
            enrol = [r for r in s["enrol"].tolist() if names[r] in people]
            by_person: dict[str, list[int]] = {}
            for r in enrol:
                by_person.setdefault(names[r], []).append(r)
            enrol = [r for rs in by_person.values() for r in rs[:photos]]
            g = Gallery(weights=everyone.weights, embeddings=all_emb[enrol], names=names[enrol].tolist(), recipe=everyone.recipe)
            known_rows = np.array([r for r in s["known"].tolist() if names[r] in people])
            strangers = distances(g, s["strangers"], all_emb)
            known = distances(g, known_rows, all_emb)
            cal = calibrate(g.embeddings, g.names)
            k, r = score(cal.rule, known, names[known_rows], strangers)
            rows.append({"people": n, "photos_each": photos, "stranger_nearest_p5": round(float(np.percentile(strangers["d1"], 5)), 3),
                         "stranger_nearest_p50": round(float(np.median(strangers["d1"])), 3),
                         "known_own_p95": round(float(np.percentile(known["d1"], 95)), 3),
                         "rule": [cal.rule.threshold, cal.rule.margin], "calibrated": cal.calibrated,
                         "known_named_right": round(k, 4), "strangers_unknown": round(r, 4)})
    return rows


def curve_plot(path: Path, known: dict, truth: np.ndarray, strangers: dict, rule: OpenSetRule, default: float) -> None:
    """Known named right (y) against strangers rejected (x), sweeping the threshold: without a margin,
    and with the calibrated margin; the calibrated rule and the old default marked. Drawn with Pillow."""
    from PIL import Image, ImageDraw

    w, h, pad = 720, 520, 60
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    lo, lo_x = 0.5, 0.2  # known from 50%, strangers from 20% (the old rule sits near 24%)

    def xy(x: float, y: float) -> tuple[float, float]:
        return pad + (x - lo_x) / (1 - lo_x) * (w - 2 * pad), h - pad - (y - lo) / (1 - lo) * (h - 2 * pad)

    for v in np.arange(lo_x, 1.0001, 0.1):
        draw.line([xy(v, lo), xy(v, 1)], fill=(230, 230, 230))
        draw.text((xy(v, lo)[0] - 10, h - pad + 6), f"{v:.0%}", fill="black")
    for v in np.arange(lo, 1.0001, 0.05):
        draw.line([xy(lo_x, v), xy(1, v)], fill=(230, 230, 230))
        draw.text((8, xy(lo_x, v)[1] - 6), f"{v:.0%}", fill="black")
    draw.rectangle([xy(lo_x, 1), xy(1, lo)], outline="black")
    draw.line([xy(0.95, lo), xy(0.95, 1)], fill=(200, 120, 120))
    draw.line([xy(lo_x, 0.95), xy(1, 0.95)], fill=(200, 120, 120))
    draw.text((pad, 12), "known probes named right (y) vs strangers answered unknown (x), sweeping the threshold", fill="black")
    draw.text((w // 2 - 80, h - 24), "strangers answered unknown", fill="black")
    curves = (((70, 110, 200), "threshold alone (before)", lambda t: threshold_only(t, known, truth, strangers)),
              ((220, 120, 30), f"threshold + margin {rule.margin:g} to the next five",
               lambda t: score(OpenSetRule(float(t), rule.margin), known, truth, strangers)))
    for n, (colour, label, at) in enumerate(curves):
        points = [xy(r, k) for k, r in map(at, np.arange(0.6, 1.4, 0.005)) if k >= lo and r >= lo_x]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        draw.text((pad + 10, h - pad - 44 + 20 * n), label, fill=colour)
    for (k, r), colour, label in ((score(rule, known, truth, strangers), (220, 120, 30), f"calibrated ({rule.threshold:g}, {rule.margin:g})"),
                                  (threshold_only(default, known, truth, strangers), (70, 110, 200), f"before: {default:g} alone")):
        x, y = xy(max(r, lo_x), max(k, lo))
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=colour, width=3)
        draw.text((x - 150 if r > 0.6 else x + 10, y + 10), label, fill=colour)
    img.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed")
    e.add_argument("photos", type=Path)
    e.add_argument("--cache", type=Path, required=True)
    v = sub.add_parser("evaluate")
    v.add_argument("--cache", type=Path, required=True)
    v.add_argument("--known", type=int, default=158)
    v.add_argument("--photos", type=int, default=5)
    v.add_argument("--probes", type=int, default=3)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--plot", type=Path)
    v.add_argument("--json", action="store_true")
    args = parser.parse_args()
    embed(args.photos, args.cache) if args.command == "embed" else evaluate(args)


if __name__ == "__main__":
    main()
