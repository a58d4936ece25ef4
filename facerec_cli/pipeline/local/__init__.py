"""The pipeline's local runtime behind `facerec run-local`: what the embedded cloud
(:mod:`facerec_cli.localcloud.server`) runs for its Lambda invocations. :mod:`.seam` hands moto's
invocations to the :mod:`.dispatch` dispatcher, which runs the handlers (:mod:`.functions`) in warm worker
processes (:mod:`.workers`) or containers (:mod:`.containers`); :mod:`.runner` is ``LocalPipeline``.

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
    "check_seam": "seam",
    "LocalFunction": "functions",
    "LambdaContext": "functions",
    "Outcome": "functions",
}

__all__ = [
    "Counters",
    "Dispatcher",
    "Failure",
    "FailureHook",
    "LocalFunction",
    "Invocation",
    "LambdaContext",
    "Outcome",
    "check_seam",
]

if TYPE_CHECKING:
    from facerec_cli.pipeline.local.dispatch import Counters, Dispatcher, Failure, FailureHook, Invocation
    from facerec_cli.pipeline.local.functions import LambdaContext, LocalFunction, Outcome
    from facerec_cli.pipeline.local.seam import check_seam


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
