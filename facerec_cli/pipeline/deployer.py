"""Deploy and destroy the pipeline's AWS resources: its stack (:mod:`.stack`) planned against what
exists (:mod:`facerec_cli.infra.planner`) and applied (:mod:`facerec_cli.infra.executor`).

Used by `facerec bootstrap` (images from :mod:`.images`, gallery from --gallery), `facerec destroy`, and
`facerec run-local` (the same resources on the embedded moto server, with placeholder images)::

    clients = Clients.from_settings(settings)
    plan = plan_deploy(settings, DeployOptions(gallery=path), clients)
    print(plan.render(show_calls=True))   # the dry run: every call apply will make
    apply_plan(plan, RichReporter())      # raises DeployError naming what was done before a failure

A bootstrap that builds images applies the plan in two parts: the ECR repository alone first
(:func:`plan_registry`: the images are pushed there), then, once the images exist, the whole stack
planned again with their URIs (the repository is then unchanged).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import botocore.exceptions

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.executor import NullReporter, Reporter, apply_plan, refuse_blocked
from facerec_cli.infra.plan import Plan, Step
from facerec_cli.infra.planner import Stack
from facerec_cli.infra.planner import plan_deploy as plan_stack
from facerec_cli.infra.planner import plan_destroy as plan_stack_teardown
from facerec_cli.infra.readers import get_or_none
from facerec_cli.infra.resources.awslambda import FunctionSpec
from facerec_cli.infra.resources.ecr import RepositorySpec
from facerec_cli.infra.resources.iam import RoleSpec
from facerec_cli.infra.resources.s3 import NotificationSpec
from facerec_cli.pipeline.stack import DeployOptions, pipeline_stack
from lambdas import env as fenv
from lambdas.gop import GOP

BOOTSTRAP = "facerec bootstrap"
DESTROY = "facerec destroy"


def stack_for(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Stack:
    """The pipeline's stack for this account; S3 calls on its buckets from ``clients`` carry
    ExpectedBucketOwner from now on (the names come from the prefix, not the user)."""
    clients = clients or Clients.from_settings(settings)
    try:
        account = clients.account_id
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not identify the AWS account: {message}", hint=hint) from exc
    clients.expect_owner(settings.names.buckets)
    return pipeline_stack(settings, options or DeployOptions(), account)


def plan_deploy(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Everything `bootstrap` would create or change, in order; applying nothing."""
    clients = clients or Clients.from_settings(settings)
    return plan_stack(stack_for(settings, options, clients), clients, command=BOOTSTRAP)


