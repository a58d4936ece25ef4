"""ECR repositories (scan on push, tag mutability, the repository policy)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from facerec_cli.infra.plan import APICall, Step
from facerec_cli.infra.readers import canonical_policy, get_or_none, paginate
from facerec_cli.infra.resources.context import PlanContext
from lambdas.core.names import plural


@dataclass(frozen=True)
class RepositorySpec:
    kind: ClassVar[str] = "ecr repository"
    name: str
    uri: str
    scan_on_push: bool = True
    tag_mutability: str = "MUTABLE"
    policy: dict[str, Any] | None = None  # the repository policy; None: leave it as it is


def find_repository(ecr: Any, name: str) -> dict[str, Any] | None:
    repos = (get_or_none(ecr.describe_repositories, repositoryNames=[name]) or {}).get("repositories") or []
    return repos[0] if repos else None


def plan_repository(r: RepositorySpec, ctx: PlanContext) -> Step:
    detail = f"{r.uri}, scan on push, tags {r.tag_mutability.lower()}"
    current = find_repository(ctx.clients.ecr, r.name)
    set_policy = APICall("ecr", "set_repository_policy", {"repositoryName": r.name, "policyText": json.dumps(r.policy)})
    if r.policy is not None:
        detail += ", " + policy_text(r.policy)
    if current is None:
        create = APICall("ecr", "create_repository", {
            "repositoryName": r.name, "imageScanningConfiguration": {"scanOnPush": r.scan_on_push},
            "imageTagMutability": r.tag_mutability, "tags": ctx.tag_list,
        })
        return Step("create", r.kind, r.name, detail, (create, set_policy) if r.policy is not None else (create,))
    drift: list[str] = []
    calls: list[APICall] = []
    if r.policy is not None:
        found = (get_or_none(ctx.clients.ecr.get_repository_policy, repositoryName=r.name) or {}).get("policyText")
        if found is None or canonical_policy(found) != canonical_policy(r.policy):
            drift.append("repository policy" if found else "no repository policy")
            calls.append(set_policy)
    if bool((current.get("imageScanningConfiguration") or {}).get("scanOnPush")) != r.scan_on_push:
        drift.append("scan on push")
        calls.append(APICall("ecr", "put_image_scanning_configuration", {"repositoryName": r.name, "imageScanningConfiguration": {"scanOnPush": r.scan_on_push}}))
    if current.get("imageTagMutability") != r.tag_mutability:
        drift.append(f"tag mutability {current.get('imageTagMutability')} -> {r.tag_mutability}")
        calls.append(APICall("ecr", "put_image_tag_mutability", {"repositoryName": r.name, "imageTagMutability": r.tag_mutability}))
    if not drift:
        return Step("noop", r.kind, r.name, detail)
    return Step("update", r.kind, r.name, ", ".join(drift), tuple(calls))


def plan_delete_repository(r: RepositorySpec, ctx: PlanContext) -> Step | None:
    if find_repository(ctx.clients.ecr, r.name) is None:
        return None
    images = paginate(ctx.clients.ecr, "list_images", "imageIds", repositoryName=r.name)
    return Step("delete", r.kind, r.name, f"with {plural(len(images), 'image')}", (APICall("ecr", "delete_repository", {"repositoryName": r.name, "force": True}, absent_ok=True),))


def policy_text(policy: dict[str, Any]) -> str:
    """What a repository policy allows, for the plan: ``lambda.amazonaws.com may ecr:BatchGetImage, ...``."""
    parts = []
    for statement in policy.get("Statement", []):
        principal = statement.get("Principal")
        who = principal.get("Service", principal) if isinstance(principal, dict) else principal
        actions = statement.get("Action")
        parts.append(f"{who} may {', '.join(actions) if isinstance(actions, list) else actions}")
    return "; ".join(parts)


PLANNERS = {RepositorySpec: (plan_repository, plan_delete_repository)}
