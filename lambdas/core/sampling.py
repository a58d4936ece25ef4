"""Which frames of a file are read: the sampled times of a video (:func:`sample_times`), its parts when
it is fanned out in segments (:func:`segment_plan`), the duration limit, and a file's sampled frames
(an image's one, a video's samples, :func:`sample_frames`, :func:`read_frames`).

:func:`segment_plan` and :func:`sample_times` are arithmetic: the splitting image (no numpy) runs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError
from .images import is_image, load_image
from .media import DEFAULT_DECODE_TIMEOUT, Frame, open_video


def check_duration(path: Path, seconds: float | None, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds is not None and seconds > max_seconds:
        raise InputError(
            f"{path.name}: the video is {seconds:.0f} s long, over the limit of {max_seconds:.0f} s "
            "(raise FACEREC_MAX_SECONDS or trim the video)"
        )


def segment_plan(duration: float | None, seconds: float) -> list[tuple[float, float | None]]:
    """The parts ``[start, end)`` of a video of ``duration`` seconds, ``seconds`` long each (the last
    one shorter): one part for a video no longer than that, or of unknown length (``end`` None: to
    the end of the video, wherever that is)."""
    if duration is None:
        return [(0.0, None)]
    if duration <= seconds or seconds <= 0:
        return [(0.0, float(duration))]
    count = math.ceil(duration / seconds - 1e-6)
    return [(i * seconds, min(float(duration), (i + 1) * seconds)) for i in range(count)]


def sample_times(duration: float | None, count: int, fps: float | None = None) -> list[float]:
    """When to take frames: the first frame always (the course's ``<stem>.jpg``), then either every
    1/fps seconds or, by default, evenly across the whole video so that everyone in it gets a chance."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if fps:
        times = [i / fps for i in range(count)]
        return [t for t in times if duration is None or t < duration] or [0.0]
    if not duration or duration <= 0:
        return [0.0]
    step = duration / count
    return [round(i * step, 3) for i in range(count)]


def sample_frames(
    path: Path,
    count: int = 3,
    fps: float | None = None,
    max_seconds: float | None = None,
    timeout: float = DEFAULT_DECODE_TIMEOUT,
) -> Iterator[Frame]:
    """The sampled frames of a video (``sample_times``), each yielded as soon as it is decoded, frame 0
    first. InputError (before the first frame, or at the frame where the budget ran out) for a video
    that cannot or will not be read, including one over ``max_seconds``."""
    with open_video(path, timeout=timeout) as video:
        check_duration(path, video.duration, max_seconds)
        yield from video.frames(sample_times(video.duration, count, fps))


def read_frames(
    path: Path,
    count: int = 3,
    fps: float | None = None,
    max_seconds: float | None = None,
    timeout: float = DEFAULT_DECODE_TIMEOUT,
) -> tuple[list[Frame], float | None]:
    """Frames of a video (sampled, decoded in memory) or of an image (one frame), and the video's
    duration (None for an image)."""
    if is_image(path):
        return [Frame(0, 0.0, load_image(path))], None
    with open_video(path, timeout=timeout) as video:
        check_duration(path, video.duration, max_seconds)
        frames = list(video.frames(sample_times(video.duration, count, fps)))
        return frames, video.duration
