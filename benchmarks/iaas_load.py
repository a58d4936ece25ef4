"""Load on the local IaaS system (`facerec iaas run-local`): N requests at concurrency C.

    python benchmarks/iaas_load.py [--requests 100] [--concurrency 20] [--max-instances 2]
                                   [--gallery G] [--scale-in-after 5] [--url URL]

Each request POSTs one 5celeb/val photo (../shared/data or $FACEREC_TEST_DATA; they cycle) as
``inputFile`` from a pool of C HTTP clients and checks the answer ``<stem>:<person>``. Printed: wall time,
requests per second, latency p50/p95/max, the number right, and the app instances (worker processes)
over time, sampled every 0.5 s from the start of the load until the scaler is back at 0.

Without ``--gallery`` one is enrolled from 5celeb/train first (minutes on 2 cores; not timed). With
``--url`` the load goes to a running web tier instead (e.g. `facerec web` on AWS); the instance
timeline is then not available.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Light imports only at module level: the local workers are spawned and re-import this module.
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def enrol(folder: Path) -> Path:
    from lambdas.core.enroll import build_gallery
    from lambdas.core.recognise import FaceEncoder

    gallery, _ = build_gallery(DATA / "5celeb" / "train", FaceEncoder())
    path = folder / "5celeb.pt"
    gallery.save(path)
    return path


def load(url: str, photos: list[Path], n: int, concurrency: int) -> tuple[float, list[tuple[Path, int, str, float]]]:
    import requests

    jobs = [photos[i % len(photos)] for i in range(n)]

    def post(path: Path) -> tuple[Path, int, str, float]:
        started = time.perf_counter()
        with path.open("rb") as fh:
            r = requests.post(url, files={"inputFile": (path.name, fh, "image/jpeg")}, timeout=600)
        return path, r.status_code, r.text, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(post, jobs))
    return time.perf_counter() - started, results


def report(wall: float, results: list[tuple[Path, int, str, float]]) -> None:
    latencies = [r[3] for r in results]
    right = sum(1 for p, status, text, _ in results if status == 200 and text == f"{p.stem}:{p.parent.name}")
    print(f"requests       {len(results)} in {wall:.1f} s: {len(results) / wall:.2f} requests/s")
    print(f"latency        p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s")
    print(f"right          {right}/{len(results)}")
    bad = [(p.name, status, text[:80]) for p, status, text, _ in results if (status, text) != (200, f"{p.stem}:{p.parent.name}")]
    for item in bad[:5]:
        print("  wrong/failed", item)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--max-instances", type=int, default=2)
    ap.add_argument("--per-instance", type=int, default=1)
    ap.add_argument("--scale-in-after", type=float, default=5.0)
    ap.add_argument("--gallery", type=Path)
    ap.add_argument("--url", help="load a running web tier instead of starting the local system")
    args = ap.parse_args()

    photos = sorted((DATA / "5celeb" / "val").glob("*/*"))
    if not photos:
        sys.exit(f"no photos under {DATA / '5celeb' / 'val'} (set FACEREC_TEST_DATA)")
    if args.url:
        wall, results = load(args.url, photos, args.requests, args.concurrency)
        report(wall, results)
        return

    from facerec_cli.iaas.local import LocalIaas, LocalOptions

    with tempfile.TemporaryDirectory(prefix="facerec-iaas-bench-") as tmp:
        gallery = args.gallery or enrol(Path(tmp))
        options = LocalOptions(
            max_instances=args.max_instances, per_instance=args.per_instance, scale_in_after_s=args.scale_in_after,
            scale_interval_s=0.5, poll_wait_s=1, request_timeout_s=600, log_path=str(Path(tmp) / "workers.log"),
        )
        timeline: list[tuple[float, int, int]] = []  # (t, worker processes alive, queue depth)
        stop = threading.Event()
        with LocalIaas(gallery, options) as system:
            t0 = time.perf_counter()

            def sample() -> None:
                while not stop.is_set():
                    last = system.scaler.last
                    timeline.append((time.perf_counter() - t0, system.pool.alive(), last.depth if last else 0))
                    stop.wait(0.5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            wall, results = load(system.url, photos, args.requests, args.concurrency)
            done = time.perf_counter()
            while system.pool.alive() and time.perf_counter() - done < args.scale_in_after + 60:
                time.sleep(0.2)
            idle_after = time.perf_counter() - done
            stop.set()
            sampler.join()
            timeline.append((time.perf_counter() - t0, system.pool.alive(), system.scaler.last.depth if system.scaler.last else 0))
            counts = dict(system.web.router.counts)
            launched, died = system.pool.launched, system.pool.died

    print(f"local IaaS: {args.requests} requests, concurrency {args.concurrency}, up to {args.max_instances} worker process(es), "
          f"{os.cpu_count()} cores")
    report(wall, results)
    print(f"instances      launched {launched}, died {died}; back to 0 {idle_after:.1f} s after the last answer "
          f"(scale-in after {args.scale_in_after:g} s idle); responses {counts}")
    print("timeline       t(s)  instances  queue depth")
    shown = -1.0
    previous = None
    for t, alive, depth in timeline:
        if (alive, depth) != previous or t - shown >= 5:
            print(f"               {t:5.1f}  {alive:9d}  {depth:11d}")
            shown, previous = t, (alive, depth)


if __name__ == "__main__":
    main()
