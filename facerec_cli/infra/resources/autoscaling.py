"""Auto Scaling groups on a launch template, in the default VPC's subnets. Their desired capacity is
someone else's (the web tier's scaler): never set here after creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from facerec_cli.infra.plan import APICall, Step, WaitUntilGone
from facerec_cli.infra.resources.context import PlanContext
from lambdas.core.names import plural


@dataclass(frozen=True)
class AutoScalingGroupSpec:
    kind: ClassVar[str] = "autoscaling group"
    name: str
    launch_template: str
    max_size: int
    instance_tags: dict[str, str] = field(default_factory=dict)  # put on its instances (with the deployment's tags)


def _subnets(ctx: PlanContext) -> list[str]:
    vpc = ctx.default_vpc()
    if not vpc:
        return []
    filters = [{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    return sorted(s["SubnetId"] for s in ctx.clients.ec2.describe_subnets(Filters=filters).get("Subnets") or [])


def _find(asg: Any, name: str) -> dict[str, Any] | None:
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name]).get("AutoScalingGroups") or []
    return groups[0] if groups else None


def plan_group(g: AutoScalingGroupSpec, ctx: PlanContext) -> Step:
    asg = ctx.clients.autoscaling
    subnets = _subnets(ctx)
    if ctx.default_vpc() and not subnets:
        ctx.blockers.append(f"the default VPC {ctx.default_vpc()} has no default subnets for the Auto Scaling group {g.name}")
    template = {"LaunchTemplateName": g.launch_template, "Version": "$Default"}
    tags = [{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in {**g.instance_tags, **ctx.tags}.items()]
    detail = f"launch template {g.launch_template} ($Default), 0-{g.max_size} instances in {plural(len(subnets), 'default subnet')}; its size is set by the web tier"
    current = _find(asg, g.name)
    if current is None:
        create = APICall("autoscaling", "create_auto_scaling_group", {
            "AutoScalingGroupName": g.name, "LaunchTemplate": template, "MinSize": 0, "MaxSize": g.max_size, "DesiredCapacity": 0,
            "VPCZoneIdentifier": ",".join(subnets), "HealthCheckType": "EC2", "Tags": tags,
        })
        return Step("create", g.kind, g.name, detail, (create,))
    drift: list[str] = []
    lt = current.get("LaunchTemplate") or {}
    if lt.get("LaunchTemplateName") != g.launch_template or lt.get("Version") != "$Default":
        drift.append("launch template")
    if int(current.get("MinSize", 0)) != 0 or int(current.get("MaxSize", -1)) != g.max_size:
        drift.append(f"size {current.get('MinSize')}-{current.get('MaxSize')} -> 0-{g.max_size}")
    if sorted(x for x in (current.get("VPCZoneIdentifier") or "").split(",") if x) != subnets:
        drift.append("subnets")
    have = {t["Key"]: (t.get("Value"), bool(t.get("PropagateAtLaunch"))) for t in current.get("Tags") or []}
    missing = [t for t in tags if have.get(t["Key"]) != (t["Value"], True)]
    if missing:
        drift.append("tags")
    if not drift:
        return Step("noop", g.kind, g.name, detail)
    calls = []
    if any(d != "tags" for d in drift):
        calls.append(APICall("autoscaling", "update_auto_scaling_group", {
            "AutoScalingGroupName": g.name, "LaunchTemplate": template, "MinSize": 0, "MaxSize": g.max_size, "VPCZoneIdentifier": ",".join(subnets),
        }))
    if missing:
        calls.append(APICall("autoscaling", "create_or_update_tags", {
            "Tags": [{"ResourceId": g.name, "ResourceType": "auto-scaling-group", **t} for t in missing],
        }))
    return Step("update", g.kind, g.name, ", ".join(drift), tuple(calls))


def plan_delete_group(g: AutoScalingGroupSpec, ctx: PlanContext) -> Step | None:
    if _find(ctx.clients.autoscaling, g.name) is None:
        return None
    calls = (
        APICall("autoscaling", "delete_auto_scaling_group", {"AutoScalingGroupName": g.name, "ForceDelete": True}),
        # AWS deletes a group (and terminates its instances) in the background.
        WaitUntilGone("autoscaling", "describe_auto_scaling_groups", {"AutoScalingGroupNames": [g.name]}, "AutoScalingGroups"),
    )
    return Step("delete", g.kind, g.name, "with its instances (ForceDelete)", calls)


PLANNERS = {AutoScalingGroupSpec: (plan_group, plan_delete_group)}
