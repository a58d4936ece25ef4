"""Course-format sample videos (``test_NN.mp4``: a few seconds of one person) made from still photos
with PyAV's H.264 encoder (libx264, in the ``av`` wheel): a slow zoom so consecutive frames differ, as in
a real clip. Used by ``facerec demo``, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from lambdas.core.images import load_image

from facerec_cli.errors import UserError


def _letterboxed(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image scaled to fit ``width`` x ``height``, centred on black (ffmpeg's scale+pad)."""
    scale = min(width / image.width, height / image.height)
    fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return canvas


def _zoomed(canvas: Image.Image, n: int, zoom_per_frame: float) -> Image.Image:
    """Frame ``n`` of a slow zoom (up to 1.5x) on the canvas's centre."""
    width, height = canvas.size
    zoom = min(1 + zoom_per_frame * n, 1.5)
    w, h = width / zoom, height / zoom
    box = ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)
    return canvas.resize((width, height), Image.Resampling.BICUBIC, box=box)


@contextlib.contextmanager
def h264_writer(
    out: Path, size: tuple[int, int], fps: int, timeout: float, what: str, *, audio: bool = False
) -> Iterator[Callable[[Image.Image], None]]:
    """An H.264 MP4 (yuv420p, ``size`` x ``fps``) written with PyAV: yields ``put(picture)``, which
    raises a UserError once ``timeout`` seconds have passed ("could not <what> in N s"). ``audio``: with
    an AAC track (a quiet 440 Hz tone) as long as the video, as phone and course clips have."""
    deadline = time.monotonic() + timeout
    # "file:" + the absolute path: an output named "pipe:x.mp4" is a file like any other.
    with av.open("file:" + str(Path(out).resolve()), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast"}
        sound = container.add_stream("aac", rate=44100, layout="mono") if audio else None
        frames = [0]

        def put(picture: Image.Image) -> None:
            if time.monotonic() > deadline:
                raise UserError(f"could not {what} in {timeout:g} s")
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
            if sound is not None:  # this video frame's share of samples
                start, end = (44100 * frames[0]) // fps, (44100 * (frames[0] + 1)) // fps
                tone = 0.05 * np.sin(2 * np.pi * 440 * np.arange(start, end) / 44100, dtype=np.float32)
                chunk = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None, :], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                container.mux(sound.encode(chunk))
            frames[0] += 1

        yield put
        container.mux(stream.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))


def still_video(
    photo: Path | Image.Image,
    out: Path,
    *,
    seconds: float = 3.0,
    size: tuple[int, int] = (640, 480),
    fps: int = 25,
    zoom_per_frame: float = 0.002,
    timeout: float = 120.0,
    audio: bool = False,
) -> Path:
    """An H.264 MP4 of the photo, letterboxed to ``size``, zooming in slowly (up to 1.5x) on its centre;
    ``audio``: with an AAC track."""
    width, height = size[0] // 2 * 2, size[1] // 2 * 2  # yuv420p needs even sides
    image = photo if isinstance(photo, Image.Image) else load_image(photo)
    canvas = _letterboxed(image.convert("RGB"), width, height)
    try:
        with h264_writer(out, (width, height), fps, timeout, "make a video from the photo", audio=audio) as put:
            for n in range(max(1, round(seconds * fps))):
                put(_zoomed(canvas, n, zoom_per_frame))
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"could not make a video from the photo: {exc}") from exc
    return out


def joined_video(
    pieces: list[tuple[Path, float | None]],
    out: Path,
    *,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    zoom_per_frame: float = 0.001,
    timeout: float = 600.0,
) -> Path:
    """An H.264 MP4 of ``pieces`` one after the other, each letterboxed to ``size`` at ``fps``: a photo
    (``seconds`` of it, zooming in slowly, as :func:`still_video`) or a video (its first ``seconds``, or
    all of it for None, re-timed to ``fps``). Cut points fall on frame boundaries: piece ``k`` starts at
    the sum of the earlier pieces' lengths, rounded to a frame. For tests and benchmarks of timelines
    (who is on screen when), e.g. a 10-minute video made by repeating clips of the test data."""
    from lambdas.core import images, media

    width, height = size[0] // 2 * 2, size[1] // 2 * 2
    try:
        with h264_writer(out, (width, height), fps, timeout, "join the pieces into a video") as put:
            for source, seconds in pieces:
                source = Path(source)
                if images.is_image(source):
                    canvas = _letterboxed(load_image(source), width, height)
                    for n in range(max(1, round((seconds or 3.0) * fps))):
                        put(_zoomed(canvas, n, zoom_per_frame))
                    continue
                with media.open_video(source, timeout=timeout) as video:
                    length = video.duration or 0.0
                    count = max(1, round(min(seconds or length, length) * fps))
                    times = [round(i / fps, 3) for i in range(count)]
                    last = None
                    made = 0
                    for frame in video.frames(times):
                        last = _letterboxed(frame.image, width, height)
                        put(last)
                        made += 1
                    for _ in range(count - made):  # the source ended early: hold its last frame
                        if last is not None:
                            put(last)
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"could not join the pieces into a video: {exc}") from exc
    return out


def repeated_video(source: Path, out: Path, count: int) -> Path:
    """``source`` (an MP4 that starts on a keyframe, as :func:`joined_video` writes) ``count`` times in a
    row, remuxed without re-encoding: a long video in seconds (e.g. a 10-minute one from a 1-minute piece)."""
    try:
        with av.open(str(source)) as src, av.open("file:" + str(Path(out).resolve()), mode="w", format="mp4") as dst:
            video = src.streams.video[0]
            stream = dst.add_stream_from_template(video)
            packets = [p for p in src.demux(video) if p.size]
            if not packets:
                raise UserError(f"{source.name}: no video packets to repeat")
            span = max(p.pts for p in packets) - min(p.pts for p in packets) + (packets[0].duration or 1)
            times = [(p.pts, p.dts) for p in packets]
            for n in range(count):
                for p, (pts, dts) in zip(packets, times):
                    p.stream = stream
                    p.pts, p.dts = pts + n * span, None if dts is None else dts + n * span
                    dst.mux(p)
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"could not repeat {source.name}: {exc}") from exc
    return out
