"""Where the function images go: the registry (the account's ECR, logged in with
ecr:GetAuthorizationToken, or a host of the user's with the engine's own credentials), what it already
holds, and the push with its progress. Credentials go to the engine only, never into a repr or a log."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.clients import Clients
from facerec_cli.pipeline.image_context import Progress
from lambdas.core.names import plural

_ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


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


def short_error(exc: BaseException, limit: int = 300) -> str:
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


# What ECR may hold under a tag: a single-platform manifest, or an index of them (Docker Engine with the
# containerd image store, the default in recent releases, pushes an OCI index). Lambda refuses an index.
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")


def ecr_platform_digest(ecr: Any, target: RegistryTarget, tag: str, platform: str) -> str:
    """The digest of the ``platform`` (``linux/amd64``) image under ``tag`` in the ECR repository of
    ``target``: the manifest's own digest, or, when the tag holds an index, the digest of its entry for
    that platform (attestations and other platforms skipped). That is what a function's ImageUri needs."""
    import botocore.exceptions

    from facerec_cli.infra.errors import explain

    match = _ECR_HOST.match(target.host)
    name = target.repository.split("/", 1)[1]
    where = f"{name}:{tag}"
    try:
        answer = ecr.batch_get_image(
            **({"registryId": match.group("account")} if match else {}), repositoryName=name, imageIds=[{"imageTag": tag}],
            acceptedMediaTypes=[*INDEX_TYPES, *MANIFEST_TYPES],
        )  # fmt: skip
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc, what=where)
        raise UserError(f"could not read the manifest of {where} from ECR (ecr:BatchGetImage): {message}", hint=hint) from exc
    found = answer.get("images") or []
    if not found:
        failure = (answer.get("failures") or [{}])[0]
        reason = ": ".join(str(v) for v in (failure.get("failureCode"), failure.get("failureReason")) if v) or "not found"
        raise UserError(f"ECR has no image {where} ({reason})", hint="run the command again: an image missing from the registry is built and pushed")
    image = found[0]
    manifest = json.loads(image.get("imageManifest") or "{}")
    if (image.get("imageManifestMediaType") or manifest.get("mediaType")) not in INDEX_TYPES and "manifests" not in manifest:
        return str(image["imageId"]["imageDigest"])
    os_name, _, arch = platform.partition("/")
    for entry in manifest.get("manifests") or []:
        wanted = entry.get("platform") or {}
        if wanted.get("os") == os_name and wanted.get("architecture") == arch and entry.get("mediaType", MANIFEST_TYPES[0]) in MANIFEST_TYPES:
            return str(entry["digest"])
    platforms = sorted({f"{(e.get('platform') or {}).get('os')}/{(e.get('platform') or {}).get('architecture')}" for e in manifest.get("manifests") or []})
    raise UserError(
        f"{where} in ECR is an image index without a {platform} image (it has {', '.join(platforms) or 'none'}); Lambda runs a single-platform image",
        hint=f"build for {platform} (the default of `facerec bootstrap`), or push with `docker push --platform {platform}`",
    )


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
        return f"{plural(done, 'layer')} pushed, {present} already there"


def push(client: Any, target: RegistryTarget, tag: str, kind: str, *, emit: Progress, timeout: float) -> str:
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
                raise push_error(reference, str(detail), target)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            progress(chunk)
    except UserError:
        raise
    except docker.errors.APIError as exc:
        raise push_error(reference, short_error(exc), target) from exc
    except Exception as exc:  # noqa: BLE001 - read timeout, dropped connection
        raise UserError(f"pushing {reference} stopped: {type(exc).__name__}: {short_error(exc)}", hint="run the command again") from exc
    if not digest:
        digest = remote_digest(client, reference, target.auth) or ""
    if not digest:
        raise UserError(f"pushing {reference} ended without a digest", hint="check the registry and run again")
    emit(f"{kind}: pushed {reference} ({progress.summary}) in {time.monotonic() - started:.0f} s")
    return digest


def push_error(reference: str, detail: str, target: RegistryTarget) -> UserError:
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


def login(client: Any, target: RegistryTarget, local_endpoint: bool = False) -> None:
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
            f"the Docker engine could not log in to {target.host}: {short_error(exc)}",
            hint=hint,
        ) from exc


