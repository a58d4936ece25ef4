"""Deploy and destroy the pipeline's AWS resources: plan (read, compare, list the calls), then apply.

Used by `facerec bootstrap` (images from images.py, gallery from --gallery), `facerec destroy`, and
`facerec run-local` (the same resources on the embedded moto server, with placeholder images)::

    clients = Clients.from_settings(settings)
    plan = plan_deploy(settings, DeployOptions(gallery=path), clients)
    print(plan.render())            # the dry run
    apply_plan(plan, RichReporter())  # raises DeployError naming what was done before a failure
"""

from __future__ import annotations

import dataclasses

import botocore.exceptions

from facerec_cli.config import Settings
from facerec_cli.infra.executor import ListReporter, NullReporter, Reporter, RichReporter, apply_plan, refuse_blocked
from facerec_cli.infra.clients import Clients, owner_checked_s3
from facerec_cli.pipeline.stack import DeployOptions, DesiredState, build_desired
from facerec_cli.infra.destroy import empty_bucket, plan_destroy_state
from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.plan import Plan, Step, plan_state, repository_step

__all__ = [
    "Clients",
    "DeployError",
    "DeployOptions",
    "DesiredState",
    "ListReporter",
    "NullReporter",
    "Plan",
    "Reporter",
    "RichReporter",
    "Step",
    "apply_plan",
    "deploy",
    "desired_state",
    "destroy",
    "empty_bucket",
    "owner_checked_s3",
    "plan_deploy",
    "plan_destroy",
    "plan_repository",
    "refuse_blocked",
]


def _account(clients: Clients) -> str:
    try:
        return clients.account_id
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not identify the AWS account: {message}", hint=hint) from exc


def desired_state(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> DesiredState:
    clients = clients or Clients.from_settings(settings)
    desired = build_desired(settings, options or DeployOptions(), _account(clients))
    clients.expect_owner(b.name for b in desired.buckets)  # the names come from the prefix, not the user
    return desired


def plan_deploy(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Everything `bootstrap` would create or change, in order; applying nothing."""
    clients = clients or Clients.from_settings(settings)
    return plan_state(desired_state(settings, options, clients), clients)


def plan_repository(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Only the ECR repository (images must be pushed before functions can use them)."""
    clients = clients or Clients.from_settings(settings)
    options = dataclasses.replace(options or DeployOptions(), with_ecr=True, gallery=None)
    desired = desired_state(settings, options, clients)
    assert desired.repository is not None
    try:
        return Plan("deploy", [repository_step(clients, desired.repository, desired.tags)])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not read the current state: {message}", hint=hint) from exc


def plan_destroy(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Everything `destroy` would delete; empty when nothing is left."""
    clients = clients or Clients.from_settings(settings)
    options = dataclasses.replace(options or DeployOptions(), gallery=None)
    return plan_destroy_state(desired_state(settings, options, clients), clients)


def deploy(
    settings: Settings,
    options: DeployOptions | None = None,
    clients: Clients | None = None,
    reporter: Reporter | None = None,
    *,
    dry_run: bool = False,
) -> Plan:
    """Plan, and unless ``dry_run`` apply. Returns the plan."""
    plan = plan_deploy(settings, options, clients)
    if not dry_run:
        apply_plan(plan, reporter)
    return plan


def destroy(
    settings: Settings,
    options: DeployOptions | None = None,
    clients: Clients | None = None,
    reporter: Reporter | None = None,
    *,
    dry_run: bool = False,
) -> Plan:
    plan = plan_destroy(settings, options, clients)
    if not dry_run:
        apply_plan(plan, reporter)
    return plan
