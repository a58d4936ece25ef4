"""The ``facerec`` command line. Commands stay thin: they parse options, call plain functions, and
render. Errors meant for people become one red line and a non-zero exit code.

One Typer module per group, combined here: ``recognise`` (enroll, identify, run-local, demo),
``pipeline`` (bootstrap, upload, results, watch, logs, destroy), ``people.search_app`` (search) and
``iaas.app`` (web, worker) have no
group name, so their commands sit at the top level (``add_typer`` without a name merges a sub-app's
commands into this one, Typer >= 0.15); ``gallery``, ``people``, ``iaas`` and ``models`` are groups. Every command
module imports its heavy dependencies (models, boto3, the deploy engine) inside the functions, so
registering all commands stays cheap for ``facerec identify``.
"""

from __future__ import annotations

import typer

from facerec_cli.cli import gallery, help, iaas, models, people, pipeline, recognise

help.install()  # click's conventions in every command's help (cli/help.py)

app = typer.Typer(
    name="facerec",
    help="Face recognition over videos: on AWS Lambda (bootstrap/upload/results) or on this machine (identify, run-local).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# In the order `facerec --help` lists them: the top-level commands first, then the groups.
app.add_typer(recognise.app)
app.add_typer(pipeline.app)
app.add_typer(iaas.app)
app.add_typer(people.search_app)
app.add_typer(gallery.app, name="gallery")
app.add_typer(people.app, name="people")
app.add_typer(iaas.iaas_group, name="iaas")
app.add_typer(models.app, name="models")


def main() -> None:  # pragma: no cover - console script entry
    app()
