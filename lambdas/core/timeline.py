"""Who is on screen, and when: the face timeline of a video.

Sampling. Frames lie on one grid, frame ``k`` at ``t = k / fps`` (``DEFAULT_FPS``: 2 per second), and a
part of the video ``[start, end)`` takes the grid points inside it (:func:`grid`). The segments of a
fanned-out video (``lambdas/segments.py``) therefore sample exactly the frames a single pass samples,
and the frame numbers in the result are grid numbers in both cases. :func:`scan` decodes its part in one
sequential pass (``media.Video.frames`` seeks to the first point and decodes forward), detects and
embeds in batches of ``BATCH`` frames and keeps no frame beyond the batch in hand: memory stays bounded
whatever the length. What a scan keeps is one :class:`~face_groups.Observation` per face (box, gallery
match, the embedding as float16: 1 KB a face); ``face_groups.py`` turns them into the timeline's rows,
on the observations alone, so that a timeline merged from segments is the one a single pass gives.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import images, media, sampling
from .errors import InputError
from .media import Frame
from .face_groups import Observation, timeline_result
from .results import Appearance, Result, Timeline, error_result

DEFAULT_FPS = 2.0
BATCH = 8  # frames detected and embedded together (16 was no faster, and held twice the memory)
CROP_SIZE = 160  # pixels, long side of a best-view crop
CROP_MARGIN = 0.3  # of the box's size, added around it in a crop
DEFAULT_MAX_SECONDS = 3600.0  # how far a grid reaches into a video whose container gives no duration
# Seconds of scanning allowed per sampled frame on top of the decode budget (detection and embedding
# run between decoded frames, and media counts the budget in wall time from opening the video).
SECONDS_PER_FRAME = 5.0


# -------------------------------------------------------------------------------------- sampling


def grid(duration: float | None, fps: float, start: float = 0.0, end: float | None = None, *, limit: float = DEFAULT_MAX_SECONDS) -> list[tuple[int, float]]:
    """``(k, t)`` for the grid points ``t = k / fps`` in ``[start, end)`` (``end``: the duration) and
    before the end of the video; times rounded to the millisecond, as ``sampling.sample_times``."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    stop = min(x for x in (end, duration, limit) if x is not None)
    points = []
    k = max(0, math.ceil(start * fps - 1e-6))
    while k / fps < stop - 1e-6:
        points.append((k, round(k / fps, 3)))
        k += 1
    return points


@dataclass
class Scan:
    observations: list[Observation] = field(default_factory=list)
    frames: int = 0  # sampled frames decoded and looked at
    timings_ms: dict[str, float] = field(default_factory=dict)


def _observe(recogniser: Any, frames: list[Frame], watch: Any) -> list[Observation]:
    encoded = recogniser.encoder.encode(frames, watch)
    if not encoded:
        return []
    started = time.perf_counter()
    matches = recogniser.match(encoded)
    watch.add("match", started)
    return [
        Observation(
            frame=e.frame.index, t=float(e.frame.t), box=[float(v) for v in e.detection.box], prob=float(e.detection.prob),
            name=m.name, distance=float(m.distance), nearest=m.nearest, embedding=e.embedding.astype(np.float16), reason=m.reason,
        )
        for e, m in zip(encoded, matches)
    ]


def scan(
    recogniser: Any,
    video: media.Video,
    fps: float = DEFAULT_FPS,
    start: float = 0.0,
    end: float | None = None,
    *,
    batch: int = BATCH,
    on_batch: Callable[[int], None] | None = None,
) -> Scan:
    """Observations of the faces in the grid frames of ``[start, end)`` of an open video (``recogniser``:
    a :class:`~lambdas.core.recognise.Recogniser`: its encoder, gallery and threshold). InputError when
    the video cannot be decoded; the decode budget is the video's (``media.open_video(timeout=...)``)."""
    from .recognise import Stopwatch

    watch = Stopwatch()
    points = grid(video.duration, fps, start, end)
    found = Scan()
    if not points:
        return found
    pending: list[Frame] = []
    frames: Iterator[Frame] = iter(video.frames([t for _, t in points]))
    while True:
        started = time.perf_counter()
        frame = next(frames, None)
        watch.add("decode", started)
        if frame is not None:
            pending.append(Frame(points[frame.index][0], frame.t, frame.image))
            found.frames += 1
        if pending and (frame is None or len(pending) >= batch):
            found.observations += _observe(recogniser, pending, watch)
            pending = []  # the frames go: only observations are kept
            if on_batch:
                on_batch(found.frames)
        if frame is None:
            break
    found.timings_ms = watch.ms
    return found


