"""Reading videos, in process, with PyAV (``av``: ffmpeg's libraries in the wheel): opening and probing
a video, decoding its frames lazily within a decode budget. Images are :mod:`.images`' (Pillow), which
frames to take :mod:`.sampling`'s.

A video is opened once (:func:`open_video`); its first video stream gives the duration, frame rate,
size and display rotation. ``Video.frames(times)`` then decodes, for each sampled time ``t``
(:func:`.sampling.sample_times`), the first frame whose timestamp is at or after ``t``:

- close samples are taken in one sequential decode that stops after the last one needed;
- a far sample (the keyframe before it lies past what has been decoded so far; without a seek index,
  more than ``SEEK_WHEN_GAP_OVER_S`` ahead) by seeking to the keyframe before ``t`` and decoding
  forward from there.

``Frame.t`` is the frame's own presentation time, in seconds from the start of the video stream (not
the sampled time: the two differ by less than one frame interval). Frames come out upright: the
display rotation that phone videos carry (a display matrix) is applied, as players and ffmpeg's
autorotate do. Frames are RGB Pillow images, decoded in memory; the video-splitting function stores
them as JPEG (:func:`.images.encode_jpeg`), ``facerec identify`` uses them as decoded.

A decode budget keeps any file from hanging or spinning a worker: a time limit for the whole video
(the callers' ``timeout``, in seconds, counted from opening the file and checked before every decoded
frame) and ``MAX_FRAMES_PER_SAMPLE`` decoded frames per sampled frame. Exceeding either is an
:class:`InputError`, like every other reason a file cannot be read; video frames over ``MAX_PIXELS``
(:mod:`.images`' limit) are refused before they are decoded.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import InputError
from .images import MAX_PIXELS, check_file, megapixels

# PyAV, imported on first use (``_require_av``): the recognition function only reads JPEGs and images,
# and its image need not carry av's ~100 MB.
av: Any = None


def _require_av() -> None:
    global av
    if av is None:
        import importlib

        module = importlib.import_module("av")
        importlib.import_module("av.logging")
        av = module


# The suffixes the input bucket's notification triggers on (facerec_cli.pipeline.stack).
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")

# Seconds of decoding allowed per video when the caller gives none (FACEREC_DECODE_TIMEOUT in Lambda).
DEFAULT_DECODE_TIMEOUT = 60.0
# Frames decoded to reach one sampled frame (from the previous one or from the keyframe a seek landed
# on): a keyframe interval of 100 s at 30 fps. More means broken timestamps or a pathological file.
MAX_FRAMES_PER_SAMPLE = 3000
# Packets the decoder may reject (damaged data) before the video counts as unreadable; ffmpeg skips
# such packets and goes on, and so do we, up to this many.
MAX_BAD_PACKETS = 50
# Without a seek index (some containers have none), seek when the next sample is further ahead than
# this; with one, seek exactly when the keyframe before the sample lies past what was decoded.
SEEK_WHEN_GAP_OVER_S = 10.0


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None  # seconds; None when the container does not say
    width: int  # as displayed: after the display rotation
    height: int
    fps: float | None
    rotation: int = 0  # degrees counter-clockwise applied to the stored frames to show them (0/90/180/270)


@dataclass
class Frame:
    index: int  # position of the sampled time in the requested times (0 = the first frame)
    t: float  # the frame's own timestamp: seconds from the start of the video
    image: Image.Image  # RGB, upright


def _check_video_pixels(name: str, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise InputError(
            f"{name}: the video's frames are {width}x{height} ({megapixels(width * height)}), over the limit "
            f"of {megapixels(limit)}; scale the video down (e.g. to 1920x1080) and upload it again"
        )


def _upright(image: Image.Image, rotation: int) -> Image.Image:
    """``rotation``: degrees counter-clockwise that turn the stored frame into the displayed one."""
    turn = round(rotation / 90) % 4  # a display matrix of phones is always a multiple of 90 degrees
    if turn == 1:
        return image.transpose(Image.Transpose.ROTATE_90)
    if turn == 2:
        return image.transpose(Image.Transpose.ROTATE_180)
    if turn == 3:
        return image.transpose(Image.Transpose.ROTATE_270)
    return image


def _picture(frame: av.VideoFrame) -> Image.Image:
    """The frame as an upright RGB image: the same pixels as PyAV's ``to_image``, in less than half its
    time (1080p: 5.4 against 16.2 ms; 720p: 2.5 against 6.8 ms, measured), and without numpy (the
    splitting image has none). Pillow copies the plane: an RGB image never shares the frame's memory."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    image = Image.frombuffer("RGB", (rgb.width, rgb.height), plane, "raw", "RGB", plane.line_size, 1)
    return _upright(image, frame.rotation)


