"""Instance pools for the auto-scaler: the Auto Scaling group's EC2 instances on AWS, worker processes
on this machine.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerec_cli.iaas.names import ACTIVE_STATES, APP_INSTANCE_PREFIX, APP_INSTANCE_UNNAMED, TAG_KEY, IaasNames, app_instance_index
from facerec_cli.iaas.worker import HOLDING, IDLE, LOADING, PHASES, SharedState, WorkerConfig, process_main

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


class AsgPool:
    """App-tier instances as the deployment's Auto Scaling group ``<prefix>-app-tier`` (made by
    bootstrap from the launch template: AMI, instance type, instance profile, security group and the
    user data that starts ``facerec worker``). The web tier launches nothing itself: it sets the
    group's desired capacity, and on scale-in takes out the highest-numbered instances
    (TerminateInstanceInAutoScalingGroup, decrementing the capacity); the requests they held reappear
    after the visibility timeout and other instances answer them. The group replaces an instance
    that dies.

    The group starts instances named ``app-tier-instance``; :meth:`maintain` (every scaler tick) names
    each ``app-tier-instance-<n>``, the lowest free ``n`` (the course convention), with CreateTags,
    the one EC2 write the web tier's role allows (the ``Name`` tag, on this group's instances)."""

    ACTIVE = ACTIVE_STATES
    PRESENT = ("pending", "running", "stopping", "stopped", "shutting-down")

    def __init__(self, autoscaling: Any, ec2: Any, names: IaasNames) -> None:
        self.autoscaling = autoscaling
        self.ec2 = ec2
        self.names = names
        self.launched = 0  # capacity added by this pool (instances the group was asked to start)

    def _group(self) -> dict[str, Any]:
        from facerec_cli.errors import UserError

        name = self.names.autoscaling_group
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name]).get("AutoScalingGroups") or []
        if not groups:
            raise UserError(f"the Auto Scaling group {name} does not exist", hint="run `facerec iaas bootstrap` first, or pass the --prefix/--region it used")
        return groups[0]

    def instances(self, states: tuple[str, ...] = PRESENT) -> list[dict[str, Any]]:
        return find_app_instances(self.ec2, self.names.prefix, states)

    def active(self) -> int:
        """The group's desired capacity: instances starting, running or about to be started."""
        return int(self._group()["DesiredCapacity"])

    def scale_to(self, n: int) -> None:
        group = self._group()
        name = self.names.autoscaling_group
        desired, n = int(group["DesiredCapacity"]), min(n, int(group["MaxSize"]))
        if n > desired:
            self.autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=n, HonorCooldown=False)
            self.launched += n - desired
            log.info("app tier: desired capacity %d -> %d", desired, n)
        elif n < desired:
            members = {i["InstanceId"] for i in group.get("Instances") or [] if not str(i.get("LifecycleState", "")).startswith("Terminat")}
            running = [i for i in self.instances(self.ACTIVE) if i["InstanceId"] in members]
            # The highest numbers first; one not named yet is the newest.
            victims = sorted(running, key=lambda i: -(i["Index"] if i["Index"] is not None else 10**6))[: desired - n]
            for victim in victims:
                self.autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim["InstanceId"], ShouldDecrementDesiredCapacity=True)
            if victims:
                log.info("terminating %s", ", ".join(f"{v['Name']} ({v['InstanceId']})" for v in victims))
            if desired - len(victims) > n:  # capacity with no instance yet: lower the target itself
                self.autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=n, HonorCooldown=False)
        self.maintain()

    def maintain(self) -> None:
        """Name the group's new instances ``app-tier-instance-<n>`` (lowest free ``n``)."""
        present = self.instances()
        used = {i["Index"] for i in present if i["Index"] is not None}
        for inst in present:
            if inst["Index"] is None and inst["State"] in self.ACTIVE:
                index = _lowest_free(used)
                used.add(index)
                name = self.names.app_instance(index)
                self.ec2.create_tags(Resources=[inst["InstanceId"]], Tags=[{"Key": "Name", "Value": name}])
                inst["Name"], inst["Index"] = name, index
                log.info("launched %s (%s)", name, inst["InstanceId"])

    def close(self) -> None:
        pass  # instances outlive a web-tier restart; the next scaler takes them over


def find_app_instances(ec2: Any, prefix: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    """This deployment's app-tier instances in ``states`` (those not named yet included): InstanceId,
    Name, Index (None until named), State."""
    return find_named_instances(ec2, prefix, [APP_INSTANCE_UNNAMED, f"{APP_INSTANCE_PREFIX}*"], states)


def find_named_instances(ec2: Any, prefix: str, names: str | list[str], states: tuple[str, ...]) -> list[dict[str, Any]]:
    """This deployment's instances named ``names`` (wildcards allowed) in ``states``: InstanceId, Name,
    Index (of an app-tier name), State, ImageId, InstanceType, PublicIpAddress."""
    from facerec_cli.infra.resources.ec2 import find_instances

    found = find_instances(ec2, {TAG_KEY: prefix}, (names,) if isinstance(names, str) else tuple(names), states)
    return [
        {
            "InstanceId": i["InstanceId"], "Name": i["Name"], "Index": app_instance_index(i["Name"]), "State": i["State"]["Name"],
            "ImageId": i.get("ImageId"), "InstanceType": i.get("InstanceType"), "PublicIpAddress": i.get("PublicIpAddress"),
        }
        for i in found
    ]
