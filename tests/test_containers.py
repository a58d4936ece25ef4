"""The functions' container images and the Lambda runtime, for real.

(a) ``build_and_push`` (what ``facerec bootstrap`` runs) builds the video-splitting image on a local
    Lambda-like base image and pushes it to a registry on 127.0.0.1; the registry lists it, and an
    unchanged build is neither rebuilt nor pushed again.
(b) That image, pulled back from the registry, runs behind the Lambda Runtime Interface Emulator on the
    host network against a moto server deployed by the bootstrap code: the S3 ObjectCreated event that
    moto itself emitted for a real uploaded video goes in; frames land in stage-1 and an asynchronous
    Invoke of face-recognition reaches moto's Lambda.
(c) The face-recognition handler runs under awslambdaric + the emulator as a process (its image needs
    torch: see the README), takes a RecognitionRequest for frames of a real video, and writes a result
    that names the right person.

Docker comes from tests/docker_env.py: as root it installs and starts a private dockerd and registry
(and stops them afterwards); without root and without $DOCKER_HOST the docker tests skip, and under
CI=true they fail instead. Nothing binds beyond 127.0.0.1; every wait has a timeout.
"""

from __future__ import annotations

import contextlib
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
from urllib.parse import unquote_plus
from typing import Any

import boto3
import botocore.session
import pytest

from facerec_cli.config import Settings
from facerec_cli.deploy import Clients, DeployOptions, NullReporter, apply_plan, plan_deploy, plan_destroy
from facerec_cli.deploy import images
from facerec_cli.errors import UserError
from lambdas.events import FrameRef, RecognitionRequest
from tests.docker_env import (
    ROOT,
    DockerEnv,
    DockerUnavailable,
    Wheelhouse,
    free_port,
    image_size_mb,
    lambda_rie,
    pip_download,
    registry_tags,
    remove_container,
    run_container,
    start_environment,
)

REGION = "eu-south-2"  # a region no other test module deploys to (function names are not prefixed)
PREFIX = "ctest"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
PERSON, OTHER = "madonna", "elton_john"


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
    # Bind-mounted into containers that run as a non-root user: pytest's own temporary directories
    # are 0700, so copy it into one the container user can traverse.
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="facerec-rie-"))
    shared.chmod(0o755)
    target = shared / cached.name
    shutil.copy2(cached, target)
    target.chmod(0o755)
    yield target
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # dockerd's sockets live under this directory: keep its path short (unix sockets: 108 bytes).
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="facerec-dk-", dir="/tmp"))
    started = time.monotonic()
    try:
        env = start_environment(workdir)
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


def splitting_requirements() -> list[str]:
    """The requirements Dockerfile.splitting installs, as it spells them (so the wheelhouse never drifts)."""
    text = (ROOT / "Dockerfile.splitting").read_text()
    found = re.findall(r'"([A-Za-z][\w.\-]*\s*(?:>=|==|~=|<=|<|>)[^"]*)"', text)
    assert found, "no quoted requirements found in Dockerfile.splitting"
    return found


@pytest.fixture(scope="module")
def wheelhouse(cache_dir: Path) -> Any:
    """The splitting image's wheels, served on 127.0.0.1 so that the build needs no package index."""
    directory = cache_dir / "wheels-splitting"
    try:
        pip_download(splitting_requirements(), directory, timeout=600)
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        _unavailable(f"pip download of the splitting image's wheels failed: {exc}")
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
def built(docker_env: DockerEnv, wheelhouse: Wheelhouse, source: Path) -> dict[str, Any]:
    """The splitting image, built and pushed through the code path of `facerec bootstrap`."""
    lines: list[str] = []
    started = time.monotonic()
    result = images.build_images(
        Settings(prefix=PREFIX, region=REGION),
        None,
        registry=docker_env.registry,
        base_image=docker_env.base_image,
        docker_client=docker_env.client,
        on_progress=lines.append,
        only=("splitting",),
        build_args=wheelhouse.build_args,
        network_mode="host",  # the engine runs with --bridge=none; the wheelhouse is on 127.0.0.1
        force=True,  # a registry kept from an earlier run may have the tag: build and push for real
        root=source,
        timeout=900,
    )
    return {"image": result["splitting"], "lines": lines, "seconds": time.monotonic() - started}


