"""One refresh of ``facerec watch --iaas``: queue depths, the app tier's instances, the web tier and the
buckets, whichever source (:mod:`facerec_cli.iaas.watch_sources`) took it, and when the IaaS system is idle:
no request waiting or in flight, and no app instance starting, running or on its way down."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from facerec_cli.iaas.names import ACTIVE_STATES, app_instance_index

ACTIVE = ACTIVE_STATES
LIVE = ("pending", "running", "stopping", "shutting-down")  # not idle while any of these remain
PRESENT = ("pending", "running", "stopping", "stopped", "shutting-down")  # terminated ones are left out


@dataclass(frozen=True)
class QueueCounts:
    waiting: int  # ApproximateNumberOfMessages
    in_flight: int  # ApproximateNumberOfMessagesNotVisible: received, not yet deleted

    def to_dict(self) -> dict[str, int]:
        return {"waiting": self.waiting, "in_flight": self.in_flight}


@dataclass(frozen=True)
class AppInstance:
    name: str
    state: str  # EC2 state; a local worker process is running or stopping
    id: str | None = None  # EC2 instance id, or a local worker's pid
    phase: str | None = None  # local workers: loading, idle, holding, answering

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "state": self.state, "id": self.id}
        if self.phase is not None:
            data["phase"] = self.phase
        return data


@dataclass
class IaasSnapshot:
    """What one refresh saw. A field is None where the source could not tell."""

    taken_at: datetime
    source: str  # "aws" or "web" (/healthz)
    prefix: str | None
    request: QueueCounts | None
    response: QueueCounts | None
    dead_letter: QueueCounts | None = None
    instances: list[AppInstance] | None = None  # app tier, by number; None: unknown (no scaler)
    web: dict[str, Any] = field(default_factory=dict)  # aws: the web-instance's state; web: the tier's status
    buckets: dict[str, int | None] = field(default_factory=dict)  # "in"/"out" object counts (aws only)
    notes: list[str] = field(default_factory=list)

    @property
    def app_instances(self) -> int | None:
        """Instances starting or running (what the scaler and the course's check count)."""
        return None if self.instances is None else sum(i.state in ACTIVE for i in self.instances)

    @property
    def by_state(self) -> dict[str, int]:
        return dict(sorted(Counter(i.state for i in self.instances or []).items()))

    @property
    def idle(self) -> bool:
        if self.request is None or self.request.waiting or self.request.in_flight:
            return False
        return not any(i.state in LIVE for i in self.instances or [])

    def to_dict(self) -> dict[str, Any]:
        def counts(q: QueueCounts | None) -> dict[str, int] | None:
            return q.to_dict() if q is not None else None

        data: dict[str, Any] = {
            "time": _iso(self.taken_at),
            "source": self.source,
            "prefix": self.prefix,
            "queues": {"request": counts(self.request), "response": counts(self.response), "dead_letter": counts(self.dead_letter)},
            "app_instances": self.app_instances,
            "app_instance_names": None if self.instances is None else [i.name for i in self.instances if i.state in ACTIVE],
            "instances_by_state": None if self.instances is None else self.by_state,
            "instances": None if self.instances is None else [i.to_dict() for i in self.instances],
            "web": dict(self.web),
            "buckets": dict(self.buckets),
            "idle": self.idle,
        }
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def by_number(instances: list[AppInstance]) -> list[AppInstance]:
    def key(i: AppInstance) -> tuple[bool, int, str]:
        index = app_instance_index(i.name)
        return (index is None, index or 0, i.name)

    return sorted(instances, key=key)


class Source(Protocol):
    def snapshot(self) -> IaasSnapshot: ...


__all__ = ["ACTIVE", "LIVE", "PRESENT", "AppInstance", "IaasSnapshot", "QueueCounts", "Source", "by_number"]
