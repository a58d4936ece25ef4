"""The embedded local cloud behind `facerec run-local`: a moto server on 127.0.0.1 whose Lambda
invocations (S3 notifications and Invoke calls) run the real handlers in warm worker processes.

Exports are resolved lazily: spawned workers import ``facerec_cli.pipeline.local.workers`` and should not pay
for importing moto's server with this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Dispatcher": "dispatch",
    "Counters": "dispatch",
    "Failure": "dispatch",
    "FailureHook": "dispatch",
    "Invocation": "dispatch",
    "check_seam": "dispatch",
    "FunctionSpec": "workers",
    "LambdaContext": "workers",
    "Outcome": "workers",
}

__all__ = [
    "Counters",
    "Dispatcher",
    "Failure",
    "FailureHook",
    "FunctionSpec",
    "Invocation",
    "LambdaContext",
    "Outcome",
    "check_seam",
]

if TYPE_CHECKING:
    from facerec_cli.pipeline.local.dispatch import Counters, Dispatcher, Failure, FailureHook, Invocation, check_seam
    from facerec_cli.pipeline.local.workers import FunctionSpec, LambdaContext, Outcome


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
