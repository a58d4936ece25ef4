"""``facerec gallery``: gallery files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facerec_cli.cli.options import user_errors_as_exit_codes
from facerec_cli.render import err

app = typer.Typer(name="gallery", help="Gallery files: convert old ones.", no_args_is_help=True)


@app.command("convert")
@user_errors_as_exit_codes
def gallery_convert(
    old: Annotated[Path, typer.Argument(help="A gallery: an old torch .pt gallery, a course data.pt, or a safetensors gallery.")],
    new: Annotated[Path, typer.Argument(help="The safetensors gallery to write, e.g. gallery.safetensors.")],
) -> None:
    """Convert an old torch gallery or a course data.pt to a safetensors gallery.

    Enroll writes safetensors galleries, and the runtime reads only those (no torch, no pickle);
    identify, run-local and bootstrap convert old files on the fly. A course data.pt means vggface2 weights."""
    from facerec_cli.galleries import convert_gallery
    gallery = convert_gallery(old, new)
    err.print(f"{new}: {len(gallery.names)} embeddings of {len(gallery.people)} people, {gallery.weights} weights")
