"""Timelines of a 10-minute video: one sequential pass (`facerec identify --timeline`) against the
fanned-out pipeline (`facerec run-local --timeline`: segments recognised in parallel on the workers).

The video is made here from ../shared/data (never committed): a 30-second piece (the Hamilton clip,
the crowd clip, a still of Madonna, a still without a face) repeated 20 times, 640x360 at 25 fps
(``--size 1280x720`` for HD). The gallery is 5celeb/train plus the Hamilton enrolment photos. Both runs
sample the same grid (2 fps: 1200 frames) with warm models; the pipeline's time is from upload to result.

    python benchmarks/timeline.py [--workers N] [--segment-seconds S] [--size WxH] [--repeat R] [--skip-sequential]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))


def make_video(folder: Path, size: tuple[int, int], repeat: int) -> Path:
    from facerec_cli.samples import joined_video, repeated_video

    piece = folder / f"piece-{size[0]}x{size[1]}.mp4"
    joined_video(
        [
            (DATA / "videos" / "hamilton_miranda_lacamoire_10s.mp4", 10.0),
            (DATA / "videos" / "crowd_unlabeled_4s.mp4", 4.0),
            (sorted((DATA / "5celeb" / "val" / "madonna").iterdir())[2], 8.0),
            (DATA / "noface" / "noface_01_coins.png", 8.0),
        ],
        piece, size=size, fps=25,
    )  # fmt: skip
    return repeated_video(piece, folder / f"long-{size[0]}x{size[1]}.mp4", repeat)


def make_gallery(folder: Path) -> Path:
    from lambdas.core.enroll import build_gallery
    from lambdas.core.recognise import FaceEncoder

    photos = folder / "photos"
    photos.mkdir()
    for source in [*(DATA / "5celeb" / "train").iterdir(), *(DATA / "enroll").iterdir()]:
        (photos / source.name).symlink_to(source)
    path = folder / "gallery.safetensors"
    build_gallery(photos, FaceEncoder())[0].save(path)
    return path


def rows(result) -> list[tuple[str, int, list[list[float]]]]:
    """The timeline to the precision the result shows (times to the millisecond)."""
    return [(p.person, p.detections, [[round(a, 2), round(b, 2)] for a, b in p.ranges]) for p in result.timeline.people] if result.timeline else []


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="recognition workers of run-local (default: one per core)")
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--repeat", type=int, default=20, help="pieces of 30 s (20: 10 minutes)")
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, collect_videos
    from lambdas import env as fenv
    from lambdas.core import media
    from lambdas.core.gallery import Gallery
    from lambdas.core.recognise import Recogniser
    from lambdas.core.timeline import DEFAULT_FPS, grid, recognise_timeline

    with tempfile.TemporaryDirectory(prefix="facerec-bench-timeline-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        video = make_video(folder, size, args.repeat)
        gallery = make_gallery(folder)
        duration = media.duration(video)
        frames = len(grid(duration, DEFAULT_FPS))
        print(f"video: {video.name}, {duration:.1f} s, {video.stat().st_size / 1e6:.1f} MB, {frames} frames at {DEFAULT_FPS:g} fps "
              f"(made with the gallery in {time.perf_counter() - started:.1f} s); {os.cpu_count()} CPU cores", flush=True)

        sequential = None
        if not args.skip_sequential:
            recogniser = Recogniser(Gallery.load(gallery))
            load = os.getloadavg()[0]
            cpu0, t0 = cpu_seconds(resource.RUSAGE_SELF), time.perf_counter()
            sequential = recognise_timeline(recogniser, video)
            seq_s, seq_cpu = time.perf_counter() - t0, cpu_seconds(resource.RUSAGE_SELF) - cpu0
            t = sequential.timings_ms
            print(f"sequential (identify --timeline, one pass, warm models): {seq_s:.1f} s = {frames / seq_s:.1f} frames/s, {seq_cpu:.0f} CPU s, "
                  f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, load average {load:.1f} -> {os.getloadavg()[0]:.1f}; "
                  f"decode {t.get('decode', 0) / 1000:.1f} s, detect {t.get('detect', 0) / 1000:.1f} s, embed {t.get('embed', 0) / 1000:.1f} s; "
                  f"{len(sequential.faces)} faces, {len(sequential.timeline.people) if sequential.timeline else 0} rows, status {sequential.status} {sequential.name}",
                  flush=True)  # fmt: skip

        env = {fenv.TIMELINE: "1", fenv.SEGMENT_SECONDS: f"{args.segment_seconds:g}", fenv.MAX_SECONDS: str(max(600.0, duration + 1))}
        options = RunOptions(workers=args.workers, timeout_s=3600, extra_env=env)
        jobs, _ = collect_videos([video])
        load = os.getloadavg()[0]
        cpu0 = cpu_seconds(resource.RUSAGE_CHILDREN) + cpu_seconds(resource.RUSAGE_SELF)
        with LocalPipeline(gallery, options, log_path=str(folder / "functions.log")) as pipeline:
            t0 = time.perf_counter()
            (result,) = pipeline.run(jobs)
            fan_s = time.perf_counter() - t0
            counters = pipeline.cloud.dispatcher.counters
        # the workers have exited: their CPU time is in RUSAGE_CHILDREN (model loading included)
        fan_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) + cpu_seconds(resource.RUSAGE_SELF) - cpu0
        segments = result.timeline.segments if result.timeline else 0
        print(f"fan-out (run-local --timeline, {args.workers} recognition worker(s), {segments} segments of {args.segment_seconds:g} s): "
              f"{fan_s:.1f} s upload to result = {frames / fan_s:.1f} frames/s, {fan_cpu:.0f} CPU s (workers, moto and this process, "
              f"start-up included), load average {load:.1f} -> {os.getloadavg()[0]:.1f}; {counters.succeeded} invocations, {counters.failed} failed; "
              f"status {result.status} {result.name}, {len(result.timeline.people) if result.timeline else 0} rows"
              + (f"; error: {result.error}" if result.error else ""), flush=True)  # fmt: skip
        if sequential is not None:
            same = rows(sequential) == rows(result)
            print(f"fan-out / sequential: {fan_s / seq_s:.2f}x the time; same timeline: {same}")
            if not same:
                for a, b in zip(rows(sequential), rows(result)):
                    if a != b:
                        print("  differs:", a[:2], b[:2])


if __name__ == "__main__":
    main()
