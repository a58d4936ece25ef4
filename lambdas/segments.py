"""Timelines of long videos, fanned out: segments recognised in parallel, merged exactly once.

With ``FACEREC_TIMELINE=1`` on video-splitting, an upload is cut into segments of
``FACEREC_SEGMENT_SECONDS`` (30 s): ``[0, 30)``, ``[30, 60)``... video-splitting stores the first frame
(``<stem>.jpg``, the course's layout, as without a timeline) and a plan marker, then invokes
face-recognition asynchronously once per segment with its time range (:func:`fan_out`). Each segment's
invocation reads the video from the input bucket (kept in ``/tmp`` while the container lives, so a warm
container that gets several segments of one video downloads it once), seeks to its range and decodes only
its own grid frames (:func:`handle_segment`; ``lambdas/core/timeline.py``).

Why the segments decode the video themselves instead of reading frames from stage-1: measured on a
10-minute 1280x720 video (50 MB) against the local S3, one 30-second segment costs 1.9 s to seek and
decode its 60 frames, and the download 0.4 s; the stage-1 route adds 28 ms per frame (JPEG encode 4.9 ms,
PUT 11 ms, GET 8.4 ms, JPEG decode 3.7 ms) and, worse, puts the whole decode in the one splitting
invocation: 31 s to sample 1208 frames in one pass plus 19 s of encodes and PUTs before the last segment
could start. With the segments decoding, no step is longer than one segment's share.

State (its keys and conditional writes: ``lambdas/segment_state.py``), in stage-1 under ``.facerec/segments/<hash of the stem>/<hash of the event id>/`` (stage-1 objects
expire after a day): ``plan-of-NNNN`` (written before the invokes: ``watch`` counts segments in flight
from it), ``part-KKKK-of-NNNN.json`` (a segment's observations, or its failure), ``merge`` (the claim of
the one invocation that merges) and ``attempt-KKKK-<request id>-<n>`` (attempts of a failing segment).

Exactly once: a part and the claim are created with S3's conditional write (``PutObject`` with
``IfNoneMatch="*"``: the first writer wins, later ones get 412), so a duplicate delivery of a segment
finds its part taken and writes nothing new. After writing (or finding) its part, an invocation lists the
parts; the one that sees all N claims the merge, and only the claim's holder writes the result. A retry
of the holder (Lambda keeps the request id across the retries of an asynchronous invocation) may take
over its own claim. A segment that fails for good (an input error at once; anything else after its last
attempt, counted with the attempt markers, or when the local runtime's failure hook or Lambda's failure
record reports it) stores a failed part and claims the merge itself: the video's result is an ``error``
that names the segment, never a timeline with a hole in it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .core import images, media, sampling
from .core.errors import FacerecError, InputError
from .core.names import plural
from .core.results import Result, error_result
from .env import ResultBuckets
from .events import RecognitionRequest
from .segment_state import (  # is_segment_event: face-recognition's handler asks this module
    SegmentRequest, attempt_key, claim_key, create, exists, is_segment_event, list_keys, part_key, plan_key, read_json, run_prefix, short_hash,
)  # fmt: skip
from .stage1 import budget_within, decode_budget, frame_key, invocation_deadline, local_name
from .storage import EVENT_META, RESULT_TAGGING, client, download, log, metadata_text, result_done, write_result

# Attempts Lambda makes of an asynchronous invocation: 1 + the 2 retries facerec_cli/pipeline/stack.py
# configures (MAX_RETRY_ATTEMPTS), as run-local's dispatcher does.
MAX_ATTEMPTS = 3
# Seconds of an invocation kept back from a segment's decode budget: the part, the merge (reading the
# parts, the best-view crops) and the result.
RESERVE_S = 30.0
MIN_BUDGET_S = 10.0
TIMELINE_SUFFIX = ".timeline/"  # <stem>.timeline/<n>.jpg: best-view crops beside the result (FACEREC_ANNOTATE=1)




def _timeline() -> Any:
    """``lambdas.core.timeline``, imported on first use: it needs numpy, and the on-failure function runs
    in the splitting image (no numpy) and imports this module for :func:`fail_segment`."""
    from .core import timeline

    return timeline


def _face_groups() -> Any:
    """``lambdas.core.face_groups`` (the merge's rows), imported on first use for the same reason."""
    from .core import face_groups

    return face_groups


def scan(*args: Any, **kwargs: Any) -> Any:
    """``core.timeline.scan`` (a name of this module, so that tests can stand in for it)."""
    return _timeline().scan(*args, **kwargs)


# ------------------------------------------------------------------------------ video-splitting side


def plan_requests(upload: Any, env: Any, video: media.Video, stage1_bucket: str, timings_ms: dict[str, float]) -> list[SegmentRequest]:
    """The segment requests of an opened upload (``upload``: lambdas.events.Upload)."""
    duration = video.duration
    plan = sampling.segment_plan(duration, env.segment_seconds)  # numpy-free: this runs in the splitting image
    source = {"bucket": upload.bucket, "key": upload.key, "etag": upload.etag, "size": upload.size, "event_id": upload.event_id}
    return [
        SegmentRequest(stage1_bucket, upload.stem, upload.video, source, i, len(plan), start, end, env.timeline_fps, duration, dict(timings_ms))
        for i, (start, end) in enumerate(plan)
    ]


def fan_out(upload: Any, env: Any, deadline: float | None = None) -> str:
    """video-splitting with a timeline: first frame, plan marker, one asynchronous Invoke per segment.
    A video that cannot be read gets its ``error`` result here. Returns "split" or "error"."""
    started = time.perf_counter()
    s3 = client("s3")
    with tempfile.TemporaryDirectory(prefix="facerec-split-") as tmp:
        try:
            if upload.size > env.max_bytes:
                raise InputError(
                    f"{upload.video}: {upload.size / 1e6:.1f} MB is over the limit of {env.max_bytes / 1e6:.1f} MB "
                    "(raise FACEREC_MAX_BYTES on the video-splitting function)"
                )
            local = Path(tmp) / local_name(upload.key)
            s3.download_file(upload.bucket, upload.key, str(local))
            with media.open_video(local, timeout=decode_budget(env, deadline), name=upload.video) as video:
                sampling.check_duration(Path(upload.video), video.duration, env.max_seconds)
                first = next(iter(video.frames([0.0])))  # the course's <stem>.jpg; also proves the video decodes
                s3.put_object(
                    Bucket=env.stage1_bucket, Key=frame_key(upload.stem, 0), Body=images.encode_jpeg(first.image), ContentType="image/jpeg",
                    Metadata={EVENT_META: upload.event_id, "t": f"{first.t:.3f}"},
                )  # fmt: skip
                requests = plan_requests(upload, env, video, env.stage1_bucket, {"split": (time.perf_counter() - started) * 1000})
        except InputError as exc:
            log("refused", key=upload.key, error=str(exc))
            write_result(env.results, upload.stem, error_result(upload.video, str(exc)), upload.event_id)
            return "error"
    s3.put_object(Bucket=env.stage1_bucket, Key=plan_key(upload.stem, upload.event_id, len(requests)), Body=b"", Metadata={EVENT_META: upload.event_id})
    lam = client("lambda")
    for request in requests:
        lam.invoke(FunctionName=env.recognition_function, InvocationType="Event", Payload=json.dumps(request.to_dict()).encode())
    log("split into segments", key=upload.key, segments=len(requests), seconds=env.segment_seconds, fps=env.timeline_fps,
        ms=round((time.perf_counter() - started) * 1000))  # fmt: skip
    return "split"


# ------------------------------------------------------------------------------- the video, cached

_cache_lock = threading.Lock()
_cached: dict[str, Path] = {}  # "bucket/key#etag" -> local file: the last video downloaded in this container


def video_file(request: SegmentRequest | RecognitionRequest) -> Path:
    """The upload on local disk: downloaded once per container while its segments (or a video's further
    samples) keep coming (one video at a time: /tmp is 512 MB by default in Lambda)."""
    src = request.source
    ident = f"{src.get('bucket')}/{src.get('key')}#{src.get('etag')}"
    with _cache_lock:
        path = _cached.get(ident)
        if path is not None and path.is_file():
            return path
        for old in _cached.values():
            old.unlink(missing_ok=True)
        _cached.clear()
        folder = Path(tempfile.gettempdir()) / "facerec-videos"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = Path(str(src.get("key", ""))).suffix.lower()
        path = folder / f"{short_hash(ident, 24)}{suffix if suffix.isascii() and len(suffix) <= 9 else ''}"
        partial = path.with_name(path.name + f".{os.getpid()}.part")
        size = src.get("size")
        download(src["bucket"], src["key"], partial, int(size) if size is not None else None)
        partial.replace(path)
        _cached[ident] = path
        return path


# ------------------------------------------------------------------------------- face-recognition side


def _request_id(context: Any) -> str:
    return str(getattr(context, "aws_request_id", "") or uuid.uuid4())


def _budget(request: SegmentRequest, deadline: float | None) -> float:
    return budget_within(_timeline().scan_budget(request.duration, request.fps, request.start, request.end), deadline, RESERVE_S, MIN_BUDGET_S)


def recognise_segment(request: SegmentRequest, recogniser: Any, deadline: float | None = None) -> dict[str, Any]:
    """The part of one segment: its observations (or, for an input error, its failure)."""
    started_at = time.time()
    t0 = time.perf_counter()
    try:
        path = video_file(request)
        download_ms = (time.perf_counter() - t0) * 1000
        with media.open_video(path, timeout=_budget(request, deadline), name=request.video) as video:
            found = scan(recogniser, video, request.fps, request.start, request.end)
    except FacerecError as exc:  # the same input fails the same way on a retry: a failed part now
        return failed_part(request, str(exc))
    timings = dict(found.timings_ms)
    timings["download"] = download_ms
    return {
        "status": "ok", "segment": request.segment, "count": request.count, "start": request.start, "end": request.end,
        "frames": found.frames, "model": recogniser.gallery.weights, "started_at": started_at,
        "timings_ms": timings, "observations": [o.to_dict() for o in found.observations],
    }  # fmt: skip


def failed_part(request: SegmentRequest, message: str) -> dict[str, Any]:
    return {"status": "failed", "segment": request.segment, "count": request.count, "start": request.start, "end": request.end, "error": message}


def _put_part(s3: Any, request: SegmentRequest, part: dict[str, Any]) -> bool:
    key = part_key(request.stem, request.event_id, request.segment, request.count)
    body = json.dumps(part, separators=(",", ":")).encode()
    return create(s3, request.stage1_bucket, key, body, ContentType="application/json", Metadata={EVENT_META: request.event_id, "status": part["status"]})


def _attempt(s3: Any, request: SegmentRequest, request_id: str) -> int:
    """This attempt's number (1, 2, 3...) for the invocation ``request_id``, recorded in stage-1."""
    for n in range(1, MAX_ATTEMPTS + 1):
        if create(s3, request.stage1_bucket, attempt_key(request.stem, request.event_id, request.segment, request_id, n), b""):
            return n
    return MAX_ATTEMPTS


def handle_segment(event: dict[str, Any], env: Any, context: Any = None) -> dict[str, Any]:
    """face-recognition for one segment: its part, then the merge if it is the last to finish."""
    request = SegmentRequest.from_dict(event)
    if request.event_id and result_done(env.results, request.stem, request.event_id):
        log("duplicate segment skipped: the video's result is written", stem=request.stem, segment=request.segment)
        return {"stem": request.stem, "segment": request.segment, "outcome": "duplicate"}
    s3 = client("s3")
    request_id = _request_id(context)
    key = part_key(request.stem, request.event_id, request.segment, request.count)
    if exists(s3, request.stage1_bucket, key):
        log("segment already recognised (a duplicate or a retry)", stem=request.stem, segment=request.segment)
    else:
        try:
            try:
                from .warm import recogniser  # here: numpy and onnxruntime (see _timeline)

                rec = recogniser(env)
            except FacerecError as exc:  # no gallery, foreign weights: the same on every attempt
                part = failed_part(request, str(exc))
            else:
                part = recognise_segment(request, rec, invocation_deadline(context))
        except Exception as exc:
            # Lambda retries this invocation (same request id); on its last attempt the segment fails
            # for good, and says so in the video's result instead of leaving it unanswered.
            if _attempt(s3, request, request_id) >= MAX_ATTEMPTS:
                fail_segment(s3, env.results, request, f"{type(exc).__name__}: {exc}", request_id)
            raise
        if not _put_part(s3, request, part):
            log("segment part written by a duplicate first", stem=request.stem, segment=request.segment)
        log("segment recognised", stem=request.stem, segment=request.segment, count=request.count, status=part["status"],
            faces=len(part.get("observations", [])), frames=part.get("frames", 0))  # fmt: skip
        if part["status"] != "ok":  # an input error: the video's answer is an error now, not after the others
            outcome = fail_segment(s3, env.results, request, str(part.get("error")), request_id)
            return {"stem": request.stem, "segment": request.segment, "outcome": outcome}
    outcome = complete(s3, env, request, request_id)
    return {"stem": request.stem, "segment": request.segment, "outcome": outcome}


# --------------------------------------------------------------------------------------- the merge


def _claim(s3: Any, request: SegmentRequest, owner: str) -> bool:
    """True when ``owner`` holds the merge claim: it created it now, or it did before (a retry)."""
    key = claim_key(request.stem, request.event_id)
    body = json.dumps({"owner": owner, "segment": request.segment}).encode()
    if create(s3, request.stage1_bucket, key, body, ContentType="application/json"):
        return True
    holder = read_json(s3, request.stage1_bucket, key) or {}
    return holder.get("owner") == owner


def complete(s3: Any, env: Any, request: SegmentRequest, request_id: str) -> str:
    """After this segment's part: merge if every part is there and this invocation wins the claim."""
    prefix = run_prefix(request.stem, request.event_id)
    suffix = f"-of-{request.count:04d}.json"
    parts = sorted(k for k in list_keys(s3, request.stage1_bucket, prefix) if k.startswith(prefix + "part-") and k.endswith(suffix))
    if len(parts) < request.count:
        return "waiting"
    if not _claim(s3, request, request_id):
        return "merged elsewhere"
    if result_done(env.results, request.stem, request.event_id, s3):
        return "merged"  # a retry of the claim's holder after its result was written
    merge(s3, env, request, parts)
    return "merged"


def merge(s3: Any, env: Any, request: SegmentRequest, keys: list[str]) -> Result:
    """All parts to the video's result: the timeline of all observations (as one pass would make it),
    or an ``error`` naming the segments that failed. Best-view crops with FACEREC_ANNOTATE=1."""
    started = time.perf_counter()
    parts = [p for p in (read_json(s3, request.stage1_bucket, k) for k in keys) if p is not None]
    failed = sorted((p for p in parts if p.get("status") != "ok"), key=lambda p: p["segment"])
    if failed or len(parts) < request.count:
        result = failure_result(request, failed)
    else:
        observations = [_face_groups().Observation.from_dict(o) for p in parts for o in p.get("observations", [])]
        timings: dict[str, float] = {}
        for p in parts:
            for stage, ms in p.get("timings_ms", {}).items():
                timings[stage] = timings.get(stage, 0.0) + float(ms)
        timings.update(request.timings_ms)
        first_start = min(float(p.get("started_at", time.time())) for p in parts)
        result = _face_groups().timeline_result(
            request.video, observations, frames=sum(int(p.get("frames", 0)) for p in parts), model=parts[0].get("model"),
            fps=request.fps, duration=request.duration, segments=request.count, timings_ms=timings,
        )  # fmt: skip
        if env.annotate and result.timeline and result.timeline.people:
            store_best_views(s3, env.results.details, request, result)
        result.timings_ms["merge"] = (time.perf_counter() - started) * 1000
        result.timings_ms["recognise"] = (time.time() - first_start) * 1000  # first segment's start to the result
    write_result(env.results, request.stem, result, request.event_id, s3)
    log("merged", stem=request.stem, segments=request.count, status=result.status, name=result.name,
        people=len(result.timeline.people) if result.timeline else 0)  # fmt: skip
    return result


def failure_result(request: SegmentRequest, failed: list[dict[str, Any]]) -> Result:
    if not failed:
        return error_result(request.video, f"{request.video}: a segment's part is missing; upload the video again")
    named = "; ".join(
        f"segment {p['segment'] + 1} of {p['count']} ({float(p['start']):g}-" + ("end" if p.get("end") is None else f"{float(p['end']):g} s")
        + f"): {p.get('error') or 'failed'}"
        for p in failed
    )
    return error_result(request.video, f"{request.video}: no timeline, {len(failed)} of {plural(request.count, 'segment')} failed: {named}")


def fail_segment(s3: Any, output_bucket: ResultBuckets | str, request: SegmentRequest | dict[str, Any], message: str, owner: str = "") -> str:
    """A segment failed for good (its last attempt, ``owner`` its request id; or the failure hook of the
    local runtime, which knows none): record the failure as its part and write the video's ``error``
    result naming it, unless the video's result is decided elsewhere. Idempotent. Returns what it did."""
    if isinstance(request, dict):
        request = SegmentRequest.from_dict(request)
    if request.event_id and result_done(output_bucket, request.stem, request.event_id, s3):
        return "result already written"
    if not _put_part(s3, request, failed_part(request, message)):
        part = read_json(s3, request.stage1_bucket, part_key(request.stem, request.event_id, request.segment, request.count)) or {}
        if part.get("status") == "ok":
            # It had stored its part and failed after: in the merge (it holds the claim), or before
            # claiming it while being the last (every part is in, nobody merges). Otherwise the last
            # segment to finish merges as usual.
            holder = read_json(s3, request.stage1_bucket, claim_key(request.stem, request.event_id))
            if holder is None:
                prefix = run_prefix(request.stem, request.event_id)
                suffix = f"-of-{request.count:04d}.json"
                done = [k for k in list_keys(s3, request.stage1_bucket, prefix) if k.startswith(prefix + "part-") and k.endswith(suffix)]
                if len(done) < request.count:
                    return "part already written"
            elif not (holder.get("segment") == request.segment and (not owner or holder.get("owner") == owner)):
                return "merge held elsewhere"
    if not (_claim(s3, request, f"failed:{request.segment}:{owner}") or _claim_holder_is(s3, request, owner)):
        holder = read_json(s3, request.stage1_bucket, claim_key(request.stem, request.event_id)) or {}
        if holder.get("segment") != request.segment:
            return "merge held elsewhere"  # another segment merges, and sees this failed part
    if request.event_id and result_done(output_bucket, request.stem, request.event_id, s3):
        return "result already written"
    write_result(output_bucket, request.stem, failure_result(request, [failed_part(request, message)]), request.event_id, s3)
    log("segment failed", stem=request.stem, segment=request.segment, error=message)
    return "error result written"


def _claim_holder_is(s3: Any, request: SegmentRequest, owner: str) -> bool:
    if not owner:
        return False
    holder = read_json(s3, request.stage1_bucket, claim_key(request.stem, request.event_id)) or {}
    return holder.get("owner") == owner


def store_best_views(s3: Any, bucket: str, request: SegmentRequest, result: Result) -> None:
    """``<stem>.timeline/<n>.jpg``: a crop of each row's best view, decoded again from the video (a
    few seeks); the rows name their crop. And ``<stem>.annotated.jpg`` as without a timeline: the frame
    with the most faces, drawn. A failure here is logged and never fails the result."""
    from .core.annotate import annotate_frame, annotated_key, best_frame, jpeg_bytes

    assert result.timeline is not None
    try:
        path = video_file(request)
        index = best_frame(result.faces)
        if index is not None:
            with media.open_video(path, name=request.video) as video:
                frame = next(iter(video.frames([round(index / request.fps, 3)])))
            body = jpeg_bytes(annotate_frame(frame.image, result.faces, index))
            s3.put_object(Bucket=bucket, Key=annotated_key(request.stem), Body=body, ContentType="image/jpeg",
                          Metadata={EVENT_META: request.event_id, "frame": str(index)}, Tagging=RESULT_TAGGING)  # fmt: skip
        crops = _timeline().best_view_crops(path, result.timeline, name=request.video)
        for n, person in enumerate(result.timeline.people, start=1):
            body = crops.get(person.person)
            if body is None:
                continue
            key = f"{request.stem}{TIMELINE_SUFFIX}{n}.jpg"
            # Tagged as a result: it expires with the results (--retain-days). The name percent-encoded: S3 metadata is ASCII.
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg", Tagging=RESULT_TAGGING,
                          Metadata={EVENT_META: request.event_id, "person": metadata_text(person.person)})  # fmt: skip
            person.image = key
    except Exception as exc:  # noqa: BLE001 - pictures are an extra; the result must still be written
        log("best views not stored", stem=request.stem, error=f"{type(exc).__name__}: {exc}")


__all__ = ["complete", "fail_segment", "fan_out", "handle_segment", "is_segment_event", "merge", "store_best_views", "video_file"]
