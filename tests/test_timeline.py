"""Timelines (issue 14): who is on screen, and when, in one pass (`identify --timeline`) and fanned out
over segment invocations (`run-local --timeline`), on real video made from ../shared/data.

Clips: ``two.mp4`` (Madonna 0-4 s, no face 4-6 s, Jerry Seinfeld 6-10 s: stills of 5celeb/val photos,
joined) and ``stranger.mp4`` (no face 0-2 s, Mindy Kaling 2-7 s, no face 7-8 s); the Hamilton clip, the
crowd clip and the Friends photo as they are; a 10-minute video of a repeated 30-second piece.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, collect_videos
from facerec_cli.pipeline.local.handlers import pipeline_allowlist
from facerec_cli.cli.app import app
from facerec_cli.samples import joined_video, repeated_video
from lambdas import env as fenv
from lambdas import segments
from lambdas.core.recognise import Recogniser
from lambdas.core.results import ERROR, OK, UNKNOWN, Result
from lambdas.core.face_groups import Observation, build_timeline, ranges_of
from lambdas.core.sampling import segment_plan
from lambdas.core.timeline import DEFAULT_FPS, grid, recognise_timeline

from .test_cloud_cli import env, gallery_file  # noqa: F401 - fixtures used here
from .test_watch_report import chromium, deployment, run_chromium, screenshot  # noqa: F401 - fixtures used here

runner = CliRunner()
STEP = 1 / DEFAULT_FPS  # one sampling interval
TOLERANCE = STEP + 1e-3  # "within one sampling interval"
FAULTS = pipeline_allowlist().widened(
    handlers=["tests.timeline_faults.segment_fails_always", "tests.timeline_faults.segment_fails_once"],
    variables=["FAULT_DIR", "FAULT_SEGMENT"],
)


def facerec(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def val(data: Path, person: str, index: int) -> Path:
    return sorted((data / "5celeb" / "val" / person).iterdir())[index]


@pytest.fixture(scope="module")
def clips(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("timeline-clips")
    noface = data / "noface" / "noface_01_coins.png"
    size = (640, 480)
    return {
        "two": joined_video([(val(data, "madonna", 2), 4), (noface, 2), (val(data, "jerry_seinfeld", 2), 4)], folder / "two.mp4", size=size, fps=10),
        "stranger": joined_video([(noface, 2), (val(data, "mindy_kaling", 1), 5), (noface, 1)], folder / "stranger.mp4", size=size, fps=10),
        "hamilton": data / "videos" / "hamilton_miranda_lacamoire_10s.mp4",
    }


def rows_of(result: Result) -> dict[str, Any]:
    assert result.timeline is not None, result.error
    return {p.person: p for p in result.timeline.people}


def same_timeline(a: Result, b: Result) -> None:
    """Equal rows: the same people with the same sightings; times and distances to rounding."""
    assert a.timeline is not None and b.timeline is not None, (a.error, b.error)
    assert [p.person for p in a.timeline.people] == [p.person for p in b.timeline.people]
    for x, y in zip(a.timeline.people, b.timeline.people):
        assert (x.person, x.known, x.detections, x.nearest, x.best.frame) == (y.person, y.known, y.detections, y.nearest, y.best.frame)
        assert len(x.ranges) == len(y.ranges) and all(abs(p - q) < 0.01 for r, s in zip(x.ranges, y.ranges) for p, q in zip(r, s))
        assert abs(x.best_distance - y.best_distance) < 2e-3
    assert (a.status, a.name, a.frames, len(a.faces)) == (b.status, b.name, b.frames, len(b.faces))


# --------------------------------------------------------------------------------------- the rules


def test_segments_sample_exactly_the_grid_of_one_pass() -> None:
    for duration, seconds, fps in ((600.0, 30.0, 2.0), (10.02, 3.0, 2.0), (61.3, 7.0, 0.5), (5.0, 30.0, 2.0), (9.99, 3.33, 3.0)):
        plan = segment_plan(duration, seconds)
        assert plan[0][0] == 0.0 and plan[-1][1] == pytest.approx(duration)
        assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(plan))  # contiguous, no overlap
        parts = [p for start, end in plan for p in grid(duration, fps, start, end)]
        assert parts == grid(duration, fps)  # every grid frame once, in order
    assert len(grid(600.0, 2.0)) == 1200 and segment_plan(600.0, 30.0)[19] == (570.0, 600.0)
    assert segment_plan(None, 30.0) == [(0.0, None)]  # length unknown: one segment to the end


def test_sightings_merge_across_gaps_of_up_to_two_intervals() -> None:
    seen = [(k, k * STEP) for k in (0, 1, 2, 4, 7, 8, 20)]  # gaps: 1, 1, 2 (merged), 3 (split), 1, 12 (split)
    assert ranges_of(seen) == [[0.0, 2.0], [3.5, 4.0], [10.0, 10.0]]
    assert ranges_of([(3, 1.5), (3, 1.5)]) == [[1.5, 1.5]]


def test_observations_round_trip_exactly(encoder: Any, data: Path) -> None:
    from lambdas.core.images import load_image
    from lambdas.core.media import Frame
    from lambdas.core.recognise import Stopwatch
    from lambdas.core.timeline import _observe

    frame = Frame(7, 3.5, load_image(data / "multiface" / "friends_cast_6faces.jpg"))

    class Plain:  # the gallery says nobody
        weights = "casia-webface"

        def match(self, embeddings: Any, threshold: Any = None) -> list[Any]:
            from lambdas.core.gallery import Match

            return [Match(UNKNOWN, 1.5, "nobody") for _ in embeddings]

    class R:  # a recogniser whose gallery says nobody (Recogniser.match: the gallery's answer per face)
        gallery, threshold = Plain(), None

        def __init__(self) -> None:
            self.encoder = encoder

        def match(self, encoded: list[Any]) -> list[Any]:
            return self.gallery.match([e.embedding for e in encoded])

    observed = _observe(R(), [frame], Stopwatch())
    assert len(observed) == 6
    back = [Observation.from_dict(json.loads(json.dumps(o.to_dict()))) for o in observed]
    for a, b in zip(observed, back):
        assert (a.frame, a.t, a.box, a.prob, a.name, a.distance, a.nearest) == (b.frame, b.t, b.box, b.prob, b.name, b.distance, b.nearest)
        assert a.embedding.tobytes() == b.embedding.tobytes()
    # the six people of the Friends photo are six rows (one frame: nobody may be merged with anyone)
    timeline = build_timeline(back, DEFAULT_FPS, None)
    assert [p.person for p in timeline.people] == [f"unknown-{i}" for i in range(1, 7)]


# ------------------------------------------------------------------------------------ one pass, real video


def test_two_people_at_different_times_give_two_rows_at_the_cut_points(celeb_gallery: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    views = tmp_path / "views"
    out = facerec("identify", str(clips["two"]), "--gallery", str(celeb_gallery[0]), "--timeline", "--json", "--annotate", str(views))
    assert out.exit_code == 0, out.output
    result = Result.from_dict(json.loads(out.stdout))
    assert result.status == OK and result.name in ("madonna", "jerry_seinfeld")  # the course's answer stays
    assert result.frames == 20 and result.timeline is not None and result.timeline.fps == DEFAULT_FPS
    rows = rows_of(result)
    assert list(rows) == ["madonna", "jerry_seinfeld"], rows
    (madonna,), (jerry,) = rows["madonna"].ranges, rows["jerry_seinfeld"].ranges
    # the cut points: Madonna 0-4 s, nobody 4-6 s, Jerry Seinfeld 6-10 s (the last frame at 9.9 s)
    assert abs(madonna[0] - 0.0) <= TOLERANCE and abs(madonna[1] - 4.0) <= TOLERANCE, madonna
    assert abs(jerry[0] - 6.0) <= TOLERANCE and abs(jerry[1] - 10.0) <= TOLERANCE, jerry
    for row in rows.values():
        assert row.known and row.nearest == row.person and row.best_distance < 1.0
        assert row.ranges[0][0] <= row.best.t <= row.ranges[-1][1]
        assert (views / row.image).read_bytes()[:3] == b"\xff\xd8\xff"  # the best view, cropped
    assert sorted(p.name for p in views.iterdir()) == ["two_jerry_seinfeld.jpg", "two_madonna.jpg"]
    # the same on the terminal: a table per video
    table = facerec("identify", str(clips["two"]), "--gallery", str(celeb_gallery[0]), "--timeline")
    assert "timeline at 2 fps" in table.stdout and "madonna" in table.stdout and "0:06.0" in table.stdout


def test_one_stranger_is_one_unknown_row(hamilton_gallery: Any, encoder: Any, clips: dict[str, Path]) -> None:
    _, gallery, _ = hamilton_gallery
    result = recognise_timeline(Recogniser(gallery, encoder), clips["stranger"])
    assert result.status == UNKNOWN
    assert len(result.faces) >= 8  # seen in most of the ten frames between 2 and 7 s
    (row,) = result.timeline.people
    assert row.person == "unknown-1" and not row.known and row.detections == len(result.faces)
    (span,) = row.ranges
    assert abs(span[0] - 2.0) <= TOLERANCE and abs(span[1] - 7.0) <= TOLERANCE, span
    assert row.best_distance > gallery.threshold_or_default and row.nearest in gallery.people


def test_real_clip_two_people_and_an_audience(hamilton_gallery: Any, encoder: Any, clips: dict[str, Path], data: Path) -> None:
    """The Hamilton clip: Miranda (on stage at 0-0.5 s, close up 3-7 s), Lacamoire (at the piano at 0-0.5 s)
    and four people of the audience on screen together at 7.5-9 s."""
    _, gallery, _ = hamilton_gallery
    recogniser = Recogniser(gallery, encoder)
    result = recognise_timeline(recogniser, clips["hamilton"])
    rows = rows_of(result)
    miranda, lacamoire = rows["lin_manuel_miranda"], rows["alex_lacamoire"]
    assert miranda.first == 0.0 and any(a <= 3.0 + TOLERANCE and b >= 7.0 - TOLERANCE for a, b in miranda.ranges), miranda.ranges
    assert lacamoire.first == 0.0
    audience = [p for p in result.timeline.people if not p.known and p.ranges == [[pytest.approx(7.507, abs=0.01), pytest.approx(9.009, abs=0.01)]]]
    assert len(audience) == 4 and all(p.detections == 4 for p in audience), [(p.person, p.ranges) for p in result.timeline.people]
    # nobody's row holds two faces of one frame: rows never have more sightings than frames
    for person in result.timeline.people:
        assert person.detections <= sum(round((b - a) / STEP) + 1 for a, b in person.ranges), person

    crowd = recognise_timeline(recogniser, data / "videos" / "crowd_unlabeled_4s.mp4")
    assert crowd.status == UNKNOWN and all(not p.known for p in crowd.timeline.people)
    assert 4 <= len(crowd.timeline.people) <= len(crowd.faces) / 2  # passers-by grouped across frames, not one row a face
    for person in crowd.timeline.people:
        assert person.detections <= sum(round((b - a) / STEP) + 1 for a, b in person.ranges), person
    friends = recognise_timeline(recogniser, data / "multiface" / "friends_cast_6faces.jpg")
    assert [p.person for p in friends.timeline.people] == [f"unknown-{i}" for i in range(1, 7)]


# ------------------------------------------------------------------------------------------ fan-out


@pytest.fixture(scope="module")
def fanned(celeb_gallery: Any, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`run-local --timeline` with 3-second segments on two workers (the two-person clip: 4 segments;
    the Hamilton clip, everyone a stranger to 5celeb: 4), the HTML report, and a segment delivered
    again after the merge."""
    from facerec_cli.pipeline.observe.report import write_report

    folder = tmp_path_factory.mktemp("fanned")
    jobs, _ = collect_videos([clips["two"], clips["hamilton"]])
    variables = {fenv.TIMELINE: "1", fenv.SEGMENT_SECONDS: "3", fenv.ANNOTATE: "1"}
    with LocalPipeline(celeb_gallery[0], RunOptions(workers=2, timeout_s=600, extra_env=variables), log_path=str(folder / "run.log")) as pipeline:
        results = {r.video: r for r in pipeline.run(jobs)}
        report = folder / "report.html"
        write_report(report, pipeline.settings, pipeline.clients.s3, pipeline.clients.sqs, title="timelines")
        dispatcher = pipeline.cloud.dispatcher
        names = pipeline.names
        s3 = pipeline.clients.s3
        before = s3.head_object(Bucket=names.details_bucket, Key="two.json")
        segment_events = [json.loads(i.event_text) for i in dispatcher.invocations if i.spec.name == names.recognition_function]
        again = next(e for e in segment_events if e["stem"] == "two" and e["segment"] == 0)
        pipeline.clients.lambda_.invoke(FunctionName=names.recognition_function, InvocationType="Event", Payload=json.dumps(again).encode())
        assert dispatcher.wait_idle(120)
        after = s3.head_object(Bucket=names.details_bucket, Key="two.json")
        stage1 = [o["Key"] for o in s3.list_objects_v2(Bucket=names.stage1_bucket)["Contents"]]
        counters = dispatcher.counters
    return {"results": results, "report": report, "events": segment_events, "before": before, "after": after, "stage1": stage1,
            "counters": counters, "log": (folder / "run.log").read_text()}  # fmt: skip


