"""EC2: security groups (in the default VPC), launch templates, single named instances, and the
instances a deployment's tags find (terminated on destroy)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, ClassVar

import botocore.exceptions

from facerec_cli.infra.aws import error_code
from facerec_cli.infra.plan import APICall, Instruction, Ref, Step, Wait
from facerec_cli.infra.resources.context import PlanContext

LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
IMDSV2 = {"HttpTokens": "required", "HttpEndpoint": "enabled"}
Rule = tuple[str, int | None, int | None, str]  # protocol, from port, to port, CIDR


@dataclass(frozen=True)
class SecurityGroupSpec:
    kind: ClassVar[str] = "ec2 security-group"
    name: str
    description: str
    ingress: frozenset[Rule] = frozenset()


@dataclass(frozen=True)
class Machine:
    """What an instance boots: ``image_id`` None keeps a launch template's image (an instance needs one:
    ``missing_image`` is the blocker then); ``summary`` says what it runs, for the plan."""

    image_id: str | None
    instance_type: str
    instance_profile: str
    security_groups: tuple[str, ...]
    user_data: str
    key_name: str | None = None
    missing_image: str = "an image id (AMI) is required"
    summary: str = ""


@dataclass(frozen=True)
class LaunchTemplateSpec:
    kind: ClassVar[str] = "ec2 launch-template"
    name: str
    machine: Machine


@dataclass(frozen=True)
class InstanceSpec:
    """One instance, found by its ``Name`` tag and the deployment's tags; launched when missing."""

    kind: ClassVar[str] = "ec2 instance"
    name: str
    label: str  # "web tier": how destroy names it
    machine: Machine


@dataclass(frozen=True)
class TaggedInstancesSpec:
    """Instances named ``names`` (wildcards allowed) with the deployment's tags, made by others (an
    Auto Scaling group, older versions): nothing to create; terminated on destroy."""

    kind: ClassVar[str] = "ec2 instances"
    label: str
    names: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.label


def find_instances(ec2: Any, tags: dict[str, str], names: tuple[str, ...], states: tuple[str, ...] = LIVE_STATES) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    filters += [{"Name": "tag:Name", "Values": list(names)}, {"Name": "instance-state-name", "Values": list(states)}]
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations") or []:
            for instance in reservation.get("Instances") or []:
                name = next((t["Value"] for t in instance.get("Tags") or [] if t["Key"] == "Name"), "")
                found.append({**instance, "Name": name})
    return found


def find_security_group(ec2: Any, name: str, vpc_id: str | None = None) -> dict[str, Any] | None:
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    groups = ec2.describe_security_groups(Filters=filters).get("SecurityGroups") or []
    return groups[0] if groups else None


def find_launch_template(ec2: Any, name: str) -> dict[str, Any] | None:
    try:
        found = ec2.describe_launch_templates(LaunchTemplateNames=[name]).get("LaunchTemplates") or []
    except botocore.exceptions.ClientError as exc:
        if str(error_code(exc) or "").startswith(("InvalidLaunchTemplateName", "InvalidLaunchTemplateId")):
            return None
        raise
    return found[0] if found else None


def _group_ids(names: tuple[str, ...], ctx: PlanContext) -> list[Any]:
    """Each group's id: the existing one, or a Ref to the id its create call (earlier in this plan) makes."""
    ids: list[Any] = []
    for name in names:
        group = find_security_group(ctx.clients.ec2, name, ctx.default_vpc())
        ids.append(group["GroupId"] if group else Ref(f"security-group/{name}"))
    return ids


# ------------------------------------------------------------------------------------------ security groups


def _permissions(rules: Any) -> list[dict[str, Any]]:
    out = []
    for protocol, from_port, to_port, cidr in sorted(rules, key=str):
        permission: dict[str, Any] = {"IpProtocol": protocol, "IpRanges": [{"CidrIp": cidr}]}
        if from_port is not None:
            permission["FromPort"], permission["ToPort"] = from_port, to_port
        out.append(permission)
    return out


def _rules(permissions: list[dict[str, Any]]) -> set[Rule]:
    return {(str(p.get("IpProtocol")), p.get("FromPort"), p.get("ToPort"), r.get("CidrIp")) for p in permissions or [] for r in p.get("IpRanges") or []}


