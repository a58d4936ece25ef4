"""SQS queues, compared attribute by attribute."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

from facerec_cli.infra.plan import APICall, Step
from facerec_cli.infra.readers import get_or_none
from facerec_cli.infra.resources.context import PlanContext


@dataclass(frozen=True)
class QueueSpec:
    kind: ClassVar[str] = "sqs queue"
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    description: str = ""
    delete_detail: str = "with the messages in it"


def _url(q: QueueSpec, ctx: PlanContext) -> str | None:
    return (get_or_none(ctx.clients.sqs.get_queue_url, QueueName=q.name) or {}).get("QueueUrl")


def plan_queue(q: QueueSpec, ctx: PlanContext) -> Step:
    url = _url(q, ctx)
    if url is None:
        return Step("create", q.kind, q.name, q.description, (APICall("sqs", "create_queue", {"QueueName": q.name, "Attributes": q.attributes, "tags": ctx.tags}, retry="queue-deleted-recently"),))
    current = ctx.clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
    drift = {k: v for k, v in q.attributes.items() if not same_attribute(k, current.get(k), v)}
    if not drift:
        return Step("noop", q.kind, q.name, q.description)
    detail = ", ".join(f"{k} {current.get(k)} -> {v}" for k, v in sorted(drift.items()))
    return Step("update", q.kind, q.name, detail, (APICall("sqs", "set_queue_attributes", {"QueueUrl": url, "Attributes": drift}),))


def plan_delete_queue(q: QueueSpec, ctx: PlanContext) -> Step | None:
    url = _url(q, ctx)
    if url is None:
        return None
    return Step("delete", q.kind, q.name, q.delete_detail, (APICall("sqs", "delete_queue", {"QueueUrl": url}, absent_ok=True),))


def same_attribute(key: str, current: str | None, wanted: str) -> bool:
    """Equal as SQS means them: a redrive policy as JSON (AWS may echo the count as a number), SSE
    flags in any case."""
    if key == "RedrivePolicy":
        try:
            have = json.loads(current or "{}")
        except ValueError:
            return False
        want = json.loads(wanted)
        return have.get("deadLetterTargetArn") == want["deadLetterTargetArn"] and str(have.get("maxReceiveCount")) == str(want["maxReceiveCount"])
    if key == "SqsManagedSseEnabled":
        return str(current).lower() == wanted.lower()
    return current == wanted


PLANNERS = {QueueSpec: (plan_queue, plan_delete_queue)}
