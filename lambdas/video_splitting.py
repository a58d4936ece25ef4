"""Lambda ``video-splitting``: S3 ObjectCreated on the input bucket -> sampled frames in stage-1 ->
asynchronous Invoke of ``face-recognition``.

Stage-1 layout (the course's): ``<stem>.jpg`` is the first frame; further frames are
``<stem>/001.jpg``, ``<stem>/002.jpg``... A refused or unreadable upload gets its ``error`` result
written here, so every accepted upload ends with exactly one result.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from .core import media
from .core.errors import InputError
from .core.results import error_result
from .env import SplittingEnv
from .events import FrameRef, RecognitionRequest, Upload, uploads
from .storage import EVENT_META, already_done, client, log, write_result


def frame_key(stem: str, index: int) -> str:
    return f"{stem}.jpg" if index == 0 else f"{stem}/{index:03d}.jpg"


def split(upload: Upload, env: SplittingEnv, workdir: Path) -> RecognitionRequest:
    """Download, check, sample and store frames; InputError for a video we cannot or will not read."""
    started = time.perf_counter()
    if upload.size > env.max_bytes:
        raise InputError(
            f"{upload.video}: {upload.size / 1e6:.1f} MB is over the limit of {env.max_bytes / 1e6:.1f} MB "
            "(raise FACEREC_MAX_BYTES on the video-splitting function)"
        )
    # The local file keeps the video's own name (error messages name it); only its last 120
    # characters are kept, within any file system's limit.
    local = workdir / Path(upload.key).name[-120:]
    client("s3").download_file(upload.bucket, upload.key, str(local))
    frames = []
    # Decoded in process; each frame is encoded and stored as soon as it is decoded, frame 0 first.
    with media.open_video(local, timeout=env.decode_timeout) as video:
        media.check_duration(local, video.duration, env.max_seconds)
        times = media.sample_times(video.duration, env.frames, env.fps or None)
        for frame in video.frames(times):
            key = frame_key(upload.stem, frame.index)
            client("s3").put_object(
                Bucket=env.stage1_bucket,
                Key=key,
                Body=media.encode_jpeg(frame.image),
                ContentType="image/jpeg",
                Metadata={EVENT_META: upload.event_id, "t": f"{frame.t:.3f}"},
            )
            frames.append(FrameRef(key=key, t=frame.t))
    return RecognitionRequest(
        stage1_bucket=env.stage1_bucket,
        stem=upload.stem,
        video=upload.video,
        frames=frames,
        source={"bucket": upload.bucket, "key": upload.key, "etag": upload.etag, "size": upload.size, "event_id": upload.event_id},
        timings_ms={"split": (time.perf_counter() - started) * 1000},
    )


def handle_upload(upload: Upload, env: SplittingEnv) -> str:
    if already_done(env.stage1_bucket, frame_key(upload.stem, 0), upload.event_id):
        log("duplicate event skipped", key=upload.key, event_id=upload.event_id)
        return "duplicate"
    with tempfile.TemporaryDirectory(prefix="facerec-split-") as tmp:
        try:
            request = split(upload, env, Path(tmp))
        except InputError as exc:
            log("refused", key=upload.key, error=str(exc))
            write_result(env.output_bucket, upload.stem, error_result(upload.video, str(exc)), upload.event_id)
            return "error"
    client("lambda").invoke(
        FunctionName=env.recognition_function,
        InvocationType="Event",
        Payload=json.dumps(request.to_dict()).encode(),
    )
    log("split", key=upload.key, frames=len(request.frames), ms=round(request.timings_ms["split"]))
    return "split"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    env = SplittingEnv.from_environ()
    outcomes = {u.key: handle_upload(u, env) for u in uploads(event)}
    return {"videos": outcomes}
