"""The face-recognition handler on its own, against a real moto server: stage-1 frames are fetched
only when the recogniser needs them, so an early exit on a settled first frame saves the S3 GETs."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from lambdas import face_recognition, warm
from lambdas.core.images import load_image
from lambdas.events import FrameRef, RecognitionRequest


@pytest.fixture
def buckets(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, celeb_gallery: Any) -> dict[str, Any]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    tag = uuid.uuid4().hex[:8]
    env = {
        "AWS_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "OUTPUT_BUCKET": f"out-{tag}", "DETAILS_BUCKET": f"det-{tag}", "FACEREC_GALLERY": str(celeb_gallery[0]),
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    stage1 = f"stage-{tag}"
    s3.create_bucket(Bucket=stage1)
    s3.create_bucket(Bucket=env["OUTPUT_BUCKET"])
    s3.create_bucket(Bucket=env["DETAILS_BUCKET"])
    return {"s3": s3, "stage1": stage1, "output": env["OUTPUT_BUCKET"], "details": env["DETAILS_BUCKET"]}


def _request(stage1: str, stem: str, keys: list[str]) -> dict[str, Any]:
    frames = [FrameRef(key=k, t=float(i)) for i, k in enumerate(keys)]
    return RecognitionRequest(stage1, stem, f"{stem}.mp4", frames, {"event_id": uuid.uuid4().hex}).to_dict()


def _jpeg(path: Path) -> bytes:
    import io

    buf = io.BytesIO()
    load_image(path).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_a_settled_first_frame_never_fetches_the_others(buckets: dict[str, Any], data: Path) -> None:
    s3, stage1 = buckets["s3"], buckets["stage1"]
    # An enrolled photo: near its person's centroid, so the first frame settles the answer.
    photo = sorted((data / "5celeb" / "train" / "madonna").iterdir())[0]
    s3.put_object(Bucket=stage1, Key="clip.jpg", Body=_jpeg(photo))
    # Frames 1 and 2 are not in stage-1: fetching either would fail the invocation.
    face_recognition.handler(_request(stage1, "clip", ["clip.jpg", "clip/001.jpg", "clip/002.jpg"]), None)

    result = json.loads(s3.get_object(Bucket=buckets["details"], Key="clip.json")["Body"].read())
    assert (result["status"], result["name"], result["frames"]) == ("ok", "madonna", 1)
    assert result["timings_ms"]["download"] > 0
    assert s3.get_object(Bucket=buckets["output"], Key="clip.txt")["Body"].read() == b"madonna"
    # The output bucket holds the answer alone (the course's grader reads every object there).
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=buckets["output"])["Contents"]] == ["clip.txt"]


def test_an_unsettled_first_frame_fetches_the_rest(buckets: dict[str, Any], data: Path) -> None:
    s3, stage1 = buckets["s3"], buckets["stage1"]
    empty = sorted((data / "noface").iterdir())[0]
    face = sorted((data / "5celeb" / "val" / "elton_john").iterdir())[0]
    s3.put_object(Bucket=stage1, Key="two.jpg", Body=_jpeg(empty))
    s3.put_object(Bucket=stage1, Key="two/001.jpg", Body=_jpeg(face))
    face_recognition.handler(_request(stage1, "two", ["two.jpg", "two/001.jpg"]), None)
    result = json.loads(s3.get_object(Bucket=buckets["details"], Key="two.json")["Body"].read())
    assert (result["status"], result["name"], result["frames"]) == ("ok", "elton_john", 2)

    # A frame it needs and cannot fetch fails the invocation (Lambda retries it), writing nothing.
    with pytest.raises(botocore.exceptions.ClientError):
        face_recognition.handler(_request(stage1, "gone", ["two.jpg", "gone/001.jpg"]), None)
    for bucket in (buckets["output"], buckets["details"]):
        assert s3.list_objects_v2(Bucket=bucket, Prefix="gone").get("KeyCount", 0) == 0


def test_all_frames_turns_the_early_exit_off(buckets: dict[str, Any], data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3, stage1 = buckets["s3"], buckets["stage1"]
    photo = sorted((data / "5celeb" / "train" / "madonna").iterdir())[0]
    s3.put_object(Bucket=stage1, Key="all.jpg", Body=_jpeg(photo))
    s3.put_object(Bucket=stage1, Key="all/001.jpg", Body=_jpeg(photo))
    monkeypatch.setenv("FACEREC_ALL_FRAMES", "1")
    face_recognition.handler(_request(stage1, "all", ["all.jpg", "all/001.jpg"]), None)
    result = json.loads(s3.get_object(Bucket=buckets["details"], Key="all.json")["Body"].read())
    assert (result["status"], result["name"], result["frames"]) == ("ok", "madonna", 2)
    assert {f["frame"] for f in result["faces"]} == {0, 1}


def _madonna_frame(buckets: dict[str, Any], data: Path, stem: str) -> dict[str, Any]:
    photo = sorted((data / "5celeb" / "train" / "madonna").iterdir())[0]
    buckets["s3"].put_object(Bucket=buckets["stage1"], Key=f"{stem}.jpg", Body=_jpeg(photo))
    return _request(buckets["stage1"], stem, [f"{stem}.jpg"])


def _result(buckets: dict[str, Any], stem: str) -> dict[str, Any]:
    return json.loads(buckets["s3"].get_object(Bucket=buckets["details"], Key=f"{stem}.json")["Body"].read())


def test_the_gallery_is_reloaded_when_its_object_changes(
    buckets: dict[str, Any], data: Path, celeb_gallery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdas.core.gallery import Gallery

    s3, output = buckets["s3"], buckets["output"]
    _, gallery = celeb_gallery
    s3.put_object(Bucket=output, Key=".facerec/gallery.pt", Body=gallery.to_bytes())
    monkeypatch.setenv("FACEREC_GALLERY", f"s3://{output}/.facerec/gallery.pt")

    face_recognition.handler(_madonna_frame(buckets, data, "r1"), None)
    assert _result(buckets, "r1")["name"] == "madonna"
    first = warm._state["recogniser"]
    face_recognition.handler(_madonna_frame(buckets, data, "r2"), None)
    assert _result(buckets, "r2")["name"] == "madonna"
    assert warm._state["recogniser"] is first  # unchanged object: the warm recogniser is reused

    # Same embeddings, madonna under her birth name: only a reloaded gallery can give that name.
    renamed = Gallery(
        weights=gallery.weights, embeddings=gallery.embeddings, names=["louise_ciccone" if n == "madonna" else n for n in gallery.names],
        sources=gallery.sources, threshold=gallery.threshold, recipe=gallery.recipe,
    )
    s3.put_object(Bucket=output, Key=".facerec/gallery.pt", Body=renamed.to_bytes())
    face_recognition.handler(_madonna_frame(buckets, data, "r3"), None)
    assert _result(buckets, "r3")["name"] == "louise_ciccone"
    reloaded = warm._state["recogniser"]
    assert reloaded is not first and reloaded.encoder is first.encoder  # same weights: the models stay loaded


def test_the_functions_weights_are_used_and_a_file_gallery_needs_them(
    buckets: dict[str, Any], data: Path, celeb_gallery: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdas.core.gallery import Gallery
    from lambdas.core.torch_models import casia_state_dict_path
    from lambdas.core.weights import weights_id

    # The casia-webface state_dict as a plain file: a gallery enrolled with it records file:<hash>, and
    # its embeddings are the casia-webface ones.
    weights = tmp_path / "weights.pt"
    weights.write_bytes(casia_state_dict_path().read_bytes())
    _, gallery = celeb_gallery
    from_file = Gallery(weights=weights_id(str(weights)), embeddings=gallery.embeddings, names=gallery.names, sources=gallery.sources, recipe=gallery.recipe)
    path = tmp_path / "file-gallery.pt"
    from_file.save(path)
    monkeypatch.setenv("FACEREC_GALLERY", str(path))

    face_recognition.handler(_madonna_frame(buckets, data, "w1"), None)
    result = _result(buckets, "w1")
    assert result["status"] == "error" and "this gallery was made with weights from a file; pass --weights PATH" in result["error"]

    monkeypatch.setenv("FACEREC_WEIGHTS", str(weights))
    face_recognition.handler(_madonna_frame(buckets, data, "w2"), None)
    assert (_result(buckets, "w2")["status"], _result(buckets, "w2")["name"]) == ("ok", "madonna")

    # A function whose weights are not the gallery's refuses it, naming both.
    monkeypatch.setenv("FACEREC_WEIGHTS", "casia-webface")
    face_recognition.handler(_madonna_frame(buckets, data, "w3"), None)
    error = _result(buckets, "w3")["error"]
    assert "weights casia-webface are not the weights the gallery was made with" in error and from_file.weights in error


def test_a_failure_between_the_two_result_writes_is_redone_by_the_retry(
    buckets: dict[str, Any], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invocation dies after one of the two result objects is written (a crash we cannot cause in
    moto at that exact moment, hence the injected failure); Lambda's retry must complete the pair."""
    from lambdas import storage

    s3_client = storage.client("s3")
    real_put = s3_client.put_object
    calls: list[str] = []
    written: list[str] = []  # the writes S3 accepted (a conditional write it refuses writes nothing)

    def dies_after_the_first_result_object(**kwargs: Any) -> Any:
        if kwargs["Bucket"] in (buckets["output"], buckets["details"]) and kwargs["Key"].startswith("half."):
            calls.append(kwargs["Key"])
            if len(calls) == 2:
                raise RuntimeError("the function timed out here")
            answer = real_put(**kwargs)
            written.append(kwargs["Key"])
            return answer
        return real_put(**kwargs)

    monkeypatch.setattr(s3_client, "put_object", dies_after_the_first_result_object)
    event = _madonna_frame(buckets, data, "half")
    with pytest.raises(RuntimeError):
        face_recognition.handler(event, None)
    face_recognition.handler(event, None)  # Lambda's retry: the same event
    s3 = buckets["s3"]
    assert s3.get_object(Bucket=buckets["output"], Key="half.txt")["Body"].read() == b"madonna"
    assert _result(buckets, "half")["name"] == "madonna"
    assert written == ["half.json", "half.json", "half.txt"]  # the retry wrote both halves again
    # A third delivery of the same event is a duplicate now: nothing is written again.
    face_recognition.handler(event, None)
    assert written == ["half.json", "half.json", "half.txt"]


