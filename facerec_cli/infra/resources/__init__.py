"""One module per AWS service: the spec dataclasses of the resources facerec makes there, and for each
spec a planner per direction (deploy, destroy). ``PLANNERS`` maps a spec type to that pair."""

from __future__ import annotations

from typing import Any

from facerec_cli.infra.resources import autoscaling, awslambda, ec2, ecr, iam, logs, s3, sqs

PLANNERS: dict[type, tuple[Any, Any]] = {}
for _module in (s3, sqs, logs, ecr, iam, awslambda, ec2, autoscaling):
    PLANNERS.update(_module.PLANNERS)
