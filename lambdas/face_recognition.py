"""Lambda ``face-recognition``: stage-1 frames -> faces named against the gallery -> ``<stem>.json``
in the details bucket, then ``<stem>.txt`` (the name alone) in the output bucket.

The first frame comes from stage-1; when it does not settle the answer, the further samples (the
request's ``samples``) are decoded here from the upload, one at a time until the answer is settled.

The gallery and the models load once per container; the gallery is reloaded when its object changes
(one HeadObject per invocation, no download).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .core import images, media
from .core.errors import FacerecError
from .core.media import Frame
from .core.results import error_result
from .env import RecognitionEnv
from .events import RecognitionRequest
from .segments import video_file
from .stage1 import budget_within, invocation_deadline
from .storage import EVENT_META, RESULT_TAGGING, client, download, log, write_result_once
from .warm import recogniser

class UploadSamples:
    """The request's further samples, decoded from the upload on first use (downloaded once)."""

    def __init__(self, request: RecognitionRequest, deadline: float | None) -> None:
        self.request, self.deadline = request, deadline
        self.download_s = 0.0
        self._video: Any = None
        self._frames: Iterator[Frame] | None = None

    def next(self, index: int) -> Frame | None:
        if self._frames is None:
            t0 = time.perf_counter()
            path = video_file(self.request)
            self.download_s += time.perf_counter() - t0
            budget = budget_within(media.DEFAULT_DECODE_TIMEOUT, self.deadline)
            self._video = media.open_video(path, timeout=budget, name=self.request.video)
            self._frames = self._video.frames(self.request.samples)
        frame = next(self._frames, None)
        return None if frame is None else Frame(index, frame.t, frame.image)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()


def recognise(request: RecognitionRequest, env: RecognitionEnv, deadline: float | None = None) -> None:
    # No look for an earlier result first: the write is exactly-once by itself (write_result_once), and a
    # duplicate invocation (rare: Lambda's at-least-once delivery) costs its recognition, not every
    # invocation a HeadObject or two.
    event_id = str(request.source.get("event_id", ""))
    started = time.perf_counter()
    # From the Invoke in video-splitting to here: Lambda's queue and a cold or busy instance.
    handover_ms = max(0.0, (time.time() - request.sent_at) * 1000) if request.sent_at else None
    kept: list[Any] = []  # the decoded frames, kept only to annotate one
    fetch_s = [0.0]  # seconds spent fetching stage-1 frames
    try:
        rec = recogniser(env)
        with tempfile.TemporaryDirectory(prefix="facerec-rec-") as tmp:

            def load(i: int) -> Frame | None:
                # Called only for the frames the recogniser looks at: an early exit skips the rest.
                if i >= len(request.frames):
                    return further.next(i)
                t0 = time.perf_counter()
                ref = request.frames[i]
                local = Path(tmp) / f"{i:03d}.jpg"
                download(request.stage1_bucket, ref.key, local, small=True)
                fetch_s[0] += time.perf_counter() - t0
                return Frame(i, ref.t, images.load_image(local))

            further = UploadSamples(request, deadline)
            try:
                result, kept = rec.recognise_loaded(request.video, len(request.frames) + len(request.samples), load)
            finally:
                further.close()
        if not env.annotate:
            kept = []
        ms = (fetch_s[0] + further.download_s) * 1000
        result.timings_ms["download"] = ms
        if "decode" in result.timings_ms:  # the recogniser timed fetch + decode together
            result.timings_ms["decode"] = max(0.0, result.timings_ms["decode"] - ms)
    except FacerecError as exc:
        result = error_result(request.video, str(exc))
    result.timings_ms.update(request.timings_ms)
    if handover_ms is not None:
        result.timings_ms["invoke"] = handover_ms
    if env.annotate and result.faces and kept:
        store_annotated(env.results.details, request.stem, result, kept, event_id)
    result.timings_ms["recognise"] = (time.perf_counter() - started) * 1000
    if not write_result_once(env.results, request.stem, result, event_id):
        log("duplicate invocation: this event's result was already written", stem=request.stem)
        return
    log("recognised", stem=request.stem, status=result.status, name=result.name, ms=round(result.timings_ms["recognise"]))


def store_annotated(bucket: str, stem: str, result: Any, frames: list[Any], event_id: str) -> None:
    """``<stem>.annotated.jpg`` beside the details (FACEREC_ANNOTATE=1): the frame with the most, then
    the largest, faces, with boxes, names and distances. Written before the result, so a reader that
    sees the result finds the picture; a failure here is logged and never fails the recognition."""
    from .core.annotate import annotate_frame, annotated_key, best_frame, jpeg_bytes

    started = time.perf_counter()
    try:
        index = best_frame(result.faces)
        frame = next((f for f in frames if f.index == index), None)
        if frame is None:
            return
        body = jpeg_bytes(annotate_frame(frame.image, result.faces, frame.index))
        client("s3").put_object(
            Bucket=bucket, Key=annotated_key(stem), Body=body, ContentType="image/jpeg", Metadata={EVENT_META: event_id, "frame": str(index)},
            Tagging=RESULT_TAGGING,
        )
    except Exception as exc:  # noqa: BLE001 - the picture is an extra; the result must still be written
        log("annotated frame not stored", stem=stem, error=f"{type(exc).__name__}: {exc}")
        return
    result.timings_ms["annotate"] = (time.perf_counter() - started) * 1000


def warm_up() -> None:
    """Load the models at import (Lambda's init phase; the local runtime's prewarm), not in the first
    request. The gallery still loads on first use: it lives in S3 and can change."""
    from .core.recognise import FaceEncoder
    from .env import WEIGHTS

    weights = os.environ.get(WEIGHTS) or "casia-webface"
    try:
        FaceEncoder(weights=weights, device=os.environ.get("FACEREC_DEVICE") or "cpu")
    except FacerecError as exc:  # reported again, as an error result, by the first invocation
        log("warm-up failed", error=str(exc))


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # inside a function, not when imported by tools
    warm_up()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = RecognitionEnv.from_environ()
    from .segments import handle_segment, is_segment_event

    if is_segment_event(event):  # one segment of a video's timeline (lambdas/segments.py)
        return handle_segment(event, env, context)
    request = RecognitionRequest.from_dict(event)
    recognise(request, env, invocation_deadline(context))
    return {"stem": request.stem}
