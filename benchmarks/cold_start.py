"""Cold start and memory of the recognition runtime, against an older checkout in the same run.

    python benchmarks/cold_start.py [--baseline DIR] [--video V] [--repeat R]

Two figures per checkout, each from fresh processes (the median of R runs; peak RSS from wait4):
- worker: a process that imports the face-recognition handler with AWS_LAMBDA_FUNCTION_NAME set (so it
  loads the models at import, as a Lambda container's init phase or a run-local worker does), from
  spawn to "ready";
- identify: a whole `facerec identify VIDEO --gallery G --json`, from exec to exit.

--baseline: another checkout of this repository (e.g. `git worktree add /tmp/before <commit>`) with the
same Python: measured the same way, with a gallery enrolled by its own code. Models and weights are
built before the clock (both checkouts cache them in FACEREC_WEIGHTS_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))

_WORKER = """
import os, sys, time
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "face-recognition"
import lambdas.face_recognition
print("READY", time.time(), "torch" in sys.modules, flush=True)
"""


def _measure(args: list[str], checkout: Path, cwd: Path, repeat: int) -> dict[str, float]:
    times, peaks = [], []
    for _ in range(repeat):
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        started = time.time()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # wait4 gives this child's own peak RSS (ru_maxrss, KB on Linux).
        stdout = proc.stdout.read().decode()  # type: ignore[union-attr]
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.time()
        if status != 0:
            raise SystemExit(f"{' '.join(args[:4])}... failed in {checkout}:\n{stderr[-2000:]}")
        ready = next((float(line.split()[1]) for line in stdout.splitlines() if line.startswith("READY")), ended)
        times.append(ready - started)
        peaks.append(usage.ru_maxrss / 1024)
    return {"s": round(statistics.median(times), 3), "peak_rss_mb": round(statistics.median(peaks), 1)}


def _gallery(checkout: Path, workdir: Path) -> Path:
    """5celeb/train enrolled by the checkout's own code (its own file format)."""
    target = workdir / f"gallery-{abs(hash(str(checkout)))}"
    code = "import sys; from facerec_cli.cli.app import app; sys.argv = ['facerec'] + sys.argv[1:]; app()"
    subprocess.run([sys.executable, "-c", code, "enroll", str(DATA / "5celeb" / "train"), "-o", str(target)], cwd=workdir, env={**os.environ, "PYTHONPATH": str(checkout)},
                   check=True, capture_output=True)
    return target


def measure(checkout: Path, video: Path, repeat: int, workdir: Path) -> dict[str, object]:
    gallery = _gallery(checkout, workdir)
    # The installed console script, as a user runs it (PYTHONPATH picks the checkout's facerec_cli).
    identify = [shutil.which("facerec") or "facerec", "identify", str(video), "--gallery", str(gallery), "--json"]
    env_gallery = {"FACEREC_GALLERY": str(gallery)}
    os.environ.update(env_gallery)
    # One untimed run of each: builds whatever each checkout caches (models, converted weights).
    _measure(identify, checkout, workdir, 1)
    worker = _measure([sys.executable, "-c", _WORKER], checkout, workdir, repeat)
    ident = _measure(identify, checkout, workdir, repeat)
    return {"checkout": str(checkout), "worker_ready_s": worker["s"], "worker_peak_rss_mb": worker["peak_rss_mb"],
            "identify_s": ident["s"], "identify_peak_rss_mb": ident["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="an older checkout to measure the same way")
    parser.add_argument("--video", type=Path, default=DATA / "videos" / "hamilton_miranda_lacamoire_10s.mp4")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facerec-cold-") as tmp:
        rows = [measure(ROOT, args.video, args.repeat, Path(tmp))]
        if args.baseline:
            rows.append(measure(args.baseline.resolve(), args.video, args.repeat, Path(tmp)))
    for row in rows:
        print(json.dumps(row))
    if args.baseline:
        new, old = rows
        print(json.dumps({"worker_speedup": round(old["worker_ready_s"] / new["worker_ready_s"], 2),
                          "identify_speedup": round(old["identify_s"] / new["identify_s"], 2),
                          "targets": {"worker_ready_s<=0.6": new["worker_ready_s"] <= 0.6,
                                      "worker_peak_rss_mb<=350": new["worker_peak_rss_mb"] <= 350,
                                      "identify_s<=1.5": new["identify_s"] <= 1.5,
                                      "identify_peak_rss_mb<=450": new["identify_peak_rss_mb"] <= 450}}))


if __name__ == "__main__":
    main()
