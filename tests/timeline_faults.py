"""Faults injected into timeline segments, around the real face-recognition handler (pipeline tests).

``FAULT_SEGMENT`` (0-based) names the segment that fails; every other invocation runs the real handler
unchanged. ``segment_fails_always`` fails it on every attempt; ``segment_fails_once`` on its first
attempt only (remembered by a marker file in ``$FAULT_DIR``), so that its retry succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lambdas import face_recognition
from lambdas.segment_state import is_segment_event


def _targeted(event: dict[str, Any]) -> bool:
    return is_segment_event(event) and int(event["segment"]) == int(os.environ.get("FAULT_SEGMENT", "1"))


def segment_fails_always(event: dict[str, Any], context: Any) -> Any:
    if _targeted(event):
        raise RuntimeError(f"injected failure of segment {event['segment'] + 1}")
    return face_recognition.handler(event, context)


def segment_fails_once(event: dict[str, Any], context: Any) -> Any:
    if _targeted(event):
        marker = Path(os.environ["FAULT_DIR"]) / f"{str(event['stem']).replace('/', '_')}-{event['segment']}.seen"
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("injected failure (first attempt)")
    return face_recognition.handler(event, context)