def test_fan_out_gives_the_timeline_of_one_pass(fanned: dict[str, Any], celeb_gallery: Any, encoder: Any, clips: dict[str, Path]) -> None:
    results = fanned["results"]
    recogniser = Recogniser(celeb_gallery[1], encoder)
    for video in ("two.mp4", "hamilton_miranda_lacamoire_10s.mp4"):
        fanned_out = results[video]
        assert fanned_out.timeline is not None and fanned_out.timeline.segments == 4, fanned_out.error
        one_pass = recognise_timeline(recogniser, clips["two" if video == "two.mp4" else "hamilton"])
        same_timeline(fanned_out, one_pass)
    # the Hamilton clip against 5celeb: Miranda, a stranger here, seen in segment 1 (0-0.5 s) and
    # segment 2 (3-7 s), is one row across the segments
    strangers = results["hamilton_miranda_lacamoire_10s.mp4"].timeline.people
    assert any(len(p.ranges) == 2 and p.ranges[1][0] <= 3.5 and p.ranges[1][1] >= 6.5 for p in strangers), [p.ranges for p in strangers]
    # one splitting invocation and four segments per video; none failed
    assert fanned["counters"].failed == 0 and len([e for e in fanned["events"] if e["stem"] == "two"]) >= 4
    keys = fanned["stage1"]
    assert sum(k.endswith(".json") and "/part-" in k for k in keys) == 8 and sum(k.endswith("/merge") for k in keys) == 2
    assert "two.jpg" in keys  # the course's first frame, as without a timeline


