"""Lambda ``video-splitting``: S3 ObjectCreated on the input bucket -> the first frame in stage-1 ->
asynchronous Invoke of ``face-recognition``.

Stage-1 layout (the course's): ``<stem>.jpg`` is the first frame. Only it is decoded and stored here:
the first frame settles most answers, and face-recognition decodes the further samples (their times
are in the request) from the upload itself when it needs them. A refused or unreadable upload gets its
``error`` result written here, so every accepted upload ends with exactly one result.

Nothing is lost to a crash or a timeout at any point: the "done" marker of an event
(``.facerec/split/<hash of the stem>`` in the details bucket, with the event id: neither stage-1 nor the
output bucket holds anything but the course's objects) is written only after the Invoke
of face-recognition (or the error result) succeeded, and it is what a redelivered event is checked
against. A retry after a crash before it splits and invokes again; face-recognition skips an event whose
result is already complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .core import images, media, sampling
from .core.errors import InputError
from .core.results import error_result
from .env import SplittingEnv
from .gop import GOP, gop_frames
from .events import FrameRef, RecognitionRequest, Upload, uploads
from .stage1 import decode_budget, frame_key, local_name, marker_key
from .storage import EVENT_META, RESULT_TAGGING, already_done, client, download, log, write_result

def split(upload: Upload, env: SplittingEnv, workdir: Path, deadline: float | None = None) -> RecognitionRequest:
    """Download, check, sample and store frames; InputError for a video we cannot or will not read.
    ``deadline``: time.monotonic() at which the invocation ends (None: no limit but the settings')."""
    started = time.perf_counter()
    if upload.size > env.max_bytes:
        raise InputError(
            f"{upload.video}: {upload.size / 1e6:.1f} MB is over the limit of {env.max_bytes / 1e6:.1f} MB "
            "(raise FACEREC_MAX_BYTES on the video-splitting function)"
        )
    ms: dict[str, float] = {}

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        ms[f"split_{stage}"] = ms.get(f"split_{stage}", 0.0) + (now - since) * 1000
        return now

    local = workdir / local_name(upload.key)
    download(upload.bucket, upload.key, local, upload.size)
    t = lap("download", started)
    frames = []
    # Decoded in process (video packets only); frame 0 alone, the others are face-recognition's to decode.
    with media.open_video(local, timeout=decode_budget(env, deadline), name=upload.video) as video:
        sampling.check_duration(Path(upload.video), video.duration, env.max_seconds)
        times: list[float] = []  # the samples face-recognition decodes itself, when it needs them
        if env.stage1_layout == GOP:  # Part 1's frames and names (lambdas/gop.py): all stored
            stored = gop_frames(upload.stem, video)
        else:
            times = sampling.sample_times(video.duration, env.frames, env.fps or None)[1:]
            stored = ((frame_key(upload.stem, f.index), f) for f in video.frames([0.0]))
        for key, frame in stored:
            t = lap("decode", t)
            body = images.encode_jpeg(frame.image)
            t = lap("encode", t)
            client("s3").put_object(
                Bucket=env.stage1_bucket,
                Key=key,
                Body=body,
                ContentType="image/jpeg",
                Metadata={EVENT_META: upload.event_id, "t": f"{frame.t:.3f}"},
            )
            t = lap("upload", t)
            if not frames or frames[-1].t != frame.t:  # gop repeats its last frame: recognised once
                frames.append(FrameRef(key=key, t=frame.t))
    return RecognitionRequest(
        stage1_bucket=env.stage1_bucket,
        stem=upload.stem,
        video=upload.video,
        frames=frames,
        source={"bucket": upload.bucket, "key": upload.key, "etag": upload.etag, "size": upload.size, "event_id": upload.event_id},
        timings_ms={"split": (time.perf_counter() - started) * 1000, **ms},
        samples=times,
    )


def mark_done(env: SplittingEnv, upload: Upload) -> None:
    client("s3").put_object(Bucket=env.results.details, Key=marker_key(upload.stem), Body=b"", Metadata={EVENT_META: upload.event_id},
                            Tagging=RESULT_TAGGING)  # expires with the results (--retain-days)


def handle_upload(upload: Upload, env: SplittingEnv, deadline: float | None = None) -> str:
    if already_done(env.results.details, marker_key(upload.stem), upload.event_id):
        log("duplicate event skipped", key=upload.key, event_id=upload.event_id)
        return "duplicate"
    if env.timeline:  # who is on screen when: segments recognised in parallel (lambdas/segments.py)
        from .segments import fan_out

        outcome = fan_out(upload, env, deadline)
        mark_done(env, upload)  # as below: only after the invokes (or the error result)
        return outcome
    with tempfile.TemporaryDirectory(prefix="facerec-split-") as tmp:
        try:
            request = split(upload, env, Path(tmp), deadline)
        except InputError as exc:
            log("refused", key=upload.key, error=str(exc))
            write_result(env.results, upload.stem, error_result(upload.video, str(exc)), upload.event_id)
            mark_done(env, upload)
            return "error"
    request.sent_at = time.time()  # face-recognition times the asynchronous hand-over from it
    client("lambda").invoke(
        FunctionName=env.recognition_function,
        InvocationType="Event",
        Payload=json.dumps(request.to_dict()).encode(),
    )
    mark_done(env, upload)  # only now: a crash before this makes the retry split and invoke again
    log("split", key=upload.key, frames=len(request.frames), ms=round(request.timings_ms["split"]))
    return "split"


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # Lambda's init phase, not when imported by tools
    # The clients are made once per container, before the first request; one that cannot be made yet
    # (no region, say) is made again by the first request, which reports what is wrong.
    with contextlib.suppress(Exception):
        client("s3"), client("lambda")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = SplittingEnv.from_environ()
    remaining_ms = context.get_remaining_time_in_millis() if context is not None and hasattr(context, "get_remaining_time_in_millis") else None
    deadline = time.monotonic() + remaining_ms / 1000 if remaining_ms is not None else None
    outcomes = {u.key: handle_upload(u, env, deadline) for u in uploads(event)}
    return {"videos": outcomes}
