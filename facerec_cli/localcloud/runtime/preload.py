"""Imported by the workers' fork server (:data:`.workers.PRELOAD`) for its side effect: botocore's data
for the handlers' clients parsed there once (:mod:`facerec_cli.localcloud.botocore_data`), so every
worker forked from it makes its first client without parsing the endpoints and service models again
(0.1-0.3 s of a worker's first invocation, measured)."""

import contextlib

from facerec_cli.localcloud import botocore_data

HANDLER_SERVICES = ("s3", "lambda", "sqs")  # what lambdas/ makes clients of (storage.client)

# The fork server survives only an ImportError of a preloaded module: anything else here would take every
# worker down with it, for a speed-up. Without it, each worker parses what it needs itself.
with contextlib.suppress(Exception):
    botocore_data.warm(HANDLER_SERVICES)
