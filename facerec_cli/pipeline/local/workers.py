"""Where Lambda handlers actually run in the local cloud: warm worker processes, or the caller's process.

A worker process plays one Lambda execution environment: it is started with the function's environment,
imports the handler once (so models load once per worker, like a warm Lambda container) and then serves
invocations one at a time over a pipe. The parent notices a worker that dies mid-invocation through the
process sentinel, so a killed worker becomes a failed attempt instead of a hang.

This module must stay importable without moto: spawned workers import it, and dragging the moto server
into every worker would only cost start-up time.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Handler = Callable[[Any, "LambdaContext"], Any]

# Variables that would let a worker reach the user's real AWS account (or make botocore look for a
# profile that the empty config file cannot have). Workers never inherit them.
REAL_AWS_KEYS = frozenset(
    {
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        # Would make boto3 ignore AWS_ENDPOINT_URL, i.e. talk to real AWS.
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    }
)


def redirect_output(log_path: str | None) -> None:
    """A worker process's stdout and stderr (its subprocesses' too) to ``log_path``, or stdout to
    stderr: the parent's stdout carries only results."""
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # private when it creates it
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    else:
        os.dup2(2, 1)


# What the local runtime runs (``run-local``): the pipeline's two handlers, as ``facerec bootstrap`` names
# them in the functions' ImageConfig command (facerec_cli/pipeline/stack.py; a test keeps the two equal).
PIPELINE_HANDLERS = frozenset({"lambdas.video_splitting.handler", "lambdas.face_recognition.handler"})


def pipeline_variables() -> frozenset[str]:
    """The variables a pipeline function's configuration may set: every name ``lambdas/env.py`` defines,
    and the models' thread count (``FACEREC_THREADS``, which run-local sets on the recognition function).
    Not FACEREC_MODELS or FACEREC_WEIGHTS_DIR: where the models and weights are read from comes from the
    user's own environment, never from a function configuration that any local user can change."""
    from lambdas import env as fenv
    from lambdas.core.models import THREADS_ENV

    names = {
        value
        for key, value in vars(fenv).items()
        if key.isupper() and isinstance(value, str) and value.replace("_", "").isalnum() and value.isupper()
    }
    return frozenset(names | {THREADS_ENV})


@dataclass(frozen=True)
class Allowlist:
    """Which handlers the local runtime runs, and which variables a function's configuration may pass
    them. The configuration comes from the moto server, which any local user can change
    (UpdateFunctionConfiguration on 127.0.0.1 needs no real credentials): a function naming another
    handler, or setting anything else (LD_PRELOAD, PYTHONPATH, AWS_ENDPOINT_URL...), is refused, never run.
    ``None`` for either means anything (only for tests of the runtime itself)."""

    handlers: frozenset[str] | None
    variables: frozenset[str] | None

    @classmethod
    def pipeline(cls) -> Allowlist:
        """The pipeline's two handlers with the variables ``lambdas/env.py`` names."""
        return cls(PIPELINE_HANDLERS, pipeline_variables())

    @classmethod
    def anything(cls) -> Allowlist:
        return cls(None, None)

    def widened(self, handlers: Iterable[str] = (), variables: Iterable[str] = ()) -> Allowlist:
        return Allowlist(
            None if self.handlers is None else self.handlers | frozenset(handlers),
            None if self.variables is None else self.variables | frozenset(variables),
        )

    def refusal(self, spec: FunctionSpec) -> str | None:
        """Why ``spec`` must not run (one sentence a person can act on), or None."""
        if self.handlers is not None and spec.handler not in self.handlers:
            return (
                f"refused to run {spec.name}: its configuration names the handler {spec.handler!r}, and the local "
                f"runtime runs only {', '.join(sorted(self.handlers))} (someone changed the function on the local "
                "cloud: rerun to start a fresh one)"
            )
        if self.variables is not None:
            extra = sorted(k for k in spec.environment if k not in self.variables)
            if extra:
                return (
                    f"refused to run {spec.name}: its configuration sets {', '.join(extra)}, which the local runtime "
                    "does not pass to handlers (only the variables lambdas/env.py names; someone changed the function "
                    "on the local cloud: rerun to start a fresh one)"
                )
        return None


def real_aws_keys(environ: Mapping[str, str]) -> frozenset[str]:
    """The variables in ``environ`` that a local worker must not see: credentials and profiles, and
    per-service endpoints (``AWS_ENDPOINT_URL_S3``...) that would override the local cloud's."""
    return frozenset(k for k in environ if k in REAL_AWS_KEYS or k.startswith("AWS_ENDPOINT_URL_"))


