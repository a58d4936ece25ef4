"""Nothing lost under faults: a burst of uploads through `run-local` while workers are killed from
outside, handlers time out at random moments and S3 events (and Invokes) are delivered twice.

    python benchmarks/faults.py [--videos 200] [--workers 2] [--kills 20] [--timeouts 0.08] [--redeliver 0.25]

- kills: a thread SIGKILLs a random worker process (splitting or recognition) every 0.5-3 s;
- timeouts: each S3/Lambda call of a handler may end its invocation like a Lambda timeout, before or
  after the call took effect (at most once per function and video: benchmarks/fault_handlers.py);
- redelivery: a share of the S3 notifications and of the asynchronous Invokes is delivered a second
  time, 0-0.3 s later, as S3 and Lambda may (at least once).

Checked per video: a result exists (`<stem>.json` and `<stem>.txt`, the same name), it names the right
person, and `<stem>.json` was written once (the details bucket is versioned for the run). A video whose
three attempts (Lambda's asynchronous retries) were all killed or timed out ends in an `error` result
that says so, as on AWS: counted apart ("retries_exhausted"), not as lost. Prints the counts and exits 1
on any lost, duplicated or wrong result, or an error of any other kind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))

from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, collect_videos  # noqa: E402
from facerec_cli.pipeline.local.handlers import pipeline_allowlist  # noqa: E402

HANDLERS = {"splitting": "benchmarks.fault_handlers.splitting", "recognition": "benchmarks.fault_handlers.recognition"}


def make_videos(folder: Path, count: int) -> dict[str, str]:
    from facerec_cli.samples import still_video

    photos = sorted((DATA / "5celeb" / "val").glob("*/*"))
    distinct = [still_video(p, folder / f"_src{i}.mp4", seconds=1.0, size=(640, 480)) for i, p in enumerate(photos)]
    expected = {}
    for i in range(count):
        name = f"v_{i:03d}.mp4"
        shutil.copyfile(distinct[i % len(distinct)], folder / name)
        expected[name] = photos[i % len(photos)].parent.name
    for path in distinct:
        path.unlink()
    return expected


def replace_handler(pipeline: LocalPipeline, function: str, handler: str, fault_dir: Path, probability: float) -> None:
    """Recreate a function with the fault-injecting handler (moto ignores ImageConfig in updates)."""
    lam = pipeline.clients.lambda_
    config = lam.get_function(FunctionName=function)["Configuration"]
    env = dict(config["Environment"]["Variables"], FAULT_DIR=str(fault_dir), FAULT_PROBABILITY=str(probability))
    lam.delete_function(FunctionName=function)
    lam.create_function(
        FunctionName=function, Role=config["Role"], PackageType="Image", Code={"ImageUri": "local/facerec:faults"},
        ImageConfig={"Command": [handler]}, Environment={"Variables": env}, Timeout=config["Timeout"], MemorySize=config["MemorySize"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=20, help="worker processes SIGKILLed during the run")
    parser.add_argument("--timeouts", type=float, default=0.08, help="chance that a handler's S3/Lambda call times the invocation out")
    parser.add_argument("--redeliver", type=float, default=0.25, help="share of events and Invokes delivered twice")
    parser.add_argument("--seed", type=int, default=546)
    args = parser.parse_args()
    random.seed(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="facerec-faults-"))
    clips, fault_dir = tmp / "videos", tmp / "faults"
    clips.mkdir()
    fault_dir.mkdir()
    expected = make_videos(clips, args.videos)
    gallery = tmp / "gallery.safetensors"
    subprocess.run([shutil.which("facerec") or "facerec", "enroll", str(DATA / "5celeb" / "train"), "-o", str(gallery)],
                   check=True, capture_output=True)
    jobs, _ = collect_videos([clips])
    allow = pipeline_allowlist().widened(handlers=HANDLERS.values(), variables=["FAULT_DIR", "FAULT_PROBABILITY"])
    log = tmp / "functions.log"
    kills: list[str] = []
    redelivered = {"events": 0}
    started = time.monotonic()
    with LocalPipeline(gallery, RunOptions(workers=args.workers, timeout_s=1800, allow=allow), log_path=str(log)) as pipeline:
        names = pipeline.names
        s3 = pipeline.clients.s3
        s3.put_bucket_versioning(Bucket=names.details_bucket, VersioningConfiguration={"Status": "Enabled"})  # versions of <stem>.json
        replace_handler(pipeline, names.splitting_function, HANDLERS["splitting"], fault_dir, args.timeouts)
        replace_handler(pipeline, names.recognition_function, HANDLERS["recognition"], fault_dir, args.timeouts)

        dispatcher = pipeline.cloud.dispatcher
        submit = dispatcher.submit

        def submit_twice(spec, event_text, kind="Event"):  # type: ignore[no-untyped-def]
            invocation = submit(spec, event_text, kind)
            if kind == "Event" and random.random() < args.redeliver:
                redelivered["events"] += 1
                threading.Timer(random.uniform(0, 0.3), submit, args=(spec, event_text, kind)).start()
            return invocation

        dispatcher.submit = submit_twice  # type: ignore[method-assign]
        stop = threading.Event()

        def killer() -> None:
            while len(kills) < args.kills and not stop.wait(random.uniform(0.5, 3.0)):
                pids = [(name, pid) for name, ps in dispatcher.worker_pids().items() for pid in ps]
                if pids:
                    name, pid = random.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(name)
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        results = pipeline.run(jobs)
        stop.set()
        thread.join()
        wall = time.monotonic() - started
        lost, duplicated, wrong, errors, exhausted = [], [], [], [], []
        by_video = {r.video: r for r in results}
        for job in jobs:
            result = by_video.get(job.key)
            versions = [v for v in s3.list_object_versions(Bucket=names.details_bucket, Prefix=f"{job.stem}.json").get("Versions", [])
                        if v["Key"] == f"{job.stem}.json"]
            try:
                txt = s3.get_object(Bucket=names.output_bucket, Key=f"{job.stem}.txt")["Body"].read().decode()
            except s3.exceptions.NoSuchKey:
                txt = None
            if result is None or not versions or txt is None:
                lost.append(job.key)
                continue
            if len(versions) > 1:
                duplicated.append(f"{job.key} ({len(versions)} versions)")
            if result.status == "error":
                (exhausted if "failed on every attempt" in (result.error or "") else errors).append(f"{job.key}: {result.error}")
            elif result.name != expected[job.key] or txt != result.name:
                wrong.append(f"{job.key}: {result.name} (txt {txt}), expected {expected[job.key]}")
    injected = sorted(p.name.split("-")[0] for p in fault_dir.iterdir())
    print(json.dumps({
        "videos": len(jobs), "wall_s": round(wall, 1), "results": len(results), "lost": len(lost), "duplicated": len(duplicated),
        "wrong": len(wrong), "errors": len(errors), "retries_exhausted": len(exhausted), "workers_killed": {n: kills.count(n) for n in set(kills)},
        "timeouts_injected": {n: injected.count(n) for n in set(injected)}, "deliveries_doubled": redelivered["events"],
    }))
    for label, items in (("lost", lost), ("duplicated", duplicated), ("wrong", wrong), ("error", errors), ("retries exhausted", exhausted)):
        for item in items[:10]:
            print(f"  {label}: {item}")
    print(f"function logs: {log}")
    return 1 if lost or duplicated or wrong or errors else 0


if __name__ == "__main__":
    sys.exit(main())
