"""Deploy and destroy the pipeline's AWS resources: its stack (:mod:`.stack`) planned against what
exists (:mod:`facerec_cli.infra.planner`) and applied (:mod:`facerec_cli.infra.executor`).

Used by `facerec bootstrap` (images from :mod:`.images`, gallery from --gallery), `facerec destroy`, and
`facerec run-local` (the same resources on the embedded moto server, with placeholder images)::

    clients = Clients.from_settings(settings)
    plan = plan_deploy(settings, DeployOptions(gallery=path), clients)
    print(plan.render(show_calls=True))   # the dry run: every call apply will make
    apply_plan(plan, RichReporter())      # raises DeployError naming what was done before a failure

A bootstrap that builds images applies the plan in two parts: the ECR repository alone first
(:func:`plan_registry`: the images are pushed there), then, once the images exist, the whole stack
planned again with their URIs (the repository is then unchanged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import botocore.exceptions

from facerec_cli.config import Settings
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.errors import DeployError, explain
from facerec_cli.infra.plan import Plan
from facerec_cli.infra.planner import Stack
from facerec_cli.infra.planner import plan_deploy as plan_stack
from facerec_cli.infra.planner import plan_destroy as plan_stack_teardown
from facerec_cli.infra.readers import get_or_none
from facerec_cli.infra.resources.ecr import RepositorySpec
from facerec_cli.pipeline.stack import DeployOptions, pipeline_stack

BOOTSTRAP = "facerec bootstrap"
DESTROY = "facerec destroy"


def stack_for(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Stack:
    """The pipeline's stack for this account; S3 calls on its buckets from ``clients`` carry
    ExpectedBucketOwner from now on (the names come from the prefix, not the user)."""
    clients = clients or Clients.from_settings(settings)
    try:
        account = clients.account_id
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        message, hint = explain(exc)
        raise DeployError(f"could not identify the AWS account: {message}", hint=hint) from exc
    clients.expect_owner(settings.names.buckets)
    return pipeline_stack(settings, options or DeployOptions(), account)


def plan_deploy(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Everything `bootstrap` would create or change, in order; applying nothing."""
    clients = clients or Clients.from_settings(settings)
    return plan_stack(stack_for(settings, options, clients), clients, command=BOOTSTRAP)


def plan_registry(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Only the ECR repository: images must be pushed before the functions can use them."""
    clients = clients or Clients.from_settings(settings)
    stack = stack_for(settings, dataclasses.replace(options or DeployOptions(), with_ecr=True, gallery=None), clients)
    registry = Stack([s for s in stack.specs if isinstance(s, RepositorySpec)], stack.tags)
    return plan_stack(registry, clients, command=BOOTSTRAP)


def plan_destroy(settings: Settings, options: DeployOptions | None = None, clients: Clients | None = None) -> Plan:
    """Everything `destroy` would delete, the reverse of the creation order; empty when nothing is left."""
    clients = clients or Clients.from_settings(settings)
    stack = stack_for(settings, dataclasses.replace(options or DeployOptions(), gallery=None), clients)
    return plan_stack_teardown(stack, clients, command=DESTROY)


def deployed_environment(clients: Clients, function: str) -> dict[str, str]:
    """A deployed function's environment ({} when there is no such function yet): a bootstrap without
    --weights, --annotate or --timeline keeps what the functions do now."""
    config: Any = get_or_none(clients.lambda_.get_function_configuration, FunctionName=function)
    return dict(((config or {}).get("Environment") or {}).get("Variables") or {})