class Recorder:
    """Stands in for moto's Lambda at its invocation seam (the method facerec_cli/local/dispatch.py
    patches): records each invocation and answers like an accepted asynchronous one.

    Why not let moto invoke: moto cannot run Image functions (the functions bootstrap creates), and a
    Zip stand-in would test a function bootstrap never makes. Recording at the seam shows what matters
    here without faking the caller: moto emits the real S3 notification for the upload, and the
    handler in the container really calls lambda:Invoke on moto, which routes it to this seam."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from facerec_cli.local.dispatch import check_seam

        cls = check_seam()  # fails loudly if a moto upgrade moved the seam
        recorder = self

        def invoke(fn: Any, body: Any, request_headers: Any, response_headers: Any) -> str:
            headers = {str(k).lower(): v for k, v in dict(request_headers or {}).items()}
            text = body.decode() if isinstance(body, bytes) else (body or "")
            recorder.calls.append({"function": fn.function_name, "event": json.loads(text) if text else {},
                                   "type": headers.get("x-amz-invocation-type", "Event")})  # fmt: skip
            return ""

        monkeypatch.setattr(cls, "invoke", invoke)

    def of(self, function: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["function"] == function]


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


def function_env(cloud: dict[str, Any], function: str) -> dict[str, str]:
    """The function's environment as bootstrap configured it, plus what Lambda would add: the region,
    (fake) credentials, and here the endpoint of the local cloud."""
    config = cloud["clients"].lambda_.get_function_configuration(FunctionName=function)
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    env.update(FAKE_KEYS)
    env.update({"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": cloud["endpoint"],
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


# ------------------------------------------------------------------------------------ without docker


def test_build_context_is_lambdas_and_the_dockerfile_only() -> None:
    for kind in images.KINDS:
        names = [file.name for file in images.context_files(kind)]
        assert names[0] == images.DOCKERFILES[kind] or images.DOCKERFILES[kind] in names
        others = [n for n in names if n != images.DOCKERFILES[kind]]
        assert others and all(n.startswith("lambdas/") for n in others)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        # .dockerignore (for builds by hand) lets through the same files of lambdas/.
        from docker.utils.build import exclude_paths

        patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
        by_hand = {p for p in exclude_paths(str(ROOT), patterns) if (ROOT / p).is_file() and p.startswith("lambdas/")}
        assert by_hand == set(others)


def test_tags_follow_content_and_only_the_arguments_that_shape_the_image(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(ROOT / "lambdas", root / "lambdas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in images.DOCKERFILES.values():
        shutil.copy2(ROOT / name, root / name)
    args = images.build_args_for("recognition", weights="casia-webface")
    tag = images.image_tag("recognition", images.context_files("recognition", root), args)
    assert re.fullmatch(r"recognition-[0-9a-f]{16}", tag)
    assert images.image_tag("recognition", images.context_files("recognition", root), dict(args)) == tag
    # pip transport settings do not change the image's identity; weights and code do.
    with_mirror = dict(args, PIP_INDEX_URL="https://mirror.invalid/simple")
    assert images.image_tag("recognition", images.context_files("recognition", root), with_mirror) == tag
    vgg = images.build_args_for("recognition", weights="vggface2")
    assert images.image_tag("recognition", images.context_files("recognition", root), vgg) != tag
    (root / "lambdas" / "env.py").write_text((root / "lambdas" / "env.py").read_text() + "\n# changed\n")
    assert images.image_tag("recognition", images.context_files("recognition", root), args) != tag
    # The splitting image does not depend on the weights.
    assert images.build_args_for("splitting", weights="vggface2") == images.build_args_for("splitting")
    with pytest.raises(UserError, match="cannot be baked"):
        images.build_args_for("recognition", weights="/some/state_dict.pt")


def test_registry_target_plain_registry_needs_no_ecr() -> None:
    target = images.registry_target(Settings(prefix=PREFIX, registry="127.0.0.1:5000"), clients=None)
    assert target.repository == f"127.0.0.1:5000/{PREFIX}-facerec" and target.auth is None and not target.ecr


def test_registry_target_ecr_logs_in_with_the_authorization_token(cloud: dict[str, Any]) -> None:
    target = images.registry_target(cloud["settings"], cloud["clients"])
    assert target.ecr and images.is_ecr_host(target.host)
    assert target.repository == f"{target.host}/{PREFIX}-facerec"
    assert target.auth and target.auth["username"] == "AWS" and target.auth["password"]
    assert target.auth["password"] not in repr(target)


def test_no_engine_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot reach a Docker engine") as info:
        images.connect(f"unix://{tmp_path}/no-docker.sock", timeout=5)
    assert "start Docker" in str(info.value)


# --------------------------------------------------------------------------------------- with docker


@pytest.mark.docker
def test_splitting_image_is_built_and_pushed(docker_env: DockerEnv, built: dict[str, Any], wheelhouse: Wheelhouse, source: Path) -> None:
    image: images.PushedImage = built["image"]
    repo_name = image.repository.split("/", 1)[1]
    assert image.pushed and image.tag in registry_tags(docker_env.registry, repo_name)
    assert image.uri == f"{docker_env.registry}/{PREFIX}-facerec@{image.digest}"
    lines = built["lines"]
    assert any(line.startswith("splitting: step 1/") for line in lines), lines
    assert any(" layer " in line and " pushed" in line for line in lines), lines

    # What is in it: the handler and nothing else of the repository; ffmpeg; no torch.
    client = docker_env.client
    config = client.images.get(image.tag_uri).attrs["Config"]
    assert config["Cmd"] == ["lambdas.video_splitting.handler"]
    script = ("ls -A /var/task; /opt/facerec/bin/ffmpeg -hide_banner -version | head -n 1; "
              "python3.11 -c 'import torch' 2>/dev/null && echo has-torch || echo no-torch")  # fmt: skip
    out = client.containers.run(image.tag_uri, entrypoint=["/bin/sh", "-c", script], network_mode="none", remove=True).decode()
    listing, ffmpeg, torch = out.strip().splitlines()
    assert listing.split() == ["lambdas"] and ffmpeg.startswith("ffmpeg version") and torch == "no-torch", out

    # Unchanged: found in the registry, neither built nor pushed again (bootstrap stays idempotent).
    again: list[str] = []
    started = time.monotonic()
    second = images.build_and_push(
        Settings(prefix=PREFIX, region=REGION), None, registry=docker_env.registry, base_image=docker_env.base_image,
        docker_client=client, on_progress=again.append, only=("splitting",), build_args=wheelhouse.build_args, network_mode="host",
        root=source,
    )  # fmt: skip
    assert second == {"splitting": image.uri}
    assert not any("step" in line or "layer" in line for line in again), again
    assert time.monotonic() - started < 30
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
            images._push(client, engine.target, tag, images.SPLITTING, emit=lines.append, timeout=120)
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
    docker_env: DockerEnv, built: dict[str, Any], cloud: dict[str, Any], rie: Path, data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image: images.PushedImage = built["image"]
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

    port, api_port = free_port(), free_port()
    cmd = client.images.get(image.uri).attrs["Config"]["Cmd"]
    container = run_container(
        client, image.uri, name=f"facerec-splitting-{uuid.uuid4().hex[:8]}",
        # The emulator in front of the image's own entrypoint (as on AWS, the runtime API then exists);
        # as Lambda runs it: not root, read-only but for /tmp (run_container's like_lambda).
        entrypoint=[f"/opt/rie/{rie.name}", "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                    "--runtime-api-address", f"127.0.0.1:{api_port}", "/lambda-entrypoint.sh"],
        command=cmd, environment=function_env(cloud, names.splitting_function),
        volumes={str(rie.parent): {"bind": "/opt/rie", "mode": "ro"}},
    )  # fmt: skip
    try:

        def alive() -> None:
            container.reload()
            assert container.status in ("created", "running"), remove_container(container)

        wait_port(port, 30, alive)
        started = time.monotonic()
        answer = invoke_rie(port, event, timeout=120)
        seconds = time.monotonic() - started
        assert answer == {"videos": {key: "split"}}, (answer, container.logs(tail=50).decode(errors="replace"))
    finally:
        logs = remove_container(container)

    stem = "uploads/" + video.stem
    first = s3.head_object(Bucket=names.stage1_bucket, Key=f"{stem}.jpg")
    assert first["ContentType"] == "image/jpeg" and first["ContentLength"] > 1000, logs
    invokes = recorder.of(names.recognition_function)
    assert len(invokes) == 1 and invokes[0]["type"] == "Event", recorder.calls
    request = RecognitionRequest.from_dict(invokes[0]["event"])
    assert request.stage1_bucket == names.stage1_bucket and request.stem == stem and request.video == video.name
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=names.stage1_bucket, Prefix=stem)["Contents"]}
    assert [f.key for f in request.frames][0] == f"{stem}.jpg" and {f.key for f in request.frames} <= stored
    assert len(request.frames) >= 2
    print(f"\nsplitting container: {len(request.frames)} frames in {seconds:.1f} s (first invocation, cold)")


def test_recognition_handler_under_the_runtime_interface_client(
    cloud: dict[str, Any], rie: Path, data: Path, celeb_gallery: Any, tmp_path: Path
) -> None:
    pytest.importorskip("awslambdaric", reason="pip install awslambdaric (in the test extra)")
    from lambdas.core import media

    settings, clients = cloud["settings"], cloud["clients"]
    names = settings.names
    # The 5celeb/train gallery (build_gallery, shared with test_core), deployed by bootstrap's code:
    # uploaded to the output bucket, FACEREC_GALLERY set on the function.
    gallery_path, gallery = celeb_gallery
    assert {PERSON, OTHER} <= set(gallery.people)
    apply_plan(plan_deploy(settings, DeployOptions(gallery=gallery_path), clients), NullReporter())

    # Stage-1 frames of a real video of PERSON (a photo not in the gallery), as video-splitting stores them.
    video = sample_video(data, tmp_path)
    stem = f"direct/{video.stem}"
    info = media.probe(video)
    times = media.sample_times(info.duration, 3)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    frames = []
    for file in media.extract_frames(video, times, frames_dir):
        index = int(file.stem)
        frame_key = f"{stem}.jpg" if index == 0 else f"{stem}/{index:03d}.jpg"
        clients.s3.upload_file(str(file), names.stage1_bucket, frame_key)
        frames.append(FrameRef(key=frame_key, t=times[index]))
    request = RecognitionRequest(
        stage1_bucket=names.stage1_bucket, stem=stem, video=video.name, frames=frames,
        source={"bucket": names.input_bucket, "key": f"{stem}.mp4", "event_id": uuid.uuid4().hex},
    )  # fmt: skip

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

    result = json.loads(clients.s3.get_object(Bucket=names.output_bucket, Key=f"{stem}.json")["Body"].read())
    assert result["status"] == "ok" and result["name"] == PERSON, result
    assert result["frames"] == len(frames) and result["model"] == gallery.weights
    assert clients.s3.get_object(Bucket=names.output_bucket, Key=f"{stem}.txt")["Body"].read().decode() == PERSON
    print(f"\nrecognition under the RIE: {result['name']} from {len(frames)} frames in {seconds:.1f} s (cold: models load)")


@pytest.mark.docker
def test_recognition_image_build(docker_env: DockerEnv, source: Path) -> None:
    """Opt-in: needs a CPU build of torch *and torchvision* reachable from the build, which no registry
    these machines reach has (PyPI's torchvision is the CUDA build, and fails with CPU torch: "operator
    torchvision::nms does not exist"). Set FACEREC_TEST_TORCH_INDEX_URL (e.g.
    https://download.pytorch.org/whl/cpu) on a machine with internet to run it."""
    index = os.environ.get("FACEREC_TEST_TORCH_INDEX_URL")
    if not index:
        pytest.skip("set FACEREC_TEST_TORCH_INDEX_URL to a CPU torch index (e.g. https://download.pytorch.org/whl/cpu): "
                    "the registries reachable here have no CPU build of torchvision")
    lines: list[str] = []
    started = time.monotonic()
    result = images.build_images(
        Settings(prefix=PREFIX, region=REGION), None, registry=docker_env.registry, base_image=docker_env.base_image,
        docker_client=docker_env.client, on_progress=lines.append, only=("recognition",), torch_index_url=index,
        network_mode="host", force=True, root=source, timeout=3000,
    )  # fmt: skip
    image = result["recognition"]
    assert image.pushed and image.tag in registry_tags(docker_env.registry, image.repository.split("/", 1)[1])
    script = "ls /opt/facerec/weights; cd /var/task && python3.11 -c 'import lambdas.face_recognition'"
    out = docker_env.client.containers.run(image.uri, entrypoint=["/bin/sh", "-c", script], network_mode="none", remove=True).decode()
    assert "casia-webface-" in out, out
    print(f"\nrecognition image: {image_size_mb(docker_env.client, image.uri):.0f} MB, built and pushed in {time.monotonic() - started:.0f} s")