def test_a_duplicate_segment_after_the_merge_changes_nothing(fanned: dict[str, Any]) -> None:
    assert fanned["after"]["ETag"] == fanned["before"]["ETag"] and fanned["after"]["LastModified"] == fanned["before"]["LastModified"]
    assert fanned["log"].count('"msg": "merged", "stem": "two"') == 1
    assert "duplicate segment skipped" in fanned["log"]


LANES_PROBE = """
<script>
window.addEventListener('load', function () {
  var out = {timelines: Array.prototype.map.call(document.querySelectorAll('tr.timeline'), function (row) {
    return {video: row.getAttribute('data-video'), lanes: Array.prototype.map.call(row.querySelectorAll('.lane'), function (lane) {
      var track = lane.querySelector('.track').getBoundingClientRect();
      var img = lane.querySelector('img.view');
      return {person: lane.getAttribute('data-person'), known: lane.getAttribute('data-known'),
              image: img ? {complete: img.complete, width: img.naturalWidth} : null,
              preview: getComputedStyle(lane.querySelector('.preview')).display,
              bars: Array.prototype.map.call(lane.querySelectorAll('.bar'), function (b) {
                var r = b.getBoundingClientRect();
                return {start: +b.getAttribute('data-start'), end: +b.getAttribute('data-end'),
                        left: (r.left - track.left) / track.width, right: (r.right - track.left) / track.width};
              })};
    }), duration: +row.querySelector('.tl').getAttribute('data-duration')};
  })};
  var box = document.querySelector('input.status-filter[value="ok"]');
  box.click();
  out.hidden = Array.prototype.map.call(document.querySelectorAll('tr.timeline'), function (r) { return [r.getAttribute('data-video'), r.hidden]; });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>
"""


