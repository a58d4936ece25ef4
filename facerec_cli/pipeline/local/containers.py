"""``facerec run-local --runtime containers``: the local cloud's Lambda invocations run in the functions'
container images, each behind the Lambda Runtime Interface Emulator, like ``sam local`` but for the
whole flow: moto's S3 notification goes to the video-splitting container, whose asynchronous Invoke
(through moto's Lambda API) goes to the face-recognition container, whose result lands in the output
bucket.

The images are built by the code ``facerec bootstrap`` uses (``facerec_cli.pipeline.images``: the same
Dockerfiles, build context, models and content tags), into the engine only
(``facerec-local:<kind>-<hash>``); an unchanged image is not rebuilt. The functions are deployed
pointing at them, and the dispatcher (``dispatch.Dispatcher``, with Lambda's asynchronous semantics:
queueing, retries, the failure hook) hands each invocation to a :class:`ContainerRunner` of the
function instead of a worker process: one warm container per runner, ``--workers`` runners per function.

A container runs as Lambda runs a function: as a user other than root, on a read-only file system with a
writable /tmp, with the function's handler (its ImageConfig command). It uses the host network, so that
it reaches the moto server on 127.0.0.1; the emulator (``/usr/local/bin/aws-lambda-rie``, where the AWS
base images have it) listens on 127.0.0.1 and a free port instead of its default 0.0.0.0:8080, and gives
the runtime its API on another free port. Its environment is the function's Environment, only the
variables the handlers read (``lambdas/env.py``, and the models' thread count), plus the endpoint of the
local cloud, its region, its credentials (with IAM enforcement, the function role's temporary ones), and
the function name, timeout and memory that the emulator reads. Its output (the emulator's START/END/REPORT
lines and the handler's log) goes to the run's log file, each line prefixed with the function name. A
function whose configuration names another handler or sets other variables is refused by the dispatcher
(run-local's allowlist, :mod:`.handlers`) before any container starts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerec_cli.errors import UserError
from facerec_cli.localcloud.runtime.functions import LocalFunction, Outcome, error_outcome
from facerec_cli.pipeline.local.handlers import pipeline_variables

log = logging.getLogger(__name__)

RIE_IN_IMAGE = "/usr/local/bin/aws-lambda-rie"  # the AWS base images' emulator
ENTRYPOINT = "/lambda-entrypoint.sh"  # the AWS base images' entrypoint: runs the runtime interface client
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
LAMBDA_USER = "993:990"  # Lambda runs functions as a user other than root (sbx_user1051)
TMP_SIZE = "512m"  # Lambda's default ephemeral storage
LABEL = "facerec.run-local"  # on every container started here (the run's id as value)
START_TIMEOUT_S = 60.0  # container start to the emulator listening
# The cloud's variables a container gets (the endpoint, region and credentials of the local cloud; the
# rest of LocalCloud.env() is about this machine's files and proxies).
# With IAM enforcement the credentials are the function role's temporary ones (with a session token).
CLOUD_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")
# Keys of an error in Lambda's shape, as the emulator answers a failed invocation.
_ERROR_KEYS = {"errorMessage", "errorType", "stackTrace", "requestId", "cause"}

ENGINE_HINT = (
    "start Docker (Docker Desktop, or `sudo systemctl start docker`) or point DOCKER_HOST at an engine; in a "
    "source checkout, as root, scripts/docker-up.sh starts one; the default --runtime workers needs none"
)


def connect_engine(docker_host: str | None = None, timeout: float = 3600.0) -> Any:
    """A client of the engine at ``docker_host`` (else $DOCKER_HOST, else the default socket), checked:
    a UserError (one line) when there is none."""
    from facerec_cli.pipeline import images

    try:
        return images.connect(docker_host, timeout=timeout)
    except UserError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        raise UserError(f"--runtime containers needs a Docker engine: {message}", hint=ENGINE_HINT) from None


def function_variables() -> frozenset[str]:
    """The environment variables the handlers read: every name ``lambdas/env.py`` defines, and the
    models' thread count: run-local's allowlist (:func:`.handlers.pipeline_variables`). The dispatcher
    refuses a function whose configuration sets anything else before any container starts; this filter
    is the second line."""
    return pipeline_variables()


def container_environ(spec: LocalFunction, cloud_env: Mapping[str, str]) -> dict[str, str]:
    """A function container's environment (see the module doc); nothing of this machine's own."""
    allowed = function_variables()
    env = {k: v for k, v in spec.environment.items() if k in allowed}
    env.update({k: cloud_env[k] for k in CLOUD_VARIABLES if cloud_env.get(k)})
    region = cloud_env.get("AWS_DEFAULT_REGION") or cloud_env.get("AWS_REGION") or "us-east-1"
    env.update({
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout_s),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
    })  # fmt: skip
    return env


def invocation_outcome(status: int, body: bytes) -> Outcome:
    """The emulator's answer to one invocation as an Outcome: the handler's JSON result, or an error in
    Lambda's shape (a handler exception, a crashed runtime, a timeout)."""
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError:
        payload = None
        if status < 400 and text.startswith("Task timed out"):
            return error_outcome("Runtime.Timeout", text.strip())
        if status < 400:
            return error_outcome("Runtime.InvalidResponse", f"the emulator answered with no JSON: {text[:300]!r}")
    is_error = isinstance(payload, dict) and "errorMessage" in payload and set(payload) <= _ERROR_KEYS
    if status >= 400 or is_error:
        if isinstance(payload, dict) and ("errorType" in payload or "errorMessage" in payload):
            return Outcome(ok=False, error={
                "errorType": str(payload.get("errorType") or "Runtime.Unknown"),
                "errorMessage": str(payload.get("errorMessage") or ""),
                "stackTrace": payload.get("stackTrace") or [],
            })  # fmt: skip
        return error_outcome("Runtime.EmulatorError", f"the emulator answered {status}: {text[:300]}")
    return Outcome(ok=True, payload=text if text.strip() else "null")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ContainerRunner:
    """One warm container of one function (a dispatcher lane's runner): started once, serving one
    invocation at a time through its emulator, restarted when it dies. ``kill`` may be called from any
    thread."""

    def __init__(
        self,
        client: Any,
        image: str,
        spec: LocalFunction,
        cloud_env: Mapping[str, str],
        *,
        log_path: str | None = None,
        run_id: str = "",
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.image = image
        self.spec = spec
        self.environment = container_environ(spec, cloud_env)
        self.log_path = log_path
        self.run_id = run_id
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self._container: Any = None
        self._log_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # No proxy for 127.0.0.1, whatever HTTP(S)_PROXY says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def container_id(self) -> str | None:
        return self._container.id if self._container is not None else None

    def start(self) -> None:
        """Create and start the container, and wait until its emulator listens."""
        if self._container is not None:
            return
        import docker

        port, api_port = _free_port(), _free_port()
        name = f"facerec-{self.spec.name}-{uuid.uuid4().hex[:8]}"
        try:
            container = self.client.containers.create(
                self.image,
                entrypoint=[RIE_IN_IMAGE, "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                            "--runtime-api-address", f"127.0.0.1:{api_port}", ENTRYPOINT],
                # The function's handler (its ImageConfig command), else the image's CMD.
                command=[self.spec.handler] if self.spec.handler else None,
                name=name, detach=True, network_mode="host", environment=self.environment,
                user=LAMBDA_USER, read_only=True, tmpfs={"/tmp": f"rw,size={TMP_SIZE}"},
                labels={LABEL: self.run_id or "1", "facerec.function": self.spec.name},
                stdin_open=False, tty=False,
            )  # fmt: skip
        except docker.errors.ImageNotFound as exc:
            raise RuntimeError(f"the image {self.image} of {self.spec.name} is not in the Docker engine") from exc
        self._container = container
        try:
            container.start()
            self._follow_logs(container)
            self._wait_listening(container, port)
        except BaseException:
            self._remove()
            raise
        self.port = port

    def _wait_listening(self, container: Any, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            container.reload()
            if container.status not in ("created", "running"):
                tail = container.logs(tail=20).decode("utf-8", errors="replace").strip()
                hint = f" (is {RIE_IN_IMAGE} in the image? AWS's Lambda base images have it)" if "no such file" in tail.lower() else ""
                raise RuntimeError(f"the container of {self.spec.name} exited ({container.status}){hint}: {tail[-600:]}")
            time.sleep(0.1)
        raise RuntimeError(f"the emulator in the container of {self.spec.name} did not listen on 127.0.0.1:{port} "
                           f"within {self.start_timeout_s:.0f} s")  # fmt: skip

    def _follow_logs(self, container: Any) -> None:
        """Copy the container's output to the log file (or stderr), one prefixed line at a time."""
        prefix = f"[{self.spec.name}] ".encode()
        path = self.log_path

        def follow() -> None:
            # Private (0600) if this creates it: the log holds the handlers' output.
            sink = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") if path else None  # noqa: SIM115 - closed below
            try:
                partial = b""
                for chunk in container.logs(stream=True, follow=True):
                    partial += chunk
                    *lines, partial = partial.split(b"\n")
                    text = b"".join(prefix + line + b"\n" for line in lines)
                    if text:
                        if sink is not None:
                            sink.write(text)
                            sink.flush()
                        else:
                            os.write(2, text)
                if partial and sink is not None:
                    sink.write(prefix + partial + b"\n")
            except Exception:  # noqa: BLE001, S110 - the container went away: nothing more to copy
                pass
            finally:
                if sink is not None:
                    sink.close()

        self._log_thread = threading.Thread(target=follow, name=f"facerec-logs-{self.spec.name}", daemon=True)
        self._log_thread.start()

    def run(self, spec: LocalFunction, request_id: str, event_text: str) -> Outcome:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - an attempt that failed: the dispatcher retries it
            log.warning("could not start a container for %s: %s", spec.name, exc)
            return error_outcome("Runtime.StartError", f"{spec.name}: {exc}", died=True)
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{INVOKE_PATH}", data=(event_text or "{}").encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            # The emulator enforces the function's timeout itself; the margin covers a cold start.
            with self._opener.open(request, timeout=spec.timeout_s + 120) as response:
                return invocation_outcome(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return invocation_outcome(exc.code, exc.read())
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            state = self._state()
            self._remove()  # the next invocation starts a fresh container
            return error_outcome("Runtime.ExitError", f"the container of {spec.name} failed during the invocation "
                                 f"({state}): {exc}", died=True)  # fmt: skip

    def _state(self) -> str:
        container = self._container
        if container is None:
            return "gone"
        try:
            container.reload()
            exit_code = container.attrs.get("State", {}).get("ExitCode")
            return f"{container.status}, exit code {exit_code}" if container.status == "exited" else container.status
        except Exception:  # noqa: BLE001
            return "gone"

    def kill(self) -> None:
        container = self._container
        if container is not None:
            with contextlib.suppress(Exception):
                container.kill()

    def _remove(self) -> None:
        with self._lock:
            container, self._container, self.port = self._container, None, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        thread, self._log_thread = self._log_thread, None
        if thread is not None:
            thread.join(5)

    def close(self, grace_s: float = 2.0) -> None:
        container = self._container
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop(timeout=max(1, int(grace_s)))
        self._remove()


@dataclass
class ContainerRuntime:
    """The Docker side of ``run-local --runtime containers``: the engine, the images, and the runners
    the dispatcher asks for (``runner`` is its runner factory)."""

    client: Any
    log_path: str | None = None
    images: dict[str, str] = field(default_factory=dict)  # function name -> image reference
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @classmethod
    def connect(cls, docker_host: str | None = None, log_path: str | None = None) -> ContainerRuntime:
        return cls(connect_engine(docker_host), log_path=log_path)

    def build(
        self,
        weights: str,
        *,
        base_image: str | None = None,
        on_progress: Callable[[str], None] | None = None,
        root: Path | None = None,
        **options: Any,
    ) -> dict[str, str]:
        """Build (or find) both images as bootstrap builds them; returns ``{kind: reference}``."""
        from facerec_cli.pipeline import images

        built = images.build_local(self.client, weights=weights, base_image=base_image, on_progress=on_progress, root=root, **options)
        return {kind: image.reference for kind, image in built.items()}

    def runner(self, spec: LocalFunction, cloud_env: Mapping[str, str]) -> ContainerRunner:
        image = self.images.get(spec.name)
        if image is None:
            raise RuntimeError(f"no container image for the function {spec.name} (known: {', '.join(sorted(self.images)) or 'none'})")
        return ContainerRunner(self.client, image, spec, cloud_env, log_path=self.log_path, run_id=self.run_id)

    def remove_leftovers(self) -> None:
        """Remove any container of this run still there (a runner that was never closed)."""
        with contextlib.suppress(Exception):
            for container in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.run_id}"}):
                with contextlib.suppress(Exception):
                    container.remove(force=True)

    def close(self) -> None:
        self.remove_leftovers()
        with contextlib.suppress(Exception):
            self.client.close()
