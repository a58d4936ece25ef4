"""What ``facerec iaas bootstrap`` is asked to build: the options both its stack (``iaas/stack.py``) and the
instances' user data (``iaas/user_data.py``) read, in a module of their own so that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facerec_cli.iaas.names import MAX_APP_INSTANCES


@dataclass(frozen=True)
class IaasOptions:
    gallery: Path | None = None
    ami: str | None = None  # app tier; None keeps the launch template's
    instance_type: str = "t3.medium"  # torch + models need ~1.5 GB
    web_ami: str | None = None  # default: the app tier's AMI
    web_instance_type: str = "t3.small"
    key_name: str | None = None
    port: int = 8000
    # Who may reach the web tier; no default (bootstrap refuses without it): 0.0.0.0/0 must be asked for.
    allow_cidr: str | None = None
    token_sha256: str | None = None  # the web tier asks for the token with this SHA-256 (see web.token_sha256)
    max_instances: int = MAX_APP_INSTANCES
    per_instance: int = 1
    scale_in_after_s: int = 30
    scale_interval_s: float = 5.0
    visibility_timeout_s: int = 30
    max_receive_count: int = 5
    request_timeout_s: int = 60
    with_compute: bool = True  # IAM, security groups, launch template (run-local: False)
    with_web: bool = True  # the web-instance


__all__ = ["IaasOptions"]
