"""What the command modules share: the error wrapper, the confirmation prompts and the option types.

The AWS options (``--prefix --region --endpoint-url --profile``) are resolved by
:func:`facerec_cli.config.load_settings`: flag > ``FACEREC_*`` > ``facerec.toml`` > default.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from lambdas.core.errors import FacerecError

from facerec_cli.config import ConfigFile, Settings
from facerec_cli.errors import UserError
from facerec_cli.render import err, fail, plural

F = TypeVar("F", bound=Callable[..., Any])


def user_errors_as_exit_codes(func: F) -> F:
    """Turn errors meant for people into one red line and exit code 1 (or the error's ``exit_code``);
    Ctrl-C into "interrupted" and exit code 130."""

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


def stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirm_changes(plan: Any, *, yes: bool) -> None:
    """Before a plan updates or deletes existing resources: ask (default yes) on a terminal unless --yes;
    without a terminal go ahead (creating only never asks)."""
    updates = [s for s in plan.changes if s.action in ("update", "delete")]
    if updates and not yes and stdin_is_tty():
        if not typer.confirm(f"Change {plural(len(updates), 'existing resource')} as shown?", default=True, err=True):
            raise UserError("nothing was changed")


def confirm_delete(plan: Any, *, yes: bool, contents: str) -> None:
    """Before a teardown: ask (default no) unless --yes; without a terminal refuse. ``contents``: what
    is emptied with the resources ("the buckets")."""
    if yes:
        return
    if not stdin_is_tty():
        raise UserError("not deleting anything without confirmation", hint="pass --yes to delete without asking")
    if not typer.confirm(f"Delete {'this resource' if len(plan.changes) == 1 else f'these {len(plan.changes)} resources'} and everything in {contents}?", default=False, err=True):
        raise UserError("nothing was deleted")


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Stage1Layout(str, Enum):
    frames = "frames"  # Part 2's: <stem>.jpg (the first frame), <stem>/NNN.jpg further frames
    gop = "gop"  # Part 1's: <stem>/output-00.jpg ... output-09.jpg (lambdas/gop.py)


Stage1LayoutOpt = Annotated[
    Stage1Layout | None,
    typer.Option(
        "--stage1-layout",
        help="frames: <stem>.jpg and further sampled frames (the course's Part 2); gop: <stem>/output-00.jpg ... output-09.jpg, "
        "the frames of `ffmpeg -ss 0 -r 1 -i VIDEO -vf fps=1/10 -start_number 0 -vframes 10` (Part 1), and nothing else. "
        "Face-recognition reads either. Default: frames (bootstrap: as deployed).",
    ),
]
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


# ------------------------------------------------------------------------------------------ AWS options

PrefixOpt = Annotated[
    str | None,
    typer.Option("--prefix", help="Resource name prefix: buckets <prefix>-input, <prefix>-stage-1, <prefix>-output, <prefix>-details. Default: FACEREC_PREFIX, facerec.toml, else facerec."),
]
IaasPrefixOpt = Annotated[
    str | None,
    typer.Option("--prefix", help="Resource name prefix: queues <prefix>-req-queue/-resp-queue, buckets <prefix>-in-bucket/-out-bucket. Default: FACEREC_PREFIX, facerec.toml, else facerec."),
]
WatchPrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--prefix",
        help="Resource name prefix: buckets <prefix>-input, -stage-1, -output, -details; with --iaas queues <prefix>-req-queue, -resp-queue and buckets <prefix>-in-bucket, -out-bucket. Default: FACEREC_PREFIX, facerec.toml, else facerec.",
    ),
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="AWS region. Default: FACEREC_REGION, AWS_REGION/AWS_DEFAULT_REGION, facerec.toml, the profile's; us-east-1 only with an endpoint URL.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="Send AWS calls to this endpoint (e.g. a moto server); AWS_ENDPOINT_URL works too."),
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="AWS profile from ~/.aws/config.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and change nothing.")]
DestroyDryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be deleted and delete nothing.")]


@dataclass(frozen=True)
class AwsTarget:
    """Where a command's AWS calls go, as given by the four options every AWS command takes."""

    prefix: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None

    def settings(self, *, config: ConfigFile | None = None, **more: Any) -> Settings:
        """The settings these options select (flag > ``FACEREC_*`` > facerec.toml > default), with ``more`` flags."""
        from facerec_cli.config import load_settings

        return load_settings(config=config, prefix=self.prefix, region=self.region, endpoint_url=self.endpoint_url, profile=self.profile, **more)


def aws_target_options(prefix_option: Any = PrefixOpt) -> Callable[[F], F]:
    """Give a command ``--prefix --region --endpoint-url --profile`` (listed after its own options; the
    prefix's help as ``prefix_option`` says) and pass them to it as ``target``, an :class:`AwsTarget`.
    Typer reads the parameters from the signature set here, so the options are declared once."""
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in (("prefix", prefix_option), ("region", RegionOpt), ("endpoint_url", EndpointOpt), ("profile", ProfileOpt))
    ]

    def decorate(func: F) -> F:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "target"]

        @functools.wraps(func)
        def command(*args: Any, prefix: str | None = None, region: str | None = None, endpoint_url: str | None = None,
                    profile: str | None = None, **kwargs: Any) -> Any:  # fmt: skip
            return func(*args, target=AwsTarget(prefix, region, endpoint_url, profile), **kwargs)

        command.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        # Evaluated annotations: Typer resolves them with get_type_hints in this module's namespace.
        command.__annotations__ = {p.name: p.annotation for p in own + added}
        return command  # type: ignore[return-value]

    return decorate


# The edited gallery's destination, for every command that edits one (gallery add/remove/rename, people label).
GalleryOutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the edited gallery here instead of over GALLERY.")]
