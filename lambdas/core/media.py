"""Reading videos and images: probing and frame sampling with the ffmpeg binary.

ffmpeg always runs as an argument list (never a shell string), with a timeout, on a file path. Frames
are sampled by seeking (one ``-ss`` input per sampled time in a single ffmpeg process), so a long video
costs a few seeks, not a full decode. The video-splitting function and ``facerec identify`` use the same
sampling, JPEG quality included, so both see the same pixels.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# The suffixes the input bucket's notification triggers on (facerec_cli.deploy.desired).
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
JPEG_QUALITY = 2  # ffmpeg -q:v scale, 2 = visually lossless; what stage-1 stores

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) fps")


@dataclass(frozen=True)
class VideoInfo:
    duration: float | None
    width: int
    height: int
    fps: float | None


@dataclass
class Frame:
    index: int
    t: float  # seconds from the start of the video
    image: Image.Image  # RGB


def ffmpeg_exe() -> str:
    """ffmpeg from FACEREC_FFMPEG, else the one on PATH (the Lambda image), else imageio-ffmpeg's."""
    explicit = os.environ.get("FACEREC_FFMPEG")
    if explicit:
        return explicit
    try:
        import imageio_ffmpeg  # the pip-installed static binary

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise InputError("ffmpeg not found: install the imageio-ffmpeg package or set FACEREC_FFMPEG")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def file_arg(path: Path) -> str:
    """A path as an ffmpeg input or output argument: "file:" + the absolute path, so that a name like
    "pipe:1.mp4" or "-x.mp4" can never be read as an ffmpeg protocol or option."""
    return "file:" + str(Path(path).resolve())



def _run(args: list[str], timeout: float, path: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InputError(
            f"{path.name}: ffmpeg took longer than {timeout:g} s on this file and was stopped; is it a valid "
            "video? (a very long one may need a larger FACEREC_FFMPEG_TIMEOUT)"
        ) from exc


def _last_error_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    interesting = [ln for ln in lines if "rror" in ln or "nvalid" in ln or "moov atom" in ln]
    return (interesting or lines or ["no output"])[-1]


def check_file(path: Path) -> int:
    """Size of a readable, non-empty file; InputError otherwise."""
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise InputError(f"{path.name}: file not found") from exc
    if size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes); upload the video again")
    return size


def probe(path: Path, timeout: float = 30.0) -> VideoInfo:
    """Duration, size and frame rate from ffmpeg's own description of the input."""
    check_file(path)
    proc = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", file_arg(path)], timeout, path)
    text = proc.stderr.decode("utf-8", "replace")
    video = _VIDEO.search(text)
    if "Input #0" not in text or video is None:
        reason = _last_error_line(proc.stderr) if "Input #0" not in text else "it has no video stream"
        raise InputError(f"{path.name}: not a readable video ({reason})")
    duration = None
    if (m := _DURATION.search(text)) is not None:
        h, mi, s = m.groups()
        duration = int(h) * 3600 + int(mi) * 60 + float(s)
    fps_match = _FPS.search(text[video.start() :])
    fps = float(fps_match.group(1)) if fps_match else None
    return VideoInfo(duration=duration, width=int(video.group(1)), height=int(video.group(2)), fps=fps)


MP4_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})


