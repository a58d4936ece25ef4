"""Instance pools for the auto-scaler: EC2 instances on AWS, worker processes on this machine.

Both name their instances ``app-tier-instance-<n>`` with the lowest free ``n`` and stop the highest
numbers first, so a steady system keeps instances 1..N.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions

from ..aws import error_code
from .names import ACTIVE_STATES, APP_INSTANCE_PREFIX, TAG_KEY, IaasNames, app_instance_index
from .worker import HOLDING, IDLE, LOADING, PHASES, SharedState, WorkerConfig, process_main

log = logging.getLogger("facerec.iaas.pools")


def _lowest_free(used: set[int]) -> int:
    n = 1
    while n in used:
        n += 1
    return n


# ------------------------------------------------------------------------------------------ local


@dataclass
class LocalInstance:
    name: str
    index: int
    process: Any
    state: SharedState
    started: float
    stopping: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def phase(self) -> tuple[int, str]:
        return self.state.read()


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    pid: int | None
    phase: str
    request_id: str
    stopping: bool


class LocalProcessPool:
    """App-tier "instances" as worker processes on this machine (multiprocessing spawn: each imports
    torch and loads the models once). ``scale_to`` sends SIGTERM to the instances it stops: each finishes
    the request it holds, then exits. A process that dies (killed, crashed) is noticed and no longer
    counted, so the scaler replaces it if the queue still needs it."""

    def __init__(
        self,
        prefix: str,
        config: WorkerConfig,
        env: Mapping[str, str],
        *,
        log_path: str | None = None,
    ) -> None:
        self.prefix = prefix
        self.config = config
        self.env = dict(env)
        self.log_path = log_path
        self._ctx = multiprocessing.get_context("spawn")  # the parent runs threads (moto, waitress)
        self._lock = threading.Lock()
        self._instances: list[LocalInstance] = []
        self.launched = 0
        self.died = 0  # ended without being told to stop
        self.peak = 0
        self.exits: list[tuple[str, int | None, bool]] = []  # (name, exit code, told to stop)

    def _reap(self) -> None:
        keep = []
        for inst in self._instances:
            if inst.process.is_alive():
                keep.append(inst)
                continue
            inst.process.join(0.1)
            code = inst.process.exitcode
            self.exits.append((inst.name, code, inst.stopping))
            if not inst.stopping:
                self.died += 1
                log.warning("%s (pid %s) died with exit code %s", inst.name, inst.pid, code)
            else:
                log.info("%s (pid %s) stopped", inst.name, inst.pid)
        self._instances = keep

    def active(self) -> int:
        with self._lock:
            self._reap()
            return sum(1 for i in self._instances if not i.stopping)

    def alive(self) -> int:
        """Processes still running, those finishing their last request included."""
        with self._lock:
            self._reap()
            return len(self._instances)

    def instances(self) -> list[InstanceInfo]:
        with self._lock:
            self._reap()
            out = []
            for inst in self._instances:
                phase, request_id = inst.phase
                out.append(InstanceInfo(inst.name, inst.pid, PHASES.get(phase, str(phase)), request_id, inst.stopping))
            return out

    def scale_to(self, n: int) -> None:
        with self._lock:
            self._reap()
            running = [i for i in self._instances if not i.stopping]
            if n > len(running):
                for _ in range(n - len(running)):
                    self._launch()
            elif n < len(running):
                # Idle (or still loading) first, then the highest numbers.
                def order(inst: LocalInstance) -> tuple[int, int]:
                    phase = inst.phase[0]
                    return (0 if phase in (IDLE, LOADING) else 1, -inst.index)

                for inst in sorted(running, key=order)[: len(running) - n]:
                    inst.stopping = True
                    inst.process.terminate()  # SIGTERM: finish the current request, then exit
                    log.info("stopping %s (pid %s)", inst.name, inst.pid)
            self.peak = max(self.peak, len(self._instances))

    def _launch(self) -> None:
        index = _lowest_free({i.index for i in self._instances})
        name = f"{APP_INSTANCE_PREFIX}{index}"
        state = SharedState(self._ctx)
        process = self._ctx.Process(
            target=process_main,
            args=(self.prefix, self.config, self.env, state, name, self.log_path),
            name=f"facerec-{name}",
            daemon=True,  # never outlives the parent
        )
        process.start()
        self._instances.append(LocalInstance(name, index, process, state, time.monotonic()))
        self.launched += 1
        log.info("launched %s (pid %s)", name, process.pid)

    def close(self, grace_s: float | None = None) -> None:
        """SIGTERM every worker, wait for them to finish their requests, then SIGKILL leftovers."""
        grace = grace_s if grace_s is not None else self.config.poll_wait_s + 10
        with self._lock:
            for inst in self._instances:
                inst.stopping = True
                if inst.process.is_alive():
                    inst.process.terminate()
            deadline = time.monotonic() + grace
            for inst in self._instances:
                inst.process.join(max(0.0, deadline - time.monotonic()))
                if inst.process.is_alive():
                    log.warning("%s (pid %s) did not stop in %.0f s: killing it", inst.name, inst.pid, grace)
                    inst.process.kill()
                    inst.process.join(5)
                self.exits.append((inst.name, inst.process.exitcode, True))
            self._instances = []

    def kill_holding(self) -> InstanceInfo | None:
        """SIGKILL one worker that holds a request nobody has an answer for yet (fault drills); returns
        it, or None when no worker is in that phase. Each candidate is frozen (SIGSTOP) before its phase
        is read, so the kill cannot land after its response went out."""
        with self._lock:
            for inst in self._instances:
                if inst.stopping or not inst.pid or inst.phase[0] != HOLDING:
                    continue
                os.kill(inst.pid, signal.SIGSTOP)
                if not _wait_stopped(inst.pid):
                    os.kill(inst.pid, signal.SIGCONT)
                    continue
                phase, request_id = inst.phase
                if phase == HOLDING:
                    os.kill(inst.pid, signal.SIGKILL)
                    return InstanceInfo(inst.name, inst.pid, PHASES[phase], request_id, inst.stopping)
                os.kill(inst.pid, signal.SIGCONT)
        return None


def _wait_stopped(pid: int, timeout_s: float = 2.0) -> bool:
    """Wait until /proc says the process is stopped (state T)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat[stat.rindex(")") + 2] in "Tt":
            return True
        time.sleep(0.001)
    return False


