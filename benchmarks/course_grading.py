"""The course's end-to-end test against `facerec run-local --serve`, from an outside boto3 client.

    python benchmarks/course_grading.py [--videos 100] [--workers 1] [--interval 1.0] [--size 1280x720]

Follows the course's published procedure (visa-lab/CSE546-Cloud-Computing, Project_2): the workload
generator uploads `test_NN.mp4` to `<ASU ID>-input` one after another (`--interval` seconds apart: its
`upload_files_v2` sleeps 1 s after each), and the grader's test 3 polls `<ASU ID>-output` until it holds
100 objects (full marks within 300 s). The server runs in its own process, as a user runs it; the client
is a plain boto3 client with dummy keys reaching it through `AWS_ENDPOINT_URL` alone.

Videos and gallery as in benchmarks/course_workload.py (course-format clips of 5celeb/val photos and
cuts of the Hamilton clip; 5celeb/train and enroll/ enrolled). Printed: the end-to-end time (first upload
to the last answer in the output bucket), per-video latency p50/p95 (the answer's LastModified minus the
upload's), how many answers are right, what else the output bucket holds (must be nothing), and the
functions' AWS/Lambda metrics as the grader reads them (Duration average, ConcurrentExecutions maximum).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.course_workload import course_clips, people_dir, percentile  # noqa: E402

ASU_ID = "1234567890"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metric(cloudwatch, function: str, name: str, stat: str) -> list[float]:
    now = datetime.now(timezone.utc)
    query = {"Id": "m", "ReturnData": True, "MetricStat": {"Period": 600, "Stat": stat, "Metric": {
        "Namespace": "AWS/Lambda", "MetricName": name, "Dimensions": [{"Name": "FunctionName", "Value": function}]}}}  # fmt: skip
    reply = cloudwatch.get_metric_data(MetricDataQueries=[query], StartTime=now - timedelta(minutes=15), EndTime=now + timedelta(seconds=1))
    return reply["MetricDataResults"][0]["Values"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="warm workers per function")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between uploads (the workload generator's: 1)")
    parser.add_argument("--size", default="1280x720", help="course video size, WxH")
    args = parser.parse_args()
    tmp, clips, expected = course_clips(args.videos, args.size, "facerec-grading-")
    facerec = shutil.which("facerec") or "facerec"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AWS_ENDPOINT_URL", None)
    gallery = tmp / "gallery.safetensors"
    subprocess.run([facerec, "enroll", str(people_dir(tmp)), "-o", str(gallery)], check=True, capture_output=True, env=env)

    port = free_port()
    log = tmp / "serve.log"
    started = time.monotonic()
    with open(log, "w") as sink:
        server = subprocess.Popen([facerec, "run-local", "--serve", "--port", str(port), "--prefix", ASU_ID, "--gallery", str(gallery),
                                   "--workers", str(args.workers)], stdout=sink, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        while "serving on" not in log.read_text():
            if server.poll() is not None or time.monotonic() - started > 300:
                raise SystemExit(f"--serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        print(f"--serve up in {time.monotonic() - started:.1f} s on port {port}")
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        import boto3

        def client(service: str):
            return boto3.client(service, aws_access_key_id="grader", aws_secret_access_key="grader", region_name="us-east-1")

        s3, cloudwatch = client("s3"), client("cloudwatch")
        output = f"{ASU_ID}-output"
        uploaded: dict[str, float] = {}
        first = time.time()
        for name in sorted(expected):
            uploaded[name] = time.time()
            s3.upload_file(str(clips / name), f"{ASU_ID}-input", name)
            if args.interval:
                time.sleep(args.interval)
        print(f"uploaded {len(expected)} videos in {time.time() - first:.1f} s")
        while s3.list_objects_v2(Bucket=output)["KeyCount"] < len(expected):
            if time.time() - first > 1800:
                raise SystemExit("no complete output bucket after 30 minutes")
            time.sleep(0.5)
        end_to_end = time.time() - first
        objects = s3.list_objects_v2(Bucket=output)["Contents"]
        latencies = [o["LastModified"].timestamp() - uploaded[o["Key"].replace(".txt", ".mp4")] for o in objects if o["Key"].endswith(".txt")]
        strays = [o["Key"] for o in objects if not re.fullmatch(r"test_\d{2,3}\.txt", o["Key"])]
        right = sum(s3.get_object(Bucket=output, Key=n.replace(".mp4", ".txt"))["Body"].read().decode() == who for n, who in expected.items())
        print(f"end to end (first upload -> {len(expected)} answers in {output}): {end_to_end:.1f} s; "
              f"latency per video p50 {percentile(latencies, 50):.1f} s, p95 {percentile(latencies, 95):.1f} s (S3 times are whole seconds)")
        print(f"right answers {right}/{len(expected)}; other objects in the output bucket: {strays or 'none'}")
        time.sleep(2)  # the metrics go out about every second
        for function in ("video-splitting", "face-recognition"):
            durations = metric(cloudwatch, function, "Duration", "Average")
            concurrency = metric(cloudwatch, function, "ConcurrentExecutions", "Maximum")
            invocations = sum(metric(cloudwatch, function, "Invocations", "Sum"))
            print(f"{function}: Invocations {invocations:.0f}, Duration average {max(durations, default=0):.0f} ms, "
                  f"ConcurrentExecutions maximum {max(concurrency, default=0):.0f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
