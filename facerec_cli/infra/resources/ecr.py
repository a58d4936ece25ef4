"""ECR repositories (scan on push, tag mutability)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from facerec_cli.infra.plan import APICall, Step
from facerec_cli.infra.readers import get_or_none, paginate
from facerec_cli.infra.resources.context import PlanContext


@dataclass(frozen=True)
class RepositorySpec:
    kind: ClassVar[str] = "ecr repository"
    name: str
    uri: str
    scan_on_push: bool = True
    tag_mutability: str = "MUTABLE"


def find_repository(ecr: Any, name: str) -> dict[str, Any] | None:
    repos = (get_or_none(ecr.describe_repositories, repositoryNames=[name]) or {}).get("repositories") or []
    return repos[0] if repos else None


def plan_repository(r: RepositorySpec, ctx: PlanContext) -> Step:
    detail = f"{r.uri}, scan on push, tags {r.tag_mutability.lower()}"
    current = find_repository(ctx.clients.ecr, r.name)
    if current is None:
        create = APICall("ecr", "create_repository", {
            "repositoryName": r.name, "imageScanningConfiguration": {"scanOnPush": r.scan_on_push},
            "imageTagMutability": r.tag_mutability, "tags": ctx.tag_list,
        })
        return Step("create", r.kind, r.name, detail, (create,))
    drift: list[str] = []
    calls: list[APICall] = []
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
    return Step("delete", r.kind, r.name, f"with {len(images)} image(s)", (APICall("ecr", "delete_repository", {"repositoryName": r.name, "force": True}, absent_ok=True),))


PLANNERS = {RepositorySpec: (plan_repository, plan_delete_repository)}
