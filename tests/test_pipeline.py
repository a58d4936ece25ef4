"""The whole pipeline on the embedded local cloud: real moto server over HTTP, real ffmpeg, real
models, real videos (issue: the pipeline)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, collect_videos
from facerec_cli.pipeline.local.handlers import pipeline_allowlist
from facerec_cli.cli.app import app
from facerec_cli.samples import still_video
from lambdas.core.enroll import build_gallery

PEOPLE = ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]
# The fault tests swap in handlers that wrap the real one (and tell it where to keep their marks).
FAULTS = pipeline_allowlist().widened(
    handlers=["tests.pipeline_faults.fail_once", "tests.pipeline_faults.die_once", "tests.runtime_handlers.always_fail"],
    variables=["FAULT_DIR"],
)


@pytest.fixture(scope="module")
def gallery(data, encoder, tmp_path_factory) -> Path:
    """5celeb/train plus the Hamilton enrolment photos, in one gallery."""
    photos = tmp_path_factory.mktemp("photos")
    for source in [*(data / "5celeb" / "train").iterdir(), *(data / "enroll").iterdir()]:
        (photos / source.name).symlink_to(source)
    path = tmp_path_factory.mktemp("gallery") / "gallery.pt"
    build_gallery(photos, encoder)[0].save(path)
    return path


@pytest.fixture(scope="module")
def course_videos(data, tmp_path_factory) -> tuple[list[Path], dict[str, str]]:
    """test_NN.mp4 in the course format (a few seconds, one person), from 5celeb/val photos, plus the
    Hamilton clip; and the expected name of each."""
    folder = tmp_path_factory.mktemp("videos")
    expected = {}
    for i, person in enumerate(PEOPLE):
        photo = sorted((data / "5celeb" / "val" / person).iterdir())[1]
        still_video(photo, folder / f"test_{i:02d}.mp4", seconds=2)
        expected[f"test_{i:02d}.mp4"] = person
    hamilton = folder / f"test_{len(PEOPLE):02d}.mp4"
    hamilton.write_bytes((data / "videos" / "hamilton_miranda_lacamoire_10s.mp4").read_bytes())
    expected[hamilton.name] = "lin_manuel_miranda"
    return sorted(folder.iterdir()), expected


def objects(pipeline: LocalPipeline, bucket: str) -> dict[str, bytes]:
    s3 = pipeline.clients.s3
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.mark.parametrize("workers", [0, 2])
def test_course_videos_named_and_stored_in_course_layout(gallery, course_videos, workers):
    videos, expected = course_videos
    jobs, refused = collect_videos(videos)
    assert refused == []
    with LocalPipeline(gallery, RunOptions(workers=workers, timeout_s=600)) as pipeline:
        results = pipeline.run(jobs)
        stage1 = objects(pipeline, pipeline.names.stage1_bucket)
        output = objects(pipeline, pipeline.names.output_bucket)
        details = objects(pipeline, pipeline.names.details_bucket)
        counters = pipeline.cloud.dispatcher.counters
    assert {r.video: r.name for r in results} == expected
    # The course's layout: the output bucket holds the answers and nothing else (its grader reads every object).
    assert sorted(output) == sorted(f"{name[: -len('.mp4')]}.txt" for name in expected)
    for name, person in expected.items():
        stem = name[: -len(".mp4")]
        assert stage1[f"{stem}.jpg"][:3] == b"\xff\xd8\xff"  # the first frame, a JPEG
        assert not [k for k in stage1 if k.startswith(f"{stem}/")]  # only frame 0: recognition decodes more itself, when needed
        assert output[f"{stem}.txt"].decode() == person  # the course grader reads just the name
        assert json.loads(details[f"{stem}.json"])["name"] == person
    # one splitting and one recognition invocation per video, none failed
    assert counters.succeeded == 2 * len(videos) and counters.failed == 0


def test_bad_inputs_and_odd_keys_each_end_with_their_own_result(gallery, data, tmp_path, bad_inputs):
    odd = tmp_path / "my video+1 ünïcode 名前.mp4"
    still_video(sorted((data / "5celeb" / "val" / "madonna").iterdir())[0], odd, seconds=2)
    no_face = still_video(data / "noface" / "noface_02_peppers.png", tmp_path / "peppers.mp4", seconds=2)
    image = data / "noface" / "noface_03_rice.png"
    files = [bad_inputs["corrupt"], odd, bad_inputs["empty"], no_face, bad_inputs["text"], image]
    result = CliRunner().invoke(app, ["run-local", *map(str, files), "--gallery", str(gallery), "--json", "--workers", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1  # some videos failed
    by_video = {r["video"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(by_video) == {f.name for f in files}
    assert (by_video[odd.name]["status"], by_video[odd.name]["name"]) == ("ok", "madonna")
    assert by_video["peppers.mp4"]["status"] == "no_face"
    for name, words in [("corrupt.mp4", "not a readable video"), ("empty.mp4", "empty"), ("notes.mp4", "not a readable video"), (image.name, "identify")]:
        assert by_video[name]["status"] == "error" and words in by_video[name]["error"], by_video[name]
        assert by_video[name]["error"].startswith(name)
    out = tmp_path / "out"
    assert (out / "my video+1 ünïcode 名前.txt").read_text() == "madonna"
    assert json.loads((out / "empty.json").read_text())["status"] == "error"
    # The functions' log: a new private file in $TMPDIR, named on stderr (not a fixed, world-readable path).
    [log_line] = [line for line in result.stderr.splitlines() if line.startswith("function logs: ")]
    log = Path(log_line.removeprefix("function logs: ").strip())
    try:
        assert log.parent == Path(tempfile.gettempdir()) and log.name.startswith("facerec-run-local-") and log.name != "facerec-run-local.log"
        assert log.stat().st_mode & 0o777 == 0o600
        assert '"msg": "split"' in log.read_text()  # the handlers' output went there
    finally:
        log.unlink(missing_ok=True)


def _replace_recognition_handler(pipeline: LocalPipeline, command: str, fault_dir: Path) -> None:
    """Recreate face-recognition with another handler (moto ignores ImageConfig in updates)."""
    lam = pipeline.clients.lambda_
    name = pipeline.names.recognition_function
    config = lam.get_function(FunctionName=name)["Configuration"]
    env = dict(config["Environment"]["Variables"], FAULT_DIR=str(fault_dir))
    lam.delete_function(FunctionName=name)
    lam.create_function(
        FunctionName=name, Role=config["Role"], PackageType="Image", Code={"ImageUri": "local/facerec:test"},
        ImageConfig={"Command": [command]}, Environment={"Variables": env}, Timeout=config["Timeout"], MemorySize=config["MemorySize"],
    )


@pytest.mark.parametrize("fault", ["fail_once", "die_once"])
def test_failed_or_killed_invocation_is_retried(gallery, course_videos, tmp_path, fault):
    videos, expected = course_videos
    jobs, _ = collect_videos(videos[:2])
    with LocalPipeline(gallery, RunOptions(workers=1, timeout_s=300, allow=FAULTS)) as pipeline:
        _replace_recognition_handler(pipeline, f"tests.pipeline_faults.{fault}", tmp_path)
        results = pipeline.run(jobs)
        counters = pipeline.cloud.dispatcher.counters
    assert {r.video: r.name for r in results} == {j.key: expected[j.key] for j in jobs}
    # each video's recognition failed once and succeeded on its retry; nothing given up on
    assert counters.retried == len(jobs) and counters.failed == 0


def test_duplicate_event_gives_one_result(gallery, course_videos):
    videos, expected = course_videos
    jobs, _ = collect_videos(videos[:1])
    with LocalPipeline(gallery, RunOptions(workers=1, timeout_s=300)) as pipeline:
        results = pipeline.run(jobs)
        dispatcher = pipeline.cloud.dispatcher
        (split_event,) = [i.event_text for i in dispatcher.invocations if i.spec.name == pipeline.names.splitting_function]
        # S3 delivers at least once: deliver the very same notification again.
        pipeline.clients.lambda_.invoke(FunctionName=pipeline.names.splitting_function, InvocationType="Event", Payload=split_event.encode())
        assert dispatcher.wait_idle(120)
        recognitions = [i for i in dispatcher.invocations if i.spec.name == pipeline.names.recognition_function]
        output = objects(pipeline, pipeline.names.output_bucket)
        details = objects(pipeline, pipeline.names.details_bucket)
    assert [r.name for r in results] == [expected[jobs[0].key]]
    assert len(recognitions) == 1  # the redelivery was recognised and skipped by video-splitting
    assert sorted(output) == ["test_00.txt"]
    assert sorted(k for k in details if not k.startswith(".facerec/")) == ["test_00.json"]


def test_video_failing_every_attempt_ends_with_an_error_result(gallery, course_videos, tmp_path):
    videos, _ = course_videos
    jobs, _ = collect_videos(videos[:1])
    with LocalPipeline(gallery, RunOptions(workers=1, timeout_s=300, allow=FAULTS)) as pipeline:
        _replace_recognition_handler(pipeline, "tests.runtime_handlers.always_fail", tmp_path)
        results = pipeline.run(jobs)
        queue_url = pipeline.clients.sqs.get_queue_url(QueueName=pipeline.names.failure_queue)["QueueUrl"]
        messages = pipeline.clients.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    (result,) = results
    assert result.status == "error" and "face-recognition failed on every attempt" in result.error
    (message,) = messages
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"]["video"] == "test_00.mp4"


def test_demo_runs_on_packaged_data():
    result = CliRunner().invoke(app, ["demo"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "demo ok" in result.stderr
    assert "eileen_collins" in result.stdout and "no_face" in result.stdout


def test_videos_over_the_size_or_duration_limit_are_refused_with_a_result(gallery, data, tmp_path):
    short = still_video(sorted((data / "5celeb" / "val" / "elton_john").iterdir())[0], tmp_path / "short.mp4", seconds=2)
    long = still_video(sorted((data / "5celeb" / "val" / "elton_john").iterdir())[0], tmp_path / "long.mp4", seconds=5)
    big = data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"  # 600 KB
    assert short.stat().st_size < 400_000 < big.stat().st_size and long.stat().st_size < 400_000
    jobs, _ = collect_videos([short, long, big])
    limits = {"FACEREC_MAX_BYTES": "400000", "FACEREC_MAX_SECONDS": "3"}
    with LocalPipeline(gallery, RunOptions(workers=0, timeout_s=300, extra_env=limits)) as pipeline:
        results = {r.video: r for r in pipeline.run(jobs)}
    assert results["short.mp4"].name == "elton_john"
    assert results["long.mp4"].status == "error" and "5 s long, over the limit of 3 s" in results["long.mp4"].error
    assert results[big.name].status == "error" and "over the limit of 0 MB" not in results[big.name].error
    assert "MB is over the limit" in results[big.name].error


def test_run_local_with_a_gallery_enrolled_from_a_weights_file(gallery, course_videos, tmp_path, monkeypatch):
    from facerec_cli.pipeline.local.runner import function_weights
    from lambdas.core.gallery import Gallery
    from lambdas.core.torch_models import casia_state_dict_path
    from lambdas.core.weights import weights_id

    # The casia-webface state_dict as a plain file; a gallery enrolled with it records file:<hash>
    # (the same numbers: relabelling the casia gallery stands in for enrolling again).
    monkeypatch.chdir(tmp_path)
    Path("weights.pt").write_bytes(casia_state_dict_path().read_bytes())
    loaded = Gallery.load(gallery)
    file_gallery = tmp_path / "file-gallery.pt"
    Gallery(weights=weights_id("weights.pt"), embeddings=loaded.embeddings, names=loaded.names, sources=loaded.sources, recipe=loaded.recipe).save(file_gallery)
    # The function gets an absolute path: its workers need not share this working directory.
    assert function_weights(file_gallery, "weights.pt") == str(tmp_path / "weights.pt")

    videos, expected = course_videos
    refused = CliRunner().invoke(app, ["run-local", str(videos[0]), "--gallery", str(file_gallery), "--workers", "0", "--json"])
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "this gallery was made with weights from a file; pass --weights PATH" in refused.stderr

    ran = CliRunner().invoke(app, ["run-local", str(videos[0]), "--gallery", str(file_gallery), "--weights", "weights.pt", "--workers", "0", "--json"])
    assert ran.exit_code == 0, ran.output
    (line,) = map(json.loads, ran.stdout.splitlines())
    assert (line["status"], line["name"]) == ("ok", expected[videos[0].name])


def test_inputs_sharing_a_stem_get_distinct_results(tmp_path: Path) -> None:
    """Results are stored per stem (<stem>.txt): clip.mp4 and clip.mov, or clip.mp4 from two folders,
    must not answer into the same objects."""
    from facerec_cli.pipeline.local.runner import collect_videos

    for name in ("a/clip.mp4", "a/clip.mov", "b/clip.mp4", "b/clip-2.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    jobs, refused = collect_videos([tmp_path / "a", tmp_path / "b"])
    assert not refused
    assert [(j.path.relative_to(tmp_path).as_posix(), j.key, j.stem) for j in jobs] == [
        ("a/clip.mov", "clip.mov", "clip"),
        ("a/clip.mp4", "clip-2.mp4", "clip-2"),
        ("b/clip-2.mp4", "clip-2-2.mp4", "clip-2-2"),
        ("b/clip.mp4", "clip-3.mp4", "clip-3"),
    ]


# ------------------------------------------------------------------------------------------ IAM and what runs


def _runner(pipeline: LocalPipeline, source: Path, folder: Path) -> Any:
    """run(name): ``source`` uploaded as ``name`` (a stem of its own), through the pipeline; its result."""

    def run(name: str) -> Any:
        path = folder / name
        path.write_bytes(source.read_bytes())
        jobs, _ = collect_videos([path])
        (result,) = pipeline.run(jobs)
        return result

    return run


def test_handlers_run_with_their_roles_policies_and_a_missing_permission_fails(gallery, course_videos, tmp_path):
    """IAM is enforced by default with worker processes: each handler calls with its function role's
    credentials, checked against the role's policy. With the policies bootstrap deploys, a video is
    answered; without one statement, it ends in an error that names the refused call."""
    from facerec_cli.pipeline.stack import ROLE_POLICY_NAME

    videos, expected = course_videos
    with LocalPipeline(gallery, RunOptions(workers=1, timeout_s=300)) as pipeline:
        assert pipeline.cloud.enforce_iam
        n, iam = pipeline.names, pipeline.clients.iam
        run = _runner(pipeline, videos[0], tmp_path)
        documents = {f: iam.get_role_policy(RoleName=n.role(f), PolicyName=ROLE_POLICY_NAME)["PolicyDocument"] for f in (n.splitting_function, n.recognition_function, n.failure_function)}

        def without(function: str, *sids: str) -> None:
            doc = documents[function]
            cut = {**doc, "Statement": [s for s in doc["Statement"] if s.get("Sid") not in sids]}
            assert len(cut["Statement"]) == len(doc["Statement"]) - len(sids)
            iam.put_role_policy(RoleName=n.role(function), PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(cut))

        def restore(function: str) -> None:
            iam.put_role_policy(RoleName=n.role(function), PolicyName=ROLE_POLICY_NAME, PolicyDocument=json.dumps(documents[function]))

        full = run("full.mp4")
        assert (full.status, full.name) == ("ok", expected[videos[0].name]), full.error

        without(n.recognition_function, "WriteResults")
        denied = run("no-write.mp4")
        assert denied.status == "error" and denied.error.startswith("face-recognition failed on every attempt: AccessDenied"), denied.error
        assert "PutObject" in denied.error
        restore(n.recognition_function)

        # Without s3:ListBucket a missing key is 403, not 404 (as on S3): video-splitting's check for
        # an earlier run of the same upload (its done marker, in the details bucket) then fails instead
        # of finding nothing.
        without(n.splitting_function, "ListResults")
        unlisted = run("no-list.mp4")
        assert unlisted.status == "error" and unlisted.error.startswith("video-splitting failed on every attempt"), unlisted.error
        assert "403" in unlisted.error or "AccessDenied" in unlisted.error
        restore(n.splitting_function)

        # The failure record goes to the on-failure function with the failing function's role (Lambda's
        # OnFailure destination): without lambda:InvokeFunction on it, the record is lost (run-local says so).
        without(n.recognition_function, "WriteResults", "ReportFailures")
        unreported = run("no-report.mp4")
        assert f"the failure record could not be sent to {n.failure_function}" in unreported.error, unreported.error
        restore(n.recognition_function)

        # The on-failure function writes the error result with its own role, then forwards the record:
        # without its queue statement the result is still there, the record is not.
        without(n.recognition_function, "WriteResults")
        without(n.failure_function, "ForwardFailures")
        unqueued = run("no-queue.mp4")
        assert unqueued.error.startswith("face-recognition failed on every attempt: AccessDenied"), unqueued.error
        # The result is there before the on-failure function has tried (and retried) to forward the
        # record: let every attempt end before the policies come back, or a retry would succeed.
        assert pipeline.cloud.dispatcher.wait_idle(120)
        restore(n.recognition_function)
        restore(n.failure_function)

        assert run("again.mp4").status == "ok"
        sqs = pipeline.clients.sqs
        url = sqs.get_queue_url(QueueName=n.failure_queue)["QueueUrl"]
        bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(b["requestPayload"].get("video") or b["requestPayload"]["Records"][0]["s3"]["object"]["key"] for b in bodies) == ["no-list.mp4", "no-write.mp4"]


def test_a_changed_function_configuration_is_refused_not_run(gallery, course_videos, tmp_path):
    """The local moto takes UpdateFunctionConfiguration from anyone on this machine: a function that sets
    another variable (LD_PRELOAD) or names another handler is refused, logged, and its video ends in error."""
    videos, _ = course_videos
    log = tmp_path / "functions.log"
    with LocalPipeline(gallery, RunOptions(workers=1, timeout_s=300), log_path=str(log)) as pipeline:
        n, lam = pipeline.names, pipeline.clients.lambda_
        run = _runner(pipeline, videos[0], tmp_path)
        variables = lam.get_function_configuration(FunctionName=n.recognition_function)["Environment"]["Variables"]
        lam.update_function_configuration(FunctionName=n.recognition_function, Environment={"Variables": {**variables, "LD_PRELOAD": str(tmp_path / "x.so")}})
        preloaded = run("preloaded.mp4")
        assert pipeline.cloud.dispatcher.worker_pids()[n.recognition_function] == []
        _replace_recognition_handler(pipeline, "tests.pipeline_faults.fail_once", tmp_path)
        other = run("other-handler.mp4")
    assert preloaded.status == "error" and "refused to run face-recognition: its configuration sets LD_PRELOAD" in preloaded.error
    assert other.status == "error" and "names the handler 'tests.pipeline_faults.fail_once'" in other.error
    text = log.read_text()
    assert "refused to run face-recognition: its configuration sets LD_PRELOAD" in text
    assert "refused to run face-recognition: its configuration names the handler 'tests.pipeline_faults.fail_once'" in text


def test_an_upload_that_fails_in_a_burst_fails_the_run(gallery, course_videos, tmp_path):
    """A burst is uploaded on a thread of its own: an upload that fails there (the file vanished after it
    was listed) still fails run(), as it did when this thread uploaded, after the videos before it."""
    videos, _ = course_videos
    jobs, _ = collect_videos([videos[0]])
    vanished = tmp_path / "vanished.mp4"
    vanished.write_bytes(videos[0].read_bytes())
    jobs += collect_videos([vanished])[0]
    vanished.unlink()
    with LocalPipeline(gallery, RunOptions(workers=0, timeout_s=120)) as pipeline:
        with pytest.raises(OSError):
            pipeline.run(jobs)
        assert jobs[0].state != "waiting" and jobs[1].state == "waiting"
