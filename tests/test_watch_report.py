"""Seeing the pipeline: `facerec watch` (the dashboard's snapshot against a real moto server, and the
command's --json output), annotated frames (drawn where the detected face is), and the HTML report of
`facerec results --html` and `facerec run-local --html`, opened in headless Chromium.

Chromium: installed with apt-get by a session fixture when running as root and missing; skipped when
missing and not root (a failure under CI=true).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from facerec_cli.pipeline.observe import dashboard
from facerec_cli.pipeline.observe.snapshot import PipelineSnapshot
from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.executor import NullReporter, apply_plan
from facerec_cli.pipeline.deployer import plan_deploy
from facerec_cli.pipeline.stack import DeployOptions
from facerec_cli.cli.app import app
from facerec_cli.pipeline.observe.results import destination_record
from lambdas.core import annotate
from lambdas.core.results import ERROR, NO_FACE, OK, UNKNOWN, Face, Result, error_result

runner = CliRunner()
REGIONS = iter(["ca-west-1", "mx-central-1", "ap-southeast-5", "ap-southeast-7", "eu-west-4"])
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
]  # fmt: skip
# Screenshots of the reports land in the test's temporary folder, or here when set (to look at them).
SCREENSHOT_DIR = os.environ.get("FACEREC_SCREENSHOT_DIR")


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def deployment(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A fresh deployment (buckets, failure queue, log groups, functions) on the moto server, and the
    environment of a user pointed at it (FACEREC_PREFIX/REGION, AWS_ENDPOINT_URL)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "FACEREC_ENDPOINT_URL", "FACEREC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(prefix=f"w{uuid.uuid4().hex[:10]}", region=next(REGIONS), endpoint_url=moto_url)
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ENDPOINT_URL": moto_url, "AWS_DEFAULT_REGION": settings.region, "FACEREC_PREFIX": settings.prefix,
        "FACEREC_REGION": settings.region, "FACEREC_STATE_DIR": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "COLUMNS": "200",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    clients = Clients.from_settings(settings)
    apply_plan(plan_deploy(settings, DeployOptions(), clients), NullReporter())
    yield settings, clients


def _find_chromium() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find_chromium()
    if found:
        return found
    why = "headless Chromium is not installed (apt-get install chromium chromium-driver)"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200, check=False)
        if proc.returncode != 0:  # stale package lists: update once and try again
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600, check=False)
            proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200, check=False)
        found = _find_chromium()
        if found:
            return found
        pytest.fail(f"installing chromium with apt-get failed: {(proc.stderr or proc.stdout)[-800:]}")
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why + "; not root, so the tests cannot install it")


def run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-profile-{uuid.uuid4().hex[:6]}"
    profile.mkdir()
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


# What the page looks like from inside the browser: rows, images (loaded or not), then the "error"
# status filter switched off by a click, as a person would.
PROBE = """
<script>
window.addEventListener('load', function () {
  function rows() {
    return Array.prototype.map.call(document.querySelectorAll('tr.video'), function (r) {
      return {video: r.getAttribute('data-video'), status: r.getAttribute('data-status'), visible: r.offsetParent !== null,
              images: Array.prototype.map.call(r.querySelectorAll('img'), function (i) {
                return {kind: i.getAttribute('data-kind'), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
              })};
    });
  }
  var out = {before: rows(), filters: Array.prototype.map.call(document.querySelectorAll('input.status-filter'), function (b) { return b.value; })};
  var box = document.querySelector('input.status-filter[value="error"]');
  if (box) { box.click(); }
  out.after = rows();
  out.shown = document.getElementById('shown').textContent;
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def probe_report(chromium: str, report: Path, tmp: Path) -> dict[str, Any]:
    page = tmp / f"probe-{report.name}"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = run_chromium(chromium, tmp, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the probe did not run: {proc.stdout[-1000:]} {proc.stderr[-1000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(chromium: str, report: Path, tmp: Path, name: str) -> Path:
    folder = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    run_chromium(chromium, tmp, "--window-size=1400,1000", f"--screenshot={shot}", report.as_uri())
    assert shot.stat().st_size > 10_000
    return shot


def facerec(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def jpeg(size: tuple[int, int] = (320, 240), colour: tuple[int, int, int] = (90, 110, 140)) -> bytes:
    import io

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((110, 50, 210, 190), fill=(225, 190, 160))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def put_logs(clients: Clients, settings: Settings, function: str, *messages: str) -> None:
    group = settings.names.log_group(function)
    stream = f"2026/11/01/[$LATEST]{uuid.uuid4().hex}"
    clients.logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    clients.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)])


def answer(settings: Settings, result: Result, stem: str) -> None:
    """The recognition function's own writer (JSON with the status in its metadata, then the name)."""
    from lambdas.storage import write_result

    write_result(settings.names.results, stem, result, event_id="e-" + stem)


def ok_result(video: str, name: str = "madonna", distance: float = 0.61) -> Result:
    face = Face(frame=0, t=0.0, box=[110.0, 50.0, 210.0, 190.0], prob=0.999, name=name, distance=distance)
    return Result(video=video, status=OK, name=name, faces=[face], model="casia-webface", frames=3, timings_ms={"split": 80.0, "recognise": 150.0})


def stage_pipeline(settings: Settings, clients: Clients) -> None:
    """Five uploads, one in each state: uploaded only, split, answered, refused (an error result
    written by video-splitting), and failed (a failure-queue record from face-recognition)."""
    n = settings.names
    s3 = clients.s3
    for video in ("only uploaded.mp4", "split one.mp4", "answered.mp4", "refused.mp4", "timed out.mp4"):
        s3.put_object(Bucket=n.input_bucket, Key=video, Body=b"not decoded by anyone here", ContentType="video/mp4")
    time.sleep(1.1)  # S3 keeps times to the second: answers come at least a second after the uploads
    for key in ("split one.jpg", "split one/001.jpg", "answered.jpg", "answered/001.jpg", "answered/002.jpg", "timed out.jpg"):
        s3.put_object(Bucket=n.stage1_bucket, Key=key, Body=jpeg(), ContentType="image/jpeg")
    answer(settings, ok_result("answered.mp4"), "answered")
    s3.put_object(Bucket=n.details_bucket, Key=annotate.annotated_key("answered"), Body=annotate.jpeg_bytes(
        annotate.annotate(Image.open(__import__("io").BytesIO(jpeg())), ok_result("answered.mp4").faces)), ContentType="image/jpeg")
    answer(settings, error_result("refused.mp4", "refused.mp4: 300 MB is over the limit of 200 MB"), "refused")
    request = {"stage1_bucket": n.stage1_bucket, "stem": "timed out", "video": "timed out.mp4",
               "frames": [{"key": "timed out.jpg", "t": 0.0}], "source": {}, "timings_ms": {}}  # fmt: skip
    arn = f"arn:aws:lambda:{settings.region}:{clients.account_id}:function:{n.recognition_function}"
    url = clients.sqs.get_queue_url(QueueName=n.failure_queue)["QueueUrl"]
    clients.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(destination_record(arn, "r-1", request, "Task timed out after 300.00 seconds", 3)))
    put_logs(clients, settings, n.splitting_function,
             json.dumps({"msg": "split", "key": "answered.mp4", "frames": 3, "ms": 80}),
             json.dumps({"msg": "refused", "key": "refused.mp4", "error": "refused.mp4: 300 MB is over the limit of 200 MB"}))  # fmt: skip
    put_logs(clients, settings, n.recognition_function,
             json.dumps({"msg": "recognised", "stem": "answered", "status": "ok", "name": "madonna", "ms": 150}),
             'Traceback (most recent call last):\n  File "/var/task/lambdas/face_recognition.py", line 1\nRuntimeError: out of memory')  # fmt: skip


# ------------------------------------------------------------------------------------------ watch


def test_snapshot_counts_videos_in_each_state(deployment: Any) -> None:
    settings, clients = deployment
    n = settings.names
    stage_pipeline(settings, clients)

    board = dashboard.Dashboard(clients.s3, clients.sqs, clients.logs, n, settings=settings)
    snap = board.snapshot()
    assert snap.buckets == {"input": 5, "stage1_videos": 3, "output_results": 2}  # frames 001, 002 are not videos
    states = {v.video: v.state for v in snap.videos.values()}
    assert states == {"only uploaded.mp4": "uploaded", "split one.mp4": "split", "answered.mp4": "finished",
                      "refused.mp4": "failed", "timed out.mp4": "failed"}  # fmt: skip
    assert [v.video for v in snap.in_flight] == ["only uploaded.mp4", "split one.mp4"] and not snap.idle
    assert (snap.count(dashboard.FINISHED), snap.count(dashboard.FAILED)) == (1, 2)
    why = {v.video: v.error for v in snap.failures}
    assert why["timed out.mp4"] == "face-recognition: Task timed out after 300.00 seconds"

    # latency: result (or failure record) time minus upload time, from the listings' LastModified
    uploaded = {o["Key"]: o["LastModified"] for o in clients.s3.list_objects_v2(Bucket=n.input_bucket)["Contents"]}
    answered = {o["Key"]: o["LastModified"] for o in clients.s3.list_objects_v2(Bucket=n.details_bucket)["Contents"]}
    expected = [(answered[f"{s}.json"] - uploaded[f"{s}.mp4"]).total_seconds() for s in ("answered", "refused")]
    assert all(value >= 1.0 for value in expected)  # answered after the 1.1 s pause
    assert snap.videos["answered"].latency_s == pytest.approx(expected[0])
    latency = snap.latency()
    assert latency["n"] == 3 and 0.0 <= latency["p50"] <= latency["p95"] <= latency["max"]  # type: ignore[operator]
    # p50/p95 of the three answered videos' latencies, computed here (not by the dashboard's own percentile)
    answered_latencies = [v.latency_s for v in snap.videos.values() if v.state in (dashboard.FINISHED, dashboard.FAILED)]
    assert len(answered_latencies) == 3
    assert latency["p50"] == pytest.approx(statistics.median(answered_latencies), abs=1e-3)
    p95 = statistics.quantiles(answered_latencies, n=20, method="inclusive")[18]  # linear interpolation, as numpy's
    assert latency["p95"] == pytest.approx(p95, abs=1e-3)
    assert latency["max"] == pytest.approx(max(answered_latencies), abs=1e-3)
    assert snap.videos["only uploaded"].latency_s >= 1.0  # in flight: its age so far

    # the last errors of the functions' logs: refusals and tracebacks, not the routine lines
    messages = [(e.function, e.message) for e in snap.errors]
    assert messages == [(n.splitting_function, "refused: refused.mp4: 300 MB is over the limit of 200 MB"),
                        (n.recognition_function, "RuntimeError: out of memory")]  # fmt: skip

    # the next refresh costs list calls only: no HeadObject for results already seen, no repeated errors
    heads = board.heads
    assert heads == 2
    again = board.snapshot()
    assert board.heads == heads and len(again.errors) == 2
    data = json.loads(again.to_json())
    assert data["in_flight"] == 2 and data["finished"] == 1 and data["failed"] == 2 and data["idle"] is False
    assert data["buckets"] == snap.buckets and [v["video"] for v in data["in_flight_videos"]] == ["only uploaded.mp4", "split one.mp4"]
    assert "sections" not in data  # the extension point is empty unless a deployment adds sections
    with_sections = dashboard.Dashboard(clients.s3, clients.sqs, clients.logs, n, sections={"queues": lambda: {"request": 3, "response": 0}}).snapshot()
    assert with_sections.to_dict()["sections"] == {"queues": {"request": 3, "response": 0}}


def test_a_refresh_makes_list_calls_only_and_downloads_nothing(deployment: Any) -> None:
    """The issue's cost rule, counted on the wire: botocore's before-call event sees every API call
    the dashboard's clients make (against the real moto server)."""
    settings, clients = deployment
    stage_pipeline(settings, clients)
    calls: list[str] = []
    for client in (clients.s3, clients.sqs, clients.logs):
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
    board = dashboard.Dashboard(clients.s3, clients.sqs, clients.logs, settings.names, settings=settings)

    board.snapshot()
    first = list(calls)
    reads = {"ListObjectsV2", "HeadObject", "GetQueueUrl", "ReceiveMessage", "FilterLogEvents"}
    # Plus one HeadBucket, the first time: is there a details bucket (else an older deployment's output bucket)?
    assert set(first) <= reads | {"HeadBucket"}, f"a refresh made other calls: {sorted(set(first) - reads - {'HeadBucket'})}"
    assert first.count("HeadBucket") == 1
    assert first.count("HeadObject") == 2  # one per result object, the first time it is seen
    assert first.count("ListObjectsV2") == 3  # one page per bucket

    calls.clear()
    board.snapshot()
    assert set(calls) <= reads - {"HeadObject", "GetQueueUrl"}  # results cached by ETag, queue URL kept
    assert "GetObject" not in first + calls


def test_watch_json_until_idle_and_html_report(deployment: Any, chromium: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, clients = deployment
    n = settings.names
    stage_pipeline(settings, clients)
    first = threading.Event()
    original = dashboard.Dashboard.snapshot

    def snapshot(self: dashboard.Dashboard) -> PipelineSnapshot:
        taken = original(self)
        first.set()
        return taken

    monkeypatch.setattr(dashboard.Dashboard, "snapshot", snapshot)

    def pipeline() -> None:  # the functions answer the two videos in flight while `watch` runs
        first.wait(20)
        time.sleep(0.3)
        clients.s3.put_object(Bucket=n.stage1_bucket, Key="only uploaded.jpg", Body=jpeg(colour=(40, 120, 60)))
        answer(settings, Result(video="only uploaded.mp4", status=NO_FACE, name=NO_FACE, frames=3), "only uploaded")
        time.sleep(0.5)
        stranger = Face(0, 0.0, [100.0, 40.0, 220.0, 200.0], 0.98, UNKNOWN, 1.21)
        answer(settings, Result(video="split one.mp4", status=UNKNOWN, name=UNKNOWN, faces=[stranger], frames=3), "split one")
        answered.set()

    answered = threading.Event()
    worker = threading.Thread(target=pipeline)
    worker.start()
    watched = facerec("watch", "--json", "--until-idle", "--interval", "0.2")
    assert answered.is_set()  # it returned only once the last answer was there (read before join)
    worker.join()
    assert watched.exit_code == 0, watched.output
    snapshots = [json.loads(line) for line in watched.stdout.splitlines()]  # every stdout line is one snapshot
    assert len(snapshots) >= 3
    assert snapshots[0]["in_flight"] == 2 and snapshots[0]["idle"] is False
    last = snapshots[-1]
    assert last["idle"] is True and last["in_flight"] == 0 and [s["idle"] for s in snapshots].count(True) == 1
    assert (last["finished"], last["failed"]) == (3, 2) and last["buckets"] == {"input": 5, "stage1_videos": 4, "output_results": 4}
    assert last["latency_s"]["n"] == 5 and last["latency_s"]["p50"] >= 1.0
    assert [e["message"] for e in last["errors"]][-1] == "RuntimeError: out of memory"

    board = facerec("watch", "--until-idle", "--interval", "0.2")  # not a terminal: the last dashboard, once
    assert board.exit_code == 0, board.output
    assert "facerec watch" in board.stdout and "idle" in board.stdout and "Task timed out after 300.00 seconds" in board.stdout
    elsewhere = facerec("watch", "--until-idle", "--prefix", "nothing-here")
    assert elsewhere.exit_code == 1 and "run `facerec bootstrap` first" in elsewhere.stderr

    report = tmp_path / "report.html"
    listed = facerec("results", "--html", str(report))
    assert listed.exit_code == 1  # two videos ended in error
    assert f"report of 5 videos in {report}" in listed.stderr
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text.replace(settings.endpoint_url or "", "") and "https://" not in text  # self-contained
    seen = probe_report(chromium, report, tmp_path)
    before = {r["video"]: r for r in seen["before"]}
    assert set(before) == {"only uploaded.mp4", "split one.mp4", "answered.mp4", "refused.mp4", "timed out.mp4"}
    assert {v: r["status"] for v, r in before.items()} == {"only uploaded.mp4": NO_FACE, "split one.mp4": UNKNOWN, "answered.mp4": OK,
                                                           "refused.mp4": ERROR, "timed out.mp4": ERROR}  # fmt: skip
    assert all(r["visible"] for r in seen["before"])
    kinds = {v: [i["kind"] for i in r["images"]] for v, r in before.items()}
    assert kinds == {"answered.mp4": ["annotated"], "split one.mp4": ["frame"], "only uploaded.mp4": ["frame"], "timed out.mp4": ["frame"],
                     "refused.mp4": []}  # fmt: skip
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for r in seen["before"] for i in r["images"])
    assert set(seen["filters"]) == {OK, UNKNOWN, NO_FACE, ERROR}
    after = {r["video"]: r["visible"] for r in seen["after"]}
    assert after == {"only uploaded.mp4": True, "split one.mp4": True, "answered.mp4": True, "refused.mp4": False, "timed out.mp4": False}
    assert seen["shown"] == "3 of 5 shown"
    screenshot(chromium, report, tmp_path, "results-report.png")


# ---------------------------------------------------------------------------------- annotated frames


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 60) -> bool:
    return sum((a - b) ** 2 for a, b in zip(pixel[:3], colour)) ** 0.5 <= tolerance


def edge_pixels(image: Image.Image, box: list[float]) -> list[tuple[int, ...]]:
    """Pixels along the four edges of the face's box (every 3 px), in the middle of the band that
    annotate draws there (it grows outwards from the edge)."""
    m = (annotate.line_width(image.size) - 1) // 2
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, y1, x2, y2 = x1 - m, y1 - m, x2 + m, y2 + m
    rgb = image.convert("RGB")
    points = [(x, y) for x in range(x1, x2 + 1, 3) for y in (y1, y2)] + [(x, y) for y in range(y1, y2 + 1, 3) for x in (x1, x2)]
    return [rgb.getpixel(p) for p in points]


def test_unknown_faces_are_drawn_red_and_named_with_their_distance() -> None:
    frame = Image.new("RGB", (640, 480), (128, 128, 128))
    faces = [Face(0, 0.0, [100.0, 120.0, 220.0, 280.0], 0.99, UNKNOWN, 1.21), Face(0, 0.0, [400.0, 100.0, 520.0, 260.0], 0.99, "madonna", 0.61),
             Face(1, 0.5, [10.0, 10.0, 50.0, 50.0], 0.95, "madonna", 0.7)]  # fmt: skip
    assert annotate.best_frame(faces) == 0 and annotate.best_frame([]) is None
    assert [annotate.label(f) for f in faces[:2]] == ["unknown 1.21", "madonna 0.61"]
    drawn = annotate.annotate_frame(frame, faces, 0)
    assert all(_near(p, annotate.UNKNOWN_COLOUR, 5) for p in edge_pixels(drawn, faces[0].box))
    assert all(_near(p, annotate.KNOWN_COLOUR, 5) for p in edge_pixels(drawn, faces[1].box))
    assert drawn.getpixel((30, 30)) == (128, 128, 128)  # frame 1's face is not drawn on frame 0
    assert drawn.getpixel((160, 200)) == (128, 128, 128)  # the face itself stays visible
    assert frame.getpixel((100, 120)) == (128, 128, 128)  # the frame given is left as it was


@pytest.fixture(scope="module")
def small_gallery(data: Path, encoder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three people of 5celeb/train (Madonna, Elton John, Jerry Seinfeld), five photos each."""
    from lambdas.core.enroll import build_gallery

    photos = tmp_path_factory.mktemp("photos")
    for person in ("madonna", "elton_john", "jerry_seinfeld"):
        (photos / person).mkdir()
        for photo in sorted((data / "5celeb" / "train" / person).iterdir())[:5]:
            (photos / person / photo.name).symlink_to(photo)
    path = tmp_path_factory.mktemp("gallery") / "small.pt"
    build_gallery(photos, encoder)[0].save(path)
    return path


@pytest.fixture(scope="module")
def videos(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Course-format clips of 5celeb/val photos: Madonna (enrolled), Mindy Kaling (not enrolled), a
    photo without a face; and a truncated MP4."""
    from facerec_cli.samples import still_video

    folder = tmp_path_factory.mktemp("clips")
    val = data / "5celeb" / "val"
    made = {
        "madonna": still_video(sorted((val / "madonna").iterdir())[2], folder / "test_00.mp4", seconds=1.0, fps=10),
        "stranger": still_video(sorted((val / "mindy_kaling").iterdir())[1], folder / "test_01.mp4", seconds=1.0, fps=10),
        "noface": still_video(data / "noface" / "noface_01_coins.png", folder / "test_02.mp4", seconds=1.0, fps=10),
    }
    corrupt = folder / "test_03.mp4"
    corrupt.write_bytes(made["madonna"].read_bytes()[:3000])
    made["corrupt"] = corrupt
    return made


def test_identify_annotate_draws_the_box_where_the_face_was_found(small_gallery: Path, videos: dict[str, Path], tmp_path: Path) -> None:
    from lambdas.core.sampling import read_frames

    out = tmp_path / "annotated"
    result = facerec("identify", str(videos["madonna"]), "--gallery", str(small_gallery), "--json", "--annotate", str(out))
    assert result.exit_code == 0, result.output
    found = Result.from_dict(json.loads(result.stdout))
    assert found.status == OK and found.name == "madonna" and found.faces
    with_faces = sorted({f.frame for f in found.faces})
    assert sorted(p.name for p in out.iterdir()) == [f"test_00_f{i}.jpg" for i in with_faces]
    frames, _ = read_frames(videos["madonna"], count=3)
    for face in found.faces:
        plain = frames[face.frame].image
        drawn = Image.open(out / f"test_00_f{face.frame}.jpg")
        assert drawn.size == plain.size
        green = [_near(p, annotate.KNOWN_COLOUR) for p in edge_pixels(drawn, face.box)]
        before = [_near(p, annotate.KNOWN_COLOUR) for p in edge_pixels(plain, face.box)]
        assert sum(green) / len(green) > 0.9 and sum(before) / len(before) < 0.1
        cx, cy = round((face.box[0] + face.box[2]) / 2), round((face.box[1] + face.box[3]) / 2)
        assert all(abs(a - b) < 40 for a, b in zip(drawn.getpixel((cx, cy)), plain.getpixel((cx, cy))))  # the face is not covered


def test_run_local_html_report_shows_annotated_frames(small_gallery: Path, videos: dict[str, Path], chromium: str, tmp_path: Path) -> None:
    report = tmp_path / "run-local.html"
    clips = [videos[k] for k in ("madonna", "stranger", "noface", "corrupt")]
    result = facerec("run-local", *map(str, clips), "--gallery", str(small_gallery), "--workers", "0", "--json", "--html", str(report))
    assert result.exit_code == 1, result.output  # the truncated video ended in error
    statuses = {o["video"]: o["status"] for o in map(json.loads, result.stdout.splitlines())}
    assert statuses == {"test_00.mp4": OK, "test_01.mp4": UNKNOWN, "test_02.mp4": NO_FACE, "test_03.mp4": ERROR}

    seen = probe_report(chromium, report, tmp_path)
    before = {r["video"]: r for r in seen["before"]}
    assert {v: r["status"] for v, r in before.items()} == statuses
    kinds = {v: [i["kind"] for i in r["images"]] for v, r in before.items()}
    # the recognition function stored the annotated frame of the videos with faces (FACEREC_ANNOTATE=1)
    assert kinds == {"test_00.mp4": ["annotated"], "test_01.mp4": ["annotated"], "test_02.mp4": ["frame"], "test_03.mp4": []}
    assert all(i["width"] > 0 for r in seen["before"] for i in r["images"])
    assert {v: r["visible"] for v, r in ((r["video"], r) for r in seen["after"])} == {
        "test_00.mp4": True, "test_01.mp4": True, "test_02.mp4": True, "test_03.mp4": False}  # fmt: skip
    text = report.read_text(encoding="utf-8")
    assert 'class="face known">madonna 0.' in text and 'class="face unknown">unknown 1.' in text
    shot = screenshot(chromium, report, tmp_path, "run-local-report.png")
    assert Image.open(shot).size == (1400, 1000)


def test_run_local_watch_shows_the_dashboard_of_the_local_cloud(
    small_gallery: Path, videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run-local --watch`: the same dashboard as `facerec watch`, live on a terminal, over the
    embedded cloud's buckets and failure queue; it ends on the final, idle snapshot."""
    import io

    from rich.console import Console

    from facerec_cli.cli import run_local as run_local_cmd

    screen = io.StringIO()
    monkeypatch.setattr(run_local_cmd, "err", Console(file=screen, force_terminal=True, color_system=None, width=160))
    clips = [videos[k] for k in ("madonna", "noface", "corrupt")]
    result = facerec("run-local", *map(str, clips), "--gallery", str(small_gallery), "--workers", "0", "--watch")
    assert result.exit_code == 1, result.output  # the truncated video ended in error
    text = screen.getvalue()
    assert "facerec watch · prefix facerec-local" in text and "every 1.5s" in text
    final = text[text.rindex("facerec watch · prefix"):]  # the last frame the live view drew
    assert " · idle" in final
    header = next(line for line in final.splitlines() if "input" in line and "finished" in line)
    row = final.splitlines()[final.splitlines().index(header) + 1].split()
    # input, stage-1, output, in flight, finished, failed: 3 uploaded, 2 split (the corrupt one was
    # refused before any frame), 3 results; the corrupt video is the one failure
    assert row[:6] == ["3", "2", "3", "0", "2", "1"], final
    assert "failed (newest first)" in final and "test_03.mp4" in final
