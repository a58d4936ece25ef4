"""The course's workload through `facerec identify` (no cloud) and `facerec run-local` (the local cloud),
against the seed approach, in the same run; optionally the same commands from another checkout (the
code before a change) in the same run too.

    python benchmarks/course_workload.py [--videos 100] [--workers N] [--size 1280x720] [--rate 1.0] [--require-quiet]
                                         [--baseline /work/main] [--skip-paced] [--no-crowd]

Measure on a quiet machine: the load average is checked first (over 0.5: a warning, or a refusal with
--require-quiet), because a loaded machine slows torch's two threads far more than our processes and
flatters the ratio (a run at load 3-6 once reported 4.85x where a quiet one measured 1.40x). Each checkout
timed is compiled to bytecode first (``compile_checkout``), as an installed package is.

Videos: course-format clips of one person each (`test_NN.mp4`, 2 s, 1280x720 H.264 with an AAC
track, as the course's are): most are photos of
../shared/data/5celeb/val with a slow zoom, every fifth is real motion cut from the Hamilton clip of
../shared/data/videos (Lin-Manuel Miranda singing, two cuts; and a cut of the audience, whose right
answer is `unknown`), scaled to the course's size. Gallery: 5celeb/train and enroll/. The course's own clips
show one person each at 480p to 1080p: `--no-crowd --size 854x480,1280x720,1920x1080` comes closer to them
(the audience cut alone took a third of the CPU of the default mix).

Printed, all in this one run, each figure with the 1-minute load average when it was taken:
- **identify, whole process**: `facerec identify DIR/*.mp4 --json` in a fresh process (worker processes,
  one per core), with its CPU per video and the median per-stage milliseconds of its results (decode,
  detect, embed, match: wall time inside one worker);
- **baseline** (--baseline DIR): the same identify and run-local commands run with PYTHONPATH=DIR, the
  code of another checkout (for example the main branch before a change), and each ratio against it;
- **run-local, whole process** (command start to the last result, cold start included), with the CPU seconds it
  used (its child processes included) per video: `facerec run-local DIR --json` in a fresh process,
  against the seed approach in a fresh process (ffmpeg extracts the first
  frame, facenet-pytorch's MTCNN at full resolution twice, InceptionResnetV1 on one face, the gallery
  `data.pt` reloaded per video, nearest photo without a threshold; its models load inside its clock);
  the ratio, and the time from run-local's start to its first result. The seed's warm cost per video
  (first result to last) is its calibration: about 0.5 s on 2 quiet cores; much more means the machine
  or the clips are wrong, and the benchmark says so;
- **paced** (one upload per 1/--rate s through the embedded cloud, workers warm): latency upload ->
  result p50/p95, and where a paced video's time goes (the result's per-stage timings: split download,
  decode, encode, upload; the Invoke hand-over; recognition download, decode, detect, embed, match;
  the result's own write is not in it: the details are stored before the answer).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))

# Light imports only at module level: run-local's workers are spawned and re-import this module.
from facerec_cli.localcloud.runtime.workers import default_workers  # noqa: E402
from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, collect_videos  # noqa: E402

HAMILTON = "hamilton_miranda_lacamoire_10s.mp4"
# (start s, end s, right answer), checked by eye on frames of the clip: Miranda alone on screen in the
# first two, the audience (nobody enrolled) in the third.
MOTION_CUTS = [(3.0, 5.0, "lin_manuel_miranda"), (5.5, 7.5, "lin_manuel_miranda"), (8.0, 10.0, "unknown")]
CLIP_SECONDS = 2.0
SEED_CALIBRATION_S = 0.5  # the seed approach's warm cost per course video on 2 quiet cores (issue 21)


def cut_clip(src: Path, start: float, end: float, out: Path, size: tuple[int, int]) -> Path:
    """Frames [start, end) of ``src`` re-encoded (H.264 + AAC, ``size``) into ``out``."""
    import av

    from facerec_cli.samples import h264_writer

    with av.open(str(src)) as inp:
        stream_in = inp.streams.video[0]
        with h264_writer(out, size, round(float(stream_in.average_rate or 25)), 600.0, f"cut {src.name}", audio=True) as put:
            for frame in inp.decode(stream_in):
                t = float(frame.pts * stream_in.time_base)
                if t >= end:
                    break
                if t >= start:
                    put(frame.to_image().resize(size))
    return out


def course_clips(count: int, size_text: str, prefix: str, crowd: bool = True) -> tuple[Path, Path, dict[str, str]]:
    """``count`` course-format clips of ``size_text`` (WxH, or several comma-separated: the clips take
    them in turn) in a new temporary folder: (the folder, its videos/ subfolder, clip name -> the right
    answer); says what it made and how long it took. ``crowd=False``: no audience cut."""
    sizes = [tuple(int(v) for v in text.split("x")) for text in size_text.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    clips = tmp / "videos"
    clips.mkdir()
    started = time.perf_counter()
    expected = make_videos(clips, count, sizes, crowd)  # type: ignore[arg-type]
    print(f"made {len(expected)} videos ({size_text}{'' if crowd else ', one person each'}) in {time.perf_counter() - started:.1f} s; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    return tmp, clips, expected


def make_videos(folder: Path, count: int, sizes: list[tuple[int, int]], crowd: bool = True) -> dict[str, str]:
    """Every fifth clip a motion cut (MOTION_CUTS, the audience's only with ``crowd``), the others stills
    of 5celeb/val photos; clip i has size sizes[i % len(sizes)]."""
    from facerec_cli.samples import still_video

    photos = sorted((DATA / "5celeb" / "val").glob("*/*"))
    motion = [c for c in MOTION_CUTS if crowd or c[2] != "unknown"]
    cuts: dict[tuple[int, tuple[int, int]], Path] = {}
    expected = {}
    for i in range(count):
        name = f"test_{i:02d}.mp4" if count <= 100 else f"test_{i:03d}.mp4"
        size = sizes[i % len(sizes)]
        if i % 5 == 4:
            k = (i // 5) % len(motion)
            if (k, size) not in cuts:
                a, b, _ = motion[k]
                cuts[k, size] = cut_clip(DATA / "videos" / HAMILTON, a, b, folder / f"_cut{k}_{size[0]}x{size[1]}.mp4", size)
            (folder / name).write_bytes(cuts[k, size].read_bytes())
            expected[name] = motion[k][2]
        else:
            photo = photos[i % len(photos)]
            still_video(photo, folder / name, seconds=CLIP_SECONDS, size=size, audio=True)
            expected[name] = photo.parent.name
    for cut in cuts.values():
        cut.unlink()
    return expected


def people_dir(folder: Path) -> Path:
    """5celeb/train and enroll/ as one PHOTOS_DIR (symlinks)."""
    people = folder / "people"
    people.mkdir()
    for root in (DATA / "5celeb" / "train", DATA / "enroll"):
        for person in sorted(p for p in root.iterdir() if p.is_dir()):
            (people / person.name).symlink_to(person)
    return people


_SEED = r'''
import subprocess, sys, tempfile, time, json
from pathlib import Path
t0 = time.monotonic()
import torch
from facenet_pytorch import MTCNN, InceptionResnetV1
from PIL import Image
from lambdas.core.torch_models import casia_state_dict_path
import imageio_ffmpeg
torch.set_num_threads(2)
mtcnn = MTCNN(image_size=160, margin=0, min_face_size=20)
resnet = InceptionResnetV1(pretrained=None, classify=False).eval()
resnet.load_state_dict(torch.load(casia_state_dict_path(), weights_only=True))
ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
gallery_path, videos = sys.argv[1], sys.argv[2:]
with tempfile.TemporaryDirectory() as tmp:
    for video in videos:
        frame = Path(tmp) / (Path(video).stem + ".jpg")
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", video, "-frames:v", "1", str(frame)], check=True)
        img = Image.open(frame).convert("RGB")
        embedding_list, name_list = torch.load(gallery_path, weights_only=True)   # reloaded per video
        face, prob = mtcnn(img, return_prob=True)
        boxes, _ = mtcnn.detect(img)                                              # the second pass
        name = "no_face"
        if face is not None:
            with torch.no_grad():
                emb = resnet(face.unsqueeze(0))
            dists = [torch.dist(emb, e).item() for e in embedding_list]
            name = name_list[dists.index(min(dists))]
        print(json.dumps({"video": Path(video).name, "name": name}), flush=True)
'''

_SEED_GALLERY = r'''
import sys, torch
from pathlib import Path
from facenet_pytorch import MTCNN, InceptionResnetV1
from PIL import Image
from lambdas.core.torch_models import casia_state_dict_path
mtcnn = MTCNN(image_size=160, margin=0, min_face_size=20)
resnet = InceptionResnetV1(pretrained=None, classify=False).eval()
resnet.load_state_dict(torch.load(casia_state_dict_path(), weights_only=True))
embeddings, names = [], []
for photo in sorted(Path(sys.argv[1]).glob("*/*")):
    face = mtcnn(Image.open(photo).convert("RGB"))
    if face is not None:
        with torch.no_grad():
            embeddings.append(resnet(face.unsqueeze(0)))
        names.append(photo.parent.name)
torch.save([embeddings, names], sys.argv[2])
'''


def timed_process(args: list[str], cwd: Path, code: Path = ROOT) -> tuple[float, float | None, list[dict], float, float | None]:
    """Wall time of a fresh process from start to exit, the time to its first JSON line, its lines, the
    CPU seconds it and its children used, and the time from its first line to its last. ``code``: the
    checkout whose code runs (PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, last, lines = None, None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            last = time.monotonic() - started
            first = first or last
            lines.append(json.loads(line))
    stderr = proc.stderr.read() if proc.stderr else ""
    code = proc.wait()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code not in (0, 1):
        raise SystemExit(f"{args[:3]} failed ({code}):\n{stderr[-2000:]}")
    return wall, first, lines, cpu, (last - first) if first is not None and last is not None else None


def compile_checkout(code: Path) -> None:
    """Bytecode for a checkout's own modules, as an installed package has (pip compiles it), or a source
    tree once it has run (Python writes it). A machine that sets PYTHONDONTWRITEBYTECODE (these do) would
    otherwise compile ~150 modules again in every fresh process, worker and fork server, while the seed
    approach's torch and facenet-pytorch load compiled: measured at 0.15-0.3 s of run-local's start."""
    import compileall

    for package in ("facerec_cli", "lambdas"):
        compileall.compile_dir(str(code / package), quiet=1)


def stage_medians(lines: list[dict]) -> dict[str, float]:
    stages: dict[str, list[float]] = {}
    for r in lines:
        for stage, ms in (r.get("timings_ms") or {}).items():
            stages.setdefault(stage, []).append(ms)
    return {k: round(statistics.median(v), 1) for k, v in sorted(stages.items())}


def settle(quiet: float = 0.5, longest: float = 120.0) -> float:
    """Wait until the 1-minute load average is under ``quiet`` (at most ``longest`` s); seconds waited."""
    started = time.monotonic()
    while os.getloadavg()[0] > quiet and time.monotonic() - started < longest:
        time.sleep(2)
    return time.monotonic() - started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def paced(gallery: Path, videos: list[Path], expected: dict[str, str], workers: int, interval: float) -> dict:
    jobs, _ = collect_videos(videos)
    warm = Path(tempfile.mkdtemp(prefix="facerec-warmup-")) / "warmup.mp4"
    warm.write_bytes(videos[0].read_bytes())
    log = Path(tempfile.mkstemp(prefix="facerec-bench-", suffix=".log")[1])  # the functions' lines, off the figures
    with LocalPipeline(gallery, RunOptions(workers=workers, timeout_s=1800, upload_interval_s=interval), log_path=str(log)) as pipeline:
        pipeline.run(collect_videos([warm])[0])  # workers warm, as in a running deployment
        results = pipeline.run(jobs)
    latencies = [j.latency_s * 1000 for j in jobs if j.latency_s is not None]
    return {"p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "correct": sum(expected.get(r.video) == r.name for r in results), "total": len(jobs),
            "stages_ms": stage_medians([{"timings_ms": r.timings_ms} for r in results])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--workers", type=int, default=None, help="warm workers per function (default: run-local's own default)")
    parser.add_argument("--size", default="1280x720", help="course video size, WxH; several comma-separated: the clips take them in turn "
                        "(the course's: 854x480,1280x720,1920x1080)")
    parser.add_argument("--no-crowd", action="store_true", help="leave out the audience cut (several strangers): one person per clip, "
                        "as the course's clips")
    parser.add_argument("--rate", type=float, default=1.0, help="uploads per second in the paced mode")
    parser.add_argument("--paced-videos", type=int, default=30, help="videos in the paced mode")
    parser.add_argument("--skip-seed", action="store_true", help="do not time the seed approach")
    parser.add_argument("--require-quiet", action="store_true", help="refuse to run when the load average is over 0.5")
    parser.add_argument("--baseline", default="", help="also time identify and run-local with PYTHONPATH=this checkout (e.g. /work/main)")
    parser.add_argument("--skip-paced", action="store_true", help="do not run the paced mode")
    parser.add_argument("--settle", type=float, default=120.0, help="before each timed command, wait up to this many s for a load under 0.5")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if load > 0.5:
        message = f"the machine is busy (load average {load:.2f} over the last minute, above 0.5): timings and the ratio will be off"
        if args.require_quiet:
            raise SystemExit(f"refused: {message}; run again when it is quiet")
        print(f"WARNING: {message}", file=sys.stderr)
    print(f"load average before: {load:.2f}")
    tmp, clips, expected = course_clips(args.videos, args.size, "facerec-bench-", crowd=not args.no_crowd)
    videos = sorted(clips.glob("*.mp4"))
    people = people_dir(tmp)
    gallery = tmp / "gallery.safetensors"
    subprocess.run([shutil.which("facerec") or "facerec", "enroll", str(people), "-o", str(gallery)], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    # Making the clips loaded the machine itself: let the load settle before anything is timed.
    waited = settle(longest=args.settle)
    print(f"load average {os.getloadavg()[0]:.2f} after waiting {waited:.0f} s for the clip making to settle")

    # The whole process, cold start included, for each.
    cli = [shutil.which("facerec") or "facerec"]  # the installed console script, as a user runs it
    codes = [("", ROOT)] + ([("baseline ", Path(args.baseline).resolve())] if args.baseline else [])
    for _, code in codes:
        compile_checkout(code)
    runs: dict[str, dict] = {}
    for label, code in codes:
        workers = [] if args.workers is None else ["--workers", str(args.workers)]
        for command, extra in (("identify", [*map(str, videos)]), ("run-local", [str(clips), *workers])):
            settle(longest=args.settle)
            name = f"{label}{command}"
            wall, first, lines, cpu, _ = timed_process([*cli, command, *extra, "--gallery", str(gallery), "--json"], tmp, code)
            right = sum(expected.get(r["video"]) == r["name"] for r in lines)
            runs[name] = {"wall_s": wall, "first_result_s": first, "correct": right, "cpu_s": cpu, "lines": lines}
            print(f"{name}, whole process: {wall:.1f} s ({wall / len(videos) * 1000:.0f} ms per video, {len(videos) / wall:.2f} videos/s), "
                  f"CPU {cpu:.1f} s ({cpu / len(videos) * 1000:.0f} ms per video), first result after {first or 0:.2f} s, "
                  f"correct {right}/{len(videos)} [load {os.getloadavg()[0]:.2f}]")
            print(f"  per-stage median ms of a video: {json.dumps(stage_medians(lines))}; frames looked at: mean "
                  f"{statistics.mean(r.get('frames', 0) for r in lines):.2f}")
    ours = runs["run-local"]
    wall, first = ours["wall_s"], ours["first_result_s"]
    if args.baseline:
        for command in ("identify", "run-local"):
            print(f"{command} is {runs['baseline ' + command]['wall_s'] / runs[command]['wall_s']:.2f}x the baseline's {command} "
                  f"(whole process; CPU {runs['baseline ' + command]['cpu_s'] / runs[command]['cpu_s']:.2f}x)")
    ratio = None
    if not args.skip_seed:
        seed_gallery = tmp / "data.pt"
        subprocess.run([sys.executable, "-c", _SEED_GALLERY, str(people), str(seed_gallery)], check=True, cwd=tmp,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        seed_wall, _, seed_lines, seed_cpu, seed_span = timed_process([sys.executable, "-c", _SEED, str(seed_gallery), *map(str, videos)], tmp)
        seed_right = sum(expected.get(r["video"]) == r["name"] for r in seed_lines)
        ratio = seed_wall / wall
        identify_ratio = seed_wall / runs["identify"]["wall_s"]
        warm = seed_span / max(1, len(seed_lines) - 1) if seed_span is not None else None
        print(f"seed approach, whole process: {seed_wall:.1f} s ({seed_wall / len(videos) * 1000:.0f} ms per video), CPU {seed_cpu:.1f} s "
              f"({seed_cpu / len(videos) * 1000:.0f} ms per video), warm {warm * 1000:.0f} ms per video, correct {seed_right}/{len(videos)}")
        if warm is not None and warm > 1.6 * SEED_CALIBRATION_S:
            print(f"WARNING: the seed approach took {warm:.2f} s per warm video, expected about {SEED_CALIBRATION_S} s on 2 quiet "
                  "cores: the machine is loaded or the clips are not course-like; the ratio is not to be trusted", file=sys.stderr)
        print(f"identify is {identify_ratio:.2f}x the seed approach, run-local {ratio:.2f}x (whole process; load average after: "
              f"{os.getloadavg()[0]:.2f})")

    if args.skip_paced:
        return
    settle(longest=args.settle)
    p = paced(gallery, videos[: args.paced_videos], expected, default_workers() if args.workers is None else args.workers, 1.0 / args.rate)
    print(f"paced {args.rate:g}/s ({p['total']} videos, workers warm): latency p50 {p['p50_ms']:.0f} ms, p95 {p['p95_ms']:.0f} ms, "
          f"correct {p['correct']}/{p['total']} [load {os.getloadavg()[0]:.2f}]")
    print("  per-stage median ms of a paced video: " + json.dumps(p["stages_ms"]))
    checks = [
        ("every result right", all(r["correct"] == len(videos) for r in runs.values() if r is runs["identify"] or r is ours) and p["correct"] == p["total"]),
        (f"identify, whole process >= 6x the seed approach ({identify_ratio:.2f}x)" if ratio else "seed approach not timed", bool(ratio and identify_ratio >= 6)),
        (f"run-local, whole process >= 3x the seed approach ({ratio:.2f}x)" if ratio else "seed approach not timed", bool(ratio and ratio >= 3)),
        (f"p95 at {args.rate:g}/s <= 300 ms ({p['p95_ms']:.0f} ms)", p["p95_ms"] <= 300),
        (f"first result within 2 s of start ({first:.2f} s)", first is not None and first <= 2.0),
    ]
    for label, ok in checks:
        print(f"  target {'met   ' if ok else 'MISSED'}: {label}")


if __name__ == "__main__":
    main()
