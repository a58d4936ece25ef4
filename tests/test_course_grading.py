"""The course's grading procedure against `facerec run-local --serve`, from an outside AWS client.

Written from the course's published procedure (visa-lab/CSE546-Cloud-Computing, Project_2: the workload
generator uploads ``test_NN.mp4`` to ``<ASU ID>-input``; the grader checks that both functions answer
``get_function``, that the three buckets start empty, then lists and downloads every object of
``<ASU ID>-output``, each of which must be ``test_NN.txt`` holding the right name, counts ``test_NN.jpg``
in ``<ASU ID>-stage-1``, and reads ``AWS/Lambda`` metrics with ``get_metric_data``), not a copy of its
scripts. The client is a plain boto3 client configured as theirs are (explicit dummy keys, us-east-1),
reaching the served cloud through ``AWS_ENDPOINT_URL`` alone. Then SIGTERM must stop the server and leave
no process of it behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

ASU_ID = "1234567890"
CLIPS = 4  # the benchmark (benchmarks/course_grading.py) does the course's 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid`` (from /proc: no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Served:
    """`facerec run-local --serve` in a subprocess; its stdout and stderr collected in the background."""

    def __init__(self, gallery: Path, port: int, *extra: str) -> None:
        env = {**os.environ, "COLUMNS": "300"}
        env.pop("AWS_ENDPOINT_URL", None)
        args = [sys.executable, "-c", "from facerec_cli.cli.app import main; main()", "run-local", "--serve", "--port", str(port),
                "--prefix", ASU_ID, "--gallery", str(gallery), *extra]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")

    def stop(self, timeout: float = 180) -> int:
        """SIGTERM, and its exit code; a server still up after ``timeout`` (a hang guard, generous for a
        loaded machine) is killed and the test fails with what it printed. (A SIGTERM that arrived while
        the server listed its buckets was once swallowed by botocore's retries: that is what this catches.)"""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
            raise AssertionError(f"--serve still running {timeout:.0f} s after SIGTERM; output:\n{self.output}") from None
        self._reader.join(5)
        return code


def course_clips(folder: Path, data: Path, count: int, size: tuple[int, int] = (1280, 720)) -> dict[str, str]:
    """``test_NN.mp4`` as the course's (2 s, H.264 with an AAC track), each a photo of one person
    of 5celeb/val; the right name of each."""
    from facerec_cli.samples import still_video

    photos = sorted((data / "5celeb" / "val").glob("*/*"))
    people = sorted({p.parent.name for p in photos})
    expected = {}
    for i in range(count):
        photo = next(p for p in photos if p.parent.name == people[i % len(people)])
        name = f"test_{i:02d}.mp4"
        still_video(photo, folder / name, seconds=2.0, size=size, audio=True)
        expected[name] = photo.parent.name
    return expected


def metric_values(cloudwatch, function: str, metric: str, stat: str) -> list[float]:
    """As the grader asks: the last 15 minutes, one 600-second period."""
    now = datetime.now(timezone.utc)
    reply = cloudwatch.get_metric_data(
        MetricDataQueries=[{
            "Id": "m", "ReturnData": True,
            "MetricStat": {"Metric": {"Namespace": "AWS/Lambda", "MetricName": metric, "Dimensions": [{"Name": "FunctionName", "Value": function}]},
                           "Period": 600, "Stat": stat},
        }],
        StartTime=now - timedelta(minutes=15), EndTime=now + timedelta(seconds=1), ScanBy="TimestampAscending",
    )  # fmt: skip
    return reply["MetricDataResults"][0]["Values"]


def grader_client(service: str):
    # As the course's scripts make theirs: keys on the command line, us-east-1; the endpoint from the environment.
    return boto3.client(service, aws_access_key_id="grader-key", aws_secret_access_key="grader-secret", region_name="us-east-1")


@pytest.fixture
def served(celeb_gallery, tmp_path, monkeypatch):
    port = free_port()
    server = Served(celeb_gallery[0], port, "--workers", "1")
    try:
        server.wait_for_line(r"serving on http://127\.0\.0\.1:(\d+)", timeout=240)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(key, raising=False)
        yield server
    finally:
        server.stop()


def test_course_procedure_against_serve(served, data, tmp_path):
    s3, lam, cloudwatch = grader_client("s3"), grader_client("lambda"), grader_client("cloudwatch")
    buckets = [f"{ASU_ID}-input", f"{ASU_ID}-stage-1", f"{ASU_ID}-output"]

    # Test 1: both functions, by the course's names.
    for name in ("video-splitting", "face-recognition"):
        assert lam.get_function(FunctionName=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    # Test 2: the three buckets exist and are empty before the workload (the gallery is elsewhere).
    for bucket in buckets:
        s3.head_bucket(Bucket=bucket)
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0, bucket

    # The workload generator: upload each clip to the input bucket.
    clips = tmp_path / "clips"
    clips.mkdir()
    expected = course_clips(clips, data, CLIPS)
    for name in sorted(expected):
        s3.upload_file(str(clips / name), buckets[0], name)

    # Test 3: wait for one object per upload in the output bucket.
    deadline = time.monotonic() + 300
    while s3.list_objects_v2(Bucket=buckets[2])["KeyCount"] < CLIPS:
        assert time.monotonic() < deadline, f"output bucket incomplete; server output:\n{served.output}"
        time.sleep(1)
    time.sleep(1)  # nothing more may arrive
    output_keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=buckets[2])["Contents"])
    assert output_keys == sorted(n.replace(".mp4", ".txt") for n in expected)

    # Test 6 (correctness): every object of the output bucket is test_NN.txt with the right name.
    for key in output_keys:
        assert re.fullmatch(r"test_\d{2}\.txt", key)
        body = s3.get_object(Bucket=buckets[2], Key=key)["Body"].read().decode()
        assert body.strip() == expected[key.replace(".txt", ".mp4")], key
    # Test 4: stage-1 holds test_NN.jpg for every video.
    stage1 = {o["Key"] for o in s3.list_objects_v2(Bucket=buckets[1])["Contents"]}
    assert {n.replace(".mp4", ".jpg") for n in expected} <= stage1
    # The details live apart, where `facerec results` reads them.
    details = {o["Key"] for o in s3.list_objects_v2(Bucket=f"{ASU_ID}-details")["Contents"]}
    assert {n.replace(".mp4", ".json") for n in expected} <= details

    # The functions' Lambda metrics, read as the grader reads them (they are sent about every second).
    deadline = time.monotonic() + 20
    while not metric_values(cloudwatch, "face-recognition", "Invocations", "Sum") or \
            sum(metric_values(cloudwatch, "face-recognition", "Invocations", "Sum")) < CLIPS:
        assert time.monotonic() < deadline, "no face-recognition metrics"
        time.sleep(0.5)
    for function in ("video-splitting", "face-recognition"):
        assert sum(metric_values(cloudwatch, function, "Invocations", "Sum")) == CLIPS, function
        assert sum(metric_values(cloudwatch, function, "Errors", "Sum")) == 0, function
        durations = metric_values(cloudwatch, function, "Duration", "Average")
        assert durations and all(0 < d < 60_000 for d in durations), (function, durations)
        concurrency = metric_values(cloudwatch, function, "ConcurrentExecutions", "Maximum")
        assert concurrency and max(concurrency) >= 1, (function, concurrency)

    # The live progress line saw every answer.
    served.wait_for_line(rf"split {CLIPS} · answered {CLIPS}\b", timeout=10)

    # Any AWS client: the AWS CLI too, where it is installed (it is no dependency of facerec).
    aws = shutil.which("aws")
    if aws:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "cli-key", "AWS_SECRET_ACCESS_KEY": "cli-secret", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
        listing = subprocess.run([aws, "s3", "ls", f"s3://{buckets[2]}/"], env=env, capture_output=True, text=True, timeout=120)
        assert listing.returncode == 0, listing.stderr
        assert sorted(line.split()[-1] for line in listing.stdout.splitlines()) == output_keys
        function = subprocess.run([aws, "lambda", "get-function", "--function-name", "face-recognition"], env=env, capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
        assert function.returncode == 0 and '"FunctionName": "face-recognition"' in function.stdout, function.stderr


def test_sigterm_stops_everything(celeb_gallery):
    port = free_port()
    server = Served(celeb_gallery[0], port, "--workers", "1")
    try:
        server.wait_for_line(r"serving on", timeout=240)
        children = descendants(server.process.pid)
        assert children, "the workers should be running"
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert "stopped" in server.output
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "processes left running after SIGTERM"
    with socket.socket() as probe:  # nothing listens on the port any more (TIME_WAIT connections may remain)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_serve_refusals_are_one_line(celeb_gallery, data):
    from tests.cli_run import error_lines, facerec

    result = facerec("run-local", "--serve", str(data / "videos"), "--gallery", str(celeb_gallery[0]))
    assert result.exit_code == 1
    assert error_lines(result) and "--serve takes no videos" in error_lines(result)[0]
    result = facerec("run-local", "--gallery", str(celeb_gallery[0]))
    assert result.exit_code == 1 and "no videos given" in error_lines(result)[0]
    with socket.socket() as taken:  # a port something else listens on: one line, nothing started
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = facerec("run-local", "--serve", "--port", taken.getsockname()[1], "--gallery", str(celeb_gallery[0]))
    assert result.exit_code == 1 and "cannot start the local cloud on 127.0.0.1" in error_lines(result)[0], result.output
