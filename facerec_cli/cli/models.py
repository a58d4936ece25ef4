"""``facerec models``: build the ONNX models ahead of first use (or into a folder for an image)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from facerec_cli.cli.options import user_errors_as_exit_codes

app = typer.Typer(help="The ONNX models recognition runs on (built once from facenet-pytorch and the weights).", no_args_is_help=True)


@app.command()
@user_errors_as_exit_codes
def build(
    weights: Annotated[str, typer.Option("--weights", help="casia-webface (offline), vggface2 (downloads once) or a state_dict path.")] = "casia-webface",
    out: Annotated[Path | None, typer.Option("--out", help="Also copy the built models into this folder (e.g. to bake into an image; point FACEREC_MODELS at it).")] = None,
) -> None:
    """Build the four ONNX models (P-Net, R-Net, O-Net, InceptionResnetV1) into the weights cache; a second run reuses them."""
    from lambdas.core.models import MANIFEST, NETS, model_dir

    from facerec_cli.render import err

    built = model_dir(weights, progress=lambda message: err.print(f"[dim]{message}[/]", highlight=False))
    err.print(f"[green]models ready[/]: {built.path} ({built.weights})", highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        # The models and their manifest only: not the graphs onnxruntime optimised for this machine.
        for item in [built.file(net) for net in NETS] + [built.path / MANIFEST]:
            shutil.copy2(item, out / item.name)
        err.print(f"copied to {out}", highlight=False)
    typer.echo(str(out or built.path))