def test_report_draws_a_lane_per_person(fanned: dict[str, Any], chromium: str, tmp_path: Path) -> None:  # noqa: F811
    report: Path = fanned["report"]
    page = tmp_path / "probe.html"
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", LANES_PROBE + "</body>"), encoding="utf-8")
    proc = run_chromium(chromium, tmp_path, "--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, proc.stdout[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    timelines = {t["video"]: t for t in seen["timelines"]}
    two = timelines["two.mp4"]
    assert [lane["person"] for lane in two["lanes"]] == ["madonna", "jerry_seinfeld"]
    for lane, result_row in zip(two["lanes"], fanned["results"]["two.mp4"].timeline.people):
        assert lane["known"] == "true" and lane["image"]["complete"] and lane["image"]["width"] > 0  # the best view, stored by the merge
        assert lane["preview"] == "none"  # shown on hover only
        ((bar,),) = [lane["bars"]]
        assert bar["start"] == pytest.approx(result_row.ranges[0][0], abs=1e-3)
        assert bar["left"] == pytest.approx(bar["start"] / two["duration"], abs=0.01)  # drawn where it is in the video
        assert bar["right"] == pytest.approx(min(1.0, (bar["end"] + STEP) / two["duration"]), abs=0.01)
    hamilton = timelines["hamilton_miranda_lacamoire_10s.mp4"]
    assert len(hamilton["lanes"]) == len(fanned["results"]["hamilton_miranda_lacamoire_10s.mp4"].timeline.people)
    assert all(lane["known"] == "false" and lane["person"].startswith("unknown-") for lane in hamilton["lanes"])
    # the status filter hides a video's timeline with its row ("ok" off: two.mp4 goes)
    assert dict(seen["hidden"]) == {"two.mp4": True, "hamilton_miranda_lacamoire_10s.mp4": False}
    screenshot(chromium, report, tmp_path, "timeline-report.png")


# ------------------------------------------------------------------------ exactly once, failures


class Context:
    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@pytest.fixture
def handler_cloud(moto_url: str, monkeypatch: pytest.MonkeyPatch, celeb_gallery: Any, clips: dict[str, Path]) -> dict[str, Any]:
    """Buckets on the moto server and the recognition function's environment, for calling the handler
    in this process; the two-person clip uploaded; its four 3-second segment requests."""
    from facerec_cli.localcloud import s3_conditional

    s3_conditional.install()  # the local cloud's atomic conditional writes (this module's server is in-process)
    region = "eu-west-3"
    variables = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": region,
                 "AWS_REGION": region, "OUTPUT_BUCKET": f"out-{uuid.uuid4().hex[:8]}", "FACEREC_GALLERY": str(celeb_gallery[0])}  # fmt: skip
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=region)
    buckets = {"input": f"in-{uuid.uuid4().hex[:8]}", "stage1": f"st-{uuid.uuid4().hex[:8]}", "output": variables["OUTPUT_BUCKET"]}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.upload_file(str(clips["two"]), buckets["input"], "two.mp4")
    etag = s3.head_object(Bucket=buckets["input"], Key="two.mp4")["ETag"].strip('"')
    source = {"bucket": buckets["input"], "key": "two.mp4", "etag": etag, "size": clips["two"].stat().st_size, "event_id": f"{etag}:{uuid.uuid4()}"}
    plan = segment_plan(10.0, 3.0)
    requests = [
        segments.SegmentRequest(buckets["stage1"], "two", "two.mp4", source, i, len(plan), a, b, DEFAULT_FPS, 10.0).to_dict()
        for i, (a, b) in enumerate(plan)
    ]
    return {"s3": s3, "buckets": buckets, "requests": requests}