@dataclass(frozen=True)
class FunctionSpec:
    """What the runtime needs to know about one Lambda function, read from its configuration."""

    name: str
    arn: str
    handler: str | None
    environment: Mapping[str, str] = field(default_factory=dict)
    timeout_s: int = 3
    memory_mb: int = 128
    role: str | None = None  # the execution role's ARN: with IAM enforcement, handlers get its credentials

    @classmethod
    def from_configuration(cls, config: Mapping[str, Any]) -> FunctionSpec:
        """Build from a GetFunctionConfiguration-shaped dict. An Image function's handler is its
        ``ImageConfig.Command[0]`` (what the Dockerfile CMD names for the Lambda runtime); a Zip
        function's is ``Handler``."""
        handler = None
        if config.get("PackageType") == "Image":
            command = (config.get("ImageConfigResponse") or {}).get("ImageConfig", {}).get("Command") or []
            handler = command[0] if command else None
        handler = handler or config.get("Handler") or None
        variables = (config.get("Environment") or {}).get("Variables") or {}
        return cls(
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            handler=handler,
            environment={str(k): str(v) for k, v in variables.items()},
            timeout_s=int(config.get("Timeout") or 3),
            memory_mb=int(config.get("MemorySize") or 128),
            role=config.get("Role") or None,
        )

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """Equal fingerprints can share warm workers; a changed one needs fresh workers."""
        return (self.name, self.handler, tuple(sorted(self.environment.items())), self.timeout_s, self.memory_mb, self.role)


class LambdaContext:
    """The attributes of the Lambda Python runtime's context object that handlers commonly use."""

    def __init__(self, spec: FunctionSpec, request_id: str) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/{os.getpid()}"
        # The local runtime does not kill a handler at its timeout (a cold model load on a laptop
        # can take longer than it would on Lambda); handlers that budget their work still get the number.
        self._deadline = time.monotonic() + spec.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt: a JSON payload, an error in Lambda's shape, or a dead worker."""

    ok: bool
    payload: str | None = None
    error: Mapping[str, Any] | None = None
    died: bool = False

    @property
    def message(self) -> str:
        if self.ok or not self.error:
            return ""
        return f"{self.error.get('errorType', 'Error')}: {self.error.get('errorMessage', '')}"


def error_outcome(error_type: str, message: str, *, died: bool = False, stack: list[str] | None = None) -> Outcome:
    return Outcome(
        ok=False, error={"errorType": error_type, "errorMessage": message, "stackTrace": stack or []}, died=died
    )


def load_handler(path: str | None) -> Handler:
    """``package.module.function`` (slashes allowed, as the Lambda runtime allows) to the callable."""
    if not path or "." not in path:
        raise ValueError(
            f"handler {path!r} is not 'module.function': set ImageConfig.Command (Image) or Handler (Zip)"
        )
    module_name, attr = path.replace("/", ".").rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        raise TypeError(f"handler {path!r} is not callable")
    return handler


def call_handler(handler: Handler, spec: FunctionSpec, request_id: str, event_text: str) -> Outcome:
    """One invocation, with the handler's exception turned into Lambda's error shape."""
    try:
        event = json.loads(event_text) if event_text else {}
        result = handler(event, LambdaContext(spec, request_id))
    except Exception as exc:  # a handler error is data for the caller, not a crash of the runtime
        traceback.print_exc()
        return error_outcome(type(exc).__name__, str(exc), stack=traceback.format_tb(exc.__traceback__))
    try:
        return Outcome(ok=True, payload=json.dumps(result))
    except (TypeError, ValueError) as exc:
        return error_outcome("Runtime.MarshalError", f"unable to marshal response: {exc}")


def lambda_environ(spec: FunctionSpec, cloud_env: Mapping[str, str]) -> dict[str, str]:
    """The variables a handler of ``spec`` sees: the cloud's, the function's over them, and the
    runtime's reserved ones last (Lambda does not let a function override those)."""
    region = cloud_env.get("AWS_DEFAULT_REGION", "us-east-1")
    return {
        **cloud_env,
        **spec.environment,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout_s),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "_HANDLER": spec.handler or "",
    }


def worker_environ(spec: FunctionSpec, cloud_env: Mapping[str, str]) -> dict[str, str]:
    """A worker's whole environment: ours (PATH, HOME, ...) without real-AWS credentials, plus the
    function's Lambda environment."""
    dropped = real_aws_keys(os.environ)
    inherited = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**inherited, **lambda_environ(spec, cloud_env)}


class Runner(Protocol):
    """Runs invocations of functions for one dispatcher lane."""

    def start(self) -> None: ...

    def run(self, spec: FunctionSpec, request_id: str, event_text: str) -> Outcome: ...

    def kill(self) -> None: ...

    def close(self, grace_s: float) -> None: ...


# ---------------------------------------------------------------------------------------------------
# Worker processes


