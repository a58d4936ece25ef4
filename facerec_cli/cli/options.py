"""Pieces every command shares: the error wrapper and the common option types."""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lambdas.core.errors import FacerecError

from facerec_cli.errors import UserError
from facerec_cli.render import err, fail

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn errors meant for people into one red line and exit code 1 (2 for interrupted)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, FacerecError) as exc:
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
    float | None, typer.Option("--threshold", help="Distance above which a face is unknown (default: the gallery's, else 1.07).")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Run the models on cpu or cuda.")]
RecogniseWeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="casia-webface, vggface2 or a state_dict path; must be the weights the gallery was made with "
        "(default: the gallery's; a gallery enrolled from a file needs that file here).",
    ),
]
