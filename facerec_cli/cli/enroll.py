"""``facerec enroll``'s body (``demo`` enrols the same way): the progress bar around
``facerec_cli.enrolment`` and what it reports (``render.print_enrolment``)."""

from __future__ import annotations

from pathlib import Path

from facerec_cli.enrolment import Enrolling, Enrolment
from facerec_cli.render import print_enrolment, progress


def run_enroll(photos_dir: Path, output: Path, *, weights: str = "casia-webface", device: str = "cpu", force: bool = False) -> Enrolment:
    """Enrol ``photos_dir`` into a new gallery file ``output`` (an existing gallery replaced only with
    ``force``; checked before any photo is embedded)."""
    enrolling = Enrolling.check(photos_dir, output, force=force)
    with progress() as bar:
        task = bar.add_task("loading models", total=enrolling.photos)
        done = enrolling.run(weights=weights, device=device, on_step=lambda what, n: bar.update(task, advance=n, description=what))
    print_enrolment(done)
    return done