def _worker_main(
    conn: multiprocessing.connection.Connection,
    spec: FunctionSpec,
    env: dict[str, str],
    sys_path: list[str],
    log_path: str | None,
) -> None:
    """Entry point of a spawned worker. Protocol: the worker first sends ("ready", None) or
    ("init_error", Outcome); then for each (request_id, event_text) it receives it sends an Outcome;
    None or a closed pipe (the parent is gone) ends it."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Keep the CLI's stdout clean (`--json` prints only results there): handler output, including that
    # of subprocesses such as ffmpeg, goes to the log file or to stderr.
    redirect_output(log_path)
    sys.path[:] = sys_path
    os.environ.clear()
    os.environ.update(env)
    try:
        handler = load_handler(spec.handler)
    except Exception as exc:
        traceback.print_exc()
        sys.stdout.flush()
        conn.send(("init_error", error_outcome("Runtime.ImportModuleError", f"{spec.handler}: {exc}")))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        request_id, event_text = message
        outcome = call_handler(handler, spec, request_id, event_text)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(outcome)


class WorkerProcess:
    """One warm worker of one function. Used by one dispatcher thread at a time; ``kill`` may be called
    from any thread (it only signals the process)."""

    def __init__(
        self,
        spec: FunctionSpec,
        cloud_env: Mapping[str, str],
        *,
        log_path: str | None = None,
    ) -> None:
        self.spec = spec
        self._env = worker_environ(spec, cloud_env)
        self._log_path = log_path
        # spawn, not fork: the parent runs moto's server threads, and forking a threaded process can
        # copy held locks into the child.
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._ready = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Spawn the process; it imports the handler in the background while the caller goes on."""
        if self._proc is not None:
            return
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_end, self.spec, self._env, list(sys.path), self._log_path),
            name=f"facerec-worker-{self.spec.name}",
            # daemon: multiprocessing terminates it at interpreter exit even if close() never ran.
            daemon=True,
        )
        proc.start()
        child_end.close()  # so that the child's death shows up as EOF on our end
        self._proc, self._conn, self._ready = proc, parent_end, False

    def run(self, spec: FunctionSpec, request_id: str, event_text: str) -> Outcome:
        self.start()
        if not self._ready:
            first = self._receive()
            if isinstance(first, Outcome):  # died while importing
                return first
            kind, init_error = first
            if kind == "init_error":
                self._reap()
                return init_error
            self._ready = True
        assert self._conn is not None
        try:
            self._conn.send((request_id, event_text))
        except (BrokenPipeError, OSError):
            return self._died()
        received = self._receive()
        return received if isinstance(received, Outcome) else error_outcome("Runtime.Unknown", repr(received))

    def _receive(self) -> Any:
        """The worker's next message, or a 'died' Outcome when the process ends first."""
        assert self._conn is not None and self._proc is not None
        multiprocessing.connection.wait([self._conn, self._proc.sentinel])
        # Prefer the pipe: a worker may answer and exit at once.
        if self._conn.poll():
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                pass
        return self._died()

    def _died(self) -> Outcome:
        exitcode = self._reap()
        return error_outcome(
            "Runtime.ExitError",
            f"worker process of {self.spec.name} exited with code {exitcode} during the invocation",
            died=True,
        )

    def _reap(self) -> int | None:
        """Forget a finished process; the next run starts a fresh one."""
        proc, conn = self._proc, self._conn
        self._proc, self._conn, self._ready = None, None, False
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        proc.join(timeout=5)
        if proc.exitcode is None:
            proc.kill()
            proc.join(timeout=5)
        exitcode = proc.exitcode
        proc.close()
        return exitcode

    def kill(self) -> None:
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ValueError, OSError):  # already closed or gone
                proc.kill()

    def close(self, grace_s: float = 2.0) -> None:
        """Ask the worker to stop, then insist."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        proc.join(timeout=grace_s)
        if proc.exitcode is None:
            proc.terminate()
            proc.join(timeout=2)
        self._reap()


# ---------------------------------------------------------------------------------------------------
# The caller's own process (`--workers 0`, for debuggers and profilers)


@contextlib.contextmanager
def applied_environ(values: Mapping[str, str], remove: frozenset[str] = frozenset()) -> Iterator[None]:
    """Set (and unset) variables for the duration of a call and put the previous values back."""
    saved = {key: os.environ.get(key) for key in (*values, *remove)}
    for key in remove:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class InProcessRunner:
    """Runs handlers in this process, one call at a time, with the function's environment applied
    around each call. The dispatcher gives it a single thread: handlers reading ``os.environ`` must not
    run concurrently for different functions in one process."""

    def __init__(self, cloud_env: Mapping[str, str]) -> None:
        self._cloud_env = dict(cloud_env)
        self._handlers: dict[str, Handler] = {}

    def start(self) -> None:
        pass

    def run(self, spec: FunctionSpec, request_id: str, event_text: str) -> Outcome:
        with applied_environ(lambda_environ(spec, self._cloud_env), remove=real_aws_keys(os.environ)):
            handler = self._handlers.get(spec.handler or "")
            if handler is None:
                try:
                    handler = load_handler(spec.handler)  # imported under the function's environment
                except Exception as exc:
                    traceback.print_exc()
                    return error_outcome("Runtime.ImportModuleError", f"{spec.handler}: {exc}")
                self._handlers[spec.handler or ""] = handler
            try:
                return call_handler(handler, spec, request_id, event_text)
            except SystemExit as exc:  # sys.exit() in a handler must not end the dispatcher's thread
                return error_outcome("Runtime.ExitError", f"handler called sys.exit({exc.code!r})")

    def kill(self) -> None:
        pass  # a thread cannot be interrupted; the dispatcher stops waiting for it instead

    def close(self, grace_s: float = 2.0) -> None:
        pass
