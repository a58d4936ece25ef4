"""Course-format sample videos (``test_NN.mp4``: a few seconds of one person) made from still photos
with ffmpeg: a slow zoom so consecutive frames differ, as in a real clip. Used by ``facerec demo``, the
tests and the benchmarks."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from lambdas.core.media import ffmpeg_exe, file_arg, load_image

from .errors import UserError


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
    """An H.264 MP4 of the photo, letterboxed to ``size``, zooming in slowly."""
    width, height = size
    with tempfile.TemporaryDirectory(prefix="facerec-still-") as tmp:
        image = photo if isinstance(photo, Image.Image) else load_image(photo)
        still = Path(tmp) / "still.png"
        image.convert("RGB").save(still)
        frames = max(1, round(seconds * fps))
        vf = (
            f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
            f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,"
            f"zoompan=z='min(1+{zoom_per_frame}*on,1.5)':d=1:x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':"
            f"s={width}x{height}:fps={fps}"
        )
        args = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-loop", "1", "-framerate", str(fps), "-i", file_arg(still),
            "-vf", vf, "-frames:v", str(frames),
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
            file_arg(out),  # "file:": an output named "-x.mp4" is not read as an option
        ]  # fmt: skip
        proc = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0 or not out.exists():
            raise UserError(f"could not make a video from the photo: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    return out
