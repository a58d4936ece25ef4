"""The input bucket's trigger right after bootstrap put it.

S3 documents that a change to a bucket's notification configuration can take several minutes to take
effect: an upload in that time may start nothing. So bootstrap records when it put the trigger (in the
upload ledger's file), `facerec upload` says so within :data:`SETTLE` of it, and `facerec results --watch`
re-triggers an upload of that window that shows no sign of the pipeline after :data:`NUDGE_AFTER`: an
in-place copy (CopyObject onto itself with ``MetadataDirective=REPLACE``, which S3 requires of a copy that
changes nothing else) is a new ObjectCreated event for the same key and bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from facerec_cli.config import Settings
from facerec_cli.infra.readers import get_or_none
from facerec_cli.pipeline.upload_ledger import UploadLedger, UploadRecord
from lambdas.stage1 import marker_key

# How long after bootstrap put the trigger an upload may go unnoticed ("several minutes").
SETTLE = timedelta(minutes=10)
# Seconds without an answer or a sign of video-splitting (its done marker in stage-1) before an upload of
# that window is re-triggered: longer than video-splitting's timeout (120 s), so one that is being split
# has finished by then (tests lower it).
NUDGE_AFTER = 180.0


def settling_note(settings: Settings, *, now: datetime | None = None, ledger: UploadLedger | None = None) -> str | None:
    """What `facerec upload` says while the trigger bootstrap put may not be in effect yet (else None)."""
    put = (ledger or UploadLedger(settings)).trigger_put_at()
    now = now or datetime.now(timezone.utc)
    if put is None or now - put >= SETTLE:
        return None
    ago = max(0, int((now - put).total_seconds()))
    return (f"bootstrap put the input bucket's trigger {ago} s ago, and S3 can take several minutes to apply it: "
            "an upload before then may start nothing; `facerec results --watch` re-triggers any that stays unanswered")  # fmt: skip


class Retrigger:
    """Called by `results --watch` with the uploads still pending; re-triggers (once each) those of the
    settling window that show no sign of the pipeline, and returns a line per upload for the user."""

    def __init__(self, settings: Settings, s3: Any, ledger: UploadLedger, *, now: Callable[[], datetime] | None = None) -> None:
        self.settings, self.s3, self.ledger = settings, s3, ledger
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.done: set[str] = set()

    def __call__(self, pending: list[UploadRecord]) -> list[str]:
        put = self.ledger.trigger_put_at()
        lines = []
        now = self.now()
        for upload in pending:
            waited = (now - upload.uploaded_at).total_seconds()
            if upload.key in self.done or waited < NUDGE_AFTER or self._split(upload):
                continue
            self.done.add(upload.key)
            if put is not None and upload.uploaded_at <= put + SETTLE:
                lines.append(self._copy_in_place(upload, waited))
            else:  # the trigger was in effect: something else is wrong
                split = self.settings.names.splitting_function
                lines.append(f"{upload.video}: video-splitting has not finished it after {waited:.0f} s: see `facerec logs --function {split}`")
        return lines

    def _split(self, upload: UploadRecord) -> bool:
        """video-splitting has finished with it (its done marker in stage-1)."""
        return get_or_none(self.s3.head_object, Bucket=self.settings.names.stage1_bucket, Key=marker_key(upload.stem)) is not None

    def _copy_in_place(self, upload: UploadRecord, waited: float) -> str:
        bucket = self.settings.names.input_bucket
        head = get_or_none(self.s3.head_object, Bucket=bucket, Key=upload.key)
        if head is None:
            return f"{upload.video}: nothing after {waited:.0f} s, and it is no longer in s3://{bucket}: upload it again"
        self.s3.copy_object(
            Bucket=bucket, Key=upload.key, CopySource={"Bucket": bucket, "Key": upload.key}, MetadataDirective="REPLACE",
            Metadata=head.get("Metadata") or {}, ContentType=head.get("ContentType") or "binary/octet-stream",
        )  # fmt: skip
        return (f"{upload.video}: nothing after {waited:.0f} s, and it was uploaded while S3 may not yet have applied the trigger "
                "bootstrap put: re-triggered (copied onto itself)")  # fmt: skip
