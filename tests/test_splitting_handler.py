"""The video-splitting handler against a real moto S3: no path loses a result (issue: nothing lost).

The Lambda Invoke of face-recognition is recorded here instead of sent: moto cannot invoke an Image
function, and a crash between storing the frames and the Invoke (or a timeout there) cannot be caused on
purpose any other way; everything else (S3, the video, the decoder) is real."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdas import stage1, storage, video_splitting
from lambdas.env import SplittingEnv
from lambdas.events import RecognitionRequest
from tests.fake_clock import FakeClock


class Context:
    def __init__(self, remaining_s: float) -> None:
        self.deadline = time.monotonic() + remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


@pytest.fixture
def cloud(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    env = {
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "STAGE1_BUCKET": f"stage-{tag}", "OUTPUT_BUCKET": f"out-{tag}", "DETAILS_BUCKET": f"det-{tag}", "RECOGNITION_FUNCTION": "face-recognition",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for name in ("AWS_PROFILE", "FACEREC_FRAMES", "FACEREC_FPS", "FACEREC_DECODE_TIMEOUT", "FACEREC_FFMPEG_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    buckets = {"input": f"in-{tag}", "stage1": env["STAGE1_BUCKET"], "output": env["OUTPUT_BUCKET"], "details": env["DETAILS_BUCKET"]}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    invocations: list[dict[str, Any]] = []
    failures = {"invoke": 0}

    def invoke(**kwargs: Any) -> dict[str, Any]:
        if failures["invoke"]:
            failures["invoke"] -= 1
            raise TimeoutError("Task timed out after 120.00 seconds")  # what Lambda would end the invocation with
        invocations.append(json.loads(kwargs["Payload"]))
        return {"StatusCode": 202}

    monkeypatch.setattr(storage.client("lambda"), "invoke", invoke)
    return {"s3": s3, **buckets, "invocations": invocations, "failures": failures}


def _event(bucket: str, key: str, s3: Any) -> dict[str, Any]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-11-30T00:00:00.000Z",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": head["ETag"], "size": head["ContentLength"]}}}]}  # fmt: skip


def test_a_crash_between_the_frames_and_the_invoke_is_retried_not_skipped(cloud: dict[str, Any], data: Path) -> None:
    s3 = cloud["s3"]
    s3.upload_file(str(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"), cloud["input"], "clip.mp4")
    event = _event(cloud["input"], "clip.mp4", s3)
    cloud["failures"]["invoke"] = 1
    with pytest.raises(TimeoutError):
        video_splitting.handler(event, Context(120))
    assert cloud["invocations"] == []
    # Lambda's retry of the same event: frame 0 is already in stage-1, yet the video was never handed on.
    assert video_splitting.handler(event, Context(120)) == {"videos": {"clip.mp4": "split"}}
    assert len(cloud["invocations"]) == 1
    request = RecognitionRequest.from_dict(cloud["invocations"][0])
    assert [f.key for f in request.frames] == ["clip.jpg"] and len(request.samples) == 2  # the rest: recognition's to decode
    # Now it is done: a third delivery is a duplicate, and nothing is invoked again.
    assert video_splitting.handler(event, Context(120)) == {"videos": {"clip.mp4": "duplicate"}}
    assert len(cloud["invocations"]) == 1
    # Its done marker is in the details bucket: stage-1 holds frame 0 alone, the output bucket nothing.
    assert s3.head_object(Bucket=cloud["details"], Key=stage1.marker_key("clip"))
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=cloud["stage1"])["Contents"]) == ["clip.jpg"]
    assert s3.list_objects_v2(Bucket=cloud["output"])["KeyCount"] == 0


def test_a_key_of_many_cjk_characters_is_split(cloud: dict[str, Any], data: Path) -> None:
    s3 = cloud["s3"]
    key = "動画/" + "顔認識のテスト" * 20 + ".mp4"  # 140 CJK characters in the name: 420 bytes of UTF-8
    s3.upload_file(str(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"), cloud["input"], key)
    assert video_splitting.handler(_event(cloud["input"], key, s3), Context(120)) == {"videos": {key: "split"}}
    request = RecognitionRequest.from_dict(cloud["invocations"][0])
    stem = key[: -len(".mp4")]
    assert request.stem == stem and request.video == key.split("/")[-1]
    assert s3.head_object(Bucket=cloud["stage1"], Key=f"{stem}.jpg")["ContentType"] == "image/jpeg"


def test_an_unreadable_upload_is_named_in_its_error_result(cloud: dict[str, Any]) -> None:
    s3 = cloud["s3"]
    key = "日本語の名前.mp4"
    s3.put_object(Bucket=cloud["input"], Key=key, Body=b"this is not a video\n")
    assert video_splitting.handler(_event(cloud["input"], key, s3), Context(120)) == {"videos": {key: "error"}}
    result = json.loads(s3.get_object(Bucket=cloud["details"], Key="日本語の名前.json")["Body"].read())
    assert result["status"] == "error" and result["error"].startswith("日本語の名前.mp4: not a readable video")
    assert s3.get_object(Bucket=cloud["output"], Key="日本語の名前.txt")["Body"].read() == b"error"
    assert cloud["invocations"] == []


def test_the_decode_budget_comes_from_the_invocations_remaining_time(cloud: dict[str, Any], data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = SplittingEnv.from_environ()
    assert env.decode_timeout == 60.0
    assert stage1.decode_budget(env, None) == 60.0
    with monkeypatch.context() as patch:  # stage1 reads a fake clock here: the budget is exact, not measured
        clock = FakeClock()
        patch.setattr(stage1, "time", clock)
        assert stage1.decode_budget(env, clock.now + 30) == 30 - stage1.RESERVE_S  # 30 s left, less the reserve
        assert stage1.decode_budget(env, clock.now + 2) == stage1.MIN_BUDGET_S

    # Only frame 0 is decoded here: 100 samples at 25 fps of the 1080p crowd clip (one keyframe) are far
    # beyond a 1 s budget, yet the split is done in time and hands the other 99 on to face-recognition
    # (whose own budget tests/test_recognition_handler.py checks).
    s3 = cloud["s3"]
    s3.upload_file(str(data / "videos" / "crowd_unlabeled_4s.mp4"), cloud["input"], "crowd.mp4")
    monkeypatch.setenv("FACEREC_FPS", "25")
    monkeypatch.setenv("FACEREC_FRAMES", "100")
    assert video_splitting.handler(_event(cloud["input"], "crowd.mp4", s3), Context(6.0)) == {"videos": {"crowd.mp4": "split"}}
    request = RecognitionRequest.from_dict(cloud["invocations"][-1])
    assert [f.key for f in request.frames] == ["crowd.jpg"] and request.samples == [round(i / 25, 3) for i in range(1, 100)]
