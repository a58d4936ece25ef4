"""``facerec enroll`` and ``facerec identify``: the recognition core on local files."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lambdas.core.enroll import PhotoReport, build_gallery, find_photos
from lambdas.core.gallery import Gallery
from lambdas.core.openset import Calibration
from lambdas.core.recognise import FaceEncoder, Recogniser, SamplingOptions
from lambdas.core.reference import cached_reference_faces
from lambdas.core.results import ERROR, Result

from facerec_cli.galleries import check_new_gallery_path, load_gallery
from facerec_cli.render import err, out, plural, print_errors, print_json_lines, results_table


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    )


def run_enroll(photos_dir: Path, output: Path, *, weights: str = "casia-webface", device: str = "cpu", force: bool = False) -> Gallery:
    """Enrol ``photos_dir`` into a new gallery file ``output`` (an existing gallery replaced only with
    ``force``; checked before any photo is embedded)."""
    check_new_gallery_path(output, force=force)
    total = len(find_photos(photos_dir))
    with progress() as bar:
        task = bar.add_task("loading models", total=total)
        encoder = FaceEncoder(weights=weights, device=device)
        bar.update(task, description="enrolling")

        def on_photo(report: PhotoReport) -> None:
            bar.update(task, advance=1, description=f"enrolling {report.person}")

        bar.update(task, description="embedding the reference faces (strangers for calibrating a small gallery)")
        reference = cached_reference_faces(encoder)
        gallery, reports = build_gallery(photos_dir, encoder, on_photo, reference=reference)
    gallery.save(output)
    for r in reports:
        if r.note != "ok":
            err.print(f"[yellow]{r.person}/{r.path.name}[/]: {r.note}", highlight=False, soft_wrap=True)
    people = gallery.people
    shown = ", ".join(people) if len(people) <= 12 else f"{', '.join(people[:12])}, ..."
    err.print(
        f"[green]wrote {output}[/]: {plural(len(gallery.names), 'face')} of {plural(len(people), 'person', 'people')} ({shown}), weights {gallery.weights}",
        highlight=False, soft_wrap=True,
    )
    if gallery.calibration is not None:
        print_calibration(gallery.calibration)
    from lambdas.core.gallery_edit import two_people

    for t in two_people(gallery):
        warn_two_groups(t.person, t.distance, [list(g) for g in t.groups])
    return gallery


def warn_two_groups(person: str, distance: float, groups: list[list[str]]) -> None:
    """One person's photos in two far-apart groups (``gallery_edit.two_people``): likely two people."""
    from rich.markup import escape

    shown = "; ".join(f"{len(g)}: {', '.join(g[:4])}{', ...' if len(g) > 4 else ''}" for g in groups)
    err.print(
        f"[yellow]warning[/]: {escape(person)}'s photos form two groups {distance:.2f} apart ({escape(shown)}): two people under one name? "
        "remove the wrong ones with `facerec gallery remove -g GALLERY --photo PERSON/PHOTO`", highlight=False, soft_wrap=True,
    )  # fmt: skip


def print_calibration(calibration: Calibration, *, every_person: bool | None = None) -> None:
    """How consistent each person's photos are, and the open-set rule chosen (or why none was)."""
    from rich.table import Table

    from lambdas.core.openset import MIN_CALIBRATION_PEOPLE

    people = calibration.people
    every_person = len(people) <= 30 if every_person is None else every_person
    table = Table("person", "photos", "mean", "worst", "far from the others (likely another person)", title="photo consistency: "
                  "each photo against the centroid of the person's other photos", title_justify="left")
    for p in people:
        if every_person or p.outliers:
            table.add_row(p.person, str(p.photos), "-" if p.mean is None else f"{p.mean:.2f}",
                          "-" if p.worst is None else f"{p.worst:.2f}", ", ".join(p.outliers))
    if table.rows:
        err.print(table)
    single = sum(p.photos == 1 for p in people)
    if single:
        err.print(f"{single} of {plural(len(people), 'person', 'people')} {'has' if single == 1 else 'have'} a single photo: nothing to check it against; "
                  "3-5 photos each also calibrate the gallery better", highlight=False)
    rule = calibration.rule
    if calibration.calibrated:
        err.print(
            f"open-set rule calibrated on the gallery's own photos: threshold {rule.threshold:g}, margin {rule.margin:g} "
            f"(named {calibration.known_named:.1%} of {plural(calibration.known_probes, 'photo')} against their person's other photos; "
            + (f"answered {calibration.strangers_rejected:.1%} of {plural(calibration.reference, 'reference face')} nobody enrolled unknown)"
               if calibration.reference else
               f"answered {calibration.strangers_rejected:.1%} of {plural(calibration.stranger_probes, 'photo')} unknown with their person "
               "left out, as strangers)")
            + left_out_note(calibration), highlight=False, soft_wrap=True,
        )
    else:
        err.print(
            f"open-set rule: the defaults (threshold {rule.threshold:g}, margin {rule.margin:g}): calibrating needs "
            f"{MIN_CALIBRATION_PEOPLE} people with 2+ photos" + left_out_note(calibration), highlight=False, soft_wrap=True,
        )