class _Context:
    def __init__(self, seconds: float) -> None:
        import time

        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        import time

        return int((self._end - time.monotonic()) * 1000)


def _with_samples(buckets: dict[str, Any], stem: str, first: Path, video: Path, samples: list[float]) -> dict[str, Any]:
    """Frame 0 in stage-1 (as video-splitting stores it), the upload in an input bucket, further samples by time."""
    s3 = buckets["s3"]
    s3.create_bucket(Bucket=f"in-{stem}")
    s3.upload_file(str(video), f"in-{stem}", f"{stem}.mp4")
    s3.put_object(Bucket=buckets["stage1"], Key=f"{stem}.jpg", Body=_jpeg(first))
    request = RecognitionRequest(buckets["stage1"], stem, f"{stem}.mp4", [FrameRef(f"{stem}.jpg", 0.0)],
                                 {"bucket": f"in-{stem}", "key": f"{stem}.mp4", "etag": "e", "event_id": uuid.uuid4().hex}, samples=samples)  # fmt: skip
    return request.to_dict()


def test_an_unsettled_first_frame_decodes_further_samples_from_the_upload(buckets: dict[str, Any], data: Path, tmp_path: Path) -> None:
    """Frame 0 has no face: the next sample is decoded from the upload itself (not from stage-1), and
    the one after it is not needed once that settles the answer."""
    from facerec_cli.samples import still_video

    video = still_video(sorted((data / "5celeb" / "train" / "elton_john").iterdir())[0], tmp_path / "elton.mp4", seconds=3)
    face_recognition.handler(_with_samples(buckets, "late", sorted((data / "noface").iterdir())[0], video, [1.0, 2.0]), None)
    result = _result(buckets, "late")
    assert (result["status"], result["name"], result["frames"]) == ("ok", "elton_john", 2)
    assert {f["frame"] for f in result["faces"]} == {1} and 0.9 < result["faces"][0]["t"] < 1.1
    assert buckets["s3"].list_objects_v2(Bucket=buckets["stage1"], Prefix="late/").get("KeyCount", 0) == 0  # nothing added to stage-1


