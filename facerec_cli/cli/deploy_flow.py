"""Deploy and tear down: the plan/confirm/apply flow behind ``facerec bootstrap``/``destroy`` (the
Lambda pipeline) and ``facerec iaas bootstrap``/``destroy`` (the IaaS variant).

The Typer commands (cli/pipeline.py, cli/iaas.py) resolve the settings and call these functions.
Heavy modules (the deploy engine, boto3) are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from facerec_cli.cli.options import confirm_changes, confirm_delete
from facerec_cli.config import Settings
from facerec_cli.infra.errors import aws_errors
from facerec_cli.render import err, out

ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "noop": "dim"}


def print_plan(plan: Any, console: Console, *, extra: list[tuple[str, str, str]] | None = None, calls: bool = False) -> None:
    """One line per change (``+ create s3 bucket x: detail``), with ``calls`` the API calls each makes
    (exactly what apply runs: the dry run), then warnings, blockers and the summary. ``extra``:
    (action, resource, detail) lines for work that is not an AWS API step (image builds)."""
    from facerec_cli.infra.plan import describe

    for action, resource, detail in extra or []:
        console.print(_plan_line(action, resource, detail), soft_wrap=True)
    for step in plan.changes:
        console.print(_plan_line(step.action, step.resource, step.detail), soft_wrap=True)
        if calls:
            for instruction in step.calls:
                console.print(Text(f"      {describe(instruction)}", style="dim"), soft_wrap=True)
    for warning in plan.warnings:
        console.print(Text.assemble(("! ", "yellow"), warning), soft_wrap=True)
    for blocker in plan.blockers:
        console.print(Text.assemble(("!! ", "bold red"), blocker), soft_wrap=True)
    console.print(Text(plan.summary(), style="bold"), soft_wrap=True)


def _plan_line(action: str, resource: str, detail: str) -> Text:
    from facerec_cli.infra.plan import SYMBOLS

    style = ACTION_STYLE.get(action, "")
    line = Text.assemble((f"{SYMBOLS.get(action, '*')} {action:<6} ", style), resource)
    if detail:
        line.append(f": {detail}", style="dim")
    return line


def show_then_apply(plan: Any, *, dry_run: bool, confirm: Callable[[], None]) -> bool:
    """Print the plan (every call it makes, on a dry run); unless this is a dry run or there is nothing to
    do, ``confirm()`` (raises to refuse) and apply it. True when it was applied."""
    from facerec_cli.infra.executor import RichReporter, apply_plan

    print_plan(plan, out, calls=dry_run)
    if dry_run:
        err.print(f"dry run: nothing was {'deleted' if plan.kind == 'destroy' else 'changed'}", style="dim")
        return False
    if plan.empty:
        return False
    confirm()
    apply_plan(plan, RichReporter(console=err))
    return True


# ------------------------------------------------------------------------------------------ bootstrap


def run_bootstrap(
    settings: Settings,
    *,
    gallery: Path | None,
    dry_run: bool,
    skip_images: bool,
    base_image: str | None,
    weights: str | None,
    yes: bool,
    annotate: bool | None = None,
    timeline: bool | None = None,
    segment_seconds: float | None = None,
    stage1_layout: str | None = None,
) -> None:
    """Plan, show, confirm, then change. Everything that can refuse the deployment without changing
    anything (a bad gallery, a blocked bucket name, no Docker engine, a refused registry login) is checked
    before the first resource is created (:class:`~facerec_cli.pipeline.deployer.Bootstrap`)."""
    from facerec_cli.infra.executor import RichReporter, refuse_blocked
    from facerec_cli.pipeline.deployer import Bootstrap, BootstrapRequest

    request = BootstrapRequest(
        gallery, weights, annotate, timeline, segment_seconds, build_images=not skip_images, base_image=base_image, stage1_layout=stage1_layout,
    )
    with aws_errors(settings, "reading the current deployment"):
        bootstrap = Bootstrap(
            settings, request, images=None if skip_images else _images_module(), reporter=RichReporter(console=err),
            on_progress=lambda line: err.print(Text(line, style="dim"), soft_wrap=True), status=err.status,
        )  # fmt: skip
    where = f"prefix {settings.prefix}, region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    err.print(f"bootstrap: {escape(where)}, weights {escape(bootstrap.weights)}", highlight=False)
    plan = bootstrap.plan()
    build = bootstrap.image_build()
    print_plan(plan, out, extra=[build] if build else None, calls=dry_run)
    if dry_run:
        err.print("dry run: nothing was changed", style="dim")
        return
    refuse_blocked(plan)
    if plan.empty and skip_images:
        return
    confirm_changes(plan, yes=yes)

    def show_added(steps: list[Any]) -> None:  # what the images add to the plan shown above: functions on new images
        for step in steps:
            out.print(_plan_line(step.action, step.resource, step.detail), soft_wrap=True)

    bootstrap.apply(plan, on_replanned=show_added)
    n = settings.names
    err.print(
        f"[green]deployed[/]: upload videos with `facerec upload VIDEO...` (to s3://{escape(n.input_bucket)}), "
        f"then `facerec results --watch` (from s3://{escape(n.output_bucket)})",
        highlight=False,
    )


def _images_module() -> Any:
    # Looked up in sys.modules at each bootstrap: tests put a recorder in its place (no dockerd there).
    return importlib.import_module("facerec_cli.pipeline.images")


# ------------------------------------------------------------------------------------------ destroy


def run_destroy(settings: Settings, *, yes: bool, dry_run: bool) -> None:
    from facerec_cli.infra.clients import Clients
    from facerec_cli.pipeline.deployer import plan_destroy
    from facerec_cli.pipeline.stack import DeployOptions
    from facerec_cli.pipeline.upload_ledger import UploadLedger

    plan = plan_destroy(settings, DeployOptions(with_ecr=True), Clients.from_settings(settings))
    applied = show_then_apply(plan, dry_run=dry_run, confirm=lambda: confirm_delete(plan, yes=yes, contents="the buckets"))
    if not dry_run:
        UploadLedger(settings).forget()
    if applied:
        err.print(f"[green]destroyed[/] the deployment with prefix {escape(settings.prefix)} in {escape(settings.region)}", highlight=False)


# ------------------------------------------------------------------------------------------ IaaS


def run_iaas_bootstrap(settings: Any, options: Any, *, dry_run: bool, yes: bool) -> Any:
    from facerec_cli.iaas.deployer import plan_bootstrap, web_address
    from facerec_cli.infra.clients import Clients

    where = f"prefix {settings.prefix}, region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    err.print(f"iaas bootstrap: {escape(where)}", highlight=False)
    with aws_errors(settings, "iaas bootstrap"):
        clients = Clients.from_settings(settings)
        plan = plan_bootstrap(settings, options, clients)
        if not show_then_apply(plan, dry_run=dry_run, confirm=lambda: confirm_changes(plan, yes=yes)):
            return plan
        address = web_address(settings, options, clients)
    err.print(f"[green]deployed[/]: the web tier answers at {address} once the instance has booted" if address else "[green]deployed[/]", highlight=False)
    return plan


def run_iaas_destroy(settings: Any, *, yes: bool, dry_run: bool) -> Any:
    from facerec_cli.iaas.deployer import plan_teardown
    from facerec_cli.infra.clients import Clients

    with aws_errors(settings, "iaas destroy"):
        plan = plan_teardown(settings, Clients.from_settings(settings))
        if not show_then_apply(plan, dry_run=dry_run, confirm=lambda: confirm_delete(plan, yes=yes, contents="the buckets and queues")):
            return plan
    err.print(f"[green]destroyed[/] the IaaS deployment with prefix {escape(settings.prefix)} in {escape(settings.region)}", highlight=False)
    return plan