def plan_security_group(g: SecurityGroupSpec, ctx: PlanContext) -> Step:
    detail = ", ".join(f"inbound {p} {f} from {c}" for p, f, _, c in sorted(g.ingress, key=str)) or "no inbound traffic"
    vpc = ctx.default_vpc()
    current = find_security_group(ctx.clients.ec2, g.name, vpc)
    if current is None:
        output = f"security-group/{g.name}"
        create: dict[str, Any] = {"GroupName": g.name, "Description": g.description}
        if vpc:
            create["VpcId"] = vpc
        create["TagSpecifications"] = [{"ResourceType": "security-group", "Tags": ctx.tag_list}]
        calls: list[Instruction] = [APICall("ec2", "create_security_group", create, output=output, output_path="GroupId")]
        if g.ingress:
            calls.append(APICall("ec2", "authorize_security_group_ingress", {"GroupId": Ref(output), "IpPermissions": _permissions(g.ingress)}))
        return Step("create", g.kind, g.name, detail, tuple(calls))
    have = _rules(current.get("IpPermissions") or [])
    missing, extra = g.ingress - have, have - g.ingress
    if not missing and not extra:
        return Step("noop", g.kind, g.name, detail)
    group_id = current["GroupId"]
    calls = []
    if extra:
        calls.append(APICall("ec2", "revoke_security_group_ingress", {"GroupId": group_id, "IpPermissions": _permissions(extra)}))
    if missing:
        calls.append(APICall("ec2", "authorize_security_group_ingress", {"GroupId": group_id, "IpPermissions": _permissions(missing)}))
    drift = [f"+ {r[0]} {r[1]} from {r[3]}" for r in sorted(missing, key=str)] + [f"- {r[0]} {r[1]} from {r[3]}" for r in sorted(extra, key=str)]
    return Step("update", g.kind, g.name, "inbound " + ", ".join(drift), tuple(calls))


def plan_delete_security_group(g: SecurityGroupSpec, ctx: PlanContext) -> Step | None:
    group = find_security_group(ctx.clients.ec2, g.name)
    if group is None:
        return None
    delete = APICall("ec2", "delete_security_group", {"GroupId": group["GroupId"]}, retry="dependency-violation")
    return Step("delete", g.kind, g.name, group["GroupId"], (delete,))


# ------------------------------------------------------------------------------------------ launch templates


