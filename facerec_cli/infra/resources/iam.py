"""IAM roles with one inline policy (least privilege: nothing else stays attached) and instance profiles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from facerec_cli.infra.plan import APICall, Step
from facerec_cli.infra.readers import canonical_policy, get_or_none, paginate
from facerec_cli.infra.resources.context import PlanContext
from lambdas.core.names import plural


@dataclass(frozen=True)
class RoleSpec:
    kind: ClassVar[str] = "iam role"
    name: str
    arn: str
    service: str  # who assumes it: "lambda.amazonaws.com", "ec2.amazonaws.com"
    policy_name: str
    policy: dict[str, Any]
    description: str

    @property
    def trust_policy(self) -> dict[str, Any]:
        return trust_policy(self.service)


@dataclass(frozen=True)
class InstanceProfileSpec:
    kind: ClassVar[str] = "iam instance-profile"
    name: str
    role: str


def trust_policy(service: str) -> dict[str, Any]:
    """A role that ``service`` (e.g. "ec2.amazonaws.com") may assume."""
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def plan_role(r: RoleSpec, ctx: PlanContext) -> Step:
    iam = ctx.clients.iam
    detail = f"assumed by {r.service}; inline policy {r.policy_name} ({plural(len(r.policy['Statement']), 'statement')})"
    put_policy = APICall("iam", "put_role_policy", {"RoleName": r.name, "PolicyName": r.policy_name, "PolicyDocument": json.dumps(r.policy)})
    current = get_or_none(iam.get_role, RoleName=r.name)
    if current is None:
        create = APICall("iam", "create_role", {
            "RoleName": r.name, "AssumeRolePolicyDocument": json.dumps(r.trust_policy), "Description": r.description, "Tags": ctx.tag_list,
        })
        return Step("create", r.kind, r.name, detail, (create, put_policy))
    drift: list[str] = []
    calls: list[APICall] = []
    if canonical_policy(current["Role"].get("AssumeRolePolicyDocument")) != canonical_policy(r.trust_policy):
        drift.append("trust policy")
        calls.append(APICall("iam", "update_assume_role_policy", {"RoleName": r.name, "PolicyDocument": json.dumps(r.trust_policy)}))
    doc = get_or_none(iam.get_role_policy, RoleName=r.name, PolicyName=r.policy_name)
    if doc is None or canonical_policy(doc.get("PolicyDocument")) != canonical_policy(r.policy):
        drift.append("inline policy")
        calls.append(put_policy)
    # Least privilege means nothing else: other inline policies and attached managed policies go.
    for other in paginate(iam, "list_role_policies", "PolicyNames", RoleName=r.name):
        if other != r.policy_name:
            drift.append(f"remove inline policy {other}")
            calls.append(APICall("iam", "delete_role_policy", {"RoleName": r.name, "PolicyName": other}))
    for attached in paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=r.name):
        drift.append(f"detach {attached.get('PolicyName', attached['PolicyArn'])}")
        calls.append(APICall("iam", "detach_role_policy", {"RoleName": r.name, "PolicyArn": attached["PolicyArn"]}))
    if not drift:
        return Step("noop", r.kind, r.name, detail)
    return Step("update", r.kind, r.name, ", ".join(drift), tuple(calls))


def plan_delete_role(r: RoleSpec, ctx: PlanContext) -> Step | None:
    iam = ctx.clients.iam
    if get_or_none(iam.get_role, RoleName=r.name) is None:
        return None
    inline = paginate(iam, "list_role_policies", "PolicyNames", RoleName=r.name)
    attached = [p["PolicyArn"] for p in paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=r.name)]
    profiles = [p["InstanceProfileName"] for p in paginate(iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=r.name)]
    calls = [APICall("iam", "delete_role_policy", {"RoleName": r.name, "PolicyName": p}, absent_ok=True) for p in inline]
    calls += [APICall("iam", "detach_role_policy", {"RoleName": r.name, "PolicyArn": a}, absent_ok=True) for a in attached]
    # A profile deleted by an earlier step of this destroy has let go of the role already.
    calls += [APICall("iam", "remove_role_from_instance_profile", {"RoleName": r.name, "InstanceProfileName": p}, absent_ok=True) for p in profiles]
    calls.append(APICall("iam", "delete_role", {"RoleName": r.name}, absent_ok=True))
    detail = ", ".join(f"inline policy {p}" for p in inline) or "no policies"
    return Step("delete", r.kind, r.name, f"with {detail}", tuple(calls))


def plan_profile(p: InstanceProfileSpec, ctx: PlanContext) -> Step:
    iam = ctx.clients.iam
    detail = f"role {p.role}"
    add = APICall("iam", "add_role_to_instance_profile", {"InstanceProfileName": p.name, "RoleName": p.role})
    current = get_or_none(iam.get_instance_profile, InstanceProfileName=p.name)
    if current is None:
        return Step("create", p.kind, p.name, detail, (APICall("iam", "create_instance_profile", {"InstanceProfileName": p.name, "Tags": ctx.tag_list}), add))
    roles = [r["RoleName"] for r in current["InstanceProfile"].get("Roles") or []]
    if roles == [p.role]:
        return Step("noop", p.kind, p.name, detail)
    calls = [APICall("iam", "remove_role_from_instance_profile", {"InstanceProfileName": p.name, "RoleName": r}) for r in roles if r != p.role]
    if p.role not in roles:
        calls.append(add)
    return Step("update", p.kind, p.name, f"roles {roles} -> [{p.role}]", tuple(calls))


def plan_delete_profile(p: InstanceProfileSpec, ctx: PlanContext) -> Step | None:
    current = get_or_none(ctx.clients.iam.get_instance_profile, InstanceProfileName=p.name)
    if current is None:
        return None
    roles = [r["RoleName"] for r in current["InstanceProfile"].get("Roles") or []]
    calls = [APICall("iam", "remove_role_from_instance_profile", {"InstanceProfileName": p.name, "RoleName": r}, absent_ok=True) for r in roles]
    calls.append(APICall("iam", "delete_instance_profile", {"InstanceProfileName": p.name}, absent_ok=True))
    return Step("delete", p.kind, p.name, f"roles {', '.join(roles) or 'none'}", tuple(calls))


PLANNERS = {RoleSpec: (plan_role, plan_delete_role), InstanceProfileSpec: (plan_profile, plan_delete_profile)}