def left_out_note(calibration: Calibration) -> str:
    """The photos calibration did not use (far from their person's others: likely mislabelled)."""
    n = len(calibration.left_out)
    if not n:
        return ""
    return f"; {plural(n, 'photo')} left out of the calibration as likely mislabelled (still enrolled): {', '.join(calibration.left_out[:5])}" + (
        ", ..." if n > 5 else "")


def run_identify(
    files: list[Path],
    gallery_path: Path,
    *,
    json_lines: bool = False,
    frames: int = 3,
    fps: float = 0.0,
    threshold: float | None = None,
    weights: str | None = None,
    device: str = "cpu",
    annotate_dir: Path | None = None,
    all_frames: bool = False,
    timeline: bool = False,
    workers: int = 0,
) -> int:
    """Recognise each file, ``workers`` processes at a time (0: one per core), each result printed as
    it finishes; returns how many ended in error. ``weights``: a name or state_dict path,
    default the gallery's (checked against it). With ``annotate_dir``, every sampled frame with faces
    is written there with the faces drawn on it, as ``<stem>_f<frame>.jpg``. With ``timeline``, every
    1/``fps`` seconds is looked at (default 2 fps) and the results say who is on screen when; with
    ``annotate_dir`` too, the best view of each person is written there as ``<stem>_<person>.jpg``."""
    if timeline:
        return run_identify_timeline(
            files, gallery_path, json_lines=json_lines, fps=fps, threshold=threshold, weights=weights, device=device,
            annotate_dir=annotate_dir,
        )  # fmt: skip
    from facerec_cli.batch import Batch, BatchSettings, default_workers

    # An annotated frame per sampled frame means looking at all of them: no early exit.
    early_exit = not all_frames and annotate_dir is None
    settings = BatchSettings(
        gallery_path, SamplingOptions(frames=frames, fps=fps or None, early_exit=early_exit), weights=weights, device=device,
        threshold=threshold, annotate_dir=annotate_dir,
    )  # fmt: skip
    done: dict[int, Result] = {}
    written: list[Path] = []
    # Started before the progress display's thread: the workers fork from a process without threads,
    # and load the gallery and models while the display starts.
    with Batch(files, settings, workers or default_workers()) as batch, progress() as bar:
        task = bar.add_task("recognising", total=len(files))
        for finished in batch.results():  # in the order they finish
            done[finished.index] = finished.result
            written += finished.annotated
            if json_lines:
                print_json_lines([finished.result])
            bar.advance(task, 1)
            bar.update(task, description=f"recognised {files[finished.index].name}")
    results = [done[i] for i in sorted(done)]
    if not json_lines:
        out.print(results_table(results))
        print_errors(results)
    if annotate_dir is not None:
        err.print(f"{plural(len(written), 'annotated frame')} in {annotate_dir}", highlight=False, soft_wrap=True)
    return sum(r.status == ERROR for r in results)


def run_identify_timeline(
    files: list[Path],
    gallery_path: Path,
    *,
    json_lines: bool = False,
    fps: float = 0.0,
    threshold: float | None = None,
    weights: str | None = None,
    device: str = "cpu",
    annotate_dir: Path | None = None,
) -> int:
    """``facerec identify --timeline``: each file in one sequential pass at ``fps`` (0: 2 fps)."""
    from lambdas.core.names import file_part, unique_file
    from lambdas.core.timeline import DEFAULT_FPS, best_view_crops, recognise_timeline

    from facerec_cli.render import print_timelines

    fps = fps or DEFAULT_FPS
    gallery = load_gallery(gallery_path)
    recogniser = Recogniser(gallery, weights=weights, device=device, threshold=threshold)
    results: list[Result] = []
    with progress() as bar:
        for path in files:
            label = f"timeline of {path.name}"
            task = bar.add_task(label, total=None)

            def on_batch(frames: int, task: int = task, label: str = label) -> None:
                bar.update(task, completed=frames, description=f"{label}: {plural(frames, 'frame')}")

            result = recognise_timeline(recogniser, path, fps=fps, on_batch=on_batch)
            if annotate_dir is not None and result.timeline is not None and result.timeline.people:
                annotate_dir.mkdir(parents=True, exist_ok=True)
                taken: set[str] = set()
                for person, body in best_view_crops(path, result.timeline, name=path.name).items():
                    written = annotate_dir / unique_file(f"{path.stem}_{file_part(person)}", ".jpg", taken)
                    written.write_bytes(body)
                    next(p for p in result.timeline.people if p.person == person).image = written.name
            bar.remove_task(task)
            results.append(result)
            if json_lines:
                print_json_lines([result])
    if not json_lines:
        out.print(results_table(results))
        print_timelines(results)
        print_errors(results)
    return sum(r.status == ERROR for r in results)
