"""``facerec demo``: the whole pipeline with data shipped inside installed packages (no network, no AWS).

scikit-image ships a real portrait (the astronaut Eileen Collins, NASA, public domain) and photos without
faces. The demo enrols the portrait, makes course-format videos (a few seconds of a still with a slow
zoom; the face video from a mirrored, cropped copy so it is not the enrolled pixels), and runs them
through ``run-local``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lambdas.core.results import Result

from facerec_cli.pipeline.local.runner import RunOptions
from facerec_cli.render import err
from facerec_cli.samples import still_video
from facerec_cli.cli.enroll import run_enroll
from facerec_cli.cli.run_local import run_local

PERSON = "eileen_collins"


def demo_inputs(workdir: Path) -> tuple[Path, list[Path], dict[str, str]]:
    """(photos dir, videos, expected name per video)."""
    import skimage.data

    portrait = Image.fromarray(np.asarray(skimage.data.astronaut()))
    photos = workdir / "photos" / PERSON
    photos.mkdir(parents=True)
    portrait.save(photos / "astronaut.png")
    videos_dir = workdir / "videos"
    videos_dir.mkdir()
    w, h = portrait.size
    other_view = ImageOps.mirror(portrait).crop((int(w * 0.05), 0, w, int(h * 0.9)))
    face = still_video(other_view, videos_dir / "test_00.mp4", seconds=3)
    no_face = still_video(Image.fromarray(np.asarray(skimage.data.rocket())), videos_dir / "test_01.mp4", seconds=2)
    return workdir / "photos", [face, no_face], {"test_00.mp4": PERSON, "test_01.mp4": "no_face"}


def run_demo(workers: int = 1, keep: Path | None = None) -> tuple[list[Result], dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="facerec-demo-") as tmp:
        workdir = keep or Path(tmp)
        err.print(f"[bold]1/3[/] making sample videos from scikit-image photos in {workdir}")
        photos, videos, expected = demo_inputs(workdir)
        err.print("[bold]2/3[/] enrolling the portrait")
        gallery = workdir / "gallery.safetensors"
        run_enroll(photos, gallery, force=True)  # the demo's own file from an earlier --keep run
        err.print("[bold]3/3[/] running the pipeline on the local cloud (S3 -> video-splitting -> face-recognition -> S3)")
        results = run_local(videos, gallery, RunOptions(workers=workers), out_dir=workdir / "results")
    wrong = [r.video for r in results if expected.get(r.video) != r.name]
    if wrong:
        err.print(f"[red]unexpected names for {', '.join(wrong)}[/]")
    else:
        err.print("[green]demo ok:[/] every video named as expected")
    return results, expected
