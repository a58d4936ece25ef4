"""What the local runtime knows about a Lambda function and one invocation of it: the function as read
from its configuration (:class:`LocalFunction`), the allowlist of handlers and variables it may run
with, the context object, an attempt's :class:`Outcome`, and how a handler is loaded and called. The
runners that host handlers (worker processes, this process) are in :mod:`.workers`, containers in
:mod:`.containers`.

This module must stay importable without moto: spawned workers import it.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Handler = Callable[[Any, "LambdaContext"], Any]

@dataclass(frozen=True)
class Allowlist:
    """Which handlers the local runtime runs, and which variables a function's configuration may pass
    them. The configuration comes from the moto server, which any local user can change
    (UpdateFunctionConfiguration on 127.0.0.1 needs no real credentials): a function naming another
    handler, or setting anything else (LD_PRELOAD, PYTHONPATH, AWS_ENDPOINT_URL...), is refused, never run.
    ``None`` for either means anything (tests of the runtime itself build such an allowlist)."""

    handlers: frozenset[str] | None
    variables: frozenset[str] | None

    @classmethod
    def nothing(cls) -> Allowlist:
        """No handler at all: the runtime's default, so it runs only what its caller hands it
        (run-local: the pipeline's, :func:`facerec_cli.pipeline.local.handlers.pipeline_allowlist`)."""
        return cls(frozenset(), frozenset())

    def widened(self, handlers: Iterable[str] = (), variables: Iterable[str] = ()) -> Allowlist:
        return Allowlist(
            None if self.handlers is None else self.handlers | frozenset(handlers),
            None if self.variables is None else self.variables | frozenset(variables),
        )

    def refusal(self, spec: LocalFunction) -> str | None:
        """Why ``spec`` must not run (one sentence a person can act on), or None."""
        if self.handlers is not None and spec.handler not in self.handlers:
            runs = f"runs only {', '.join(sorted(self.handlers))}" if self.handlers else "was started to run no handler"
            return (
                f"refused to run {spec.name}: its configuration names the handler {spec.handler!r}, and the local "
                f"runtime {runs} (someone changed the function on the local cloud: rerun to start a fresh one)"
            )
        if self.variables is not None:
            extra = sorted(k for k in spec.environment if k not in self.variables)
            if extra:
                return (
                    f"refused to run {spec.name}: its configuration sets {', '.join(extra)}, which the local runtime "
                    "does not pass to handlers (only the variables its caller allows, for run-local those lambdas/env.py "
                    "names; someone changed the function on the local cloud: rerun to start a fresh one)"
                )
        return None


@dataclass(frozen=True)
class LocalFunction:
    """What the runtime needs to know about one Lambda function, read from its configuration."""

    name: str
    arn: str
    handler: str | None
    environment: Mapping[str, str] = field(default_factory=dict)
    timeout_s: int = 3
    memory_mb: int = 128
    role: str | None = None  # the execution role's ARN: with IAM enforcement, handlers get its credentials

    @classmethod
    def from_configuration(cls, config: Mapping[str, Any]) -> LocalFunction:
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

    def __init__(self, spec: LocalFunction, request_id: str) -> None:
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


def call_handler(handler: Handler, spec: LocalFunction, request_id: str, event_text: str) -> Outcome:
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


def lambda_environ(spec: LocalFunction, cloud_env: Mapping[str, str]) -> dict[str, str]:
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


class Runner(Protocol):
    """Runs invocations of functions for one dispatcher lane."""

    def start(self) -> None: ...

    def run(self, spec: LocalFunction, request_id: str, event_text: str) -> Outcome: ...

    def kill(self) -> None: ...

    def close(self, grace_s: float) -> None: ...
