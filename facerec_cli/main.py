"""The ``facerec`` command line. Commands stay thin: they parse options, call plain functions, and
render. Errors meant for people become one red line and a non-zero exit code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lambdas.core.errors import FacerecError
from lambdas.core.weights import WeightsError

from .errors import UserError
from .render import err, fail

app = typer.Typer(
    name="facerec",
    help="Face recognition over videos: on AWS Lambda (bootstrap/upload/results) or on this machine (identify, run-local).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn errors meant for people into one red line and exit code 1 (2 for interrupted)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, FacerecError, WeightsError) as exc:
            fail(str(exc))
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


GalleryOpt = Annotated[Path, typer.Option("--gallery", "-g", help="Gallery file made by `facerec enroll` (or a course data.pt).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON Lines (one object per video) on stdout, nothing else.")]
FramesOpt = Annotated[int, typer.Option("--frames", min=1, max=100, help="Frames sampled per video.")]
FpsOpt = Annotated[float, typer.Option("--fps", min=0.0, help="Sample every 1/FPS seconds; 0 spreads --frames evenly over the video.")]
ThresholdOpt = Annotated[
    float | None, typer.Option("--threshold", help="Distance above which a face is unknown (default: the gallery's, else 1.05).")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Run the models on cpu or cuda.")]


@app.command()
@friendly
def enroll(
    photos_dir: Annotated[Path, typer.Argument(help="Folder with one sub-folder of photos per person: PHOTOS_DIR/<person>/*.jpg")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Gallery file to write.")] = Path("gallery.pt"),
    weights: Annotated[str, typer.Option("--weights", help="casia-webface (offline), vggface2 (downloads once) or a state_dict path.")] = "casia-webface",
    device: DeviceOpt = Device.cpu,
) -> None:
    """Build a gallery from photos; reports photos with no face or several faces."""
    from .commands.identify import run_enroll

    run_enroll(photos_dir, output, weights=weights, device=device.value)


@app.command()
@friendly
def identify(
    files: Annotated[list[Path], typer.Argument(help="Videos or images (.jpg .png .webp).")],
    gallery: GalleryOpt,
    json_lines: JsonOpt = False,
    frames: FramesOpt = 3,
    fps: FpsOpt = 0.0,
    threshold: ThresholdOpt = None,
    device: DeviceOpt = Device.cpu,
) -> None:
    """Recognise faces in files directly, without any bucket. Exits 1 if any file ended in error."""
    from .commands.identify import run_identify

    failed = run_identify(files, gallery, json_lines=json_lines, frames=frames, fps=fps, threshold=threshold, device=device.value)
    if failed:
        raise typer.Exit(1)


@app.command("run-local")
@friendly
def run_local(
    inputs: Annotated[list[Path], typer.Argument(help="Videos, or folders of videos.")],
    gallery: GalleryOpt,
    workers: Annotated[int, typer.Option("--workers", min=0, max=16, help="Warm worker processes per function; 0 runs handlers in this process.")] = 1,
    json_lines: JsonOpt = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write <stem>.json and <stem>.txt per video here.")] = None,
    frames: FramesOpt = 3,
    fps: FpsOpt = 0.0,
    threshold: ThresholdOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for all results.")] = 900.0,
) -> None:
    """Run the whole pipeline (S3 -> video-splitting -> face-recognition -> S3) on an embedded local cloud.
    Exits 1 if any video ended in error."""
    from lambdas.core.results import ERROR

    from .commands.run_local import run_local as run
    from .local.pipeline import RunOptions

    options = RunOptions(workers=workers, frames=frames, fps=fps, threshold=threshold, timeout_s=timeout)
    results = run(inputs, gallery, options, json_lines=json_lines, out_dir=out_dir)
    if any(r.status == ERROR for r in results):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console script entry
    app()