def plan_registry(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Only the ECR repository: images must be pushed before the functions can use them."""
    clients = clients or Clients.from_settings(settings)
    stack = stack_for(settings, dataclasses.replace(options or DeployOptions(), with_ecr=True, gallery=None), clients)
    registry = Stack([s for s in stack.specs if isinstance(s, RepositorySpec)], stack.tags)
    return plan_stack(registry, clients, command=BOOTSTRAP)


def plan_destroy(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Everything `destroy` would delete, the reverse of the creation order; empty when nothing is left."""
    clients = clients or Clients.from_settings(settings)
    stack = stack_for(settings, dataclasses.replace(options or DeployOptions(), gallery=None), clients)
    stack.specs = [*stack.specs, *retired_roles(settings, stack)]  # deleted first (a destroy runs backwards)
    return plan_stack_teardown(stack, clients, command=DESTROY)


def retired_roles(settings: Settings, stack: Stack) -> list[RoleSpec]:
    """Roles of names earlier versions made (Names.legacy_roles), as specs a destroy deletes when found."""
    model = next(s for s in stack.specs if isinstance(s, RoleSpec))
    return [dataclasses.replace(model, name=name, arn=model.arn.rsplit("/", 1)[0] + "/" + name) for name in settings.names.legacy_roles()]


def deployed_environment(clients: Clients, function: str) -> dict[str, str]:
    """A deployed function's environment ({} when there is no such function yet): a bootstrap without
    --weights, --annotate or --timeline keeps what the functions do now."""
    config: Any = get_or_none(clients.lambda_.get_function_configuration, FunctionName=function)
    return dict(((config or {}).get("Environment") or {}).get("Variables") or {})


# ------------------------------------------------------------------------------------------ bootstrap


@dataclass(frozen=True)
class BootstrapRequest:
    """What `facerec bootstrap` was asked for; None: keep what is deployed (off for a new deployment)."""

    gallery: Path | None = None
    weights: str | None = None
    annotate: bool | None = None
    timeline: bool | None = None
    segment_seconds: float | None = None
    build_images: bool = True
    base_image: str | None = None
    stage1_layout: str | None = None  # "frames" | "gop"


def layout_env(deployed: dict[str, str], layout: str | None, *, timeline: bool) -> dict[str, str]:
    """video-splitting's stage-1 layout (lambdas/gop.py): ``--stage1-layout``, else what the deployed
    function has (``frames`` for a new deployment). Part 1's layout and timelines do not combine."""
    value = layout if layout is not None else deployed.get(fenv.STAGE1_LAYOUT) or "frames"
    if value != GOP:
        return {}
    if timeline:
        raise UserError(
            "--stage1-layout gop and --timeline do not combine: a timeline samples its own frames",
            hint="pass --no-timeline for Part 1's layout, or --stage1-layout frames for timelines",
        )
    return {fenv.STAGE1_LAYOUT: GOP}


def gallery_weights(gallery: Path | None, weights: str | None) -> str | None:
    """The weights to deploy for ``gallery``: the ones it was made with (refused when ``weights`` differ)."""
    if gallery is None:
        return weights
    from facerec_cli.gallery_files import load_gallery

    loaded = load_gallery(gallery)  # GalleryError (one red line) on a missing, empty or foreign file; old ones converted
    if not len(loaded.names):
        raise UserError(f"gallery {gallery} has nobody enrolled", hint="enrol photos with `facerec enroll PHOTOS_DIR -o GALLERY`")
    if weights is not None and weights != loaded.weights:
        raise UserError(
            f"gallery {gallery} was made with {loaded.weights} weights, not {weights}",
            hint=f"drop --weights, or enrol again with `facerec enroll ... --weights {weights}`",
        )
    return loaded.weights


def timeline_env(deployed: dict[str, str], timeline: bool | None, segment_seconds: float | None) -> dict[str, str]:
    """video-splitting's timeline settings: ``--timeline/--no-timeline`` and ``--segment-seconds``, else
    what the deployed function has (off for a new deployment)."""
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


class ImageBuilder(Protocol):
    """How images are built and pushed (:mod:`.images`; a recorder in tests without a Docker engine)."""

    def open_engine(self, settings: Settings, clients: Clients, *, registry: str | None) -> Any: ...

    def build_and_push(self, settings: Settings, clients: Clients, **kwargs: Any) -> dict[str, str]: ...


def _no_status(message: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


class Bootstrap:
    """`facerec bootstrap` in stages, as chalice's deployer: resolve the options from the request and what is
    deployed, plan (shown and confirmed by the caller), then apply: with images, the engine is opened
    before anything is created, the ECR repository made, the images built and pushed, and the whole stack
    planned again with their URIs and applied. ``images``, ``reporter`` and ``status`` are injected."""

    def __init__(
        self, settings: Settings, request: BootstrapRequest, *, clients: Clients | None = None, images: ImageBuilder | None = None,
        reporter: Reporter | None = None, on_progress: Callable[[str], None] | None = None,
        status: Callable[[str], contextlib.AbstractContextManager[Any]] = _no_status,
    ) -> None:  # fmt: skip
        weights = gallery_weights(request.gallery, request.weights)  # before any AWS client: a bad gallery costs nothing
        self.settings, self.request = settings, request
        self.clients = clients = clients or Clients.from_settings(settings)
        self.images = images
        self.reporter = reporter or NullReporter()
        self.on_progress = on_progress or (lambda line: None)
        self.status = status
        n = settings.names
        deployed = deployed_environment(clients, n.recognition_function)
        self.weights = weights or deployed.get(fenv.WEIGHTS) or "casia-webface"
        annotate = deployed.get(fenv.ANNOTATE) == "1" if request.annotate is None else request.annotate
        splitting = deployed_environment(clients, n.splitting_function)
        timeline = timeline_env(splitting, request.timeline, request.segment_seconds)
        self.options = DeployOptions(
            gallery=request.gallery, weights=self.weights, with_ecr=request.build_images,
            recognition_env={fenv.ANNOTATE: "1"} if annotate else {},
            splitting_env={**timeline, **layout_env(splitting, request.stage1_layout, timeline=bool(timeline))},
        )  # fmt: skip

    def plan(self) -> Plan:
        """The plan before any image exists: what is shown and confirmed, with its blockers."""
        plan = plan_deploy(self.settings, self.options, self.clients)
        if not self.request.build_images and any(s.action == "create" and s.kind == FunctionSpec.kind for s in plan.steps):
            plan.warnings.append(
                "--skip-images: new functions point at a placeholder image (<repository>:local); AWS Lambda only accepts "
                "an image that exists in ECR, so run without --skip-images to build and push them"
            )
        return plan

    def image_build(self) -> tuple[str, str, str] | None:
        """(action, what, detail) of the image build that comes before the functions, for the plan view."""
        if not self.request.build_images:
            return None
        n = self.settings.names
        where = f"{self.settings.registry}/{n.ecr_repository}" if self.settings.registry else f"ECR repository {n.ecr_repository}"
        return ("create", "container images video-splitting, face-recognition", f"build with {self.weights} weights and push to {where}")

    def apply(self, plan: Plan, *, on_replanned: Callable[[list[Step]], None] | None = None) -> Plan:
        """Apply ``plan``; with images, first the registry and the images, then the stack planned again with
        them (``on_replanned`` gets the steps that the images added). Returns the plan applied last."""
        refuse_blocked(plan)
        if self.request.build_images:
            assert self.images is not None, "building images needs an image builder"
            # Docker and the registry login are checked before the repository is created, so that "no
            # engine" leaves nothing behind; the images need the repository before they can be pushed.
            with self.status("connecting to the Docker engine…"):
                engine = self.images.open_engine(self.settings, self.clients, registry=self.settings.registry)
            try:
                created = apply_plan(plan_registry(self.settings, self.options, self.clients), self.reporter)
                uris = self._build(engine, created)
            finally:
                engine.close()
            options = dataclasses.replace(self.options, splitting_image=uris.get("splitting"), recognition_image=uris.get("recognition"))
            shown = {(s.action, s.resource) for s in plan.changes}
            plan = plan_deploy(self.settings, options, self.clients)  # now with the pushed images (and the repository done)
            if on_replanned is not None:
                on_replanned([s for s in plan.changes if (s.action, s.resource) not in shown])
        apply_plan(plan, self.reporter)
        if any(s.kind == NotificationSpec.kind for s in plan.changes):  # S3 may take minutes to apply it (pipeline/trigger.py)
            from facerec_cli.pipeline.upload_ledger import UploadLedger

            UploadLedger(self.settings).trigger_put()
        return plan

    def _build(self, engine: Any, done_before: list[Step]) -> dict[str, str]:
        """Build and push; a failure names what this bootstrap had already created (the repository)."""
        assert self.images is not None
        try:
            with self.status("building and pushing the container images…"):
                uris = self.images.build_and_push(
                    self.settings, self.clients, weights=self.weights, registry=self.settings.registry, base_image=self.request.base_image,
                    on_progress=self.on_progress, engine=engine,
                )  # fmt: skip
        except UserError as exc:
            if not done_before:
                raise
            done = "; ".join(f"{s.past} {s.resource}" for s in done_before)
            hint = f"{exc.hint}; " if exc.hint else ""
            raise DeployError(
                f"{exc.args[0] if exc.args else exc}. Done before it: {done}",
                hint=f"{hint}run `{BOOTSTRAP}` again to finish: it only does what is left", completed=done_before,
            ) from exc
        return uris
