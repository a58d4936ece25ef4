"""A recorder at moto's Lambda invocation seam, for tests that need to see (or play) the invocations
moto makes for S3 notifications and Invoke calls without running the functions' images."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest


class Recorder:
    """Stands in for moto's Lambda at its invocation seam (the method facerec_cli/localcloud/runtime/seam.py
    patches): records each invocation and answers like an accepted asynchronous one.

    Why not let moto invoke: moto cannot run Image functions (the functions bootstrap creates), and a
    Zip stand-in would test a function bootstrap never makes. Recording at the seam shows what matters
    here without faking the caller: moto emits the real S3 notification for the upload, and the
    handler in the container really calls lambda:Invoke on moto, which routes it to this seam. (The
    whole chain, dispatched to containers, is run-local's: test_run_local_containers_*.)"""

    def __init__(self, play: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.play = play  # (function, event): what the function would do, if the test needs it done

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from facerec_cli.localcloud.runtime.seam import check_seam

        cls = check_seam()  # fails loudly if a moto upgrade moved the seam
        recorder = self

        def invoke(fn: Any, body: Any, request_headers: Any, response_headers: Any) -> str:
            headers = {str(k).lower(): v for k, v in dict(request_headers or {}).items()}
            text = body.decode() if isinstance(body, bytes) else (body or "")
            event = json.loads(text) if text else {}
            recorder.calls.append({"function": fn.function_name, "event": event, "type": headers.get("x-amz-invocation-type", "Event")})
            if recorder.play is not None:
                recorder.play(fn.function_name, event)
            return ""

        monkeypatch.setattr(cls, "invoke", invoke)

    def of(self, function: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["function"] == function]
