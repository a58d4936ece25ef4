"""The functions' container images and the Lambda runtime, for real.

(a) ``build_and_push`` (what ``facerec bootstrap`` runs) builds both images on a local Lambda-like base
    image and pushes them to a registry on 127.0.0.1; the registry lists them, an unchanged build is
    neither rebuilt nor pushed again, and the recognition image (onnxruntime and the ONNX models, no
    torch) is at most 600 MB.
(b) The splitting image, pulled back from the registry, runs behind the Lambda Runtime Interface
    Emulator on the host network against a moto server deployed by the bootstrap code: the S3
    ObjectCreated event that moto itself emitted for a real uploaded video goes in; frames land in
    stage-1 and an asynchronous Invoke of face-recognition reaches moto's Lambda.
(c) The recognition image, pulled back the same way, runs behind the emulator, takes a
    RecognitionRequest for stage-1 frames of a real video, and writes a result that names the right
    person; the same handler also runs under awslambdaric + the emulator as a process of this machine.
(d) ``facerec run-local --runtime containers`` runs real videos through the whole chain on the two images
    (S3 notification -> splitting container -> Invoke -> recognition container -> output bucket) and
    names the people in them; without a Docker engine it says so in one line.

Docker comes from tests/docker_env.py: as root it installs and starts a private dockerd and registry
(and stops them afterwards); without root and without $DOCKER_HOST the docker tests skip, and under
CI=true they fail instead. Nothing binds beyond 127.0.0.1; every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import botocore.session
import pytest

from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.executor import NullReporter, apply_plan
from facerec_cli.pipeline.deployer import plan_deploy, plan_destroy
from facerec_cli.pipeline.stack import DeployOptions
from facerec_cli.errors import UserError
from facerec_cli.pipeline import image_context, images, registry
from facerec_cli.pipeline.local.containers import container_environ, invocation_outcome
from facerec_cli.localcloud.runtime.functions import LocalFunction
from lambdas.events import FrameRef, RecognitionRequest
from tests.moto_seam import Recorder
from tests.docker_env import (
    ROOT,
    DockerEnv,
    DockerUnavailable,
    Wheelhouse,
    free_port,
    image_requirements,
    image_size_mb,
    lambda_rie,
    prepare_wheelhouse,
    registry_tags,
    remove_container,
    run_container,
    start_environment,
)

REGION = "eu-south-2"  # a region no other test module deploys to (function names are not prefixed)
PREFIX = "ctest"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
RIE_IN_IMAGE = "/usr/local/bin/aws-lambda-rie"
PERSON, OTHER = "madonna", "elton_john"
MAX_RECOGNITION_MB = 600
HAMILTON = "hamilton_miranda_lacamoire_10s.mp4"


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"docker is required under CI: {message}")
    pytest.skip(message)


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Downloads kept between runs (pytest's cache directory, when the cache plugin is on)."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("facerec-containers")) if cache is not None else tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def rie(cache_dir: Path) -> Iterator[Path]:
    try:
        cached = lambda_rie(cache_dir)
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        _unavailable(f"the Lambda Runtime Interface Emulator could not be fetched: {exc}")
        raise  # not reached
    # Kept in a directory any user can traverse (pytest's own temporary directories are 0700).
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="facerec-rie-"))
    shared.chmod(0o755)
    target = shared / cached.name
    shutil.copy2(cached, target)
    target.chmod(0o755)
    yield target
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_env(cache_dir: Path) -> Any:
    # dockerd's sockets live under this directory: keep its path short (unix sockets: 108 bytes).
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="facerec-dk-", dir="/tmp"))
    started = time.monotonic()
    try:
        env = start_environment(workdir, cache=cache_dir)
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _unavailable(str(exc))
        raise  # not reached
    env.setup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    try:
        yield env
    finally:
        env.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def wheelhouse(cache_dir: Path) -> Any:
    """Both images' wheels and their dependencies, served on 127.0.0.1 so that builds need no index."""
    try:
        directory = prepare_wheelhouse(cache_dir / "wheels-images")
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        _unavailable(f"pip download of the images' wheels failed: {exc}")
        raise  # not reached
    house = Wheelhouse(directory).start()
    yield house
    house.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of what the images are built from (Dockerfiles, lambdas/), so that edits made to the
    working tree while the tests run cannot change the content between two builds."""
    root = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "lambdas", root / "lambdas", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in images.DOCKERFILES.values():
        shutil.copy2(ROOT / name, root / name)
    return root


@pytest.fixture(scope="module")
def models() -> Path:
    """The casia-webface ONNX models the recognition image bakes in: the weights cache's (exported once
    with torch when missing), as bootstrap finds them."""
    return images.built_models("casia-webface")


def _build(docker_env: DockerEnv, wheelhouse: Wheelhouse, source: Path, kind: str, **options: Any) -> dict[str, Any]:
    lines: list[str] = []
    started = time.monotonic()
    result = images.build_images(
        Settings(prefix=PREFIX, region=REGION), None, registry=docker_env.registry, base_image=docker_env.base_image,
        docker_client=docker_env.client, on_progress=lines.append, only=(kind,), build_args=wheelhouse.build_args,
        network_mode="host",  # the engine runs with --bridge=none; the wheelhouse is on 127.0.0.1
        force=True,  # a registry kept from an earlier run may have the tag: build and push for real
        root=source, timeout=1800, **options,
    )  # fmt: skip
    return {"image": result[kind], "lines": lines, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def built(docker_env: DockerEnv, wheelhouse: Wheelhouse, source: Path) -> dict[str, Any]:
    """The splitting image, built and pushed through the code path of `facerec bootstrap`."""
    return _build(docker_env, wheelhouse, source, "splitting")


@pytest.fixture(scope="module")
def built_recognition(docker_env: DockerEnv, wheelhouse: Wheelhouse, source: Path, models: Path) -> dict[str, Any]:
    """The recognition image (casia-webface models), built and pushed through the code path of `facerec bootstrap`."""
    return _build(docker_env, wheelhouse, source, "recognition", weights="casia-webface", models=models)


@pytest.fixture(scope="module")
def cloud(moto_url: str) -> Any:
    """A moto server on 127.0.0.1 with the pipeline deployed by the bootstrap code (placeholder images)."""
    endpoint = moto_url
    core = botocore.session.Session(session_vars={"profile": (None, None, None, None),
                                                  "config_file": (None, None, os.devnull, None),
                                                  "credentials_file": (None, None, os.devnull, None)})  # fmt: skip
    session = boto3.Session(botocore_session=core, aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    settings = Settings(prefix=PREFIX, region=REGION, endpoint_url=endpoint)
    clients = Clients.from_session(session, endpoint)
    apply_plan(plan_deploy(settings, DeployOptions(), clients), NullReporter())
    state = {"endpoint": endpoint, "settings": settings, "clients": clients, "session": session}
    try:
        yield state
    finally:
        with contextlib.suppress(Exception):
            apply_plan(plan_destroy(settings, DeployOptions(), clients), NullReporter())


@pytest.fixture(scope="module")
def mixed_gallery(data: Path, encoder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5celeb/train plus the Hamilton enrolment photos, in one gallery (as tests/test_pipeline.py)."""
    from lambdas.core.enroll import build_gallery

    photos = tmp_path_factory.mktemp("photos")
    for folder in [*(data / "5celeb" / "train").iterdir(), *(data / "enroll").iterdir()]:
        (photos / folder.name).symlink_to(folder)
    path = tmp_path_factory.mktemp("gallery") / "gallery.safetensors"
    build_gallery(photos, encoder)[0].save(path)
    return path