def mp4_duration(path: Path) -> float | None:
    """Duration from an MP4/MOV header (the ``mvhd`` box), without starting ffmpeg; None when the file
    is not a well-formed MP4. Saves one ffmpeg process per video in the splitting function."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            pos = 0
            while pos + 8 <= size:  # top-level boxes; mdat is skipped by seeking
                fh.seek(pos)
                header = fh.read(16)
                box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
                offset = 8
                if box_size == 1:
                    box_size, offset = int.from_bytes(header[8:16], "big"), 16
                elif box_size == 0:
                    box_size = size - pos
                if box_size < offset:
                    return None
                if box_type == b"moov":
                    fh.seek(pos + offset)
                    return _mvhd_duration(fh.read(min(box_size - offset, 1 << 20)))
                pos += box_size
    except OSError:
        return None
    return None


def _mvhd_duration(moov: bytes) -> float | None:
    pos = 0
    while pos + 8 <= len(moov):
        box_size, box_type = int.from_bytes(moov[pos : pos + 4], "big"), moov[pos + 4 : pos + 8]
        if box_type == b"mvhd":
            body = moov[pos + 8 : pos + box_size]
            if not body:
                return None
            if body[0] == 1:  # version 1: 64-bit times
                timescale, duration = int.from_bytes(body[20:24], "big"), int.from_bytes(body[24:32], "big")
            else:
                timescale, duration = int.from_bytes(body[12:16], "big"), int.from_bytes(body[16:20], "big")
            return duration / timescale if timescale else None
        if box_size < 8:
            return None
        pos += box_size
    return None


def duration(path: Path, timeout: float = 30.0) -> float | None:
    """Seconds of video: from the MP4 header when there is one, else from ffmpeg's probe (which also
    rejects files that are not videos). None when the container does not say."""
    check_file(path)
    if path.suffix.lower() in MP4_SUFFIXES and (seconds := mp4_duration(path)) is not None:
        return seconds
    return probe(path, timeout=timeout).duration


def check_duration(path: Path, seconds: float | None, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds is not None and seconds > max_seconds:
        raise InputError(
            f"{path.name}: the video is {seconds:.0f} s long, over the limit of {max_seconds:.0f} s "
            "(raise FACEREC_MAX_SECONDS or trim the video)"
        )


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


# Past this distance between samples, seeking (decoding at most one keyframe interval per sample)
# beats one sequential pass over the video.
SEEK_WHEN_STEP_OVER_S = 10.0


def extract_frames(path: Path, times: list[float], out_dir: Path, timeout: float = 60.0) -> list[Path]:
    """Write one JPEG per sampled time into out_dir (``000.jpg``, ``001.jpg``...) with one ffmpeg run.

    ``times`` are evenly spaced from 0 (``sample_times``). Close samples are taken in one sequential
    pass that stops after the last one; far-apart samples by seeking. A time past the last decodable
    frame yields no file. Raises InputError when no frame at all could be decoded."""
    step = times[1] - times[0] if len(times) > 1 else 0.0
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if step > SEEK_WHEN_STEP_OVER_S:
        for t in times:
            args += ["-ss", f"{t:.3f}", "-i", file_arg(path)]
        for i in range(len(times)):
            args += ["-map", f"{i}:v:0", "-frames:v", "1", "-q:v", str(JPEG_QUALITY), "-an", "-sn"]
            args.append(str(out_dir / f"{i:03d}.jpg"))
    else:
        # The first frame, then the first frame at least `step` seconds after the last one taken.
        select = f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{step:.3f})'"
        args += ["-i", file_arg(path), "-map", "0:v:0", "-vf", select, "-fps_mode", "passthrough"]
        args += ["-frames:v", str(len(times)), "-q:v", str(JPEG_QUALITY), "-an", "-sn"]
        args += ["-start_number", "0", str(out_dir / "%03d.jpg")]
    proc = _run(args, timeout, path)
    made = sorted(p for p in out_dir.glob("*.jpg") if p.stat().st_size > 0)
    if not made:
        if b"matches no streams" in proc.stderr:  # -map 0:v:0 found nothing to map
            raise InputError(f"{path.name}: the file has no video stream (audio only?): nothing to recognise")
        raise InputError(f"{path.name}: not a readable video: no frame could be decoded ({_last_error_line(proc.stderr)})")
    return made


def load_image(path: Path) -> Image.Image:
    """An RGB image; transparency is composited on white (a PNG cut-out must not turn black)."""
    check_file(path)
    try:
        with Image.open(path) as opened:
            # Phone photos store pixels sideways plus an EXIF orientation that viewers apply: apply it
            # too, or the faces reach the detector lying on their side and are not found.
            img = ImageOps.exif_transpose(opened)
            img.load()
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGB", rgba.size, (255, 255, 255))
                background.paste(rgba, mask=rgba.getchannel("A"))
                return background
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path.name}: not a readable image ({exc})") from exc


def read_frames(
    path: Path, count: int = 3, fps: float | None = None, max_seconds: float | None = None, timeout: float = 60.0
) -> tuple[list[Frame], float | None]:
    """Frames of a video (sampled) or of an image (one frame)."""
    if is_image(path):
        return [Frame(0, 0.0, load_image(path))], None
    seconds = duration(path, timeout=timeout)
    check_duration(path, seconds, max_seconds)
    times = sample_times(seconds, count, fps)
    with tempfile.TemporaryDirectory(prefix="facerec-frames-") as tmp:
        files = extract_frames(path, times, Path(tmp), timeout=timeout)
        frames = []
        for i, file in enumerate(files):
            with Image.open(file) as img:
                frames.append(Frame(i, times[int(file.stem)], img.convert("RGB")))
    return frames, seconds
