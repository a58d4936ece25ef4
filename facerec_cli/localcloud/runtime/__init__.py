"""The local Lambda runtime: what the embedded cloud (:mod:`facerec_cli.localcloud.server`) runs for its
Lambda invocations, as SAM CLI keeps its in ``samcli/local/``. :mod:`.seam` hands moto's invocations to the
:mod:`.dispatch` dispatcher, which runs the handlers (:mod:`.functions`) in warm worker processes
(:mod:`.workers`), in this process, or in runners a caller hands it (the pipeline's containers,
:mod:`facerec_cli.pipeline.local.containers`); what an invocation is, and what the dispatcher reports of
them, is in :mod:`.invocations`.

Exports are resolved lazily: spawned workers import ``facerec_cli.localcloud.runtime.workers`` and should not pay
for importing moto's server with this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Dispatcher": "dispatch",
    "Counters": "invocations",
    "Failure": "invocations",
    "FailureHook": "invocations",
    "Invocation": "invocations",
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
    from facerec_cli.localcloud.runtime.dispatch import Dispatcher
    from facerec_cli.localcloud.runtime.invocations import Counters, Failure, FailureHook, Invocation
    from facerec_cli.localcloud.runtime.functions import LambdaContext, LocalFunction, Outcome
    from facerec_cli.localcloud.runtime.seam import check_seam


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
