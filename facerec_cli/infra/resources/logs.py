"""CloudWatch Logs groups with their retention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from facerec_cli.infra.plan import APICall, Instruction, Step
from facerec_cli.infra.readers import paginate
from facerec_cli.infra.resources.context import PlanContext
from lambdas.core.names import plural


@dataclass(frozen=True)
class LogGroupSpec:
    kind: ClassVar[str] = "log group"
    name: str
    function: str  # whose logs: left alone on destroy when that function is another deployment's
    retention_days: int | None


def find_log_group(logs: Any, name: str) -> dict[str, Any] | None:
    return next((g for g in paginate(logs, "describe_log_groups", "logGroups", logGroupNamePrefix=name) if g.get("logGroupName") == name), None)


def _retention(g: LogGroupSpec) -> APICall:
    if g.retention_days:
        return APICall("logs", "put_retention_policy", {"logGroupName": g.name, "retentionInDays": g.retention_days})
    return APICall("logs", "delete_retention_policy", {"logGroupName": g.name})


def plan_log_group(g: LogGroupSpec, ctx: PlanContext) -> Step:
    detail = f"retention {plural(g.retention_days, 'day')}" if g.retention_days else "retention: never expire"
    current = find_log_group(ctx.clients.logs, g.name)
    if current is None:
        calls: list[Instruction] = [APICall("logs", "create_log_group", {"logGroupName": g.name, "tags": ctx.tags})]
        if g.retention_days:
            calls.append(_retention(g))
        return Step("create", g.kind, g.name, detail, tuple(calls))
    if current.get("retentionInDays") == g.retention_days:
        return Step("noop", g.kind, g.name, detail)
    return Step("update", g.kind, g.name, f"retention {current.get('retentionInDays')} -> {g.retention_days}", (_retention(g),))


def plan_delete_log_group(g: LogGroupSpec, ctx: PlanContext) -> Step | None:
    if g.function in ctx.foreign_functions or find_log_group(ctx.clients.logs, g.name) is None:
        return None
    return Step("delete", g.kind, g.name, "", (APICall("logs", "delete_log_group", {"logGroupName": g.name}, absent_ok=True),))


PLANNERS = {LogGroupSpec: (plan_log_group, plan_delete_log_group)}
