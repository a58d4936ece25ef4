"""What `facerec upload` sent, remembered per deployment, so that `facerec results --watch` knows when
every uploaded video is answered.

One small JSON file in the user state directory (``$FACEREC_STATE_DIR`` overrides), keyed by
deployment (prefix, region, endpoint). It also keeps when bootstrap last put the input bucket's trigger
(facerec_cli/pipeline/trigger.py: S3 may take minutes to apply it). Each upload records the object key, its ETag, size and the time
S3 stored it (S3's own ``LastModified``, so it compares with the result objects' times on one clock).
A result answers an upload when its ``<stem>.json`` is at least as new as the upload; a failure record
in the failure queue answers it too. Entries older than the failure queue keeps its records are
dropped: nothing can answer them any more.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import platformdirs

from facerec_cli.config import Settings

FILE_NAME = "uploads.json"
FORMAT_VERSION = 1
# Failure records live 14 days in the failure queue; an upload older than that can no longer be answered.
KEEP = timedelta(days=15)


def state_dir() -> Path:
    return Path(os.environ.get("FACEREC_STATE_DIR") or platformdirs.user_state_dir("facerec"))


def deployment_key(settings: Settings) -> str:
    return f"{settings.prefix}|{settings.region}|{settings.endpoint_url or 'aws'}"


def stem_of(key: str) -> str:
    """The result stem of an input key (``clips/a b.mp4`` -> ``clips/a b``), as the handlers derive it."""
    path = PurePosixPath(key)
    return str(path.with_suffix("")) if path.suffix else key


@dataclass(frozen=True)
class UploadRecord:
    key: str
    etag: str
    size: int
    uploaded: str  # ISO 8601, UTC: the object's LastModified in S3

    @property
    def stem(self) -> str:
        return stem_of(self.key)

    @property
    def video(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def uploaded_at(self) -> datetime:
        return parse_time(self.uploaded)


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


class UploadLedger:
    """Read and update the uploads of one deployment. Updates are read-modify-write under a file lock,
    so two `facerec upload` runs at once do not lose each other's records."""

    def __init__(self, settings: Settings, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / FILE_NAME
        self.deployment = deployment_key(settings)

    # ---- reading

    def _read_all(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, OSError):
            return {"version": FORMAT_VERSION, "deployments": {}}
        if not isinstance(data, dict) or not isinstance(data.get("deployments"), dict):
            return {"version": FORMAT_VERSION, "deployments": {}}
        return data

    def records(self) -> list[UploadRecord]:
        entries = self._read_all()["deployments"].get(self.deployment) or {}
        out: list[UploadRecord] = []
        for key, value in entries.items():
            try:
                record = UploadRecord(key=key, etag=str(value["etag"]), size=int(value["size"]), uploaded=str(value["uploaded"]))
                parse_time(record.uploaded)
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: skip it rather than fail every command
            out.append(record)
        return sorted(out, key=lambda r: r.key)

    # ---- writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.directory / (FILE_NAME + ".lock")
        with lock_path.open("a") as lock:
            try:
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not Linux
                pass
            data = self._read_all()
            yield data
            data["version"] = FORMAT_VERSION
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".uploads-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    def add(self, records: list[UploadRecord], *, now: datetime | None = None) -> None:
        cutoff = (now or datetime.now(timezone.utc)) - KEEP
        with self._locked() as data:
            deployments = data["deployments"]
            for name in list(deployments):
                deployments[name] = {
                    k: v for k, v in (deployments[name] or {}).items() if _newer_than(v, cutoff)
                }
                if not deployments[name]:
                    del deployments[name]
            entries = deployments.setdefault(self.deployment, {})
            for record in records:
                entries[record.key] = {k: v for k, v in asdict(record).items() if k != "key"}

    # ---- when bootstrap last put the input bucket's trigger (S3 may take minutes to apply it)

    def trigger_put(self, *, now: datetime | None = None) -> None:
        with self._locked() as data:
            data.setdefault("triggers", {})[self.deployment] = iso(now or datetime.now(timezone.utc))

    def trigger_put_at(self) -> datetime | None:
        try:
            return parse_time(str(self._read_all().get("triggers", {})[self.deployment]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def forget(self) -> int:
        """Drop every record of this deployment (after `facerec destroy`); returns how many."""
        if not self.path.exists():
            return 0
        with self._locked() as data:
            return len(data["deployments"].pop(self.deployment, None) or {})


def _newer_than(value: Any, cutoff: datetime) -> bool:
    try:
        return parse_time(str(value["uploaded"])) >= cutoff
    except (KeyError, TypeError, ValueError):
        return False
