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
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shlex
import stat
import tarfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.clients import Clients

SPLITTING = "splitting"
RECOGNITION = "recognition"
KINDS: tuple[str, ...] = (SPLITTING, RECOGNITION)
DOCKERFILES = {SPLITTING: "Dockerfile.splitting", RECOGNITION: "Dockerfile.recognition"}
# Amazon Linux 2023. The onnxruntime, av and safetensors wheels are manylinux_2_28 (glibc >= 2.28):
# public.ecr.aws/lambda/python:3.11 and older are Amazon Linux 2, whose glibc is 2.26.
DEFAULT_BASE_IMAGE = "public.ecr.aws/lambda/python:3.12"
IMAGE_WEIGHTS = ("casia-webface", "vggface2")  # what Dockerfile.recognition can bake in
DEFAULT_PLATFORM = "linux/amd64"  # the functions' architecture (x86_64)
CONTEXT_DIRS = ("lambdas",)  # the build context besides the Dockerfile (and the recognition models)
MODELS_DIR = "models"  # where the recognition image's models are in its build context
LOCAL_REPOSITORY = "facerec-local"  # build_local's images: facerec-local:<kind>-<hash>
CONTENT_LABEL = "facerec.content"  # on every image built here: its content tag (<kind>-<hash>)
BUILD_ARGS_ENV = "FACEREC_IMAGE_BUILD_ARGS"  # "NAME=VALUE ..." build arguments (pip's mirror or wheelhouse)
BUILD_NETWORK_ENV = "FACEREC_IMAGE_BUILD_NETWORK"  # network of the build steps (e.g. host)
# Bump when the way tags are computed changes.
_TAG_SCHEME = "2"
_ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LOG_LINES = 25  # build output kept for the error message of a failed build

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PushedImage:
    """One image in the registry. ``pushed``: this call built and pushed it; False when the registry
    already had the tag (an unchanged build)."""

    kind: str
    repository: str  # registry host / repository name
    tag: str
    digest: str  # sha256:...
    pushed: bool

    @property
    def tag_uri(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def uri(self) -> str:
        """``<registry>/<repo>@sha256:...``: what the Lambda function runs."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class RegistryTarget:
    host: str
    repository: str  # host/name
    auth: dict[str, str] | None  # for the engine only; never printed
    ecr: bool

    def __repr__(self) -> str:  # keep the password out of any repr
        return f"RegistryTarget(host={self.host!r}, repository={self.repository!r}, ecr={self.ecr})"


# ------------------------------------------------------------------------------------------ context


def source_root(root: Path | None = None) -> Path:
    """The directory holding the Dockerfiles and lambdas/ (the repository root of a source checkout)."""
    if root is None:
        import lambdas

        root = Path(lambdas.__file__).resolve().parent.parent
    missing = [name for name in (*DOCKERFILES.values(), *CONTEXT_DIRS) if not (root / name).exists()]
    if missing:
        raise UserError(
            f"cannot build the images: {', '.join(missing)} not found in {root}",
            hint="the images are built from a source checkout: install it editable (pip install -e .) and run from it; "
            "`facerec bootstrap --skip-images` keeps the functions' current images",
        )
    return root


def _wanted(path: Path) -> bool:
    return not any(part.startswith(".") or part == "__pycache__" for part in path.parts) and path.suffix not in (".pyc", ".pyo")


@dataclass(frozen=True)
class ContextFile:
    """One file of a build context, read once: the tag is computed from, and the context made of, the
    same bytes, however the working tree changes meanwhile."""

    name: str  # path in the context (POSIX)
    data: bytes
    executable: bool


def context_files(kind: str, root: Path | None = None, models: Path | None = None) -> list[ContextFile]:
    """The build context of ``kind``, sorted: its Dockerfile and every file under lambdas/ except caches
    and hidden files (what .dockerignore lets through); for recognition also the built models of
    ``models`` (a directory made by ``lambdas.core.models``) as ``models/``."""
    root = source_root(root)
    paths = [(DOCKERFILES[kind], root / DOCKERFILES[kind])]
    for top in CONTEXT_DIRS:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not path.is_symlink() and _wanted(rel):
                paths.append((rel.as_posix(), path))
    if kind == RECOGNITION:
        if models is None:
            raise ValueError("the recognition image's context needs the built models (models=...)")
        paths += [(f"{MODELS_DIR}/{path.name}", path) for path in model_files(models)]
    return [ContextFile(name, path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR)) for name, path in sorted(paths)]


def model_files(models: Path) -> list[Path]:
    """The files of a built model directory that the recognition image needs: the four ONNX nets and
    the manifest (which says which weights made them)."""
    from lambdas.core.models import MANIFEST, NETS

    files = [models / f"{net}.onnx" for net in NETS] + [models / MANIFEST]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise UserError(
            f"{models} is not a built model directory: {', '.join(missing)} missing",
            hint="build the models with `facerec models build --weights W` (or unset FACEREC_MODELS)",
        )
    return files


def built_models(weights: str, on_progress: Progress | None = None) -> Path:
    """The models the recognition image bakes in for ``weights``: $FACEREC_MODELS when it names a
    directory built for them, else the weights cache, where they are exported first when missing (that
    needs torch and facenet-pytorch, which the CLI has; the image never does)."""
    from lambdas.core.models import model_dir

    return model_dir(weights, progress=on_progress).path


def build_context(files: Iterable[ContextFile]) -> bytes:
    """A reproducible tar of ``files`` (fixed owner and times; modes 644, or 755 when executable)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            info = tarfile.TarInfo(file.name)
            info.size = len(file.data)
            info.mode = 0o755 if file.executable else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(file.data))
    return buf.getvalue()


