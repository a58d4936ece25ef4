"""What run-local lets the local Lambda runtime (:mod:`facerec_cli.localcloud.runtime`) run: the
pipeline's handlers and the variables their configurations may set. The runtime itself runs only what
its caller allows (:class:`~facerec_cli.localcloud.runtime.functions.Allowlist`); this is the pipeline's."""

from __future__ import annotations

from facerec_cli.localcloud.runtime.functions import Allowlist

# The pipeline's handlers (and their on-failure destination), as ``facerec bootstrap`` names them in the
# functions' ImageConfig command (facerec_cli/pipeline/stack.py; a test keeps the two equal).
PIPELINE_HANDLERS = frozenset({"lambdas.video_splitting.handler", "lambdas.face_recognition.handler", "lambdas.on_failure.handler"})


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


def pipeline_allowlist() -> Allowlist:
    """The pipeline's handlers with the variables ``lambdas/env.py`` names."""
    return Allowlist(PIPELINE_HANDLERS, pipeline_variables())