# ------------------------------------------------------------------------------------------ EC2


class Ec2Pool:
    """App-tier instances as EC2 instances launched from the deployment's launch template (AMI,
    instance type, instance profile, security group and the user data that starts ``facerec worker``),
    named ``app-tier-instance-<n>`` and tagged with the deployment's prefix. Scale-in terminates: the
    requests they held reappear after the visibility timeout and other instances answer them."""

    ACTIVE = ACTIVE_STATES
    PRESENT = ("pending", "running", "stopping", "stopped", "shutting-down")

    def __init__(self, ec2: Any, names: IaasNames) -> None:
        self.ec2 = ec2
        self.names = names
        self.launched = 0
        self._count_lock = threading.Lock()

    def instances(self, states: tuple[str, ...] = PRESENT) -> list[dict[str, Any]]:
        return find_app_instances(self.ec2, self.names.prefix, states)

    def active(self) -> int:
        return len(self.instances(self.ACTIVE))

    def scale_to(self, n: int) -> None:
        present = self.instances()
        active = [i for i in present if i["State"] in self.ACTIVE]
        if n > len(active):
            used = {i["Index"] for i in present if i["Index"] is not None}
            indexes = []
            for _ in range(n - len(active)):
                indexes.append(_lowest_free(used))
                used.add(indexes[-1])
            # One RunInstances per instance (each gets its own Name tag at launch), several at a time.
            with ThreadPoolExecutor(min(8, len(indexes))) as launcher:
                list(launcher.map(self._launch, indexes))
        elif n < len(active):
            victims = sorted(active, key=lambda i: -(i["Index"] or 0))[: len(active) - n]
            ids = [v["InstanceId"] for v in victims]
            self.ec2.terminate_instances(InstanceIds=ids)
            log.info("terminating %s", ", ".join(f"{v['Name']} ({v['InstanceId']})" for v in victims))

    def _launch(self, index: int) -> bool:
        name = self.names.app_instance(index)
        tags = [{"Key": "Name", "Value": name}, {"Key": TAG_KEY, "Value": self.names.prefix}]
        try:
            resp = self.ec2.run_instances(
                LaunchTemplate={"LaunchTemplateName": self.names.launch_template, "Version": "$Default"},
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": tags},
                    {"ResourceType": "volume", "Tags": [{"Key": TAG_KEY, "Value": self.names.prefix}]},
                ],
            )
        except botocore.exceptions.ClientError as exc:
            # Capacity or quota: try again at the next tick rather than fail the scaler.
            log.error("could not launch %s: %s", name, error_code(exc) or exc)
            return False
        with self._count_lock:
            self.launched += 1
        log.info("launched %s (%s)", name, resp["Instances"][0]["InstanceId"])
        return True

    def close(self) -> None:
        pass  # instances outlive a web-tier restart; the next scaler takes them over


def find_app_instances(ec2: Any, prefix: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    """This deployment's app-tier instances in ``states``: InstanceId, Name, Index, State."""
    return _find_instances(ec2, prefix, f"{APP_INSTANCE_PREFIX}*", states)


def _find_instances(ec2: Any, prefix: str, name: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    filters = [
        {"Name": f"tag:{TAG_KEY}", "Values": [prefix]},
        {"Name": "tag:Name", "Values": [name]},
        {"Name": "instance-state-name", "Values": list(states)},
    ]
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations") or []:
            for inst in reservation.get("Instances") or []:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags") or []}
                out.append(
                    {
                        "InstanceId": inst["InstanceId"],
                        "Name": tags.get("Name", ""),
                        "Index": app_instance_index(tags.get("Name", "")),
                        "State": inst["State"]["Name"],
                        "ImageId": inst.get("ImageId"),
                        "InstanceType": inst.get("InstanceType"),
                        "PublicIpAddress": inst.get("PublicIpAddress"),
                    }
                )
    return out