def function_env(cloud: dict[str, Any], function: str) -> dict[str, str]:
    """The function's environment as bootstrap configured it, plus what Lambda would add: the region,
    (fake) credentials, and here the endpoint of the local cloud."""
    config = cloud["clients"].lambda_.get_function_configuration(FunctionName=function)
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    env.update(FAKE_KEYS)
    env.update({"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": cloud["endpoint"],
                "AWS_LAMBDA_FUNCTION_NAME": function,
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(config.get("Timeout", 300)),
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.get("MemorySize", 1024))})  # fmt: skip
    return env


def wait_port(port: int, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def invoke_rie(port: int, event: Any, timeout: float) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{INVOKE_PATH}", data=json.dumps(event).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def sample_video(data: Path, tmp_path: Path, person: str = PERSON, seconds: float = 2.0) -> Path:
    from facerec_cli.samples import still_video

    photo = sorted((data / "5celeb" / "val" / person).iterdir())[0]
    return still_video(photo, tmp_path / f"{person}_clip.mp4", seconds=seconds)


def stage1_request(cloud: dict[str, Any], video: Path, stem: str) -> RecognitionRequest:
    """Frames of ``video`` in stage-1 as video-splitting stores them, and the request it would send."""
    from lambdas.core import images, sampling

    names, s3 = cloud["settings"].names, cloud["clients"].s3
    frames = []
    for frame in sampling.sample_frames(video, count=3):
        frame_key = f"{stem}.jpg" if frame.index == 0 else f"{stem}/{frame.index:03d}.jpg"
        s3.put_object(Bucket=names.stage1_bucket, Key=frame_key, Body=images.encode_jpeg(frame.image), ContentType="image/jpeg")
        frames.append(FrameRef(key=frame_key, t=frame.t))
    return RecognitionRequest(
        stage1_bucket=names.stage1_bucket, stem=stem, video=video.name, frames=frames,
        source={"bucket": names.input_bucket, "key": f"{stem}.mp4", "event_id": uuid.uuid4().hex},
    )  # fmt: skip


def run_behind_emulator(client: Any, image: str, environment: dict[str, str], event: Any, *, kind: str, timeout: float) -> tuple[Any, float, str]:
    """Run ``image`` as Lambda runs it (not root, read-only but /tmp) behind the emulator it carries, on
    127.0.0.1 and free ports; invoke it once. Returns (answer, seconds, logs)."""
    answers, seconds, logs = invoke_behind_emulator(client, image, environment, [event], kind=kind, timeout=timeout)
    return answers[0], seconds, logs


def invoke_behind_emulator(client: Any, image: str, environment: dict[str, str], events: list[Any], *, kind: str, timeout: float,
                           command: list[str] | None = None) -> tuple[list[Any], float, str]:  # fmt: skip
    """As :func:`run_behind_emulator`, one invocation per event in turn (one warm container), with the
    image's command or ``command`` (the handler of another function deployed from the same image)."""
    port, api_port = free_port(), free_port()
    cmd = command or client.images.get(image).attrs["Config"]["Cmd"]
    container = run_container(
        client, image, name=f"facerec-{kind}-{uuid.uuid4().hex[:8]}",
        # The emulator in front of the image's own entrypoint (as on AWS, the runtime API then exists).
        entrypoint=[RIE_IN_IMAGE, "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                    "--runtime-api-address", f"127.0.0.1:{api_port}", "/lambda-entrypoint.sh"],
        command=cmd, environment=environment,
    )  # fmt: skip
    try:

        def alive() -> None:
            container.reload()
            assert container.status in ("created", "running"), remove_container(container)

        wait_port(port, 30, alive)
        started = time.monotonic()
        answers = [invoke_rie(port, event, timeout=timeout) for event in events]
        return answers, time.monotonic() - started, container.logs(tail=200).decode(errors="replace")
    finally:
        remove_container(container)


def fake_models(directory: Path, weights: str = "casia-webface", embedder: bytes = b"embedder") -> Path:
    """A directory shaped like a built one (lambdas/core/models.py), with stand-in bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    for net in ("pnet", "rnet", "onet"):
        (directory / f"{net}.onnx").write_bytes(net.encode())
    (directory / "embedder.onnx").write_bytes(embedder)
    (directory / "manifest.json").write_text(json.dumps({"weights": weights, "export": "1"}))
    return directory


def facerec_cli(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The `facerec` command in its own process (its own moto state and local cloud)."""
    return subprocess.run([sys.executable, "-c", "from facerec_cli.cli.app import main; main()", *args], check=False, capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip


# ------------------------------------------------------------------------------------ without docker


def test_build_contexts_are_lambdas_the_models_and_the_dockerfile_only(tmp_path: Path) -> None:
    from docker.utils.build import exclude_paths

    # A checkout with models/ built for a by-hand build and files that must stay out of any context.
    root = tmp_path / "src"
    shutil.copytree(ROOT / "lambdas", root / "lambdas", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in [*images.DOCKERFILES.values(), ".dockerignore"]:
        shutil.copy2(ROOT / name, root / name)
    models = fake_models(root / "models")
    for stray in ("facerec_cli/x.py", ".git/config", "tests/t.py", "lambdas/__pycache__/x.pyc", ".env"):
        (root / stray).parent.mkdir(parents=True, exist_ok=True)
        (root / stray).write_text("secret")
    patterns = [p for p in (root / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    # (The engine always receives .dockerignore itself.)
    by_hand = {p for p in exclude_paths(str(root), patterns) if (root / p).is_file()} - {".dockerignore"}
    for kind in images.KINDS:
        names = [file.name for file in images.context_files(kind, root, models if kind == "recognition" else None)]
        assert names == sorted(names) and images.DOCKERFILES[kind] in names
        others = [n for n in names if n != images.DOCKERFILES[kind]]
        assert others and all(n.startswith("lambdas/") for n in others if not n.startswith("models/"))
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        model_names = {n for n in names if n.startswith("models/")}
        if kind == "recognition":
            assert model_names == {f"models/{n}" for n in ("pnet.onnx", "rnet.onnx", "onet.onnx", "embedder.onnx", "manifest.json")}
        else:
            assert not model_names
        # .dockerignore (for builds by hand) lets through the same files of lambdas/ and models/.
        assert {p for p in by_hand if p.startswith(("lambdas/", "models/"))} >= set(others)
    assert by_hand == {*images.DOCKERFILES.values(), *(n for n in (f.name for f in images.context_files("recognition", root, models)))}
    with pytest.raises(ValueError, match="built models"):
        images.context_files("recognition", root)
    (models / "onet.onnx").unlink()
    with pytest.raises(UserError, match="onet.onnx missing"):
        images.context_files("recognition", root, models)


def test_tags_follow_content_and_only_the_arguments_that_shape_the_image(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(ROOT / "lambdas", root / "lambdas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in images.DOCKERFILES.values():
        shutil.copy2(ROOT / name, root / name)
    models = fake_models(tmp_path / "models")

    def tag(args: dict[str, str], kind: str = "recognition", model_dir: Path | None = models) -> str:
        return images.image_tag(kind, images.context_files(kind, root, model_dir if kind == "recognition" else None), args)

    args = images.build_args_for("recognition", weights="casia-webface")
    assert args == {"BASE_IMAGE": "public.ecr.aws/lambda/python:3.12", "WEIGHTS": "casia-webface"}
    first = tag(args)
    assert re.fullmatch(r"recognition-[0-9a-f]{16}", first)
    assert tag(dict(args)) == first
    # pip transport settings do not change the image's identity; weights, models and code do.
    assert tag(dict(args, PIP_INDEX_URL="https://mirror.invalid/simple", PIP_FIND_LINKS="http://127.0.0.1:1/")) == first
    assert tag(images.build_args_for("recognition", weights="vggface2")) != first
    assert tag(images.build_args_for("recognition", base_image="example/python:3.13")) != first
    assert tag(args, model_dir=fake_models(tmp_path / "other", embedder=b"other embedder")) != first
    assert tag(args, model_dir=fake_models(tmp_path / "vgg", weights="vggface2")) != first  # the manifest is content
    splitting = tag(images.build_args_for("splitting"), "splitting")
    (root / "lambdas" / "env.py").write_text((root / "lambdas" / "env.py").read_text() + "\n# changed\n")
    assert tag(args) != first and tag(images.build_args_for("splitting"), "splitting") != splitting
    # The splitting image depends neither on the weights nor on the models.
    assert images.build_args_for("splitting", weights="vggface2") == images.build_args_for("splitting")
    with pytest.raises(UserError, match="cannot be baked"):
        images.build_args_for("recognition", weights="/some/state_dict.pt")


def test_build_arguments_and_network_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(images.BUILD_ARGS_ENV, "PIP_NO_INDEX=1 'PIP_FIND_LINKS=http://127.0.0.1:8000/a b/'")
    monkeypatch.setenv(image_context.BUILD_NETWORK_ENV, "host")
    assert image_context.environ_build_args() == {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "http://127.0.0.1:8000/a b/"}
    assert images._build_options({"PIP_NO_INDEX": "0"}, None) == ({"PIP_NO_INDEX": "0", "PIP_FIND_LINKS": "http://127.0.0.1:8000/a b/"}, "host")
    assert images._build_options(None, "none")[1] == "none"
    monkeypatch.setenv(images.BUILD_ARGS_ENV, "PIP_NO_INDEX")
    with pytest.raises(UserError, match="not NAME=VALUE"):
        image_context.environ_build_args()


def test_dockerfiles_name_no_python_version_and_no_torch() -> None:
    for name in images.DOCKERFILES.values():
        text = (ROOT / name).read_text()
        assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12" in text
        assert not re.search(r"python3\.\d+", text.replace("python:3.12", "")), f"{name} names a versioned python"
    requirements = image_requirements()
    assert not any(r.lower().startswith(("torch", "facenet", "imageio")) for r in requirements), requirements
    recognition = (ROOT / "Dockerfile.recognition").read_text()
    assert "COPY models/ /opt/facerec/models/" in recognition and "FACEREC_MODELS=/opt/facerec/models" in recognition
    # The 94 MB models layer comes after the dependencies and before the code (cached while code changes).
    assert recognition.index("pip install") < recognition.index("COPY models/") < recognition.index("COPY lambdas/")


def hosted_handlers() -> dict[str, list[str]]:
    """Dockerfile -> the handler modules of the functions bootstrap deploys from its image."""
    from facerec_cli.pipeline.stack import pipeline_stack
    from facerec_cli.infra.resources.awslambda import FunctionSpec

    uris = {"splitting-uri": images.DOCKERFILES[image_context.SPLITTING], "recognition-uri": images.DOCKERFILES[image_context.RECOGNITION]}
    stack = pipeline_stack(Settings(prefix=PREFIX, region=REGION), DeployOptions(splitting_image="splitting-uri", recognition_image="recognition-uri"), "123456789012")
    hosted: dict[str, list[str]] = {name: [] for name in uris.values()}
    for spec in stack.specs:
        if isinstance(spec, FunctionSpec):
            hosted[uris[str(spec.image_uri)]].append(spec.command[0].rsplit(".", 1)[0])
    return hosted


def image_modules(dockerfile: str) -> set[str]:
    """Top-level modules the image's pip install provides: its requirements and all their dependencies,
    as installed here (importlib.metadata), plus the standard library."""
    from importlib import metadata

    from packaging.requirements import Requirement

    provides: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            provides.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    todo, seen = [Requirement(r).name for r in image_requirements([dockerfile])], set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return set(sys.stdlib_module_names) | {m for name in seen for m in provides.get(name, ())}


# Imports the modules named on the command line with only the listed top-level packages importable.
ONLY_THESE_PACKAGES = """
import importlib, json, sys
allowed = set(json.loads(sys.argv[1]))
class Only:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] not in allowed:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the image)")
sys.meta_path.insert(0, Only())
for module in sys.argv[2:]:
    if module.startswith("exec:"):  # code to run as well, with the same packages
        exec(module[5:])
    else:
        assert callable(importlib.import_module(module).handler), module
"""
# The splitting side of a timeline (FACEREC_TIMELINE=1: video-splitting plans the segments of a 95 s video).
PLAN_SEGMENTS = (
    "exec:from types import SimpleNamespace as N; import lambdas.segments as s; "
    "u = N(bucket='in', key='a.mp4', etag='e', size=1, event_id='x', stem='a', video='a.mp4'); "
    "r = s.plan_requests(u, N(segment_seconds=30.0, timeline_fps=2.0), N(duration=95.0), 'stage', {}); "
    "assert [(q.start, q.end) for q in r] == [(0.0, 30.0), (30.0, 60.0), (60.0, 90.0), (90.0, 95.0)], r"
)


def test_every_handler_imports_with_only_its_images_packages() -> None:
    """The on-failure function is deployed in the splitting image (av, Pillow, boto3: no numpy); a
    handler that needs a package its image lacks ends every invocation in Runtime.ImportModuleError.
    Each handler imports here with exactly its image's packages (and their dependencies) importable (and
    video-splitting plans a timeline's segments), and the Dockerfile's build check imports every handler
    the image hosts."""
    hosted = hosted_handlers()
    assert hosted[images.DOCKERFILES[image_context.SPLITTING]] == ["lambdas.on_failure", "lambdas.video_splitting"]
    for dockerfile, modules in hosted.items():
        allowed = sorted(image_modules(dockerfile) | {"lambdas"})
        assert "numpy" in allowed or dockerfile == images.DOCKERFILES[image_context.SPLITTING]
        extra = [PLAN_SEGMENTS] if dockerfile == images.DOCKERFILES[image_context.SPLITTING] else []
        proc = subprocess.run([sys.executable, "-c", ONLY_THESE_PACKAGES, json.dumps(allowed), *modules, *extra], capture_output=True, text=True,
                              cwd=ROOT, timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 0, f"{dockerfile}: {proc.stderr[-2000:]}"
        check = (ROOT / dockerfile).read_text().split("RUN ")[-1]  # the last step: compile and import
        for module in modules:
            assert module in check, f"the build check of {dockerfile} does not import {module}"


# The conditional writes (IfNoneMatch, IfMatch on PutObject) came in botocore 1.35.69; a Lambda base image's
# own boto3 can be older, and satisfies a bare "boto3>=1.34": pip would keep it.
CONDITIONAL_WRITES_BOTOCORE = "1.35.69"


# The versions the handlers import in an image (the base image of the tests carries an older boto3).
BOTOCORE_VERSION = "python3 -c 'import boto3, botocore; print(boto3.__version__, botocore.__version__)'"


def assert_conditional_writes(line: str) -> None:
    from packaging.version import Version

    versions = line.split()
    assert len(versions) == 2 and all(Version(v) >= Version(CONDITIONAL_WRITES_BOTOCORE) for v in versions), f"boto3, botocore in the image: {line}"


def test_dockerfiles_and_pyproject_require_the_botocore_of_conditional_writes() -> None:
    import tomllib

    from packaging.requirements import Requirement

    put = botocore.session.get_session().get_service_model("s3").operation_model("PutObject").input_shape.members
    assert {"IfNoneMatch", "IfMatch"} <= set(put)  # what lambdas/storage.py and segments.py send
    sources = {name: [Requirement(r) for r in image_requirements([name])] for name in images.DOCKERFILES.values()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    sources["pyproject.toml"] = [Requirement(r) for r in project]
    for source, requirements in sources.items():
        wanted = {r.name.lower(): r.specifier for r in requirements}
        assert "botocore" in wanted, f"{source} does not require botocore"
        for name in ("boto3", "botocore"):
            assert CONDITIONAL_WRITES_BOTOCORE in wanted[name] and "1.35.68" not in wanted[name], f"{source}: {name}{wanted[name]}"


def test_container_environment_is_the_functions_variables_and_the_local_cloud() -> None:
    from lambdas import env as fenv

    spec = LocalFunction(
        name="face-recognition", arn="arn:aws:lambda:us-east-1:123456789012:function:face-recognition", handler="lambdas.face_recognition.handler",
        environment={fenv.OUTPUT_BUCKET: "out", fenv.GALLERY_URI: "s3://out/gallery", fenv.WEIGHTS: "casia-webface", "FACEREC_THREADS": "1",
                     "FACEREC_MODELS": "/host/models", "HOME": "/root", "SOMETHING_ELSE": "x"},
        timeout_s=120, memory_mb=3008,
    )  # fmt: skip
    cloud_env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "NO_PROXY": "127.0.0.1"}  # fmt: skip
    env = container_environ(spec, cloud_env)
    assert env[fenv.OUTPUT_BUCKET] == "out" and env[fenv.GALLERY_URI] == "s3://out/gallery" and env["FACEREC_THREADS"] == "1"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000" and env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "face-recognition" and env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "120"
    # Nothing of this machine: not its paths (the image's models), files, proxies or other variables.
    for name in ("FACEREC_MODELS", "HOME", "SOMETHING_ELSE", "AWS_CONFIG_FILE", "NO_PROXY", "PATH"):
        assert name not in env, name


def test_emulator_answers_become_outcomes() -> None:
    ok = invocation_outcome(200, b'{"stem": "a"}')
    assert ok.ok and json.loads(ok.payload) == {"stem": "a"}
    assert invocation_outcome(200, b"").ok
    failed = invocation_outcome(200, b'{"errorMessage": "boom", "errorType": "ValueError", "requestId": "1", "stackTrace": []}')
    assert not failed.ok and failed.message == "ValueError: boom"
    assert invocation_outcome(200, b"Task timed out after 3.00 seconds").message.startswith("Runtime.Timeout")
    assert not invocation_outcome(502, b"").ok
    assert not invocation_outcome(200, b"<html>").ok


def test_registry_target_plain_registry_needs_no_ecr() -> None:
    target = registry.registry_target(Settings(prefix=PREFIX, registry="127.0.0.1:5000"), clients=None)
    assert target.repository == f"127.0.0.1:5000/{PREFIX}-facerec" and target.auth is None and not target.ecr


def test_registry_target_ecr_logs_in_with_the_authorization_token(cloud: dict[str, Any]) -> None:
    target = registry.registry_target(cloud["settings"], cloud["clients"])
    assert target.ecr and registry.is_ecr_host(target.host)
    assert target.repository == f"{target.host}/{PREFIX}-facerec"
    assert target.auth and target.auth["username"] == "AWS" and target.auth["password"]
    assert target.auth["password"] not in repr(target)


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _put_manifest(ecr: Any, repository: str, document: dict[str, Any], media_type: str, **where: str) -> str:
    body = json.dumps(document)
    ecr.put_image(repositoryName=repository, imageManifest=body, imageManifestMediaType=media_type, **where)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def _put_index(ecr: Any, repository: str, tag: str, platforms: tuple[str, ...] = ("linux/arm64", "unknown/unknown", "linux/amd64")) -> tuple[str, dict[str, str]]:
    """What Docker Engine with the containerd image store pushes: an OCI index (here with an arm64 image
    and a BuildKit attestation beside the amd64 one), each manifest stored by digest, the index under
    ``tag``. Returns (the index's digest, {platform: manifest digest})."""
    children: dict[str, str] = {}
    entries = []
    for n, platform in enumerate(platforms):
        config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{n:064x}", "size": 2}
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
        body = json.dumps(document)
        digest = "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        _put_manifest(ecr, repository, document, OCI_MANIFEST, imageDigest=digest)
        children[platform] = digest
        os_name, arch = platform.split("/")
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body), "platform": {"os": os_name, "architecture": arch}})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return _put_manifest(ecr, repository, index, OCI_INDEX, imageTag=tag), children


@pytest.fixture
def ecr_with_index(cloud: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """An ECR repository on moto (whose ECR stores and serves an OCI index as AWS does; moto's ECR cannot
    receive a docker push, so what the push would leave there is put with PutImage) and an engine whose
    registry target is that repository."""
    clients = cloud["clients"]
    settings = Settings(prefix=f"idx{uuid.uuid4().hex[:8]}", region=REGION, endpoint_url=cloud["endpoint"])
    name = settings.names.ecr_repository
    clients.ecr.create_repository(repositoryName=name)
    host = f"{clients.account_id}.dkr.ecr.{REGION}.amazonaws.com"
    target = registry.RegistryTarget(host=host, repository=f"{host}/{name}", auth=None, ecr=True)
    try:
        yield {"settings": settings, "clients": clients, "ecr": clients.ecr, "name": name, "target": target}
    finally:
        clients.ecr.delete_repository(repositoryName=name, force=True)


class _Engine:
    """The Docker client as far as build_images uses it for an image the registry already has."""

    def __init__(self, registry_digest: Any) -> None:
        self.images = self
        self.registry_digest = registry_digest

    def get_registry_data(self, reference: str, auth_config: Any = None) -> Any:
        import docker

        digest = self.registry_digest(reference.rsplit(":", 1)[1])
        if digest is None:
            raise docker.errors.NotFound("manifest unknown")
        return type("RegistryData", (), {"id": digest})()


def test_an_image_index_in_ecr_resolves_to_its_linux_amd64_manifest(ecr_with_index: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda refuses an image index as ImageUri: the function must point at the index's linux/amd64
    manifest, both for an image already in the registry and for one just pushed."""
    ecr, name, target, settings = ecr_with_index["ecr"], ecr_with_index["name"], ecr_with_index["target"], ecr_with_index["settings"]
    children: dict[str, dict[str, str]] = {}

    def already_there(tag: str) -> str:
        digest, children[tag] = _put_index(ecr, name, tag)
        return digest  # what the engine reports: the index's digest

    engine = images.Engine(_Engine(already_there), target, owned=False)
    found = images.build_images(settings, ecr_with_index["clients"], engine=engine, only=("splitting",))["splitting"]
    assert not found.pushed and found.digest == children[found.tag]["linux/amd64"]
    assert found.uri == f"{target.repository}@{children[found.tag]['linux/amd64']}"

    # Built and pushed now: the push reports the index's digest too.
    def pushed(client: Any, target: Any, tag: str, kind: str, **_: Any) -> str:
        digest, children[tag] = _put_index(ecr, name, tag, ("linux/amd64", "linux/arm64"))
        return digest

    monkeypatch.setattr(images, "_build", lambda *a, **k: "sha256:local")
    monkeypatch.setattr(images, "push", pushed)
    built = images.build_images(settings, ecr_with_index["clients"], engine=images.Engine(_Engine(lambda tag: None), target, owned=False),
                                only=("splitting",), force=True)["splitting"]  # fmt: skip
    assert built.pushed and built.digest == children[built.tag]["linux/amd64"]

    # An index without a linux/amd64 image is refused in one line, before any function points at it.
    monkeypatch.setattr(images, "push", lambda client, target, tag, kind, **_: _put_index(ecr, name, tag, ("linux/arm64",))[0])
    with pytest.raises(UserError, match="an image index without a linux/amd64 image"):
        images.build_images(settings, ecr_with_index["clients"], engine=images.Engine(_Engine(lambda tag: None), target, owned=False),
                            only=("splitting",), force=True)  # fmt: skip


def test_no_engine_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot reach a Docker engine") as info:
        images.connect(f"unix://{tmp_path}/no-docker.sock", timeout=5)
    assert "start Docker" in str(info.value)


def test_run_local_containers_without_an_engine_says_so_in_one_line(data: Path, hamilton_gallery: Any, tmp_path: Path) -> None:
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock", COLUMNS="1000", TMPDIR=str(tmp_path))
    proc = facerec_cli(["run-local", str(data / "videos" / HAMILTON), "--gallery", str(hamilton_gallery[0]), "--runtime", "containers"], env, timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--runtime containers needs a Docker engine" in lines[0] and "DOCKER_HOST" in lines[0], proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------------------- with docker


@pytest.mark.docker
def test_splitting_image_is_built_and_pushed(docker_env: DockerEnv, built: dict[str, Any], wheelhouse: Wheelhouse, source: Path) -> None:
    image: registry.PushedImage = built["image"]
    repo_name = image.repository.split("/", 1)[1]
    assert image.pushed and image.tag in registry_tags(docker_env.registry, repo_name)
    assert image.uri == f"{docker_env.registry}/{PREFIX}-facerec@{image.digest}"
    lines = built["lines"]
    assert any(line.startswith("splitting: step 1/") for line in lines), lines
    assert any(" layer " in line and " pushed" in line for line in lines), lines

    # What is in it: the handler and nothing else of the repository; PyAV; no ffmpeg binary, no torch.
    client = docker_env.client
    config = client.images.get(image.tag_uri).attrs["Config"]
    assert config["Cmd"] == ["lambdas.video_splitting.handler"]
    script = ("ls -A /var/task; python3 -c 'import av; print(\"av\", av.__version__)'; "
              "command -v ffmpeg || echo no-ffmpeg; "
              "python3 -c 'import torch' 2>/dev/null && echo has-torch || echo no-torch; " + BOTOCORE_VERSION)  # fmt: skip
    out = client.containers.run(image.tag_uri, entrypoint=["/bin/sh", "-c", script], network_mode="none", remove=True).decode()
    listing, av, ffmpeg, torch, boto = out.strip().splitlines()
    assert listing.split() == ["lambdas"] and av.startswith("av ") and ffmpeg == "no-ffmpeg" and torch == "no-torch", out
    assert_conditional_writes(boto)

    # Unchanged: found in the registry, neither built nor pushed again (bootstrap stays idempotent).
    again: list[str] = []
    second = images.build_and_push(
        Settings(prefix=PREFIX, region=REGION), None, registry=docker_env.registry, base_image=docker_env.base_image,
        docker_client=client, on_progress=again.append, only=("splitting",), build_args=wheelhouse.build_args, network_mode="host",
        root=source,
    )  # fmt: skip
    assert second == {"splitting": image.uri}
    assert not any("step" in line or "layer" in line for line in again), again  # neither built nor pushed
    print(f"\nsplitting image: {image_size_mb(client, image.tag_uri):.0f} MB (base {image_size_mb(client, docker_env.base_image):.0f} MB), "
          f"built and pushed in {built['seconds']:.0f} s; engine, registry and base image ready in "
          f"{getattr(docker_env, 'setup_seconds', 0):.0f} s")  # fmt: skip


@pytest.mark.docker
def test_push_to_a_registry_that_is_not_there_says_which(docker_env: DockerEnv) -> None:
    """A failed push is one UserError naming the registry. The image is the base image under a new
    tag (no build needed); it goes through open_engine and _push, the calls build_images makes for
    `facerec bootstrap`, to a port on 127.0.0.1 where nothing listens."""
    host = f"127.0.0.1:{free_port()}"  # bound and closed: nothing listens there now
    client = docker_env.client
    engine = images.open_engine(Settings(prefix=PREFIX, region=REGION, registry=host), None, docker_client=client)
    assert engine.target.repository == f"{host}/{PREFIX}-facerec" and not engine.target.ecr
    tag = f"splitting-{uuid.uuid4().hex[:12]}"
    client.images.get(docker_env.base_image).tag(engine.target.repository, tag)
    lines: list[str] = []
    try:
        with pytest.raises(UserError) as info:
            registry.push(client, engine.target, tag, image_context.SPLITTING, emit=lines.append, timeout=120)
    finally:
        client.images.remove(f"{engine.target.repository}:{tag}", noprune=True)
        engine.close()  # a no-op: the client belongs to docker_env
    message = str(info.value)
    assert message.startswith(f"pushing {engine.target.repository}:{tag} failed: "), message
    assert f"the registry {host} cannot be reached from the Docker engine; is it running?" in message, message
    assert "\n" not in message  # one red line
    assert not any(" pushed" in line for line in lines), lines


@pytest.mark.docker
def test_splitting_container_handles_a_real_s3_event(
    docker_env: DockerEnv, built: dict[str, Any], cloud: dict[str, Any], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    image: registry.PushedImage = built["image"]
    client = docker_env.client
    # Run what the registry holds: drop the local tag and pull the image back by digest.
    client.images.remove(image.tag_uri, noprune=True)
    client.images.pull(image.uri)
    names = cloud["settings"].names
    s3 = cloud["clients"].s3

    recorder = Recorder()
    recorder.install(monkeypatch)
    video = sample_video(data, tmp_path)
    key = f"uploads/{video.name}"
    s3.upload_file(str(video), names.input_bucket, key)
    notifications = recorder.of(names.splitting_function)
    assert len(notifications) == 1, recorder.calls  # moto's own S3 notification for the upload
    event = notifications[0]["event"]
    assert unquote_plus(event["Records"][0]["s3"]["object"]["key"]) == key  # URL-encoded, as S3 sends it

    answer, seconds, logs = run_behind_emulator(client, image.uri, function_env(cloud, names.splitting_function), event, kind="splitting", timeout=120)
    assert answer == {"videos": {key: "split"}}, (answer, logs)

    stem = "uploads/" + video.stem
    first = s3.head_object(Bucket=names.stage1_bucket, Key=f"{stem}.jpg")
    assert first["ContentType"] == "image/jpeg" and first["ContentLength"] > 1000, logs
    invokes = recorder.of(names.recognition_function)
    assert len(invokes) == 1 and invokes[0]["type"] == "Event", recorder.calls
    request = RecognitionRequest.from_dict(invokes[0]["event"])
    assert request.stage1_bucket == names.stage1_bucket and request.stem == stem and request.video == video.name
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=names.stage1_bucket, Prefix=stem)["Contents"]}
    # Frame 0 alone is stored; the other samples' times go to face-recognition, to decode only if needed.
    assert [f.key for f in request.frames] == [f"{stem}.jpg"] and stored == {f"{stem}.jpg"}
    assert len(request.samples) >= 1 and all(t > 0 for t in request.samples)
    print(f"\nsplitting container: frame 0 and {len(request.samples)} sample times in {seconds:.1f} s (first invocation, cold)")


@pytest.mark.docker
def test_on_failure_handler_answers_aws_records_inside_the_splitting_image(docker_env: DockerEnv, built: dict[str, Any], cloud: dict[str, Any]) -> None:
    """The on-failure function, deployed in the splitting image, run there behind the emulator with the
    records Lambda sends (tests/aws_records.py): every attempt of video-splitting failed, every attempt
    of face-recognition failed, and an event that expired unrun. Each video's error result is read back
    from the output bucket, and each record reaches the failure queue."""
    from facerec_cli.pipeline.observe.results import fetch_result, peek_failures
    from facerec_cli.pipeline.stack import FAILURE_COMMAND
    from tests import aws_records

    image: registry.PushedImage = built["image"]
    settings, clients = cloud["settings"], cloud["clients"]
    names, s3 = settings.names, clients.s3
    account = clients.account_id

    def arn(function: str) -> str:
        return aws_records.function_arn(REGION, account, function, ":$LATEST")

    split_failed = aws_records.retries_exhausted(arn(names.splitting_function), aws_records.s3_put_event(REGION, names.input_bucket, "fail/split+one.mp4"))
    recognition_request = {  # what video-splitting sends face-recognition, written out
        "stage1_bucket": names.stage1_bucket, "stem": "fail/recognise", "video": "recognise.mp4",
        "frames": [{"key": "fail/recognise.jpg", "t": 0.0}, {"key": "fail/recognise/001.jpg", "t": 1.0}],
        "source": {"bucket": names.input_bucket, "key": "fail/recognise.mp4", "etag": "0f343b0931126a20f133d67c2b018a3b", "size": 2048,
                   "event_id": "0f343b0931126a20f133d67c2b018a3b:0A1B2C3D4E5F000001"},
        "timings_ms": {"split": 80.0}, "sent_at": 1793534400.0,
    }  # fmt: skip
    recognition_failed = aws_records.retries_exhausted(arn(names.recognition_function), recognition_request,
                                                       error="Task timed out after 300.00 seconds", error_type="Sandbox.Timedout")  # fmt: skip
    expired = aws_records.event_age_exceeded(arn(names.splitting_function), aws_records.s3_put_event(REGION, names.input_bucket, "fail/late.mp4"))

    answers, seconds, logs = invoke_behind_emulator(
        docker_env.client, image.uri, function_env(cloud, names.failure_function), [split_failed, recognition_failed, expired],
        kind="on-failure", timeout=120, command=[FAILURE_COMMAND],
    )  # fmt: skip
    assert answers == [{"outcome": ["error result written"]}] * 3, (answers, logs)

    results = {stem: fetch_result(s3, names.details_bucket, stem) for stem in ("fail/split one", "fail/recognise", "fail/late")}
    assert {stem: (r.video, r.status) for stem, r in results.items()} == {
        "fail/split one": ("split one.mp4", "error"), "fail/recognise": ("recognise.mp4", "error"), "fail/late": ("late.mp4", "error"),
    }  # fmt: skip
    assert results["fail/split one"].error == f"{names.splitting_function} failed on every attempt: ffmpeg could not read the video: moov atom not found"
    assert results["fail/recognise"].error == f"{names.recognition_function} failed on every attempt: Task timed out after 300.00 seconds"
    assert results["fail/late"].error.startswith(f"{names.splitting_function} never ran it: the event waited longer than the maximum event age")
    queue = clients.sqs.get_queue_url(QueueName=names.failure_queue)["QueueUrl"]
    assert sorted(f.stem for f in peek_failures(clients.sqs, queue)) == ["fail/late", "fail/recognise", "fail/split one"]
    print(f"\non-failure container: 3 records answered in {seconds:.1f} s")


@pytest.mark.docker
def test_recognition_image_is_built_pushed_lean_and_without_torch(
    docker_env: DockerEnv, built_recognition: dict[str, Any], wheelhouse: Wheelhouse, source: Path, models: Path
) -> None:
    image: registry.PushedImage = built_recognition["image"]
    client = docker_env.client
    assert image.pushed and image.tag in registry_tags(docker_env.registry, image.repository.split("/", 1)[1])
    lines = built_recognition["lines"]
    assert any(line.startswith("recognition: step 1/") for line in lines), lines

    size = image_size_mb(client, image.tag_uri)
    base = image_size_mb(client, docker_env.base_image)
    print(f"\nrecognition image: {size:.0f} MB (base {base:.0f} MB, models {sum(p.stat().st_size for p in models.iterdir()) / 1e6:.0f} MB), "
          f"built and pushed in {built_recognition['seconds']:.0f} s")  # fmt: skip
    assert size <= MAX_RECOGNITION_MB, f"the recognition image is {size:.0f} MB, over {MAX_RECOGNITION_MB} MB"

    attrs = client.images.get(image.tag_uri).attrs["Config"]
    assert attrs["Cmd"] == ["lambdas.face_recognition.handler"]
    assert "FACEREC_MODELS=/opt/facerec/models" in attrs["Env"] and "FACEREC_WEIGHTS=casia-webface" in attrs["Env"]
    script = ("ls -A /var/task; ls /opt/facerec/models | tr '\\n' ' '; echo; "
              "python3 -c 'import onnxruntime, numpy, PIL, boto3, av; print(\"ort\", onnxruntime.__version__)'; "
              "python3 -c 'import torch' 2>/dev/null && echo has-torch || echo no-torch; " + BOTOCORE_VERSION)  # fmt: skip
    out = client.containers.run(image.tag_uri, entrypoint=["/bin/sh", "-c", script], network_mode="none", remove=True, user="993:990").decode()
    listing, nets, ort, torch, boto = out.strip().splitlines()
    assert listing.split() == ["lambdas"] and nets.split() == sorted(["embedder.onnx", "manifest.json", "onet.onnx", "pnet.onnx", "rnet.onnx"]), out
    assert ort.startswith("ort ") and torch == "no-torch", out
    assert_conditional_writes(boto)

    # Unchanged (same code, models and arguments): found in the registry, neither built nor pushed again.
    again: list[str] = []
    second = images.build_and_push(
        Settings(prefix=PREFIX, region=REGION), None, registry=docker_env.registry, base_image=docker_env.base_image,
        docker_client=client, on_progress=again.append, only=("recognition",), build_args=wheelhouse.build_args, network_mode="host",
        root=source, models=models,
    )  # fmt: skip
    assert second == {"recognition": image.uri} and not any("step" in line or "layer" in line for line in again), again


@pytest.mark.docker
def test_recognition_container_names_the_person_in_real_frames(
    docker_env: DockerEnv, built_recognition: dict[str, Any], cloud: dict[str, Any], celeb_gallery: Any, data: Path, tmp_path: Path
) -> None:
    image: registry.PushedImage = built_recognition["image"]
    client = docker_env.client
    client.images.remove(image.tag_uri, noprune=True)  # run what the registry holds, pulled by digest
    client.images.pull(image.uri)
    settings, clients = cloud["settings"], cloud["clients"]
    names = settings.names
    # The 5celeb/train gallery deployed by bootstrap's code: uploaded to the output bucket, FACEREC_GALLERY set.
    gallery_path, gallery = celeb_gallery
    assert {PERSON, OTHER} <= set(gallery.people)
    apply_plan(plan_deploy(settings, DeployOptions(gallery=gallery_path), clients), NullReporter())
    video = sample_video(data, tmp_path)
    request = stage1_request(cloud, video, f"container/{video.stem}")

    env = function_env(cloud, names.recognition_function)
    answer, seconds, logs = run_behind_emulator(client, image.uri, env, request.to_dict(), kind="recognition", timeout=300)
    assert answer == {"stem": request.stem}, (answer, logs)
    result = json.loads(clients.s3.get_object(Bucket=names.details_bucket, Key=f"{request.stem}.json")["Body"].read())
    assert result["status"] == "ok" and result["name"] == PERSON, result
    # Frames looked at: as many as the answer needed (recognition stops once it is decided), at least one.
    assert 1 <= result["frames"] <= len(request.frames) and result["model"] == gallery.weights
    assert clients.s3.get_object(Bucket=names.output_bucket, Key=f"{request.stem}.txt")["Body"].read().decode() == PERSON
    assert "REPORT RequestId" in logs, logs
    print(f"\nrecognition container: {result['name']} from {len(request.frames)} frames in {seconds:.1f} s (cold: models load)")


def test_recognition_handler_under_the_runtime_interface_client(
    cloud: dict[str, Any], rie: Path, data: Path, celeb_gallery: Any, tmp_path: Path
) -> None:
    pytest.importorskip("awslambdaric", reason="pip install awslambdaric (in the test extra)")
    settings, clients = cloud["settings"], cloud["clients"]
    names = settings.names
    gallery_path, gallery = celeb_gallery
    apply_plan(plan_deploy(settings, DeployOptions(gallery=gallery_path), clients), NullReporter())
    # Stage-1 frames of a real video of PERSON (a photo not in the gallery), as video-splitting stores them.
    video = sample_video(data, tmp_path)
    request = stage1_request(cloud, video, f"direct/{video.stem}")
    stem = request.stem

    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(function_env(cloud, names.recognition_function))
    env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "PYTHONPATH": str(ROOT)})
    log = tmp_path / "recognition.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(rie), "--runtime-interface-emulator-address", f"127.0.0.1:{port}", "--runtime-api-address", f"127.0.0.1:{api_port}",
             sys.executable, "-m", "awslambdaric", "lambdas.face_recognition.handler"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:

        def alive() -> None:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]

        wait_port(port, 30, alive)
        started = time.monotonic()
        answer = invoke_rie(port, request.to_dict(), timeout=300)
        seconds = time.monotonic() - started
        assert answer == {"stem": stem}, (answer, log.read_text(errors="replace")[-3000:])
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    result = json.loads(clients.s3.get_object(Bucket=names.details_bucket, Key=f"{stem}.json")["Body"].read())
    assert result["status"] == "ok" and result["name"] == PERSON, result
    assert 1 <= result["frames"] <= len(request.frames) and result["model"] == gallery.weights  # as many as the answer needed
    assert clients.s3.get_object(Bucket=names.output_bucket, Key=f"{stem}.txt")["Body"].read().decode() == PERSON
    print(f"\nrecognition under the RIE: {result['name']} from {len(request.frames)} frames in {seconds:.1f} s (cold: models load)")


@pytest.mark.docker
def test_run_local_containers_names_real_videos_end_to_end(
    docker_env: DockerEnv, built: dict[str, Any], built_recognition: dict[str, Any], wheelhouse: Wheelhouse,
    mixed_gallery: Path, data: Path, tmp_path: Path,
) -> None:
    """`facerec run-local --runtime containers`, as a user runs it: the images built by bootstrap's code
    (reused from the builds above when the code has not changed), the S3 notification to the splitting
    container, its Invoke to the recognition container, the results read from the output bucket."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy2(data / "videos" / HAMILTON, videos / HAMILTON)
    sample_video(data, videos)  # madonna_clip.mp4: a 5celeb/val photo (not enrolled) as a 2 s video
    expected = {HAMILTON: "lin_manuel_miranda", f"{PERSON}_clip.mp4": PERSON}
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(DOCKER_HOST=docker_env.docker_host, TMPDIR=str(tmp_path), COLUMNS="200", **wheelhouse.build_environ)
    started = time.monotonic()
    proc = facerec_cli(["run-local", str(videos), "--gallery", str(mixed_gallery), "--runtime", "containers",
                        "--base-image", docker_env.base_image, "--json", "--out", str(out), "--timeout", "600"], env, timeout=1800)  # fmt: skip
    seconds = time.monotonic() - started
    # run-local makes a new private log per run in $TMPDIR (facerec-run-local-*.log) and names it on stderr
    logs = "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("facerec-run-local-*.log")))
    assert proc.returncode == 0, (proc.stderr[-4000:], logs[-4000:])
    results = {r["video"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert {video: r["name"] for video, r in results.items()} == expected, (results, logs[-3000:])
    assert all(r["status"] == "ok" for r in results.values()), results
    for video, name in expected.items():
        assert (out / f"{Path(video).stem}.txt").read_text() == name
    # It ran in the containers, behind the emulator (its START/REPORT lines, per function)...
    for function in ("video-splitting", "face-recognition"):
        assert f"[{function}] START RequestId" in logs and f"[{function}] REPORT RequestId" in logs, logs[-3000:]
    # ...on the images bootstrap's code builds (content tags), and left no container behind.
    client = docker_env.client
    local_tags = {tag for image in client.images.list(name=images.LOCAL_REPOSITORY) for tag in image.tags}
    for kind in images.KINDS:
        assert any(re.fullmatch(rf"{images.LOCAL_REPOSITORY}:{kind}-[0-9a-f]{{16}}", tag) for tag in local_tags), local_tags
    assert client.containers.list(all=True, filters={"label": "facerec.run-local"}) == []
    built_lines = [line for line in proc.stderr.splitlines() if "built" in line or "not rebuilt" in line]
    print(f"\nrun-local --runtime containers: {len(results)} videos named in {seconds:.0f} s (CLI start to exit, images "
          f"{'reused' if all('not rebuilt' in line for line in built_lines) else 'built'}); "
          + ", ".join(f"{v}: {r['name']} ({sum((r.get('timings_ms') or {}).values()):.0f} ms in the functions)" for v, r in sorted(results.items())))
