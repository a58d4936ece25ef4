"""``facerec enroll`` and ``facerec identify``: the recognition core on local files."""

from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lambdas.core.enroll import PhotoReport, build_gallery, find_photos
from lambdas.core.gallery import Gallery
from lambdas.core.media import Frame
from lambdas.core.recognise import FaceEncoder, Recogniser, SamplingOptions
from lambdas.core.results import ERROR, Result

from ..galleries import load_gallery
from ..render import err, out, print_errors, print_json_lines, results_table


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    )


def run_enroll(photos_dir: Path, output: Path, *, weights: str = "casia-webface", device: str = "cpu") -> Gallery:
    total = len(find_photos(photos_dir))
    with progress() as bar:
        task = bar.add_task("loading models", total=total)
        encoder = FaceEncoder(weights=weights, device=device)
        bar.update(task, description="enrolling")

        def on_photo(report: PhotoReport) -> None:
            bar.update(task, advance=1, description=f"enrolling {report.person}")

        gallery, reports = build_gallery(photos_dir, encoder, on_photo)
    gallery.save(output)
    for r in reports:
        if r.note != "ok":
            err.print(f"[yellow]{r.person}/{r.path.name}[/]: {r.note}", highlight=False, soft_wrap=True)
    people = gallery.people
    err.print(
        f"[green]wrote {output}[/]: {len(gallery.names)} faces of {len(people)} people "
        f"({', '.join(people)}), weights {gallery.weights}"
    )
    return gallery


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
) -> int:
    """Recognise each file; returns how many ended in error. ``weights``: a name or state_dict path,
    default the gallery's (checked against it). With ``annotate_dir``, every sampled frame with faces
    is written there with the faces drawn on it, as ``<stem>_f<frame>.jpg``."""
    gallery = load_gallery(gallery_path)  # an old torch gallery or a course data.pt is converted
    # An annotated frame per sampled frame means looking at all of them: no early exit.
    early_exit = not all_frames and annotate_dir is None
    recogniser = Recogniser(
        gallery, weights=weights, device=device, threshold=threshold,
        sampling=SamplingOptions(frames=frames, fps=fps or None, early_exit=early_exit),
    )
    results: list[Result] = []
    written: list[Path] = []
    with progress() as bar:
        task = bar.add_task("recognising", total=len(files))
        for path in files:
            bar.update(task, description=f"recognising {path.name}")
            if annotate_dir is None:
                result = recogniser.recognise_file(path)
            else:
                result, sampled = recogniser.recognise_file_frames(path)
                written += write_annotated(annotate_dir, path.stem, result, sampled)
            results.append(result)
            if json_lines:
                print_json_lines([result])
            bar.advance(task)
    if not json_lines:
        out.print(results_table(results))
        print_errors(results)
    if annotate_dir is not None:
        err.print(f"{len(written)} annotated frame(s) in {annotate_dir}", highlight=False, soft_wrap=True)
    return sum(r.status == ERROR for r in results)


def write_annotated(directory: Path, stem: str, result: Result, frames: list[Frame]) -> list[Path]:
    """``<stem>_f<frame>.jpg`` for every frame with faces, boxes and names drawn on it."""
    from lambdas.core.annotate import annotate_frame, faces_in_frame, jpeg_bytes

    paths = []
    for frame in frames:
        if not faces_in_frame(result.faces, frame.index):
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}_f{frame.index}.jpg"
        path.write_bytes(jpeg_bytes(annotate_frame(frame.image, result.faces, frame.index)))
        paths.append(path)
    return paths
