"""The pipeline's two handlers with timeouts injected at random moments, for benchmarks/faults.py.

In a worker process, each S3 or Lambda call a handler makes may end the invocation the way a Lambda
timeout does (the call happened or not, at random; then the invocation fails): at most once per
function and video (marker files in $FAULT_DIR), so Lambda's retries can finish the work. Everything
else is the real handler.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from lambdas import face_recognition, storage, video_splitting

PROBABILITY = float(os.environ.get("FAULT_PROBABILITY", "0.08"))


class InjectedTimeout(Exception):
    """What Lambda reports when an invocation runs past its timeout: the work stops mid-way."""


def _install(function: str, event: dict[str, Any]) -> None:
    marker_stem = event.get("stem") or next((r["s3"]["object"]["key"] for r in event.get("Records", [])), "?")
    marker = Path(os.environ["FAULT_DIR"]) / f"{function}-{str(marker_stem).replace('/', '_')}"
    for service, methods in (("s3", ("put_object", "head_object", "download_file", "get_object")), ("lambda", ("invoke",))):
        client = storage.client(service)
        for name in methods:
            if getattr(client, f"_real_{name}", None) is None:
                setattr(client, f"_real_{name}", getattr(client, name))

            def wrapped(*args: Any, _name: str = name, _client: Any = client, **kwargs: Any) -> Any:
                real_call = getattr(_client, f"_real_{_name}")
                if not marker.exists() and random.random() < PROBABILITY:
                    marker.write_text(_name)
                    if random.random() < 0.5:
                        real_call(*args, **kwargs)  # the call went through, the invocation did not
                    raise InjectedTimeout(f"injected timeout at {service}.{_name}")
                return real_call(*args, **kwargs)

            setattr(client, name, wrapped)


def splitting(event: dict[str, Any], context: Any) -> Any:
    _install("splitting", event)
    return video_splitting.handler(event, context)


def recognition(event: dict[str, Any], context: Any) -> Any:
    _install("recognition", event)
    return face_recognition.handler(event, context)
