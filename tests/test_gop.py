"""Part 1's stage-1 layout (lambdas/gop.py): the frames of the course's splitting command, compared with
what the real ffmpeg binaries write on real clips, and the layout through the local pipeline."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facerec_cli.pipeline.deployer import layout_env
from facerec_cli.cli.serve import progress
from facerec_cli.pipeline.local.runner import LocalPipeline, RunOptions, collect_videos
from facerec_cli.samples import still_video
from lambdas import env as fenv
from lambdas.core import images, media
from lambdas.gop import GOP, gop_frames, gop_key
from tests.test_cloud_cli import env, facerec, gallery_file  # noqa: F401 - fixtures (a fresh deployment on moto)

COURSE_COMMAND = ["-ss", "0", "-r", "1", "-i", "{video}", "-vf", "fps=1/10", "-start_number", "0", "-vframes", "10", "{out}/output-%02d.jpg"]
NAMES = [f"output-{k:02d}.jpg" for k in range(10)]
CLOSE = 5.0  # mean absolute difference (0-255) between two JPEGs of one frame (two encoders, two YUV->RGB paths)


def _ffmpegs() -> list[tuple[str, str]]:
    """(path, version) of each ffmpeg binary here: imageio-ffmpeg's (the test extra) and a system one,
    such as Debian 12's 5.1, the one the course's Lambda image installs."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="pip install imageio-ffmpeg (in the test extra)")
    found = []
    for path in dict.fromkeys(p for p in (imageio_ffmpeg.get_ffmpeg_exe(), shutil.which("ffmpeg")) if p):
        banner = subprocess.run([path, "-version"], capture_output=True, text=True, check=True).stdout
        found.append((path, re.match(r"ffmpeg version (\S+)", banner).group(1)))
    return found


