"""Faults injected around the real face-recognition handler, for pipeline tests.

A handler that raises once, or a worker process that dies mid-invocation, cannot be caused from outside
on demand; these wrappers cause them once per video (remembered by a marker file in $FAULT_DIR) and
otherwise run the real handler unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lambdas import face_recognition


def _first_time(event: dict[str, Any]) -> bool:
    marker = Path(os.environ["FAULT_DIR"]) / (str(event["stem"]).replace("/", "_") + ".seen")
    if marker.exists():
        return False
    marker.write_text("1")
    return True


def fail_once(event: dict[str, Any], context: Any) -> Any:
    if _first_time(event):
        raise RuntimeError("injected failure (first attempt)")
    return face_recognition.handler(event, context)


def die_once(event: dict[str, Any], context: Any) -> Any:
    if _first_time(event):
        os._exit(137)  # as if the worker was killed (SIGKILL's exit status)
    return face_recognition.handler(event, context)
