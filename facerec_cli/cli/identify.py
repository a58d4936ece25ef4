"""``facerec identify``'s body: the recognition core on local files, each result printed as it finishes
(a progress bar meanwhile); ``--timeline`` in one sequential pass per file."""

from __future__ import annotations

from pathlib import Path

from lambdas.core.recognise import Recogniser, SamplingOptions
from lambdas.core.results import ERROR, Result

from facerec_cli.gallery_files import load_gallery
from facerec_cli.render import err, out, plural, print_errors, print_json_lines, print_timelines, progress, results_table


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
