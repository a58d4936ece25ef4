"""Deploy and tear down: the plan/confirm/apply flow behind ``facerec bootstrap``/``destroy`` (the
Lambda pipeline) and ``facerec iaas bootstrap``/``destroy`` (the IaaS variant).

The Typer commands (cli/pipeline.py, cli/iaas.py) resolve the settings and call these functions.
Heavy modules (the deploy engine, boto3) are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from facerec_cli.cli.options import confirm_changes, confirm_delete
from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.cloud_errors import aws_errors
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


def _gallery_weights(gallery: Path | None, weights: str | None) -> tuple[str | None, str | None]:
    """(weights the gallery was made with, weights to deploy); checks they agree."""
    if gallery is None:
        return None, weights
    from facerec_cli.galleries import load_gallery

    loaded = load_gallery(gallery)  # GalleryError (one red line) on a missing, empty or foreign file; old ones converted
    if not len(loaded.names):
        raise UserError(f"gallery {gallery} has nobody enrolled", hint="enrol photos with `facerec enroll PHOTOS_DIR -o GALLERY`")
    if weights is not None and weights != loaded.weights:
        raise UserError(
            f"gallery {gallery} was made with {loaded.weights} weights, not {weights}",
            hint=f"drop --weights, or enrol again with `facerec enroll ... --weights {weights}`",
        )
    return loaded.weights, loaded.weights


def timeline_env(deployed: dict[str, str], timeline: bool | None, segment_seconds: float | None) -> dict[str, str]:
    """video-splitting's timeline settings: ``--timeline/--no-timeline`` and ``--segment-seconds``, else
    what the deployed function has (off for a new deployment)."""
    from lambdas import env as fenv

    on = deployed.get(fenv.TIMELINE) == "1" if timeline is None else timeline
    if not on:
        return {}
    wanted = {fenv.TIMELINE: "1"}
    seconds = segment_seconds if segment_seconds is not None else deployed.get(fenv.SEGMENT_SECONDS)
    if seconds is not None:
        wanted[fenv.SEGMENT_SECONDS] = f"{float(seconds):g}"
    if deployed.get(fenv.TIMELINE_FPS):
        wanted[fenv.TIMELINE_FPS] = deployed[fenv.TIMELINE_FPS]
    return wanted


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
) -> None:
    """Plan, check, then change. Everything that can refuse the deployment without changing anything
    (a bad gallery, a blocked bucket name, no Docker engine, a refused registry login) is checked before
    the first resource is created; the images are built after the ECR repository exists, and the
    functions are pointed at them last."""
    from lambdas import env as fenv

    from facerec_cli.infra.clients import Clients
    from facerec_cli.infra.executor import RichReporter, apply_plan, refuse_blocked
    from facerec_cli.infra.resources.awslambda import FunctionSpec
    from facerec_cli.pipeline.deployer import deployed_environment, plan_deploy, plan_registry
    from facerec_cli.pipeline.stack import DeployOptions

    _, weights = _gallery_weights(gallery, weights)  # before any AWS call: a bad gallery costs nothing
    clients = Clients.from_settings(settings)
    n = settings.names
    with aws_errors(settings, "reading the current deployment"):
        deployed = deployed_environment(clients, n.recognition_function)
        splitting_env = timeline_env(deployed_environment(clients, n.splitting_function), timeline, segment_seconds)
    weights = weights or deployed.get(fenv.WEIGHTS) or "casia-webface"
    if annotate is None:
        annotate = deployed.get(fenv.ANNOTATE) == "1"
    recognition_env = {fenv.ANNOTATE: "1"} if annotate else {}
    options = DeployOptions(
        gallery=gallery, weights=weights, with_ecr=not skip_images, recognition_env=recognition_env, splitting_env=splitting_env
    )
    where = f"prefix {settings.prefix}, region {settings.region}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else "")
    err.print(f"bootstrap: {escape(where)}, weights {escape(weights)}", highlight=False)
    reporter = RichReporter(console=err)

    # The plan as it stands before any image exists: what the user sees and confirms, and its blockers.
    plan = plan_deploy(settings, options, clients)
    image_lines: list[tuple[str, str, str]] = []
    if skip_images:
        if any(s.action == "create" and s.kind == FunctionSpec.kind for s in plan.steps):
            plan.warnings.append(
                "--skip-images: new functions point at a placeholder image (<repository>:local); AWS Lambda only accepts "
                "an image that exists in ECR, so run without --skip-images to build and push them"
            )
    else:
        repository = f"{settings.registry}/{n.ecr_repository}" if settings.registry else f"ECR repository {n.ecr_repository}"
        image_lines = [("create", "container images video-splitting, face-recognition", f"build with {weights} weights and push to {repository}")]
    print_plan(plan, out, extra=image_lines, calls=dry_run)
    if dry_run:
        err.print("dry run: nothing was changed", style="dim")
        return
    refuse_blocked(plan)
    if plan.empty and skip_images:
        return
    confirm_changes(plan, yes=yes)

    if not skip_images:
        # Docker and the registry login are checked before the repository is created, so that "no
        # engine" leaves nothing behind; the images need the repository before they can be pushed.
        images = _images_module()
        with err.status("connecting to the Docker engine…"):
            engine = images.open_engine(settings, clients, registry=settings.registry)
        try:
            created = apply_plan(plan_registry(settings, options, clients), reporter)
            uris = _build_images(images, settings, clients, engine=engine, weights=weights, base_image=base_image, done_before=created)
        finally:
            engine.close()
        options = dataclasses.replace(options, splitting_image=uris.get("splitting"), recognition_image=uris.get("recognition"))
        shown = {(s.action, s.resource) for s in plan.changes}
        plan = plan_deploy(settings, options, clients)  # now with the pushed images (and the repository done)
        for step in plan.changes:  # what the images add to the plan shown above: functions on new images
            if (step.action, step.resource) not in shown:
                out.print(_plan_line(step.action, step.resource, step.detail), soft_wrap=True)
        if plan.empty:
            return
    apply_plan(plan, reporter)
    err.print(
        f"[green]deployed[/]: upload videos with `facerec upload VIDEO...` (to s3://{escape(n.input_bucket)}), "
        f"then `facerec results --watch` (from s3://{escape(n.output_bucket)})",
        highlight=False,
    )


def _images_module() -> Any:
    # Looked up in sys.modules at each bootstrap: tests put a recorder in its place (no dockerd there).
    return importlib.import_module("facerec_cli.pipeline.images")


def _build_images(
    images: Any, settings: Settings, clients: Any, *, engine: Any, weights: str, base_image: str | None, done_before: list[Any]
) -> dict[str, str]:
    """Build and push; a failure names what this bootstrap had already created (the repository)."""
    from facerec_cli.infra.errors import DeployError

    def on_progress(*args: Any, **kwargs: Any) -> None:
        message = " ".join(str(a) for a in args if a is not None) or ", ".join(f"{k}={v}" for k, v in kwargs.items())
        if message:
            err.print(Text(message, style="dim"), soft_wrap=True)

    try:
        with err.status("building and pushing the container images…"):
            uris = images.build_and_push(
                settings, clients, weights=weights, registry=settings.registry, base_image=base_image, on_progress=on_progress, engine=engine
            )
    except UserError as exc:
        if not done_before:
            raise
        done = "; ".join(f"{s.past} {s.resource}" for s in done_before)
        hint = f"{exc.hint}; " if exc.hint else ""
        raise DeployError(
            f"{exc.args[0] if exc.args else exc}. Done before it: {done}",
            hint=f"{hint}run `facerec bootstrap` again to finish: it only does what is left",
            completed=done_before,
        ) from exc
    for kind, uri in sorted(uris.items()):
        err.print(Text.assemble(("✓ ", "green"), f"image {kind}: {uri}"), soft_wrap=True)
    return uris


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
