"""``facerec iaas bootstrap`` and ``facerec iaas destroy``: the IaaS stack (:mod:`.stack`) planned against
what exists and applied, by the same engine as the pipeline's (:mod:`facerec_cli.infra`)."""

from __future__ import annotations

from facerec_cli.config import Settings
from facerec_cli.iaas.names import TAG_KEY, WEB_INSTANCE
from facerec_cli.iaas.stack import IaasOptions, iaas_stack
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.plan import Plan
from facerec_cli.infra.planner import plan_deploy, plan_destroy
from facerec_cli.infra.resources.ec2 import find_instances

BOOTSTRAP = "facerec iaas bootstrap"
DESTROY = "facerec iaas destroy"


def plan_bootstrap(settings: Settings, options: IaasOptions, clients: Clients) -> Plan:
    """Everything ``facerec iaas bootstrap`` would create or change, in order; changes nothing."""
    return plan_deploy(iaas_stack(settings, options, clients.account_id), clients, command=BOOTSTRAP)


def plan_teardown(settings: Settings, clients: Clients) -> Plan:
    """Everything ``facerec iaas destroy`` would delete; empty when nothing is left. The default options'
    stack has every resource a bootstrap may have made (destroy finds them by name)."""
    return plan_destroy(iaas_stack(settings, IaasOptions(), clients.account_id), clients, command=DESTROY)


def web_address(settings: Settings, options: IaasOptions, clients: Clients) -> str | None:
    """The web tier's URL once its instance has a public address (None before, or without a web-instance)."""
    if not (options.with_compute and options.with_web):
        return None
    found = find_instances(clients.ec2, {TAG_KEY: settings.prefix}, (WEB_INSTANCE,), ("pending", "running"))
    address = found[0].get("PublicIpAddress") if found else None
    return f"http://{address}:{options.port}/" if address else None