def scan_budget(duration: float | None, fps: float, start: float = 0.0, end: float | None = None, base: float = media.DEFAULT_DECODE_TIMEOUT) -> float:
    """A decode budget for scanning ``[start, end)``: media counts it in wall time from opening, and
    detection runs between decoded frames."""
    return base + SECONDS_PER_FRAME * len(grid(duration, fps, start, end))


# ------------------------------------------------------------------------------------ best views


def crop_view(image: Image.Image, box: list[float], size: int = CROP_SIZE) -> bytes:
    """A JPEG of the face in ``box`` with some room around it, ``size`` pixels on its long side at most."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
    area = (max(0, int(x1 - mx)), max(0, int(y1 - my)), min(image.width, int(x2 + mx)), min(image.height, int(y2 + my)))
    face = image.crop(area)
    face.thumbnail((size, size))
    buffer = io.BytesIO()
    face.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def best_view_crops(path: Path, timeline: Timeline, *, timeout: float = media.DEFAULT_DECODE_TIMEOUT, name: str | None = None) -> dict[str, bytes]:
    """person -> JPEG crop of its best view, decoded again from the video (seeks to the few frames
    needed: nothing was kept from the scan). An image yields its one frame."""
    if not timeline.people:
        return {}
    if images.is_image(path):
        image = images.load_image(path)
        return {p.person: crop_view(image, p.best.box) for p in timeline.people}
    wanted: dict[float, list[Appearance]] = {}
    for person in timeline.people:
        wanted.setdefault(round(person.best.frame / timeline.fps, 3), []).append(person)
    times = sorted(wanted)
    crops = {}
    with media.open_video(path, timeout=timeout, name=name) as video:
        for frame in video.frames(times):
            for person in wanted[times[frame.index]]:
                crops[person.person] = crop_view(frame.image, person.best.box)
    return crops


# ----------------------------------------------------------------------------------- one pass


def recognise_timeline(
    recogniser: Any, path: Path, *, fps: float = DEFAULT_FPS, video: str | None = None, max_seconds: float | None = None,
    timeout: float | None = None, on_batch: Callable[[int], None] | None = None,
) -> Result:
    """``facerec identify --timeline``: the whole video in one sequential pass; an image is one frame.
    A bad input becomes an ``error`` result, never an exception."""
    name = video or path.name
    started = time.perf_counter()
    try:
        if images.is_image(path):
            found = Scan(_observe(recogniser, [Frame(0, 0.0, images.load_image(path))], _watch()), 1)
            duration = None
        else:
            with media.open_video(path, name=name) as opened:
                sampling.check_duration(Path(name), opened.duration, max_seconds)
                # Its budget counts from opening, in wall time: widened for the detection between frames.
                opened.timeout = timeout if timeout is not None else scan_budget(opened.duration, fps)
                found = scan(recogniser, opened, fps, on_batch=on_batch)
                duration = opened.duration
    except InputError as exc:
        return error_result(name, str(exc), total=(time.perf_counter() - started) * 1000)
    return timeline_result(
        name, found.observations, frames=found.frames, model=recogniser.gallery.weights, fps=fps, duration=duration,
        timings_ms=found.timings_ms,
    )  # fmt: skip


def _watch() -> Any:
    from .recognise import Stopwatch

    return Stopwatch()
