"""How galleries scale: load and match time at 100, 10k and 100k identities, against the torch gallery
that came before (the version at git HEAD, or --old FILE), in the same run.

    python benchmarks/gallery_scaling.py [--sizes 100,10000,100000] [--old-max 10000] [--old FILE | --no-old]

Random unit embeddings, 1-3 photos per identity. Prints one JSON line per size:
``{"identities": N, "embeddings": rows, "load_ms": ..., "match_ms_per_face": ..., ...}`` where
- ``load_ms``: ``Gallery.from_bytes`` of a saved gallery (centroids included: ready to match), median;
- ``match_ms_per_face``: ``Gallery.match`` of a batch of 8 faces, divided by 8 (median); from 20k
  people the first pass reads int8 centroids (``quantized.py``): ``match_ms_per_face_float32`` is the
  same gallery through the float32 pass alone, ``first_match_ms`` the first match (quantising included);
  ``match_ms_batch1``: one face alone;
- ``construct_ms``: ``Gallery(...)`` from arrays (the centroids computed, as enroll does),
  ``save_ms`` and ``file_mb``: ``to_bytes`` and its size;
- ``old``: the same figures for the torch implementation (``torch.load`` + its constructor, whose
  centroids scan all names once per person; ``torch.cdist``), or null above --old-max identities,
  where its quadratic constructor would take minutes (``old_skipped`` says why).
Targets (issue 11): load <= 100 ms and match <= 2 ms per face at 100k identities.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lambdas.core.gallery import Gallery  # noqa: E402

BATCH = 8


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def synthetic(identities: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """(embeddings, names, sources, queries): 1-3 random unit embeddings per identity, grouped by
    person as enroll writes them; queries are noisy copies of gallery rows (faces of enrolled people)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, identities)
    person = np.repeat(np.arange(identities), counts)
    names = [f"person_{i:07d}" for i in person.tolist()]
    sources = [f"{n}/photo_{k}.jpg" for k, n in enumerate(names)]
    embeddings = rng.standard_normal((len(names), 512), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    picks = rng.integers(0, len(names), BATCH)
    queries = embeddings[picks] + 0.03 * rng.standard_normal((BATCH, 512), dtype=np.float32)
    return embeddings, names, sources, queries


def old_module(path: Path | None) -> ModuleType | None:
    """The torch gallery module: ``path``, or lambdas/core/gallery.py at git HEAD when that is still the
    torch one; loaded as ``lambdas.core._old_gallery`` so that its relative imports resolve."""
    if path is None:
        try:
            source = subprocess.run(
                ["git", "show", "HEAD:lambdas/core/gallery.py"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        if "torch.cdist" not in source:
            return None  # HEAD already has the numpy gallery: pass the old one with --old
        path = Path(os.environ.get("TMPDIR", "/tmp")) / "facerec_old_gallery.py"
        path.write_text(source)
    spec = importlib.util.spec_from_file_location("lambdas.core._old_gallery", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure_new(embeddings: np.ndarray, names: list[str], sources: list[str], queries: np.ndarray, repeat: int) -> dict[str, Any]:
    started = time.perf_counter()
    gallery = Gallery(weights="casia-webface", embeddings=embeddings, names=names, sources=sources, recipe="bench")
    construct_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    data = gallery.to_bytes()
    save_ms = (time.perf_counter() - started) * 1000
    loaded = Gallery.from_bytes(data)
    assert loaded.people == gallery.people and len(loaded.names) == len(names)
    load_ms = median_ms(lambda: Gallery.from_bytes(data), repeat)
    started = time.perf_counter()
    loaded.match(queries)  # warm (at 20k people and more: the int8 centroids are made here)
    first_match_ms = (time.perf_counter() - started) * 1000
    matches = loaded.match(queries)
    # The same gallery matched by the float32 pass alone, in the same run: the int8 pass's baseline.
    from lambdas.core import quantized

    plain, floor = Gallery.from_bytes(data), quantized.MIN_PEOPLE
    quantized.MIN_PEOPLE = 1 << 62
    try:
        plain.match(queries)
        float32_ms = round(median_ms(lambda: plain.match(queries), repeat) / len(queries), 3)
    finally:
        quantized.MIN_PEOPLE = floor
    return {
        "load_ms": load_ms,
        "first_match_ms": round(first_match_ms, 1),
        "match_ms_per_face_float32": float32_ms,
        "match_ms_per_face": round(median_ms(lambda: loaded.match(queries), repeat) / len(queries), 3),
        "match_ms_batch1": median_ms(lambda: loaded.match(queries[:1]), repeat),
        "construct_ms": round(construct_ms, 1),
        "save_ms": round(save_ms, 1),
        "file_mb": round(len(data) / 1e6, 1),
        "_matches": matches,
    }


def measure_old(old: ModuleType, embeddings: np.ndarray, names: list[str], sources: list[str], queries: np.ndarray, repeat: int) -> dict[str, Any]:
    import torch

    tensor = torch.from_numpy(embeddings)
    started = time.perf_counter()
    gallery = old.Gallery(weights="casia-webface", embeddings=tensor, names=names, sources=sources, recipe="bench")
    construct_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    data = gallery.to_bytes()
    save_ms = (time.perf_counter() - started) * 1000
    loaded = old.Gallery.from_bytes(data)
    q = torch.from_numpy(queries)
    loaded.match(q)
    matches = loaded.match(q)
    return {
        "load_ms": median_ms(lambda: old.Gallery.from_bytes(data), max(1, min(repeat, 3))),
        "match_ms_per_face": round(median_ms(lambda: loaded.match(q), repeat) / len(queries), 3),
        "match_ms_batch1": median_ms(lambda: loaded.match(q[:1]), repeat),
        "construct_ms": round(construct_ms, 1),
        "save_ms": round(save_ms, 1),
        "file_mb": round(len(data) / 1e6, 1),
        "_matches": matches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,10000,100000", help="identities per gallery, comma-separated")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (the median is printed)")
    parser.add_argument("--old-max", type=int, default=10_000, help="largest size to run the old torch gallery at")
    parser.add_argument("--old", type=Path, default=None, help="the old torch gallery.py (default: git HEAD's, if still torch)")
    parser.add_argument("--no-old", action="store_true", help="skip the old implementation")
    args = parser.parse_args()

    old = None if args.no_old else old_module(args.old)
    for identities in (int(s) for s in args.sizes.split(",")):
        embeddings, names, sources, queries = synthetic(identities)
        new = measure_new(embeddings, names, sources, queries, args.repeat)
        row: dict[str, Any] = {"identities": identities, "embeddings": len(names), "cpus": os.cpu_count()}
        new_matches = new.pop("_matches")
        row.update(new)
        if old is None:
            row["old"] = None
            row["old_skipped"] = "no old implementation (HEAD's gallery is not the torch one; pass --old FILE)" if not args.no_old else "--no-old"
        elif identities > args.old_max:
            row["old"] = None
            row["old_skipped"] = f"above --old-max {args.old_max}: its constructor is quadratic in identities"
        else:
            before = measure_old(old, embeddings, names, sources, queries, args.repeat)
            old_matches = before.pop("_matches")
            row["old"] = before
            # Same answers: the same nearest person, distances within float32 rounding.
            row["same_nearest"] = [m.nearest for m in new_matches] == [m.nearest for m in old_matches]
            row["max_distance_diff"] = float(max(abs(a.distance - b.distance) for a, b in zip(new_matches, old_matches)))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