def _template_data(m: Machine, image_id: str, group_ids: list[Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": m.instance_type,
        "IamInstanceProfile": {"Name": m.instance_profile},
        "UserData": base64.b64encode(m.user_data.encode()).decode(),
        "MetadataOptions": IMDSV2,
        "SecurityGroupIds": group_ids,
    }
    if m.key_name:
        data["KeyName"] = m.key_name
    return data


def plan_launch_template(t: LaunchTemplateSpec, ctx: PlanContext) -> Step:
    ec2, m = ctx.clients.ec2, t.machine
    current = find_launch_template(ec2, t.name)
    data: dict[str, Any] = {}
    if current is not None:
        versions = ec2.describe_launch_template_versions(LaunchTemplateName=t.name, Versions=["$Default"]).get("LaunchTemplateVersions") or [{}]
        data = versions[0].get("LaunchTemplateData") or {}
    image_id = m.image_id or data.get("ImageId")
    if not image_id:
        ctx.blockers.append(m.missing_image)
        image_id = "<image id>"
    detail = f"{image_id}, {m.instance_type}, profile {m.instance_profile}, IMDSv2" + (f", {m.summary}" if m.summary else "")
    group_ids = _group_ids(m.security_groups, ctx)
    wanted = _template_data(m, image_id, group_ids)
    if current is None:
        create = APICall("ec2", "create_launch_template", {
            "LaunchTemplateName": t.name, "LaunchTemplateData": wanted, "VersionDescription": "facerec",
            "TagSpecifications": [{"ResourceType": "launch-template", "Tags": ctx.tag_list}],
        })
        return Step("create", t.kind, t.name, detail, (create,))
    drift = [f"{key} {data.get(key)} -> {wanted.get(key)}" for key in ("ImageId", "InstanceType", "KeyName") if data.get(key) != wanted.get(key)]
    if (data.get("IamInstanceProfile") or {}).get("Name") != m.instance_profile:
        drift.append("instance profile")
    if sorted(data.get("SecurityGroupIds") or []) != sorted(str(g) for g in group_ids):
        drift.append("security group")
    if (data.get("MetadataOptions") or {}).get("HttpTokens") != "required":
        drift.append("IMDSv2")
    try:
        user_data = base64.b64decode(data.get("UserData") or "").decode()
    except ValueError:
        user_data = ""
    if user_data != m.user_data:
        drift.append("user data")
    if not drift:
        return Step("noop", t.kind, t.name, detail)
    version = f"launch-template-version/{t.name}"
    calls = (
        APICall("ec2", "create_launch_template_version", {"LaunchTemplateName": t.name, "LaunchTemplateData": wanted, "VersionDescription": "facerec"},
                output=version, output_path="LaunchTemplateVersion.VersionNumber"),
        APICall("ec2", "modify_launch_template", {"LaunchTemplateName": t.name, "DefaultVersion": Ref(version, template="{}")}),
    )
    return Step("update", t.kind, t.name, "new default version: " + ", ".join(drift), calls)


def plan_delete_launch_template(t: LaunchTemplateSpec, ctx: PlanContext) -> Step | None:
    current = find_launch_template(ctx.clients.ec2, t.name)
    if current is None:
        return None
    return Step("delete", t.kind, t.name, current["LaunchTemplateId"], (APICall("ec2", "delete_launch_template", {"LaunchTemplateName": t.name}),))


# ------------------------------------------------------------------------------------------ instances


def plan_instance(i: InstanceSpec, ctx: PlanContext) -> Step:
    ec2, m = ctx.clients.ec2, i.machine
    found = find_instances(ec2, ctx.tags, (i.name,))
    detail = f"{m.image_id or '<image id>'}, {m.instance_type}, profile {m.instance_profile}" + (f", {m.summary}" if m.summary else "")
    if not found:
        if not m.image_id:
            ctx.blockers.append(m.missing_image)
        launch: dict[str, Any] = {
            "ImageId": m.image_id, "InstanceType": m.instance_type, "MinCount": 1, "MaxCount": 1,
            "IamInstanceProfile": {"Name": m.instance_profile}, "SecurityGroupIds": _group_ids(m.security_groups, ctx),
            "UserData": m.user_data, "MetadataOptions": IMDSV2,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": i.name}, *ctx.tag_list]},
                {"ResourceType": "volume", "Tags": ctx.tag_list},
            ],
        }
        if m.key_name:
            launch["KeyName"] = m.key_name
        return Step("create", i.kind, i.name, detail, (APICall("ec2", "run_instances", launch, retry="instance-profile-propagation"),))
    if len(found) > 1:
        ctx.warnings.append(f"{len(found)} instances are named {i.name}: {', '.join(x['InstanceId'] for x in found)}")
    instance = found[0]
    instance_id, state = instance["InstanceId"], instance["State"]["Name"]
    if (m.image_id and instance.get("ImageId") != m.image_id) or instance.get("InstanceType") != m.instance_type:
        ctx.warnings.append(
            f"{i.name} ({instance_id}) runs {instance.get('ImageId')} on {instance.get('InstanceType')}, not as asked: terminate it and run bootstrap again to replace it"
        )
    try:
        attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData").get("UserData") or {}
        user_data: str | None = base64.b64decode(attribute.get("Value") or "").decode()
    except (botocore.exceptions.ClientError, ValueError):
        user_data = None
    if user_data is not None and user_data != m.user_data:
        ctx.warnings.append(f"{i.name} ({instance_id}) was launched with other settings (its user data differs): terminate it and run bootstrap again to apply them")
    if state in ("stopped", "stopping"):
        return Step("update", i.kind, i.name, f"start {instance_id} (it is {state})", (APICall("ec2", "start_instances", {"InstanceIds": [instance_id]}),))
    return Step("noop", i.kind, i.name, f"{instance_id} {state}")


def _terminate(kind: str, label: str, instances: list[dict[str, Any]]) -> Step | None:
    if not instances:
        return None
    ids = [x["InstanceId"] for x in instances]
    names = ", ".join(sorted({x["Name"] for x in instances}))
    calls = (APICall("ec2", "terminate_instances", {"InstanceIds": ids}), Wait("ec2", "instance_terminated", {"InstanceIds": ids}, delay=5, max_attempts=120))
    return Step("delete", kind, label, f"{names}: {', '.join(ids)}", calls)


def plan_delete_instance(i: InstanceSpec, ctx: PlanContext) -> Step | None:
    return _terminate(TaggedInstancesSpec.kind, i.label, find_instances(ctx.clients.ec2, ctx.tags, (i.name,)))


def nothing_to_create(spec: Any, ctx: PlanContext) -> None:
    return None


def plan_delete_tagged(t: TaggedInstancesSpec, ctx: PlanContext) -> Step | None:
    return _terminate(t.kind, t.label, find_instances(ctx.clients.ec2, ctx.tags, t.names))


PLANNERS = {
    SecurityGroupSpec: (plan_security_group, plan_delete_security_group),
    LaunchTemplateSpec: (plan_launch_template, plan_delete_launch_template),
    InstanceSpec: (plan_instance, plan_delete_instance),
    TaggedInstancesSpec: (nothing_to_create, plan_delete_tagged),
}