def test_further_samples_are_decoded_within_the_invocations_time(buckets: dict[str, Any], data: Path, tmp_path: Path) -> None:
    """99 samples at 25 fps of the 1080p crowd clip (strangers: never settled; one keyframe) with 6 s left in
    the invocation: the decode budget (1 s) ends it in an error result naming the video, in time."""
    from lambdas.core.sampling import read_frames

    crowd = data / "videos" / "crowd_unlabeled_4s.mp4"
    frame0 = tmp_path / "crowd0.jpg"  # frame 0 of the crowd, as stage-1 holds it
    read_frames(crowd, count=1)[0][0].image.save(frame0)
    event = _with_samples(buckets, "crowd", frame0, crowd, [round(i / 25, 3) for i in range(1, 100)])
    face_recognition.handler(event, _Context(6.0))
    result = _result(buckets, "crowd")
    assert result["status"] == "error" and "crowd.mp4: decoding took longer than 1 s" in result["error"]


def test_downloads_ask_for_the_size_only_when_they_do_not_know_it(buckets: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A known-small object (a stage-1 frame) or one whose size is known and small (an S3 event's) is one
    GetObject; a large or unsized one goes through s3transfer (a HeadObject first, then ranged GETs).
    Each arrives whole, byte for byte, from a moto server over HTTP."""
    from lambdas import storage

    s3 = buckets["s3"]
    bucket = buckets["output"]
    small, large = os.urandom(300_000), os.urandom(storage.SINGLE_GET_BYTES + 1_000_000)
    s3.put_object(Bucket=bucket, Key="small.bin", Body=small)
    s3.put_object(Bucket=bucket, Key="large.bin", Body=large)
    heads: list[str] = []
    real_head = s3.head_object

    def counting_head(**kwargs: Any) -> Any:  # a spy: counts HeadObjects, asks the real server
        heads.append(kwargs["Key"])
        return real_head(**kwargs)

    monkeypatch.setattr(s3, "head_object", counting_head)
    for name, kwargs, body, asked in (
        ("small.bin", {"small": True}, small, []),
        ("small.bin", {"size": len(small)}, small, []),
        ("large.bin", {"size": len(large)}, large, ["large.bin"]),
        ("small.bin", {}, small, ["small.bin"]),
    ):
        heads.clear()
        target = tmp_path / f"{name}-{len(kwargs)}-{sorted(kwargs)}"
        storage.download(bucket, name, target, s3=s3, **kwargs)
        assert (target.read_bytes() == body, heads) == (True, asked), (name, kwargs)


def test_result_keys_are_listed_from_the_first_pending_one(buckets: dict[str, Any]) -> None:
    """run-local's poll lists only the keys from the first pending result on (S3's StartAfter is
    exclusive: the pending key itself must be in), against a moto server over HTTP."""
    from facerec_cli.pipeline.observe.results import list_result_keys

    s3, bucket = buckets["s3"], buckets["details"]
    for stem in ("test_01", "test_02", "test_03", "test_10"):
        s3.put_object(Bucket=bucket, Key=f"{stem}.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="test_02.txt", Body=b"not a result")
    assert sorted(list_result_keys(s3, bucket)) == ["test_01", "test_02", "test_03", "test_10"]
    assert sorted(list_result_keys(s3, bucket, "test_02.json")) == ["test_02", "test_03", "test_10"]
    assert sorted(list_result_keys(s3, bucket, "test_04.json")) == ["test_10"]