def _handle(event: dict[str, Any], request_id: str) -> Any:
    from lambdas import face_recognition

    return face_recognition.handler(event, Context(request_id))


def test_duplicate_and_retried_segments_merge_exactly_once(handler_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                           celeb_gallery: Any, encoder: Any, clips: dict[str, Path]) -> None:  # fmt: skip
    s3, buckets, requests = handler_cloud["s3"], handler_cloud["buckets"], handler_cloud["requests"]
    merges: list[str] = []
    writes: list[str] = []
    real_merge, real_write, real_scan = segments.merge, segments.write_result, segments.scan
    monkeypatch.setattr(segments, "merge", lambda *a, **k: merges.append(a[2].label) or real_merge(*a, **k))
    monkeypatch.setattr(segments, "write_result", lambda *a, **k: writes.append(a[2].status) or real_write(*a, **k))
    crashed: list[int] = []

    def scan_crashing_once(recogniser: Any, video: Any, fps: float, start: float, end: float) -> Any:
        if start == 3.0 and not crashed:  # segment 2's first attempt: the container dies mid-way
            crashed.append(1)
            raise RuntimeError("injected crash")
        return real_scan(recogniser, video, fps, start, end)

    monkeypatch.setattr(segments, "scan", scan_crashing_once)

    assert _handle(requests[0], "req-0")["outcome"] == "waiting"
    with pytest.raises(RuntimeError, match="injected crash"):
        _handle(requests[1], "req-1")  # attempt 1 fails...
    assert _handle(requests[1], "req-1")["outcome"] == "waiting"  # ...Lambda's retry (same request id) succeeds
    assert _handle(requests[0], "req-0-again")["outcome"] == "waiting"  # a duplicate delivery: its part is taken
    # the last two segments, each delivered twice, all four at once: one of them merges
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda e=e, r=r: outcomes.append(_handle(e, r)["outcome"]))
               for e, r in ((requests[2], "req-2"), (requests[3], "req-3"), (requests[2], "req-2b"), (requests[3], "req-3b"))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == 4 and outcomes.count("merged") == 1, outcomes
    assert len(merges) == 1 and writes == [OK]
    # later deliveries (a retry, a duplicate) see the result and stop at once
    assert _handle(requests[3], "req-3")["outcome"] == "duplicate"
    assert len(merges) == 1 and len(writes) == 1
    body = s3.get_object(Bucket=buckets["output"], Key="two.json")["Body"].read()
    merged = Result.from_dict(json.loads(body))
    same_timeline(merged, recognise_timeline(Recogniser(celeb_gallery[1], encoder), clips["two"]))
    assert s3.get_object(Bucket=buckets["output"], Key="two.txt")["Body"].read().decode() == merged.name