def _libav_reason(exc: BaseException) -> str:
    """The library's own last error line ("moov atom not found") when there is one, else the error."""
    log = getattr(exc, "log", None)
    if log and log[2].strip():
        return log[2].strip()
    return getattr(exc, "strerror", None) or str(exc)


class _Libav:
    """libav's error lines, kept for the messages of our errors instead of going to stderr."""

    def __enter__(self) -> list[Any]:
        _require_av()
        if av.logging.get_level() is None:  # PyAV's default drops every line, and with it the reasons
            av.logging.set_level(av.logging.ERROR)
        self._capture = av.logging.Capture(local=False)  # decoder threads log too
        return self._capture.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._capture.__exit__(*exc)


class Video:
    """An opened video file: see :func:`open_video`. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        path: Path,
        *,
        timeout: float = DEFAULT_DECODE_TIMEOUT,
        max_frames_per_sample: int = MAX_FRAMES_PER_SAMPLE,
        max_pixels: int | None = None,
        name: str | None = None,
    ) -> None:
        _require_av()
        self.path = Path(path)
        self.name = name or self.path.name  # what messages call the video (the upload's name, not a temp file's)
        self.timeout = timeout
        self.max_frames_per_sample = max_frames_per_sample
        self.max_pixels = max_pixels if max_pixels is not None else MAX_PIXELS
        self._started = time.monotonic()
        check_file(self.path, self.name)
        name = self.name
        self._keyframes: list[int] | None = None
        self._index_end: int | None = None
        self._read = False  # whether frames() has read from the container yet
        self._skip_before: float | None = None  # frames(): the first timestamp the sample being decoded to may have
        self._skipping = "DEFAULT"  # the decoder's skip_frame setting
        self.decoded = 0  # frames the decoder gave so far (for tests and benchmarks)
        try:
            with _Libav():
                # "file:" + the absolute path: a name like "pipe:1.mp4" is never read as another
                # protocol, and the file may open no other file or URL (an HLS playlist named .mp4).
                self._container = av.open(
                    "file:" + str(self.path.resolve()), mode="r", options={"protocol_whitelist": "file"}
                )
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"{name}: not a readable video ({_libav_reason(exc)})") from exc
        try:
            streams = [s for s in self._container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
            if not streams:
                raise InputError(f"{name}: the file has no video stream (audio only?): nothing to recognise")
            self._stream = stream = streams[0]
            if stream.codec_context is None:
                raise InputError(f"{name}: not a readable video (no decoder for its video codec)")
            self._tb: Fraction = stream.time_base or Fraction(1, 90000)
            self._tbf = float(self._tb)
            self._start: int = stream.start_time if stream.start_time is not None else 0
            cc = stream.codec_context
            self.coded_size = (cc.width, cc.height)
            _check_video_pixels(self.name, cc.width, cc.height, self.max_pixels)
            # The container's duration (the longest stream: what players show, and what the MP4 header
            # says), else the video stream's own.
            if self._container.duration:
                self.duration: float | None = self._container.duration / av.time_base
            elif stream.duration:
                self.duration = float(stream.duration * self._tb)
            else:
                self.duration = None
            rate = stream.average_rate or stream.guessed_rate
            self.fps: float | None = float(rate) if rate else None
            self.rotation: int | None = None  # known once a frame is decoded (it is frame side data)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def info(self) -> VideoInfo:
        """Duration, upright size, frame rate and rotation. The rotation is frame side data: this
        decodes the first frame when none has been decoded yet."""
        if self.rotation is None:
            self.first_frame()
        width, height = self.coded_size
        turn = round((self.rotation or 0) / 90) % 4
        if turn % 2:
            width, height = height, width
        return VideoInfo(duration=self.duration, width=width, height=height, fps=self.fps, rotation=turn * 90)

    def first_frame(self) -> Frame:
        for frame in self.frames([0.0]):
            return frame
        raise AssertionError("frames() yields a frame or raises")  # pragma: no cover

    # --- the decode budget -------------------------------------------------------------------------
    def _check_time(self) -> None:
        if time.monotonic() - self._started > self.timeout:
            raise InputError(
                f"{self.name}: decoding took longer than {self.timeout:g} s and was stopped; is it a valid "
                "video? (a very long one may need a larger FACEREC_DECODE_TIMEOUT)"
            )

    def _check_frames(self, decoded: int, t: float) -> None:
        if decoded > self.max_frames_per_sample:
            raise InputError(
                f"{self.name}: decoded {self.max_frames_per_sample} frames without reaching {t:.2f} s and "
                "stopped; its timestamps look broken, or it has too few keyframes: re-encode it "
                "(e.g. ffmpeg -i in.mp4 out.mp4) and upload it again"
            )

    # --- decoding ----------------------------------------------------------------------------------
    def _keyframe_index(self) -> tuple[list[int], int | None]:
        """Timestamps of the keyframes in the container's index, and the last timestamp it covers (None
        when it has no index). MP4 and AVI index every frame up front; Matroska reads its index only
        at the first seek, so early on it covers nothing past the start."""
        if self._keyframes is None:
            entries = getattr(self._stream, "index_entries", ())  # PyAV >= 17
            self._keyframes = sorted(e.timestamp for e in entries if e.is_keyframe)
            self._index_end = max((e.timestamp for e in entries), default=None)
        return self._keyframes, self._index_end

    def _should_seek(self, position: int | None, target: int) -> bool:
        """Seek rather than decode forward from ``position`` (the last decoded frame's timestamp; None
        before the first) to reach ``target``? Exactly when the keyframe before the target lies past
        the position; without an index that covers the target, when the target is far ahead."""
        here = self._start if position is None else position
        if target <= here:
            return False
        keyframes, index_end = self._keyframe_index()
        if index_end is not None and index_end >= target:
            i = bisect_right(keyframes, target) - 1
            return i >= 0 and keyframes[i] > here
        return (target - here) * self._tbf > SEEK_WHEN_GAP_OVER_S

    def _decoded(self, errors: list[str]) -> Iterator[av.VideoFrame]:
        """Frames in presentation order from the container's current position; packets the decoder
        rejects are skipped (as ffmpeg does), up to MAX_BAD_PACKETS; a read error ends the stream."""
        packets = self._container.demux(self._stream)
        bad = 0
        while True:
            self._check_time()
            try:
                with _Libav():
                    packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as exc:  # damaged container data: what came before stands
                errors.append(_libav_reason(exc))
                try:
                    with _Libav():
                        frames = self._stream.codec_context.decode(None)  # drain the decoder
                except (av.FFmpegError, OSError):
                    return
                yield from frames
                return
            # A frame no other frame refers to (most B-frames) and shown before the sample wanted is
            # never the sample nor needed to decode it: the decoder may drop it undecoded.
            skip = "NONREF" if self._skip_before is not None and packet.pts is not None and packet.pts < self._skip_before else "DEFAULT"
            if skip != self._skipping:
                self._stream.codec_context.skip_frame = self._skipping = skip
            try:
                with _Libav():
                    frames = packet.decode()
            except (av.FFmpegError, OSError) as exc:
                errors.append(_libav_reason(exc))
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise InputError(
                        f"{self.name}: not a readable video: over {MAX_BAD_PACKETS} damaged packets ({errors[-1]})"
                    ) from exc
                continue
            self.decoded += len(frames)
            yield from frames

    def frames(self, times: Sequence[float]) -> Iterator[Frame]:
        """For each time of ``times`` (seconds from the start, increasing), the first frame at or after
        it, upright, as ``Frame(index=position in times, t=the frame's own timestamp)``; each decoded
        frame serves one sample at most. Times past the last decodable frame yield nothing; InputError
        when no frame at all can be decoded, or when the decode budget runs out."""
        errors: list[str] = []
        decoder: Iterator[av.VideoFrame] | None = None
        position: int | None = None  # timestamp of the last decoded frame
        step = round(1 / (self.fps * self._tbf)) if self.fps else 0  # one frame, for frames without a timestamp
        yielded = 0
        rewind, self._read = self._read, True  # a second call seeks back: the first one moved the demuxer
        for index, t in enumerate(times):
            self._check_time()
            target = self._start + int(t / self._tbf)  # the timestamp at or just before t
            if rewind or self._should_seek(position, target):
                try:
                    with _Libav():
                        self._container.seek(target, stream=self._stream, backward=True)
                except (av.FFmpegError, OSError) as exc:  # not seekable: decode forward instead
                    errors.append(_libav_reason(exc))
                    if rewind:
                        raise InputError(f"{self.name}: not a readable video: cannot seek in it ({errors[-1]})") from exc
                else:
                    rewind = False
                    decoder = None
                    if self._index_end is None or self._index_end < target:
                        self._keyframes = None  # Matroska has read its index now
            if decoder is None:
                decoder = self._decoded(errors)
            # The sample is the first frame at or after t (below): the decoder may drop what lies before
            # (a tick short of it: float rounding never drops the frame the test below would take).
            self._skip_before = self._start + (t - 0.0005) / self._tbf - 1
            taken = None
            for decoded, frame in enumerate(decoder, 1):
                self._check_frames(decoded, t)
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None:
                    pts = self._start if position is None else position + step
                if frame.width * frame.height > self.max_pixels:
                    _check_video_pixels(self.name, frame.width, frame.height, self.max_pixels)
                position = pts
                if (pts - self._start) * self._tbf >= t - 0.0005:  # sample_times rounds to the millisecond
                    taken = frame
                    break
                self._check_time()
            self._skip_before = None  # what the decoder holds (frames at or past the target) is decoded in full
            if taken is None:
                break  # the end of the video: no frame at or after t, nor after any later time
            self.rotation = taken.rotation
            self._check_time()
            with _Libav():
                image = _picture(taken)
            yield Frame(index, max(0.0, (position - self._start) * self._tbf), image)
            yielded += 1
        if not yielded and times:
            reason = f" ({errors[-1]})" if errors else ""
            raise InputError(f"{self.name}: not a readable video: no frame could be decoded{reason}")

    def frames_at_positions(self, positions: Sequence[int]) -> Iterator[Frame]:
        """For each decode position of ``positions`` (increasing; 0 is the first frame the decoder gives,
        whatever its timestamp), that frame, upright, as ``Frame(index=position in positions, t=its
        timestamp)``; a position past the last frame gets the last frame (as ffmpeg's constant-rate
        output repeats it). Decodes from the start up to the last position wanted. InputError when no
        frame can be decoded, or when the decode budget runs out."""
        errors: list[str] = []
        if self._read:
            with _Libav():
                self._container.seek(self._start, stream=self._stream, backward=True)
        self._read = True

        def picture(frame: av.VideoFrame) -> tuple[float, Image.Image]:
            pts = frame.pts if frame.pts is not None else self._start
            self.rotation = frame.rotation
            with _Libav():
                return max(0.0, (pts - self._start) * self._tbf), _picture(frame)

        wanted = list(positions)
        done = 0
        last: tuple[float, Image.Image] | None = None  # (t, image) of the frame yielded last
        position, frame = -1, None
        for position, frame in enumerate(self._decoded(errors)):
            if frame.width * frame.height > self.max_pixels:
                _check_video_pixels(self.name, frame.width, frame.height, self.max_pixels)
            if done < len(wanted) and wanted[done] == position:
                last = picture(frame)
            while done < len(wanted) and wanted[done] == position:
                yield Frame(done, *last)
                done += 1
            if done == len(wanted):
                return
        if frame is None:
            reason = f" ({errors[-1]})" if errors else ""
            raise InputError(f"{self.name}: not a readable video: no frame could be decoded{reason}")
        if last is None or wanted[done - 1] != position:  # the last frame was not yielded yet
            last = picture(frame)
        for index in range(done, len(wanted)):
            yield Frame(index, *last)


def open_video(
    path: Path, timeout: float = DEFAULT_DECODE_TIMEOUT, *, max_frames_per_sample: int = MAX_FRAMES_PER_SAMPLE,
    name: str | None = None,
) -> Video:
    """Open a video file for :meth:`Video.frames`; InputError when it is missing, empty, not a
    video, has no video stream, or has frames over ``MAX_PIXELS``. ``timeout`` (seconds) is the decode
    budget of everything done with it, counted from now."""
    return Video(path, timeout=timeout, max_frames_per_sample=max_frames_per_sample, name=name)


def probe(path: Path, timeout: float = 30.0) -> VideoInfo:
    """Duration, upright size, frame rate and rotation (decodes the first frame, which also proves
    that the file is a readable video)."""
    with open_video(path, timeout=timeout) as video:
        return video.info()


def duration(path: Path, timeout: float = 30.0) -> float | None:
    """Seconds of video, from the container (nothing is decoded). None when the container does not say."""
    with open_video(path, timeout=timeout) as video:
        return video.duration


