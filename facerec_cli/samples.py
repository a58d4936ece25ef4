"""Course-format sample videos (``test_NN.mp4``: a few seconds of one person) made from still photos
with PyAV's H.264 encoder (libx264, in the ``av`` wheel): a slow zoom so consecutive frames differ, as in
a real clip. Used by ``facerec demo``, the tests and the benchmarks."""

from __future__ import annotations

import time
from pathlib import Path

import av
from PIL import Image

from lambdas.core.media import load_image

from .errors import UserError


def _letterboxed(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image scaled to fit ``width`` x ``height``, centred on black (ffmpeg's scale+pad)."""
    scale = min(width / image.width, height / image.height)
    fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return canvas


def still_video(
    photo: Path | Image.Image,
    out: Path,
    *,
    seconds: float = 3.0,
    size: tuple[int, int] = (640, 480),
    fps: int = 25,
    zoom_per_frame: float = 0.002,
    timeout: float = 120.0,
) -> Path:
    """An H.264 MP4 of the photo, letterboxed to ``size``, zooming in slowly (up to 1.5x) on its centre."""
    width, height = size[0] // 2 * 2, size[1] // 2 * 2  # yuv420p needs even sides
    image = photo if isinstance(photo, Image.Image) else load_image(photo)
    canvas = _letterboxed(image.convert("RGB"), width, height)
    frames = max(1, round(seconds * fps))
    deadline = time.monotonic() + timeout
    try:
        # "file:" + the absolute path: an output named "pipe:x.mp4" is a file like any other.
        with av.open("file:" + str(Path(out).resolve()), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast"}
            for n in range(frames):
                if time.monotonic() > deadline:
                    raise UserError(f"could not make a video from the photo in {timeout:g} s")
                zoom = min(1 + zoom_per_frame * n, 1.5)
                w, h = width / zoom, height / zoom
                box = ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)
                picture = canvas.resize((width, height), Image.Resampling.BICUBIC, box=box)
                container.mux(stream.encode(av.VideoFrame.from_image(picture)))
            container.mux(stream.encode(None))
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"could not make a video from the photo: {exc}") from exc
    return out
