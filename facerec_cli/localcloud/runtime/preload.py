"""Imported by the workers' fork server (:data:`.workers.PRELOAD`) for its side effects, so that every
worker forked from it starts with them done:

- botocore's data for the handlers' clients parsed once (:mod:`facerec_cli.localcloud.botocore_data`):
  a worker then makes its first client without parsing the endpoints and service models again (0.1-0.3 s
  of a worker's first invocation, measured);
- the recognition models' single-threaded sessions made once, when the caller named the run's gallery
  (:func:`.workers.start_fork_server`): each recognition worker inherits them instead of making its own
  (0.2-0.25 s of its start on these 2 cores), and the workers share their memory. This runs while the
  caller starts moto and deploys, on the core those leave idle.
"""

import contextlib
import os
from pathlib import Path

from facerec_cli.localcloud import botocore_data
from facerec_cli.localcloud.runtime.workers import PRELOAD_GALLERY_ENV, PRELOAD_WEIGHTS_ENV

HANDLER_SERVICES = ("s3", "lambda", "sqs")  # what lambdas/ makes clients of (storage.client)


def preload_models() -> bool:
    """The sessions of the run's models (see the module's docstring); False when not asked for, or when
    the models are not built yet (the first worker builds them, as before). The weights asked for are
    taken as they are (the caller checks them against the gallery); else the gallery's own, read from a
    safetensors gallery only: converting a torch one (a course data.pt) would bring torch into every
    worker. A gallery it cannot read raises, and the workers report it as before."""
    gallery = os.environ.pop(PRELOAD_GALLERY_ENV, None)
    weights = os.environ.pop(PRELOAD_WEIGHTS_ENV, None)
    if not gallery:
        return False
    from lambdas.core import models
    from lambdas.core.gallery import Gallery, read_gallery_file, weights_for

    if weights is None:
        weights = weights_for(Gallery.from_bytes(read_gallery_file(Path(gallery)), origin=gallery))
    return models.preload(weights)


# The fork server survives only an ImportError of a preloaded module: anything else here would take every
# worker down with it, for a speed-up. Without these, each worker parses and loads what it needs itself
# (and reports a bad gallery or weights then, as an error result).
with contextlib.suppress(Exception):
    botocore_data.warm(HANDLER_SERVICES)
with contextlib.suppress(Exception):
    preload_models()
