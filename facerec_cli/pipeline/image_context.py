"""What goes into a function image: the build context (the Dockerfile, ``lambdas/`` and for recognition
the ONNX models), the build arguments, and the content tag that hashes exactly those. Knows nothing of
Docker or registries (:mod:`.images` builds and pushes)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import stat
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from facerec_cli.errors import UserError

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
BUILD_ARGS_ENV = "FACEREC_IMAGE_BUILD_ARGS"  # "NAME=VALUE ..." build arguments (pip's mirror or wheelhouse)
BUILD_NETWORK_ENV = "FACEREC_IMAGE_BUILD_NETWORK"  # network of the build steps (e.g. host)
# Bump when the way tags are computed changes.
_TAG_SCHEME = "2"

Progress = Callable[[str], None]


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
