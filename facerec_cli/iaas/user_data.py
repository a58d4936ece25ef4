"""The boot scripts of the IaaS instances: `facerec worker` (app tier) and `facerec web` (web tier and
auto-scaler), each installed as a sandboxed systemd service run by its own system user."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from facerec_cli.config import Settings
from facerec_cli.iaas.names import IaasNames

if TYPE_CHECKING:
    from facerec_cli.iaas.stack import IaasOptions

SERVICE_USER = "facerec"  # the system user the services run as
STATE_DIR = "/var/lib/facerec"  # the services' only writable directory (and HOME); weights cache below it


def _service_user_data(unit: str, description: str, command: list[str], *, privileged_port: bool = False) -> str:
    """A boot script that installs and starts ``command`` as the systemd service ``unit``, run as the
    system user ``facerec`` (made here) in a sandbox: no privilege gain (``NoNewPrivileges``), the
    whole file system read-only (``ProtectSystem=strict``) but its state directory, a private /tmp,
    no home directories, no devices, no capabilities (but binding a port under 1024 when asked)."""
    exec_start = " ".join(shlex.quote(a) for a in command)
    capabilities = "CAP_NET_BIND_SERVICE" if privileged_port else ""
    return f"""#!/bin/bash
# Written by `facerec iaas bootstrap`: runs `{command[1]}` as the systemd service {unit}, as the
# system user {SERVICE_USER}, sandboxed. The AMI must have facerec installed (pip install facerec) and
# its models built where the service reads them:
#   sudo FACEREC_WEIGHTS_DIR={STATE_DIR}/weights facerec models build
set -euo pipefail
id -u {SERVICE_USER} >/dev/null 2>&1 || useradd --system --home-dir {STATE_DIR} --no-create-home --shell /usr/sbin/nologin {SERVICE_USER}
install -d -m 0750 {STATE_DIR}
chown -R {SERVICE_USER}:{SERVICE_USER} {STATE_DIR}
cat > /etc/systemd/system/{unit}.service <<'UNIT'
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
User={SERVICE_USER}
Group={SERVICE_USER}
Environment=HOME={STATE_DIR} FACEREC_WEIGHTS_DIR={STATE_DIR}/weights
WorkingDirectory={STATE_DIR}
StateDirectory=facerec
ExecStart=/usr/bin/env {exec_start}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
UMask=0077
CapabilityBoundingSet={capabilities}
AmbientCapabilities={capabilities}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now {unit}.service
"""


def app_user_data(settings: Settings, options: IaasOptions) -> str:
    names = IaasNames(settings.prefix)
    command = ["facerec", "worker", "--prefix", settings.prefix, "--region", settings.region, "--gallery", names.gallery_uri]
    return _service_user_data("facerec-worker", "facerec app tier: recognise requests from the request queue", command)


def web_user_data(settings: Settings, options: IaasOptions) -> str:
    command = [
        "facerec", "web", "--prefix", settings.prefix, "--region", settings.region, "--host", "0.0.0.0",
        "--port", str(options.port), "--timeout", str(options.request_timeout_s),
        "--max-instances", str(options.max_instances), "--per-instance", str(options.per_instance),
        "--scale-in-after", str(options.scale_in_after_s), "--scale-interval", f"{options.scale_interval_s:g}",
    ]
    if options.token_sha256:
        command += ["--token-sha256", options.token_sha256]  # the token itself is never stored on AWS
    return _service_user_data("facerec-web", "facerec web tier and auto-scaler", command, privileged_port=options.port < 1024)