def _hashed_args(build_args: Mapping[str, str]) -> dict[str, str]:
    # pip's transport settings (mirror, wheelhouse) say where packages come from, not what the image is.
    return {k: v for k, v in sorted(build_args.items()) if not k.startswith("PIP_")}


def content_hash(kind: str, files: Iterable[ContextFile], build_args: Mapping[str, str]) -> str:
    digest = hashlib.sha256(f"facerec-image:{_TAG_SCHEME}:{kind}\n".encode())
    for file in files:
        digest.update(f"{file.name}\0{len(file.data)}\0{int(file.executable)}\0".encode())
        digest.update(file.data)
    for key, value in _hashed_args(build_args).items():
        digest.update(f"arg\0{key}={value}\n".encode())
    return digest.hexdigest()


def image_tag(kind: str, files: Iterable[ContextFile], build_args: Mapping[str, str]) -> str:
    return f"{kind}-{content_hash(kind, files, build_args)[:16]}"


def build_args_for(
    kind: str,
    *,
    base_image: str | None = None,
    weights: str = "casia-webface",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The build arguments of one image; only those its Dockerfile uses (so that, say, other weights
    do not rebuild the splitting image)."""
    args = {"BASE_IMAGE": base_image or DEFAULT_BASE_IMAGE}
    if kind == RECOGNITION:
        if weights not in IMAGE_WEIGHTS:
            raise UserError(
                f"weights {weights!r} cannot be baked into the recognition image",
                hint=f"use one of {', '.join(IMAGE_WEIGHTS)} (a gallery made with other weights cannot be used on AWS)",
            )
        args["WEIGHTS"] = weights
    args.update(extra or {})
    return args


def environ_build_args(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Build arguments from ``$FACEREC_IMAGE_BUILD_ARGS`` (``NAME=VALUE`` words, shell-quoted where
    needed), e.g. pip's mirror or a wheelhouse for a machine without the package index."""
    text = (os.environ if environ is None else environ).get(BUILD_ARGS_ENV, "")
    args: dict[str, str] = {}
    for word in shlex.split(text):
        name, sep, value = word.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise UserError(f"{BUILD_ARGS_ENV}: {word!r} is not NAME=VALUE", hint="e.g. PIP_INDEX_URL=https://mirror.example/simple")
        args[name] = value
    return args


def _build_options(build_args: Mapping[str, str] | None, network_mode: str | None) -> tuple[dict[str, str], str | None]:
    """Explicit build arguments and network over those of the environment."""
    return {**environ_build_args(), **(build_args or {})}, network_mode or os.environ.get(BUILD_NETWORK_ENV) or None


# ----------------------------------------------------------------------------------------- registry


def is_ecr_host(host: str) -> bool:
    return bool(_ECR_HOST.match(host))


def _ecr_login(clients: Clients, registry_id: str | None) -> tuple[str, dict[str, str]]:
    import botocore.exceptions

    from facerec_cli.infra.errors import explain

    try:
        kwargs = {"registryIds": [registry_id]} if registry_id else {}
        data = clients.ecr.get_authorization_token(**kwargs)["authorizationData"][0]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc, what="the ECR login")
        raise UserError(f"could not get an ECR login (ecr:GetAuthorizationToken): {message}", hint=hint) from exc
    try:
        username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    except (KeyError, ValueError) as exc:
        raise UserError("ECR returned an authorization token that is not base64 'user:password'") from exc
    endpoint = data.get("proxyEndpoint") or ""
    host = urlparse(endpoint).netloc or endpoint
    return host, {"username": username, "password": password, "serveraddress": endpoint or f"https://{host}"}


