"""botocore's data files (endpoints, partitions, service models: several MB of JSON), parsed once per
process instead of once per botocore session.

Each botocore session makes its own Loader, which parses these files again on its first client. The
local cloud makes sessions all along in one process (its own clients, one per role, and moto's, which
lists regions per service), and every Lambda worker's first client used to parse them from scratch:
measured on the course-like burst, 0.4 s of the local cloud's start-up and 0.1-0.3 s of each worker's
first invocation. Sessions that resolve the same data path (AWS_DATA_PATH) now share one Loader; what it
holds is read-only once parsed, as it already is for all the clients of one session.

Imports only botocore: the workers' fork server imports this module (:mod:`.runtime.preload`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import botocore.loaders
import botocore.session

_create_loader = botocore.loaders.create_loader
_loaders: dict[str | None, botocore.loaders.Loader] = {}
_lock = threading.Lock()


def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    """``botocore.loaders.create_loader``, one Loader per data path for the whole process."""
    with _lock:
        loader = _loaders.get(search_path_string)
        if loader is None:
            loader = _loaders[search_path_string] = _create_loader(search_path_string)
        # Every boto3 Session appends boto3's own data folder to its loader's paths: once is enough.
        paths = loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
        return loader


def share_loaders() -> None:
    """From now on every botocore session of this process shares the Loader of its data path (sessions
    look ``create_loader`` up in ``botocore.session`` when they first need data). Idempotent."""
    botocore.session.create_loader = _shared_loader  # type: ignore[attr-defined]


def sealed_session() -> botocore.session.Session:
    """A botocore session that reads no AWS profile, config or credentials file, whatever the
    environment says (the local cloud's clients; the fork server's warm-up)."""
    return botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )


def warm(services: Iterable[str], region: str = "us-east-1") -> None:
    """Share the loaders, then parse what a client of each of ``services`` needs (by making one in a
    :func:`sealed_session`: nothing it makes depends on who calls)."""
    share_loaders()
    session = sealed_session()
    for service in services:
        session.create_client(
            service, region_name=region, endpoint_url="http://127.0.0.1:9", aws_access_key_id="warm", aws_secret_access_key="warm"
        )
