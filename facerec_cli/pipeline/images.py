"""The functions' container images: build them (Docker's classic builder), tag them by content, push
them to ECR (or another registry), and say what happened one line at a time.

    uris = build_and_push(settings, clients, weights="casia-webface", on_progress=print)
    # {"splitting": "<registry>/<repo>@sha256:...", "recognition": "<registry>/<repo>@sha256:..."}

Tags are ``splitting-<hash>`` and ``recognition-<hash>``, where the hash covers exactly what goes into
the build: the Dockerfile, the files of the build context (``lambdas/``, and for recognition the ONNX
models and their manifest under ``models/``) and the build arguments that shape the image (base image,
weights). An image whose tag the registry already has is neither built nor pushed again, so running
``facerec bootstrap`` twice changes nothing, on any machine. The URIs returned carry the manifest digest,
which is what the Lambda functions are pointed at.

The recognition image runs the models on onnxruntime and holds no torch: the models are built here, on
the machine that builds the image (``lambdas.core.models.model_dir``: the weights cache, exported once
with torch), for the weights of the gallery, and sent in the build context.

The registry is the account's ECR registry (login with ``ecr:GetAuthorizationToken``), unless a
registry host is given (``--registry``, ``FACEREC_REGISTRY``): then no ECR login is made and the
engine's own credentials for that host apply (``docker login``), none for a plain local registry such
as ``127.0.0.1:5000``. Credentials are passed to the engine only, never printed or logged.

The build context is made here, from the same list of files that the hash covers (``.dockerignore``
says the same for builds by hand): only ``lambdas/``, ``models/`` and the Dockerfile, nothing else of
the repository (no .git, no credentials). Builds use the classic builder with ``pull=False``: a base image
already present is used as it is (a missing one is pulled by the engine). Builds without a package index
(a mirror, or a wheelhouse as the tests use) take pip's settings as build arguments, from ``build_args``
or from ``$FACEREC_IMAGE_BUILD_ARGS`` (``"PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:8000/"``), and
the build's network from ``network_mode`` or ``$FACEREC_IMAGE_BUILD_NETWORK`` (e.g. ``host``).

``build_local`` builds the same images for ``facerec run-local --runtime containers`` and tags them
``facerec-local:<kind>-<hash>`` in the engine, without a registry.

What goes into an image and its tag: :mod:`.image_context`; the registry and the push: :mod:`.registry`.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.clients import Clients
from facerec_cli.pipeline.registry import (
    PushedImage,
    RegistryTarget,
    ecr_platform_digest,
    login,
    push,
    registry_target,
    remote_digest,
    short_error,
)
from facerec_cli.pipeline.image_context import (
    BUILD_ARGS_ENV,
    DEFAULT_PLATFORM,
    DOCKERFILES,
    KINDS,
    RECOGNITION,
    ContextFile,
    Progress,
    _build_options,
    build_args_for,
    build_context,
    built_models,
    context_files,
    image_tag,
)

LOCAL_REPOSITORY = "facerec-local"  # build_local's images: facerec-local:<kind>-<hash>
CONTENT_LABEL = "facerec.content"  # on every image built here: its content tag (<kind>-<hash>)
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LOG_LINES = 25  # build output kept for the error message of a failed build



# ------------------------------------------------------------------------------------------- engine


def connect(docker_host: str | None = None, timeout: float = 600.0) -> Any:
    """A client for the engine at ``docker_host`` (else $DOCKER_HOST, else the default socket), checked."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise UserError("the docker Python package is missing", hint="pip install docker") from exc
    env_host = os.environ.get("DOCKER_HOST")
    where = docker_host or (f"{env_host} (DOCKER_HOST)" if env_host else "the default socket /var/run/docker.sock")
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=int(timeout)) if docker_host else docker.from_env(timeout=int(timeout))
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, connection and permission errors alike
        raise UserError(
            f"cannot reach a Docker engine at {where}: {short_error(exc)}",
            hint="start Docker (Docker Desktop, or `sudo systemctl start docker`), or install it "
            "(https://docs.docker.com/engine/install/); DOCKER_HOST selects another engine; "
            "--skip-images keeps the functions' current images",
        ) from exc
    return client


