"""The planner: compare a stack's specs with what exists and return the :class:`~.plan.Plan` that
closes the gap. Each spec kind has a planner per direction in :mod:`.resources` (``plan_<kind>`` and
``plan_delete_<kind>``), found by the spec's type; a destroy plans the same specs in reverse order, so
whatever a deploy creates first is deleted last. Nothing here changes anything."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from facerec_cli.infra.clients import Clients
from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.plan import Plan, Step
from facerec_cli.infra.resources import PLANNERS
from facerec_cli.infra.resources.context import PlanContext


@dataclass
class Stack:
    """What a system should consist of: resource specs in the order they must be created, the tags
    every resource gets, and what was found wrong with the inputs before reading anything."""

    specs: Sequence[Any]
    tags: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)


def plan_deploy(stack: Stack, clients: Clients, *, command: str) -> Plan:
    """Everything that would be created or changed, in order; changes nothing."""
    return _plan("deploy", stack, clients, command, stack.specs, deploy=True)


def plan_destroy(stack: Stack, clients: Clients, *, command: str) -> Plan:
    """Everything that would be deleted, in the reverse of the creation order; empty when nothing is left."""
    return _plan("destroy", stack, clients, command, list(reversed(stack.specs)), deploy=False)


def _plan(kind: str, stack: Stack, clients: Clients, command: str, specs: Sequence[Any], *, deploy: bool) -> Plan:
    ctx = PlanContext(clients, stack.tags)
    steps: list[Step] = []
    try:
        for spec in specs:
            planner: Callable[[Any, PlanContext], Step | None] = PLANNERS[type(spec)][0 if deploy else 1]
            step = planner(spec, ctx)
            if step is not None and (deploy or step.action != "noop"):
                steps.append(step)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not read the current state: {message}", hint=hint) from exc
    warnings = list(stack.warnings) + ctx.warnings if deploy else ctx.warnings
    blockers = list(stack.blockers) + ctx.blockers if deploy else []
    return Plan(kind, steps, warnings, blockers, command=command, clients=clients)  # type: ignore[arg-type]