def registry_target(settings: Settings, clients: Clients | None, registry: str | None = None) -> RegistryTarget:
    """Where images go: ``registry`` (or ``settings.registry``), else the account's ECR registry."""
    host = (registry or settings.registry or "").strip().rstrip("/")
    host = urlparse(host).netloc if "://" in host else host
    name = settings.names.ecr_repository
    if host and not is_ecr_host(host):
        return RegistryTarget(host=host, repository=f"{host}/{name}", auth=None, ecr=False)
    clients = clients or Clients.from_settings(settings)
    match = _ECR_HOST.match(host) if host else None
    token_host, auth = _ecr_login(clients, match.group("account") if match else None)
    host = host or token_host
    return RegistryTarget(host=host, repository=f"{host}/{name}", auth=auth, ecr=True)


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
            f"cannot reach a Docker engine at {where}: {_short(exc)}",
            hint="start Docker (Docker Desktop, or `sudo systemctl start docker`), or install it "
            "(https://docs.docker.com/engine/install/); DOCKER_HOST selects another engine; "
            "--skip-images keeps the functions' current images",
        ) from exc
    return client


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def remote_digest(client: Any, reference: str, auth: Mapping[str, str] | None) -> str | None:
    """The manifest digest of ``reference`` in its registry, or None when it is not there (or cannot be
    read: the push that follows reports a real problem)."""
    import docker

    try:
        data = client.images.get_registry_data(reference, auth_config=dict(auth) if auth else None)
    except docker.errors.DockerException:
        return None
    digest = getattr(data, "id", None)
    return digest if isinstance(digest, str) and digest.startswith("sha256:") else None


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
        raise _build_error(kind, step, _short(exc), lines, build_args) from exc
    except Exception as exc:  # noqa: BLE001 - a read timeout or a dropped connection to the engine
        raise UserError(
            f"building the {kind} image stopped at {step or 'the start'}: {type(exc).__name__}: {_short(exc)}",
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


class _PushProgress:
    """Push stream -> lines: each layer's status changes, and its upload every 25%."""

    def __init__(self, kind: str, emit: Progress) -> None:
        self.kind = kind
        self.emit = emit
        self.status: dict[str, str] = {}
        self.quarter: dict[str, int] = {}

    def __call__(self, chunk: Mapping[str, Any]) -> None:
        layer = chunk.get("id")
        status = str(chunk.get("status") or "")
        if not layer or not status:
            return  # repository-level lines ("The push refers to ...", the final digest line)
        if status == "Pushing":
            detail = chunk.get("progressDetail") or {}
            current, total = detail.get("current") or 0, detail.get("total") or 0
            quarter = min(4, int(4 * current / total)) if total else 0
            if quarter > self.quarter.get(layer, -1):
                self.quarter[layer] = quarter
                size = f"{current / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{current / 1e6:.1f} MB"
                self.emit(f"{self.kind}: layer {layer} pushing {size}")
        elif self.status.get(layer) != status and (status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")):
            self.emit(f"{self.kind}: layer {layer} {status[0].lower()}{status[1:]}")
        self.status[layer] = status

    @property
    def summary(self) -> str:
        done = sum(1 for s in self.status.values() if s == "Pushed")
        present = sum(1 for s in self.status.values() if s == "Layer already exists" or s.startswith("Mounted"))
        return f"{done} layer(s) pushed, {present} already there"


def _push(client: Any, target: RegistryTarget, tag: str, kind: str, *, emit: Progress, timeout: float) -> str:
    """Push ``repository:tag``; per-layer progress lines. Returns the manifest digest."""
    import docker

    reference = f"{target.repository}:{tag}"
    started = time.monotonic()
    progress = _PushProgress(kind, emit)
    digest = ""
    try:
        stream = client.api.push(target.repository, tag=tag, stream=True, decode=True, auth_config=dict(target.auth) if target.auth else None)
        for chunk in stream:
            if time.monotonic() - started > timeout:
                raise UserError(f"pushing {reference} took longer than {timeout:.0f} s", hint="check the network and run again")
            if "error" in chunk or "errorDetail" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "unknown error"
                raise _push_error(reference, str(detail), target)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            progress(chunk)
    except UserError:
        raise
    except docker.errors.APIError as exc:
        raise _push_error(reference, _short(exc), target) from exc
    except Exception as exc:  # noqa: BLE001 - read timeout, dropped connection
        raise UserError(f"pushing {reference} stopped: {type(exc).__name__}: {_short(exc)}", hint="run the command again") from exc
    if not digest:
        digest = remote_digest(client, reference, target.auth) or ""
    if not digest:
        raise UserError(f"pushing {reference} ended without a digest", hint="check the registry and run again")
    emit(f"{kind}: pushed {reference} ({progress.summary}) in {time.monotonic() - started:.0f} s")
    return digest


def _push_error(reference: str, detail: str, target: RegistryTarget) -> UserError:
    lowered = detail.lower()
    if any(word in lowered for word in ("denied", "unauthorized", "no basic auth", "authentication required", "forbidden")):
        if target.ecr:
            hint = (
                "ECR refused the push: check that the repository exists (bootstrap creates it first) and that your "
                "identity may push to it (ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload, ecr:PutImage)"
            )
        else:
            hint = f"the registry refused the push: run `docker login {target.host}`, or check the repository name"
    elif "server gave http response to https client" in lowered:
        hint = f"{target.host} speaks plain HTTP: add it to the engine's insecure-registries (127.0.0.1 is allowed by default)"
    elif any(word in lowered for word in ("connection refused", "no such host", "timeout", "i/o timeout")):
        hint = f"the registry {target.host} cannot be reached from the Docker engine; is it running?"
    else:
        hint = "run the command again; an unchanged image that is already pushed is skipped"
    return UserError(f"pushing {reference} failed: {detail.strip()}", hint=hint)


def _login(client: Any, target: RegistryTarget, local_endpoint: bool = False) -> None:
    """Check the ECR credentials with the engine before a long build (the push uses them again)."""
    import docker

    if not target.auth:
        return
    hint = ("check the AWS credentials and region (the ECR login comes from ecr:GetAuthorizationToken), and that the "
            "engine can reach the registry")  # fmt: skip
    if local_endpoint:
        hint = ("with --endpoint-url (a local cloud) there is no ECR to push to: push to a registry of your own with "
                "--registry HOST (e.g. 127.0.0.1:5000), or pass --skip-images")  # fmt: skip
    try:
        client.login(
            username=target.auth["username"], password=target.auth["password"],
            registry=target.auth.get("serveraddress") or target.host, reauth=True,
        )  # fmt: skip
    except docker.errors.APIError as exc:
        raise UserError(
            f"the Docker engine could not log in to {target.host}: {_short(exc)}",
            hint=hint,
        ) from exc


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
        _login(client, target, local_endpoint=bool(settings.endpoint_url))
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


def build_images(
    settings: Settings,
    clients: Clients | None = None,
    *,
    weights: str = "casia-webface",
    registry: str | None = None,
    base_image: str | None = None,
    docker_client: Any = None,
    docker_host: str | None = None,
    on_progress: Progress | None = None,
    only: Iterable[str] = KINDS,
    build_args: Mapping[str, str] | None = None,
    network_mode: str | None = None,
    platform: str | None = DEFAULT_PLATFORM,
    force: bool = False,
    root: Path | None = None,
    models: Path | None = None,
    timeout: float = 3600.0,
    engine: Engine | None = None,
) -> dict[str, PushedImage]:
    """Build and push the images of ``only`` (default both); see :func:`build_and_push`. ``engine``
    (from :func:`open_engine`) is used as it is and left open; without one, one is opened and closed."""
    emit: Progress = on_progress or (lambda line: None)
    build_args, network_mode = _build_options(build_args, network_mode)
    plans = plan_images(weights=weights, base_image=base_image, only=only, build_args=build_args, root=root, models=models, on_progress=emit)
    own_engine = engine is None
    engine = engine or open_engine(settings, clients, registry=registry, docker_client=docker_client, docker_host=docker_host)
    client, target = engine.client, engine.target
    try:
        results: dict[str, PushedImage] = {}
        for plan in plans:
            kind, tag = plan.kind, plan.tag
            reference = f"{target.repository}:{tag}"
            existing = None if force else remote_digest(client, reference, target.auth)
            if existing:
                emit(f"{kind}: {reference} is already in the registry (unchanged), not rebuilt")
                results[kind] = PushedImage(kind, target.repository, tag, existing, pushed=False)
                continue
            emit(f"{kind}: building {reference} from {plan.args['BASE_IMAGE']}")
            started = time.monotonic()
            _build(client, kind, build_context(plan.files), reference, plan.args, emit=emit, network_mode=network_mode,
                   platform=platform, timeout=timeout)  # fmt: skip
            remaining = max(60.0, timeout - (time.monotonic() - started))
            digest = _push(client, target, tag, kind, emit=emit, timeout=remaining)
            results[kind] = PushedImage(kind, target.repository, tag, digest, pushed=True)
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


def build_local(
    docker_client: Any,
    *,
    weights: str = "casia-webface",
    base_image: str | None = None,
    on_progress: Progress | None = None,
    only: Iterable[str] = KINDS,
    build_args: Mapping[str, str] | None = None,
    network_mode: str | None = None,
    platform: str | None = DEFAULT_PLATFORM,
    force: bool = False,
    root: Path | None = None,
    models: Path | None = None,
    timeout: float = 3600.0,
) -> dict[str, LocalImage]:
    """Build the images as :func:`build_images` does (same Dockerfiles, context, arguments and tags) into
    the engine of ``docker_client`` only, tagged ``facerec-local:<kind>-<hash>``. An image of the same
    content already in the engine (by its tag, under any repository) is reused, not rebuilt."""
    emit: Progress = on_progress or (lambda line: None)
    build_args, network_mode = _build_options(build_args, network_mode)
    plans = plan_images(weights=weights, base_image=base_image, only=only, build_args=build_args, root=root, models=models, on_progress=emit)
    results: dict[str, LocalImage] = {}
    for plan in plans:
        reference = f"{LOCAL_REPOSITORY}:{plan.tag}"
        found = None if force else _image_with_tag(docker_client, plan.kind, plan.tag)
        if found is not None:
            if reference not in found.tags:
                found.tag(LOCAL_REPOSITORY, plan.tag)
            emit(f"{plan.kind}: {reference} is already built (unchanged), not rebuilt")
            results[plan.kind] = LocalImage(plan.kind, reference, found.id, built=False)
            continue
        emit(f"{plan.kind}: building {reference} from {plan.args['BASE_IMAGE']}")
        image_id = _build(docker_client, plan.kind, build_context(plan.files), reference, plan.args, emit=emit,
                          network_mode=network_mode, platform=platform, timeout=timeout)  # fmt: skip
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