def _build(
    client: Any,
    kind: str,
    context: bytes,
    reference: str,
    build_args: Mapping[str, str],
    *,
    emit: Progress,
    network_mode: str | None,
    platform: str | None,
    timeout: float,
) -> str:
    """Build with the classic builder; one progress line per Dockerfile step. Returns the image id."""
    import docker

    started = time.monotonic()
    lines: deque[str] = deque(maxlen=_LOG_LINES)
    step = ""
    image_id = ""
    partial = ""
    try:
        stream = client.api.build(
            fileobj=io.BytesIO(context), custom_context=True, dockerfile=DOCKERFILES[kind], tag=reference,
            buildargs=dict(build_args), pull=False, rm=True, forcerm=True, decode=True,
            network_mode=network_mode, platform=platform, labels={CONTENT_LABEL: reference.rpartition(":")[2]},
        )  # fmt: skip
        for chunk in stream:
            if time.monotonic() - started > timeout:
                raise UserError(
                    f"building the {kind} image took longer than {timeout:.0f} s (at {step or 'the start'})",
                    hint="run again (finished steps are cached), or raise the build timeout",
                )
            if "error" in chunk or "errorDetail" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "unknown error"
                raise _build_error(kind, step, str(detail), lines, build_args)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and chunk["aux"].get("ID"):
                image_id = chunk["aux"]["ID"]
            text = chunk.get("stream")
            if not text:
                continue
            partial += text
            *complete, partial = partial.split("\n")
            for line in complete:
                line = _ANSI.sub("", line).rstrip("\r")
                if not line.strip():
                    continue
                lines.append(line)
                match = _STEP.match(line)
                if match:
                    step = line
                    emit(f"{kind}: step {match.group(1)}/{match.group(2)}: {_clip(match.group(3))}")
    except UserError:
        raise
    except docker.errors.BuildError as exc:
        raise _build_error(kind, step, str(exc.msg), lines, build_args) from exc
    except docker.errors.APIError as exc:
        raise _build_error(kind, step, short_error(exc), lines, build_args) from exc
    except Exception as exc:  # noqa: BLE001 - a read timeout or a dropped connection to the engine
        raise UserError(
            f"building the {kind} image stopped at {step or 'the start'}: {type(exc).__name__}: {short_error(exc)}",
            hint="a step gave no output for longer than the engine timeout, or the engine went away; run again "
            "(finished steps are cached)",
        ) from exc
    if not image_id:
        image_id = client.images.get(reference).id
    emit(f"{kind}: built {image_id[:19]} in {time.monotonic() - started:.0f} s")
    return image_id