def test_a_segment_failing_every_attempt_ends_the_video_in_an_error_naming_it(handler_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    s3, buckets, requests = handler_cloud["s3"], handler_cloud["buckets"], handler_cloud["requests"]
    real_scan = segments.scan

    def scan(recogniser: Any, video: Any, fps: float, start: float, end: float) -> Any:
        if start == 6.0:
            raise MemoryError("injected: out of memory")
        return real_scan(recogniser, video, fps, start, end)

    monkeypatch.setattr(segments, "scan", scan)
    for attempt in range(3):  # Lambda's three attempts of one asynchronous invocation
        with pytest.raises(MemoryError):
            _handle(requests[2], "req-2")
        done = [o["Key"] for o in s3.list_objects_v2(Bucket=buckets["output"]).get("Contents", [])]
        assert ("two.json" in done) == (attempt == 2)  # the last attempt answers for it
    for i in (0, 1, 3):  # the others finish after it: no merge, no second result
        assert _handle(requests[i], f"req-{i}")["outcome"] in ("duplicate", "waiting", "merged elsewhere")
    result = Result.from_dict(json.loads(s3.get_object(Bucket=buckets["output"], Key="two.json")["Body"].read()))
    assert result.status == ERROR and result.timeline is None
    assert "segment 3 of 4 (6-9 s)" in result.error and "MemoryError: injected: out of memory" in result.error, result.error
    # the local runtime's failure hook (or a late duplicate) reporting the same failure again changes nothing
    assert segments.fail_segment(s3, buckets["output"], requests[2], "again") == "result already written"


def test_an_unreadable_segment_answers_for_the_video_at_once(handler_cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdas.core.errors import InputError

    s3, buckets, requests = handler_cloud["s3"], handler_cloud["buckets"], handler_cloud["requests"]
    real_scan = segments.scan

    def scan(recogniser: Any, video: Any, fps: float, start: float, end: float) -> Any:
        if start == 3.0:
            raise InputError("two.mp4: not a readable video: over 50 damaged packets")
        return real_scan(recogniser, video, fps, start, end)

    monkeypatch.setattr(segments, "scan", scan)
    assert _handle(requests[1], "req-1")["outcome"] == "error result written"  # no retry can help: answered now
    result = Result.from_dict(json.loads(s3.get_object(Bucket=buckets["output"], Key="two.json")["Body"].read()))
    assert result.status == ERROR and "segment 2 of 4 (3-6 s): two.mp4: not a readable video" in result.error, result.error
    assert [_handle(requests[i], f"req-{i}")["outcome"] for i in (0, 2, 3)] == ["duplicate"] * 3


def test_best_views_are_tagged_as_results_and_keep_non_ascii_names(handler_cloud: dict[str, Any], celeb_gallery: Any, encoder: Any,
                                                                     clips: dict[str, Path]) -> None:  # fmt: skip
    """The crops and the annotated frame expire with the results (`--retain-days` expires only objects
    tagged as results), and a person named outside ASCII still gets a crop: botocore refuses non-ASCII
    S3 metadata before sending, so the name must be encoded (moto would accept either, the check is
    botocore's own)."""
    from urllib.parse import unquote

    from lambdas.core.annotate import annotated_key
    from lambdas.storage import RESULT_TAG_KEY, RESULT_TAG_VALUE

    s3, buckets, requests = handler_cloud["s3"], handler_cloud["buckets"], handler_cloud["requests"]
    request = segments.SegmentRequest.from_dict(requests[0])
    result = recognise_timeline(Recogniser(celeb_gallery[1], encoder), clips["two"])
    names = ["Zoë Ångström", "张伟"]
    for person, name in zip(result.timeline.people, names):
        person.person = name
    segments.store_best_views(s3, buckets["output"], request, result)
    keys = [annotated_key(request.stem)] + [p.image for p in result.timeline.people]
    assert None not in keys and len(keys) == 3, keys
    for key in keys:
        tags = s3.get_object_tagging(Bucket=buckets["output"], Key=key)["TagSet"]
        assert tags == [{"Key": RESULT_TAG_KEY, "Value": RESULT_TAG_VALUE}], key
    people = [unquote(s3.head_object(Bucket=buckets["output"], Key=p.image)["Metadata"]["person"]) for p in result.timeline.people]
    assert people == names


def test_run_local_segment_failing_every_attempt_or_once(celeb_gallery: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    from facerec_cli.pipeline.observe.results import parse_destination_record

    jobs, _ = collect_videos([clips["two"]])
    variables = {fenv.TIMELINE: "1", fenv.SEGMENT_SECONDS: "3"}
    outcomes = {}
    for fault in ("segment_fails_always", "segment_fails_once"):
        with LocalPipeline(celeb_gallery[0], RunOptions(workers=1, timeout_s=300, extra_env=variables, allow=FAULTS)) as pipeline:
            _replace_recognition_handler(pipeline, f"tests.timeline_faults.{fault}", tmp_path / fault, segment=1)
            (result,) = pipeline.run(jobs)
            queue_url = pipeline.clients.sqs.get_queue_url(QueueName=pipeline.names.failure_queue)["QueueUrl"]
            records = pipeline.clients.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            outcomes[fault] = (result, pipeline.cloud.dispatcher.counters, records)
    failed, counters, records = outcomes["segment_fails_always"]
    assert failed.status == ERROR and failed.timeline is None
    assert "segment 2 of 4 (3-6 s)" in failed.error and "injected failure of segment 2" in failed.error, failed.error
    assert counters.failed == 1 and counters.retried == 2
    (record,) = records  # Lambda's failure destination; `facerec results` names the segment from it
    (failure,) = parse_destination_record(record["Body"])
    assert failure.stem == "two" and failure.message.startswith("segment 2 of 4 (3-6 s): ")
    retried, counters, records = outcomes["segment_fails_once"]
    assert retried.status == OK and retried.timeline is not None and [p.person for p in retried.timeline.people] == ["madonna", "jerry_seinfeld"]
    assert counters.retried == 1 and counters.failed == 0 and records == []


def _replace_recognition_handler(pipeline: LocalPipeline, command: str, fault_dir: Path, segment: int) -> None:
    """Recreate face-recognition with a fault-injecting handler (moto ignores ImageConfig in updates)."""
    fault_dir.mkdir(parents=True, exist_ok=True)
    lam = pipeline.clients.lambda_
    name = pipeline.names.recognition_function
    config = lam.get_function(FunctionName=name)["Configuration"]
    variables = dict(config["Environment"]["Variables"], FAULT_DIR=str(fault_dir), FAULT_SEGMENT=str(segment))
    lam.delete_function(FunctionName=name)
    lam.create_function(
        FunctionName=name, Role=config["Role"], PackageType="Image", Code={"ImageUri": "local/facerec:test"},
        ImageConfig={"Command": [command]}, Environment={"Variables": variables}, Timeout=config["Timeout"], MemorySize=config["MemorySize"],
    )


def test_conditional_writes_of_the_local_cloud_are_atomic(moto_url: str) -> None:
    from facerec_cli.localcloud import s3_conditional

    s3_conditional.install()
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"cond-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    won: list[tuple[str, int]] = []

    def race(n: int) -> None:
        for k in range(20):
            if segments.create(s3, bucket, f"key-{k}", f"writer {n}".encode()):
                won.append((f"key-{k}", n))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(k for k, _ in won) == sorted(f"key-{k}" for k in range(20))  # one winner per key
    for key, n in won:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == f"writer {n}".encode()


# ------------------------------------------------------------------------------------------- watch


def test_watch_shows_segments_in_flight(deployment: Any) -> None:  # noqa: F811
    from facerec_cli.pipeline.observe import dashboard, dashboard_view

    settings, clients = deployment
    n = settings.names
    s3 = clients.s3
    s3.put_object(Bucket=n.input_bucket, Key="long.mp4", Body=b"x")
    s3.put_object(Bucket=n.input_bucket, Key="short.mp4", Body=b"x")
    time.sleep(1.1)
    s3.put_object(Bucket=n.stage1_bucket, Key="long.jpg", Body=b"jpeg")
    event = "etag:seq"
    s3.put_object(Bucket=n.stage1_bucket, Key=segments.plan_key("long", event, 20), Body=b"")
    for i in (0, 3, 7):
        s3.put_object(Bucket=n.stage1_bucket, Key=segments.part_key("long", event, i, 20), Body=b"{}")
    snap = dashboard.Dashboard(s3, clients.sqs, clients.logs, n, settings=settings).snapshot()
    assert snap.videos["long"].segments == (3, 20) and snap.videos["short"].segments is None
    data = json.loads(snap.to_json())
    assert data["segments_in_flight"] == 17
    assert {v["video"]: v.get("segments") for v in data["in_flight_videos"]} == {"long.mp4": {"done": 3, "total": 20}, "short.mp4": None}
    from rich.console import Console

    console = Console(width=160, record=True, color_system=None)
    console.print(dashboard_view.render(snap))
    text = console.export_text()
    assert "3/20 done" in text and "(17 segments)" in text


# --------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_timeline_is_set_on_video_splitting_and_kept_until_turned_off(env: Any, gallery_file: Path) -> None:  # noqa: F811
    n = env.settings.names

    def settings() -> dict[str, str]:
        variables = env.clients.lambda_.get_function_configuration(FunctionName=n.splitting_function)["Environment"]["Variables"]
        return {k: v for k, v in variables.items() if k in (fenv.TIMELINE, fenv.SEGMENT_SECONDS, fenv.TIMELINE_FPS)}

    first = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--timeline", "--segment-seconds", "20")
    assert first.exit_code == 0, first.output
    assert settings() == {fenv.TIMELINE: "1", fenv.SEGMENT_SECONDS: "20"}
    again = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file))  # no flag: as deployed
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output
    off = facerec("bootstrap", "--skip-images", "--gallery", str(gallery_file), "--no-timeline")
    assert off.exit_code == 0, off.output
    assert settings() == {}


# ----------------------------------------------------------------------------------- a long video


@pytest.fixture(scope="module")
def ten_minutes(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-minute video: a 30-second piece (the Hamilton clip, the crowd clip, Madonna, no face: 10,
    4, 8 and 8 s) 20 times, remuxed (nothing of it is committed)."""
    folder = tmp_path_factory.mktemp("ten-minutes")
    piece = joined_video(
        [(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4", 10.0), (data / "videos" / "crowd_unlabeled_4s.mp4", 4.0),
         (val(data, "madonna", 2), 8.0), (data / "noface" / "noface_01_coins.png", 8.0)],
        folder / "piece.mp4", size=(640, 360), fps=25,
    )  # fmt: skip
    return repeated_video(piece, folder / "ten_minutes.mp4", 20)


def test_ten_minute_video_finishes_in_run_local(ten_minutes: Path, celeb_gallery: Any) -> None:
    """20 segments of 30 s, in parallel on two workers, at 0.1 fps (the benchmark runs the full 2 fps:
    benchmarks/timeline.py): every piece's Madonna is found at 20-22 s into it, and nothing else is named."""
    out = facerec("run-local", str(ten_minutes), "--gallery", str(celeb_gallery[0]), "--timeline", "--fps", "0.1", "--workers", "2", "--json")
    assert out.exit_code == 0, out.output
    result = Result.from_dict(json.loads(out.stdout))
    assert result.timeline is not None and result.timeline.segments == 20 and result.frames == 60
    assert result.timeline.duration == pytest.approx(600.0, abs=0.1)
    rows = rows_of(result)
    madonna = rows["madonna"]
    assert [round(a) for a, _ in madonna.ranges] == [30 * k + 20 for k in range(20)]
    assert result.name == "madonna" and all(not p.known for name, p in rows.items() if name != "madonna")