def _pixels(data: bytes | Path) -> np.ndarray:
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert("RGB")
    return np.asarray(image, dtype=np.float32)


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.fixture(scope="module")
def clips(data: Path, tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """Real clips and course-format ones made from a real photo (slow zoom, so frames differ), with
    their decoded frame counts: 275 and 105 (past the 95 frames of ten regular picks), 48 (a course
    2 s clip at 24 fps: ffmpeg runs out of frames) and 25 (1 s, like the course's test_7)."""
    folder = tmp_path_factory.mktemp("gop-clips")
    photo = sorted((data / "5celeb" / "val" / "madonna").iterdir())[0]
    made = {
        "hamilton": data / "videos" / "hamilton_miranda_lacamoire_10s.mp4",
        "crowd": data / "videos" / "crowd_unlabeled_4s.mp4",
        "course_2s": still_video(photo, folder / "course_2s.mp4", seconds=2, size=(1280, 720), fps=24, zoom_per_frame=0.01),
        "course_1s": still_video(photo, folder / "course_1s.mp4", seconds=25 / 24, size=(1280, 720), fps=24, zoom_per_frame=0.01),
    }
    counts = {}
    for name, path in made.items():
        with media.open_video(path) as video:
            counts[name] = sum(1 for _ in video._decoded([]))  # every frame the decoder gives
    assert counts == {"hamilton": 275, "crowd": 105, "course_2s": 48, "course_1s": 25}
    return {name: (path, counts[name]) for name, path in made.items()}


def test_gop_frames_are_the_course_commands_frames(clips, tmp_path: Path) -> None:
    """Each file an ffmpeg writes for the course's command is ours under the same name, pixel-close, and
    closer to that file than to any other different one. An ffmpeg that writes all ten (the course's
    5.1 always does; 9.0 when the clip has 95 frames or more) writes exactly our names; one that stops
    at the last frame writes the first of them, and ours go on repeating that last frame."""
    ffmpegs = _ffmpegs()
    for clip, (path, count) in clips.items():
        with media.open_video(path) as video:
            ours = {key.split("/", 1)[1]: images.encode_jpeg(frame.image) for key, frame in gop_frames("clip", video)}
        assert list(ours) == NAMES, clip
        ours_px = {name: _pixels(body) for name, body in ours.items()}
        # File k is decoded frame min(10k + 4, count - 1): past the last frame the same picture repeats.
        regular = [k for k in range(10) if 10 * k + 4 < count]
        for k in range(len(regular) + 1, 10):
            assert ours[NAMES[k]] == ours[NAMES[len(regular)]], (clip, k)
        for binary, version in ffmpegs:
            out = tmp_path / f"{clip}-{version}"
            out.mkdir()
            command = [binary, "-hide_banner", "-loglevel", "error", *(a.format(video=path, out=out) for a in COURSE_COMMAND)]
            subprocess.run(command, capture_output=True, check=False)  # 9.0 fails on clips under 5 frames, writing none
            theirs = sorted(p.name for p in out.iterdir())
            what = f"{clip} ({count} frames) with ffmpeg {version}"
            assert theirs == NAMES[: len(theirs)] and len(theirs) >= len(regular), (what, theirs)
            if len(theirs) == 10 or count >= 95:
                assert theirs == NAMES, what
            theirs_px = {name: _pixels(out / name) for name in theirs}
            for name in theirs:
                here = _diff(ours_px[name], theirs_px[name])
                assert here < CLOSE, (what, name, here)
                for other in theirs:
                    if _diff(theirs_px[name], theirs_px[other]) > 2 * CLOSE:  # another picture
                        assert here < _diff(ours_px[name], theirs_px[other]), (what, name, other)


def test_frames_at_positions_decode_once_clamp_and_rewind(clips) -> None:
    path, count = clips["course_1s"]
    with media.open_video(path) as video:
        first = [(f.index, round(f.t, 3)) for f in video.frames_at_positions([0, 4, 24, 30, 99])]
        again = [(f.index, round(f.t, 3)) for f in video.frames_at_positions([24])]  # a second call starts over
    fps = 24
    assert first == [(0, 0.0), (1, round(4 / fps, 3)), (2, 1.0), (3, 1.0), (4, 1.0)]
    assert again == [(0, 1.0)] and count == 25


def test_gop_layout_through_the_local_pipeline(celeb_gallery, data: Path, tmp_path: Path) -> None:
    """video-splitting writes exactly Part 1's frames per video in stage-1, and face-recognition reads
    them and names the person; the output bucket holds the answers alone."""
    gallery, _ = celeb_gallery
    expected = {}
    for i, person in enumerate(["madonna", "elton_john"]):
        photo = sorted((data / "5celeb" / "val" / person).iterdir())[1]
        still_video(photo, tmp_path / f"test_{i}.mp4", seconds=2, size=(1280, 720), fps=24)
        expected[f"test_{i}"] = person
    jobs, refused = collect_videos([tmp_path / f"test_{i}.mp4" for i in range(2)])
    options = RunOptions(workers=0, timeout_s=300, extra_env=layout_env({}, GOP, timeline=False))
    with LocalPipeline(gallery, options) as pipeline:
        results = pipeline.run(jobs)
        s3 = pipeline.clients.s3
        stage1 = [o["Key"] for o in s3.list_objects_v2(Bucket=pipeline.names.stage1_bucket).get("Contents", [])]
        output = [o["Key"] for o in s3.list_objects_v2(Bucket=pipeline.names.output_bucket).get("Contents", [])]
        first = s3.get_object(Bucket=pipeline.names.stage1_bucket, Key=gop_key("test_0", 0))["Body"].read()
        progress_line = progress(pipeline)  # what `run-local --serve --stage1-layout gop` prints
    assert refused == [] and {r.video[: -len(".mp4")]: r.name for r in results} == expected
    # Stage-1 holds Part 1's frames and nothing else (video-splitting's done markers are in the details
    # bucket), and the output bucket the answers alone.
    assert sorted(stage1) == sorted(gop_key(stem, k) for stem in expected for k in range(10))
    assert first[:3] == b"\xff\xd8\xff" and sorted(output) == sorted(f"{stem}.txt" for stem in expected)
    assert progress_line.startswith("uploads 2 · split 2 · answered 2 · "), progress_line


def test_stage1_layout_option_reaches_the_function_and_refuses_timelines(celeb_gallery, tmp_path: Path) -> None:
    from facerec_cli.cli.app import app
    from facerec_cli.errors import UserError

    assert layout_env({}, "gop", timeline=False) == {fenv.STAGE1_LAYOUT: "gop"}
    assert layout_env({fenv.STAGE1_LAYOUT: "gop"}, None, timeline=False) == {fenv.STAGE1_LAYOUT: "gop"}  # kept as deployed
    assert layout_env({fenv.STAGE1_LAYOUT: "gop"}, "frames", timeline=False) == {} == layout_env({}, None, timeline=False)
    with pytest.raises(UserError, match="--stage1-layout gop and --timeline do not combine"):
        layout_env({}, "gop", timeline=True)

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    gallery, _ = celeb_gallery
    refused = CliRunner().invoke(app, ["run-local", str(video), "--gallery", str(gallery), "--stage1-layout", "gop", "--timeline"])
    assert refused.exit_code == 1 and "--stage1-layout gop and --timeline do not combine" in refused.output, refused.output
    wrong = CliRunner().invoke(app, ["run-local", str(video), "--gallery", str(gallery), "--stage1-layout", "part1"])
    assert wrong.exit_code == 2 and "frames" in wrong.output and "gop" in wrong.output


def test_bootstrap_stage1_layout_is_kept_until_changed(env, gallery_file: Path) -> None:
    """`bootstrap --stage1-layout gop` sets it on video-splitting (moto over HTTP); a bootstrap without
    the flag keeps it, `--stage1-layout frames` removes it, gop with --timeline is refused unchanged."""
    n = env.settings.names

    def layout() -> str | None:
        config = env.clients.lambda_.get_function_configuration(FunctionName=n.splitting_function)
        return config["Environment"]["Variables"].get(fenv.STAGE1_LAYOUT)

    base = ["bootstrap", "--skip-images", "--gallery", str(gallery_file)]
    assert facerec(*base, "--stage1-layout", "gop").exit_code == 0
    assert layout() == "gop"
    again = facerec(*base)
    assert again.exit_code == 0 and "No changes" in again.stdout, again.output
    refused = facerec(*base, "--timeline", "--yes")
    assert refused.exit_code == 1 and "--stage1-layout gop and --timeline do not combine" in refused.output, refused.output
    back = facerec(*base, "--stage1-layout", "frames", "--yes")
    assert back.exit_code == 0 and "update lambda function video-splitting" in back.stdout, back.output
    assert layout() is None