def _clip(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _build_error(kind: str, step: str, detail: str, lines: Iterable[str], build_args: Mapping[str, str]) -> UserError:
    where = f" at {_clip(step, 160)}" if step else ""
    tail = "\n".join(f"  | {line}" for line in lines)
    hint = "fix what the log shows and run the command again (finished steps are cached)"
    base = build_args.get("BASE_IMAGE", "")
    if step.startswith(("Step 1/", "Step 2/")) or "pull access denied" in detail or "manifest unknown" in detail:
        hint = (
            f"the base image {base} could not be used: the engine needs internet access to pull it once, "
            "or pass --base-image with an image that the engine already has"
        )
    elif "pip" in step and ("Could not find a version" in tail or "No matching distribution" in tail or "Failed to establish" in tail):
        hint = (f"pip could not get a package: the build needs the package index, or a mirror or wheelhouse given as build "
                f"arguments (PIP_INDEX_URL, PIP_FIND_LINKS...; ${BUILD_ARGS_ENV})")
    message = f"building the {kind} image failed{where}: {detail.strip()}"
    if tail:
        message += f"\nlast lines of the build:\n{tail}"
    return UserError(message, hint=hint)


# ---------------------------------------------------------------------------------------------- API


@dataclass
class Engine:
    """A checked Docker engine and the registry it is logged in to: what a build needs before it starts."""

    client: Any
    target: RegistryTarget
    owned: bool = True  # made by open_engine: closed by close()

    def close(self) -> None:
        if self.owned:
            self.client.close()


def open_engine(
    settings: Settings,
    clients: Clients | None = None,
    *,
    registry: str | None = None,
    docker_client: Any = None,
    docker_host: str | None = None,
) -> Engine:
    """Connect to the Docker engine, then log in to the registry: everything of an image build that can
    fail without changing anything, so that callers can do it before they create resources."""
    client = docker_client or connect(docker_host)
    try:
        target = registry_target(settings, clients, registry)
        login(client, target, local_endpoint=bool(settings.endpoint_url))
    except BaseException:
        if docker_client is None:
            client.close()
        raise
    return Engine(client, target, owned=docker_client is None)


@dataclass(frozen=True)
class ImagePlan:
    """One image to build: its build arguments, its context (read once) and the tag they hash to."""

    kind: str
    args: dict[str, str]
    files: list[ContextFile]
    tag: str


def plan_images(
    *,
    weights: str = "casia-webface",
    base_image: str | None = None,
    only: Iterable[str] = KINDS,
    build_args: Mapping[str, str] | None = None,
    root: Path | None = None,
    models: Path | None = None,
    on_progress: Progress | None = None,
) -> list[ImagePlan]:
    """What :func:`build_images` and :func:`build_local` build: everything that can fail without an
    engine (unknown kinds, weights that cannot be baked, missing sources, models to export) fails here."""
    kinds = [k for k in KINDS if k in set(only)]
    unknown = set(only) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown image kind(s) {sorted(unknown)}; choose from {KINDS}")
    plans = []
    for kind in kinds:
        args = build_args_for(kind, base_image=base_image, weights=weights, extra=build_args)
        if kind == RECOGNITION and models is None:
            models = built_models(weights, on_progress)
        files = context_files(kind, root, models if kind == RECOGNITION else None)
        plans.append(ImagePlan(kind, args, files, image_tag(kind, files, args)))
    return plans


@dataclass(frozen=True)
class BuildOptions:
    """How :func:`build_images` and :func:`build_local` build (see :func:`build_and_push`)."""

    weights: str = "casia-webface"
    base_image: str | None = None
    only: Iterable[str] = KINDS
    build_args: Mapping[str, str] | None = None
    network_mode: str | None = None
    platform: str | None = DEFAULT_PLATFORM
    force: bool = False
    root: Path | None = None
    models: Path | None = None
    timeout: float = 3600.0

    def prepare(self, emit: Progress) -> tuple[list[ImagePlan], str | None]:
        """(the images to build, the build's network): everything that can fail before an engine."""
        build_args, network_mode = _build_options(self.build_args, self.network_mode)
        plans = plan_images(weights=self.weights, base_image=self.base_image, only=self.only, build_args=build_args,
                            root=self.root, models=self.models, on_progress=emit)  # fmt: skip
        return plans, network_mode


def build_images(
    settings: Settings,
    clients: Clients | None = None,
    *,
    registry: str | None = None,
    docker_client: Any = None,
    docker_host: str | None = None,
    on_progress: Progress | None = None,
    engine: Engine | None = None,
    **options: Any,
) -> dict[str, PushedImage]:
    """Build and push the images of ``only`` (default both); ``options``: :class:`BuildOptions`; see
    :func:`build_and_push`. ``engine`` (from :func:`open_engine`) is used as it is and left open; without
    one, one is opened and closed."""
    emit: Progress = on_progress or (lambda line: None)
    build = BuildOptions(**options)
    plans, network_mode = build.prepare(emit)
    own_engine = engine is None
    engine = engine or open_engine(settings, clients, registry=registry, docker_client=docker_client, docker_host=docker_host)
    client, target = engine.client, engine.target
    # ECR: the function runs the platform's own manifest, read back from ECR, never an index (see below).
    ecr = (clients or Clients.from_settings(settings)).ecr if target.ecr else None

    def runnable(kind: str, tag: str, digest: str) -> str:
        if ecr is None:  # another registry: nothing runs it on Lambda (which pulls from ECR only)
            return digest
        wanted = ecr_platform_digest(ecr, target, tag, build.platform or DEFAULT_PLATFORM)
        if wanted != digest:
            emit(f"{kind}: {target.repository}:{tag} is an image index; the functions use its {build.platform or DEFAULT_PLATFORM} image {wanted}")
        return wanted

    try:
        results: dict[str, PushedImage] = {}
        for plan in plans:
            kind, tag = plan.kind, plan.tag
            reference = f"{target.repository}:{tag}"
            existing = None if build.force else remote_digest(client, reference, target.auth)
            if existing:
                emit(f"{kind}: {reference} is already in the registry (unchanged), not rebuilt")
                results[kind] = PushedImage(kind, target.repository, tag, runnable(kind, tag, existing), pushed=False)
                continue
            emit(f"{kind}: building {reference} from {plan.args['BASE_IMAGE']}")
            started = time.monotonic()
            _build(client, kind, build_context(plan.files), reference, plan.args, emit=emit, network_mode=network_mode,
                   platform=build.platform, timeout=build.timeout)  # fmt: skip
            remaining = max(60.0, build.timeout - (time.monotonic() - started))
            digest = push(client, target, tag, kind, emit=emit, timeout=remaining)
            results[kind] = PushedImage(kind, target.repository, tag, runnable(kind, tag, digest), pushed=True)
        return results
    finally:
        if own_engine:
            engine.close()


@dataclass(frozen=True)
class LocalImage:
    """An image in the engine only (``facerec run-local --runtime containers``). ``built``: this call
    built it; False when the engine already had an image of that content."""

    kind: str
    reference: str  # facerec-local:<kind>-<hash>
    image_id: str
    built: bool


def _image_with_tag(client: Any, kind: str, tag: str) -> Any:
    """An image in the engine built from the content that ``tag`` names (e.g. built and pushed by
    bootstrap, even if its tag was removed since), or None."""
    for image in client.images.list(filters={"label": f"{CONTENT_LABEL}={tag}"}):
        if (image.labels or {}).get("facerec.image") == kind:
            return image
    return None


def build_local(docker_client: Any, *, on_progress: Progress | None = None, **options: Any) -> dict[str, LocalImage]:
    """Build the images as :func:`build_images` does (same Dockerfiles, context, arguments and tags;
    ``options``: :class:`BuildOptions`) into the engine of ``docker_client`` only, tagged
    ``facerec-local:<kind>-<hash>``. An image of the same content already in the engine (by its tag,
    under any repository) is reused, not rebuilt."""
    emit: Progress = on_progress or (lambda line: None)
    build = BuildOptions(**options)
    plans, network_mode = build.prepare(emit)
    results: dict[str, LocalImage] = {}
    for plan in plans:
        reference = f"{LOCAL_REPOSITORY}:{plan.tag}"
        found = None if build.force else _image_with_tag(docker_client, plan.kind, plan.tag)
        if found is not None:
            if reference not in found.tags:
                found.tag(LOCAL_REPOSITORY, plan.tag)
            emit(f"{plan.kind}: {reference} is already built (unchanged), not rebuilt")
            results[plan.kind] = LocalImage(plan.kind, reference, found.id, built=False)
            continue
        emit(f"{plan.kind}: building {reference} from {plan.args['BASE_IMAGE']}")
        image_id = _build(docker_client, plan.kind, build_context(plan.files), reference, plan.args, emit=emit,
                          network_mode=network_mode, platform=build.platform, timeout=build.timeout)  # fmt: skip
        results[plan.kind] = LocalImage(plan.kind, reference, image_id, built=True)
    return results


def build_and_push(
    settings: Settings,
    clients: Clients | None = None,
    *,
    weights: str = "casia-webface",
    registry: str | None = None,
    base_image: str | None = None,
    docker_client: Any = None,
    on_progress: Progress | None = None,
    only: Iterable[str] = KINDS,
    **options: Any,
) -> dict[str, str]:
    """Build the images (``only``: "splitting", "recognition"), push what the registry lacks, and return
    ``{kind: "<registry>/<repository>@sha256:<digest>"}``.

    ``registry``: a registry host (default ``settings.registry``, else the account's ECR registry, logged
    in with ``ecr.get_authorization_token()``). ``base_image``: default public.ecr.aws/lambda/python:3.12.
    ``weights``: the models baked into the recognition image (casia-webface or vggface2), built on this
    machine first when the weights cache lacks them. ``on_progress``: called with one line per build step
    and per layer event. Further keyword options: ``docker_host``, ``build_args`` (e.g. PIP_INDEX_URL;
    default from $FACEREC_IMAGE_BUILD_ARGS; Docker records build argument values in the image history, so
    they must hold no credentials), ``network_mode`` (of the build; default $FACEREC_IMAGE_BUILD_NETWORK),
    ``platform`` (default linux/amd64), ``force`` (rebuild and push even if the registry has the tag),
    ``root`` (the source checkout; default: the one ``lambdas`` is imported from), ``models`` (a built
    model directory; default: the weights cache's for ``weights``), ``timeout`` (seconds per image),
    ``engine`` (from :func:`open_engine`, checked beforehand). Raises UserError with what to do on any
    failure: no engine, a failed build step (with its last log lines), a refused login or push.
    """
    images = build_images(
        settings, clients, weights=weights, registry=registry, base_image=base_image, docker_client=docker_client,
        on_progress=on_progress, only=only, **options,
    )  # fmt: skip
    return {kind: image.uri for kind, image in images.items()}
