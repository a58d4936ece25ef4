"""What one video costs on each Lambda function at 1, 2 and 3 GB (and 512 MB for video-splitting).

    python benchmarks/lambda_memory.py [--warm 10] [--crowd 5] [--workdir DIR] [--clean]
                                       [--recognition-sizes 1024,2048,3072] [--splitting-sizes 512,1024,2048,3072]
                                       [--threads auto,1] [--photo PHOTO] [--priority]

Run as root (it installs docker.io, docker-registry and busybox-static with apt-get when missing and
starts a private dockerd and registry, as tests/docker_env.py does), or with $DOCKER_HOST pointing at an
engine (e.g. the one scripts/docker-up.sh keeps).

Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU. This emulates that with
the real images and the real runtime:

* both images are built by the code `facerec bootstrap` and `run-local --runtime containers` use
  (facerec_cli/pipeline/images.py: same Dockerfiles, context, models and content tags) on the local
  Lambda-like base image of tests/docker_env.py (with the Runtime Interface Emulator), pip fed from a
  wheelhouse on 127.0.0.1; an unchanged image is not rebuilt when --workdir is kept between runs;
* each (function, memory size) runs in its own container, behind the emulator, as Lambda runs functions
  (not root, read-only root file system, a writable /tmp), with docker's ``mem_limit`` = the memory
  size and ``nano_cpus`` = memory / 1769 MB of a vCPU (a CFS quota: 1 GB ~ 0.58 vCPU, 2 GB ~ 1.16,
  3 GB ~ 1.74 on this 2-core machine), and the function's environment as bootstrap deploys it to a moto
  server on 127.0.0.1 (host network, AWS_ENDPOINT_URL);
* face-recognition gets real RecognitionRequests: stage-1 JPEGs sampled, as video-splitting samples
  them, from a 1.5 s 1280x720 course video of a 5celeb/val photo (not enrolled; the gallery is
  5celeb/train: it must name the person), and, for the many-faces case, from the 1080p crowd clip;
* video-splitting gets moto's own S3 ObjectCreated events for real uploads of that course video (a new
  key each time, so no invocation is a duplicate); its Invoke of face-recognition reaches moto's Lambda
  and is accepted there without running anything (moto cannot run Image functions; that seam is the
  one facerec_cli/localcloud/runtime/seam.py patches), as an asynchronous Invoke returns at once on AWS.

Per (function, memory size): cold start (container start to the first response: the emulator, the
runtime's init, for face-recognition the models loading at import and the gallery on first use, and the
first invocation; not the container's creation, nor an image pull: Lambda's image cache is not
emulated), then the warm duration (median of --warm invocations, sizes interleaved round by round
so that load elsewhere on the machine falls on every size alike). Duration is the emulator's REPORT
``Duration`` (the handler, what Lambda bills); the round trip seen by the client is in the JSON too. CPU
time per invocation (the container's cpuacct), time held back by the quota (cpu.stat throttled_time) and
the container's peak memory come from its cgroup (v1) when the engine is on this machine (throttled time
is summed over the CPUs the container ran on, so it can exceed the duration).

--threads auto,1 measures face-recognition with onnxruntime's own thread count (auto: FACEREC_THREADS not
set, as deployed) and with one thread. --priority puts the containers and the moto server ahead of other
work on this machine (see Priority): without it, a busy machine stretches every duration.

Prints one JSON line per (function, case, memory size) with cost_gb_s_per_video = warm_ms / 1000 x
memory in GB (Lambda bills GB-seconds, 1 GB = 1024 MB), then a table, and for each function the memory
size that is cheapest per video and the one that is fastest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))

MB_PER_VCPU = 1769  # AWS Lambda: a function gets one vCPU at 1,769 MB, in proportion below and above
USD_PER_GB_S = 0.0000166667  # x86_64, first pricing tier (us-east-1)
REGION = "eu-west-3"
PREFIX = "lmbench"
PERSON = "madonna"  # a 5celeb/val photo of her, not enrolled: the gallery is 5celeb/train
CROWD = "crowd_unlabeled_4s.mp4"
RIE_IN_IMAGE = "/usr/local/bin/aws-lambda-rie"
ENTRYPOINT = "/lambda-entrypoint.sh"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
LAMBDA_USER = "993:990"
LABEL = "facerec.lambda-memory"
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
REPORT_RE = re.compile(r"REPORT RequestId: \S+\s+(?:Init Duration: ([\d.]+) ms\s+)?Duration: ([\d.]+) ms")
CGROUP_V1 = Path("/sys/fs/cgroup")


_T0 = time.monotonic()


def note(message: str) -> None:
    print(f"# {time.monotonic() - _T0:5.0f} s  {message}", file=sys.stderr, flush=True)


def vcpu_of(memory_mb: int) -> float:
    return memory_mb / MB_PER_VCPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------- containers


class Cgroup:
    """The container's cgroup v1 files (cgroupfs driver, parent "docker"), when the engine runs here."""

    def __init__(self, container_id: str, parent: str = "docker") -> None:
        self.cpuacct = CGROUP_V1 / "cpuacct" / parent / container_id / "cpuacct.usage"
        self.cpu_stat = CGROUP_V1 / "cpu" / parent / container_id / "cpu.stat"
        self.quota = CGROUP_V1 / "cpu" / parent / container_id / "cpu.cfs_quota_us"
        self.mem_peak = CGROUP_V1 / "memory" / parent / container_id / "memory.max_usage_in_bytes"
        self.mem_limit = CGROUP_V1 / "memory" / parent / container_id / "memory.limit_in_bytes"

    @property
    def present(self) -> bool:
        return self.cpuacct.is_file()

    def cpu_ns(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.cpuacct.read_text())
        return None

    def throttled_ns(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in self.cpu_stat.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "throttled_time":
                    return int(value)
        return None

    def peak_mb(self) -> float | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.mem_peak.read_text()) / 2**20
        return None

    def limits(self) -> tuple[int | None, int | None]:
        """(CFS quota in microseconds per 100 ms period, memory limit in MB) as the kernel has them."""
        quota = mem = None
        with contextlib.suppress(OSError, ValueError):
            quota = int(self.quota.read_text())
        with contextlib.suppress(OSError, ValueError):
            mem = int(self.mem_limit.read_text()) // 2**20
        return quota, mem


@dataclass
class Invocation:
    wall_ms: float  # the client's round trip through the emulator
    duration_ms: float | None  # the emulator's REPORT Duration: the handler, what Lambda bills
    init_ms: float | None = None  # REPORT Init Duration (first invocation only)
    cpu_ms: float | None = None  # the container's CPU time during the invocation
    throttled_ms: float | None = None  # time the quota held the container back
    answer: Any = None
    stages: dict[str, float] = field(default_factory=dict)  # the function's own timings of this video

    @property
    def ms(self) -> float:
        return self.duration_ms if self.duration_ms is not None else self.wall_ms


@dataclass
class Function:
    """One function at one memory size: a container started with that memory and its share of a vCPU."""

    client: Any
    image: str
    kind: str  # splitting | recognition
    memory_mb: int
    environment: dict[str, str]
    cgroup_parent: str | None = None  # --priority: under the benchmark's own cgroup
    threads: str = "auto"  # FACEREC_THREADS (recognition): "auto" = not set, onnxruntime's choice
    container: Any = None
    port: int = 0
    cgroup: Cgroup | None = None
    reports: int = 0
    cold: Invocation | None = None
    cold_ms: float | None = None  # container start to the first response
    warm: dict[str, list[Invocation]] = field(default_factory=dict)  # case -> invocations

    @property
    def vcpu(self) -> float:
        return vcpu_of(self.memory_mb)

    def start(self, timeout: float = 120.0) -> float:
        """Create and start the container; returns time.monotonic() just before the start."""
        port, api_port = free_port(), free_port()
        env = dict(self.environment, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(self.memory_mb))
        self.container = self.client.containers.create(
            self.image,
            entrypoint=[RIE_IN_IMAGE, "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                        "--runtime-api-address", f"127.0.0.1:{api_port}", ENTRYPOINT],
            # A new entrypoint drops the image's CMD: give the handler (the function's command) again.
            command=self.client.images.get(self.image).attrs["Config"]["Cmd"],
            name=f"facerec-lmem-{self.kind}-{self.memory_mb}-{uuid.uuid4().hex[:6]}", detach=True,
            network_mode="host", environment=env, user=LAMBDA_USER, read_only=True, tmpfs={"/tmp": "rw,size=512m"},
            mem_limit=f"{self.memory_mb}m", memswap_limit=f"{self.memory_mb}m", nano_cpus=int(self.vcpu * 1e9),
            labels={LABEL: "1"}, stdin_open=False, tty=False,
            **({"cgroup_parent": "/" + self.cgroup_parent} if self.cgroup_parent else {}),
        )  # fmt: skip
        self.port = port
        started = time.monotonic()
        self.container.start()
        self.cgroup = Cgroup(self.container.id, self.cgroup_parent or "docker")
        deadline = started + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return started
            self.container.reload()
            if self.container.status not in ("created", "running"):
                raise RuntimeError(f"{self.kind} at {self.memory_mb} MB exited: {self.logs()[-1500:]}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.kind} at {self.memory_mb} MB: the emulator did not listen within {timeout:.0f} s")

    def logs(self) -> str:
        with contextlib.suppress(Exception):
            return self.container.logs(stdout=True, stderr=True).decode(errors="replace")
        return ""

    def invoke(self, event: Any, timeout: float = 600.0) -> Invocation:
        cg = self.cgroup if self.cgroup is not None and self.cgroup.present else None
        cpu0 = cg.cpu_ns() if cg else None
        thr0 = cg.throttled_ns() if cg else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{INVOKE_PATH}", data=json.dumps(event).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        started = time.perf_counter()
        try:
            with opener.open(request, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{self.kind} at {self.memory_mb} MB answered {exc.code}: {exc.read()[:500]!r}\n{self.logs()[-2000:]}") from exc
        wall = (time.perf_counter() - started) * 1000
        cpu1 = cg.cpu_ns() if cg else None
        thr1 = cg.throttled_ns() if cg else None
        answer = json.loads(body or b"null")
        if isinstance(answer, dict) and "errorMessage" in answer:
            raise RuntimeError(f"{self.kind} at {self.memory_mb} MB failed: {answer}\n{self.logs()[-2000:]}")
        # The emulator writes REPORT when the invocation ends: wait (briefly) for this one's line.
        self.reports += 1
        found: list[tuple[str, str]] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            found = REPORT_RE.findall(self.logs())
            if len(found) >= self.reports:
                break
            time.sleep(0.05)
        init, duration = found[self.reports - 1] if len(found) >= self.reports else ("", "")
        return Invocation(
            wall_ms=wall, duration_ms=float(duration) if duration else None, init_ms=float(init) if init else None,
            cpu_ms=(cpu1 - cpu0) / 1e6 if cpu0 is not None and cpu1 is not None else None,
            throttled_ms=(thr1 - thr0) / 1e6 if thr0 is not None and thr1 is not None else None, answer=answer,
        )  # fmt: skip

    def remove(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.remove(force=True)
            self.container = None


class Priority:
    """--priority: the containers (``cgroup_parent``) and this process (the moto server standing in for
    S3 and Lambda) in a cgroup of their own with a large cpu.shares, so that other work on this machine
    does not slow the functions down: on Lambda a function's share of a vCPU is its own. The quota
    (``nano_cpus``) still caps each container. Everything made here is removed by ``close``."""

    NAME = "facerec-lmem"
    SHARES = 102400  # 100 times a process of nice 0

    def __init__(self) -> None:
        self.origin: Path | None = None

    def enter(self) -> str:
        cpu = CGROUP_V1 / "cpu"
        if not (cpu / "cpu.shares").is_file():
            raise RuntimeError("--priority needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu")
        line = next((x for x in Path("/proc/self/cgroup").read_text().splitlines() if re.match(r"\d+:([^:]*,)?cpu(,[^:]*)?:", x)), "")
        self.origin = cpu / line.rsplit(":", 1)[-1].lstrip("/") if line else cpu
        base = cpu / self.NAME
        base.mkdir(exist_ok=True)
        (base / "cpu.shares").write_text(str(self.SHARES))
        (base / "host").mkdir(exist_ok=True)
        (base / "host" / "cgroup.procs").write_text(str(os.getpid()))  # all threads of this process
        return self.NAME

    def close(self) -> None:
        if self.origin is None:
            return
        with contextlib.suppress(OSError):
            (self.origin / "cgroup.procs").write_text(str(os.getpid()))
        for controller in sorted(p for p in CGROUP_V1.iterdir() if (p / self.NAME).is_dir()):
            for directory in sorted((controller / self.NAME).glob("*/"), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                (controller / self.NAME).rmdir()
        self.origin = None


# ------------------------------------------------------------------------------------- local cloud


class Cloud:
    """A moto server on 127.0.0.1 with the pipeline deployed by bootstrap's code (gallery uploaded), and
    moto's Lambda invocation seam answering every invocation as an accepted asynchronous one."""

    def __init__(self, gallery: Path) -> None:
        import boto3
        import botocore.session
        from moto.server import ThreadedMotoServer

        from facerec_cli.config import Settings
        from facerec_cli.infra.clients import Clients
        from facerec_cli.infra.executor import NullReporter, apply_plan
        from facerec_cli.pipeline.deployer import plan_deploy
        from facerec_cli.pipeline.stack import DeployOptions
        from facerec_cli.localcloud.runtime.seam import check_seam

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        core = botocore.session.Session(session_vars={"profile": (None, None, None, None),
                                                      "config_file": (None, None, os.devnull, None),
                                                      "credentials_file": (None, None, os.devnull, None)})  # fmt: skip
        session = boto3.Session(botocore_session=core, aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        self.settings = Settings(prefix=PREFIX, region=REGION, endpoint_url=self.endpoint)
        self.names = self.settings.names
        self.clients = Clients.from_session(session, self.endpoint)
        self.s3 = self.clients.s3
        apply_plan(plan_deploy(self.settings, DeployOptions(gallery=gallery), self.clients), NullReporter())

        self.calls: list[dict[str, Any]] = []
        cls = check_seam()  # fails loudly if a moto upgrade moved the seam
        self._seam = (cls, cls.__dict__["invoke"])
        calls = self.calls

        def invoke(fn: Any, body: Any, request_headers: Any, response_headers: Any) -> str:
            text = body.decode() if isinstance(body, bytes) else (body or "")
            calls.append({"function": fn.function_name, "event": json.loads(text) if text else {}})
            return ""

        cls.invoke = invoke

    def environment(self, function: str) -> dict[str, str]:
        """The function's environment as bootstrap configured it, plus what Lambda adds (region, keys,
        name, timeout) and the local cloud's endpoint."""
        config = self.clients.lambda_.get_function_configuration(FunctionName=function)
        env = dict((config.get("Environment") or {}).get("Variables") or {})
        env.update(FAKE_KEYS)
        env.update({"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint,
                    "AWS_EC2_METADATA_DISABLED": "true", "AWS_LAMBDA_FUNCTION_NAME": function,
                    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_TIMEOUT": str(config.get("Timeout", 300))})  # fmt: skip
        return env

    def upload_event(self, video: Path, key: str) -> dict[str, Any]:
        """Upload ``video`` to the input bucket; returns the S3 notification moto emitted for it."""
        before = len(self.calls)
        self.s3.upload_file(str(video), self.names.input_bucket, key)
        found = [c for c in self.calls[before:] if c["function"] == self.names.splitting_function]
        if len(found) != 1:
            raise RuntimeError(f"expected one S3 notification for {key}, got {self.calls[before:]}")
        return found[0]["event"]

    def close(self) -> None:
        cls, original = self._seam
        cls.invoke = original
        self.server.stop()
        inner = getattr(self.server, "_server", None)
        if inner is not None:
            inner.server_close()


def stage1(cloud: Cloud, video: Path, stem: str) -> dict[str, Any]:
    """Frames of ``video`` in stage-1 as video-splitting stores them; the request it would send (with
    a placeholder stem and event id: each invocation gets its own)."""
    from lambdas.core import images, sampling
    from lambdas.events import FrameRef, RecognitionRequest

    frames = []
    for frame in sampling.sample_frames(video, count=3):
        key = f"{stem}.jpg" if frame.index == 0 else f"{stem}/{frame.index:03d}.jpg"
        cloud.s3.put_object(Bucket=cloud.names.stage1_bucket, Key=key, Body=images.encode_jpeg(frame.image), ContentType="image/jpeg")
        frames.append(FrameRef(key=key, t=frame.t))
    return RecognitionRequest(stage1_bucket=cloud.names.stage1_bucket, stem=stem, video=video.name, frames=frames,
                              source={"bucket": cloud.names.input_bucket, "key": f"{stem}.mp4", "event_id": ""}).to_dict()  # fmt: skip


def fresh(request: dict[str, Any], tag: str) -> dict[str, Any]:
    """The same frames under a stem and event id of their own (else the function skips a duplicate)."""
    event_id = uuid.uuid4().hex
    return dict(request, stem=f"{request['stem']}-{tag}-{event_id[:8]}", source=dict(request["source"], event_id=event_id))


# ------------------------------------------------------------------------------------------ set-up


def gallery_file(workdir: Path) -> Path:
    """5celeb/train enrolled by the project's code (cached in the workdir)."""
    target = workdir / "gallery-5celeb-train.safetensors"
    if not target.is_file():
        from lambdas.core.enroll import build_gallery
        from lambdas.core.recognise import FaceEncoder

        gallery, _ = build_gallery(DATA / "5celeb" / "train", FaceEncoder())
        gallery.save(target)  # atomic (written aside, then renamed)
    return target


def source_snapshot(directory: Path) -> Path:
    """lambdas/ and the Dockerfiles as they are now: edits made while this runs change nothing."""
    from facerec_cli.pipeline import images

    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(ROOT / "lambdas", directory / "lambdas", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in images.DOCKERFILES.values():
        shutil.copy2(ROOT / name, directory / name)
    return directory


def code_state() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "lambdas", "Dockerfile.splitting", "Dockerfile.recognition"],
                           cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return f"{head or '?'}{' + uncommitted changes to lambdas/ or the Dockerfiles' if dirty else ''}"


# ------------------------------------------------------------------------------------------ figures


def p50(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def row(fn: Function, case: str) -> dict[str, Any]:
    runs = fn.warm.get(case, [])
    warm = p50([r.ms for r in runs])
    gb = fn.memory_mb / 1024
    cold = fn.cold if case == "course" else None
    out: dict[str, Any] = {
        "function": fn.kind, "case": case, "threads": fn.threads, "memory_mb": fn.memory_mb, "vcpu": round(fn.vcpu, 2),
        "cold_ms": round(fn.cold_ms) if case == "course" and fn.cold_ms is not None else None,
        "cold_invoke_ms": round(cold.ms) if cold is not None else None,
        "warm_ms_p50": round(warm, 1) if warm is not None else None,
        "warm_ms_min": round(min(r.ms for r in runs), 1) if runs else None,
        "warm_ms_max": round(max(r.ms for r in runs), 1) if runs else None,
        "warm_roundtrip_ms_p50": round(p50([r.wall_ms for r in runs]) or 0, 1) if runs else None,
        "warm_n": len(runs),
        "cpu_ms_p50": round(p50([r.cpu_ms for r in runs]), 1) if runs and p50([r.cpu_ms for r in runs]) is not None else None,
        "throttled_ms_p50": round(p50([r.throttled_ms for r in runs]), 1) if runs and p50([r.throttled_ms for r in runs]) is not None else None,
        "peak_mem_mb": round(fn.cgroup.peak_mb()) if fn.cgroup is not None and fn.cgroup.peak_mb() is not None else None,
        "stages_ms_p50": {k: round(p50([r.stages[k] for r in runs if k in r.stages]), 1)
                          for k in sorted({k for r in runs for k in r.stages})},
        "cost_gb_s_per_video": round(warm / 1000 * gb, 4) if warm is not None else None,
        "usd_per_million_videos": round(warm / 1000 * gb * USD_PER_GB_S * 1e6, 2) if warm is not None else None,
    }  # fmt: skip
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("function", "case", "threads", "MB", "vCPU", "cold ms", "warm p50 ms", "CPU ms", "throttled ms", "peak MB", "GB-s/video", "$/1M videos")
    lines = [head]
    for r in rows:
        lines.append((r["function"], r["case"], r["threads"], str(r["memory_mb"]), f"{r['vcpu']:.2f}", "" if r["cold_ms"] is None else str(r["cold_ms"]),
                      f"{r['warm_ms_p50']:.0f}", "" if r["cpu_ms_p50"] is None else f"{r['cpu_ms_p50']:.0f}",
                      "" if r["throttled_ms_p50"] is None else f"{r['throttled_ms_p50']:.0f}",
                      "" if r["peak_mem_mb"] is None else str(r["peak_mem_mb"]),
                      f"{r['cost_gb_s_per_video']:.4f}", f"{r['usd_per_million_videos']:.2f}"))  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for line in lines[1:]:
        print("| " + " | ".join(line) + " |")


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for (kind, case, threads) in dict.fromkeys((r["function"], r["case"], r["threads"]) for r in rows):
        group = [r for r in rows if (r["function"], r["case"], r["threads"]) == (kind, case, threads) and r["warm_ms_p50"] is not None]
        if not group:
            continue
        cheap = min(group, key=lambda r: r["cost_gb_s_per_video"])
        fast = min(group, key=lambda r: r["warm_ms_p50"])
        coldest = min((r for r in group if r["cold_ms"] is not None), key=lambda r: r["cold_ms"], default=None)
        label = f"{case}, FACEREC_THREADS={threads}" if kind == "recognition" else case
        text = (f"{kind} ({label}): cheapest per video at {cheap['memory_mb']} MB ({cheap['cost_gb_s_per_video']:.4f} GB-s, "
                f"{cheap['warm_ms_p50']:.0f} ms); fastest at {fast['memory_mb']} MB ({fast['warm_ms_p50']:.0f} ms, "
                f"{fast['cost_gb_s_per_video']:.4f} GB-s)")  # fmt: skip
        if coldest is not None:
            text += f"; shortest cold start at {coldest['memory_mb']} MB ({coldest['cold_ms']} ms)"
        out.append(text)
    return out


# ------------------------------------------------------------------------------------------- runs


def measure(functions: list[Function], cases: dict[str, Any], rounds: dict[str, int], first_case: str, check: Any) -> None:
    """Cold start of each size, one at a time (nothing else of ours running), then warm invocations
    round by round over the sizes, every container kept warm."""
    if not functions:
        return
    for fn in functions:
        started = fn.start()
        fn.cold = fn.invoke(cases[first_case](fn, 0))
        fn.cold_ms = (time.monotonic() - started) * 1000
        check(fn, fn.cold)
        note(f"{fn.kind} {fn.memory_mb} MB ({fn.vcpu:.2f} vCPU, threads {fn.threads}): cold {fn.cold_ms:.0f} ms (first invocation {fn.cold.ms:.0f} ms)")
    for case, n in rounds.items():
        for i in range(n):
            for fn in functions:
                result = fn.invoke(cases[case](fn, i + 1))
                check(fn, result)
                fn.warm.setdefault(case, []).append(result)
        note(f"{functions[0].kind} {case} (threads {functions[0].threads}): " + ", ".join(f"{fn.memory_mb} MB {p50([r.ms for r in fn.warm[case]]):.0f} ms" for fn in functions))


def run(args: argparse.Namespace) -> int:
    from facerec_cli.pipeline import images
    from facerec_cli.samples import still_video
    from tests.docker_env import (
        DockerUnavailable,
        Wheelhouse,
        prepare_wheelhouse,
        start_environment,
    )

    if not (DATA / "5celeb" / "val" / PERSON).is_dir() or not (DATA / "videos" / CROWD).is_file():
        print(f"lambda_memory: the test data is not at {DATA} (set FACEREC_TEST_DATA)", file=sys.stderr)
        return 2
    began = time.monotonic()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    note(f"code: {code_state()}; workdir {workdir}; load average {load_before[0]:.1f} on {os.cpu_count()} cores")
    try:
        env = start_environment(workdir / "docker", cache=workdir / "cache")
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        print(f"lambda_memory: no Docker engine: {exc}", file=sys.stderr)
        return 1
    house: Wheelhouse | None = None
    cloud: Cloud | None = None
    priority = Priority() if args.priority else None
    parent: str | None = None
    started_fns: list[Function] = []
    tmp = Path(tempfile.mkdtemp(prefix="facerec-lmem-"))
    try:
        note(f"engine {env.docker_host}, base image {env.base_image} ({time.monotonic() - began:.0f} s)")
        house = Wheelhouse(prepare_wheelhouse(workdir / "cache" / "wheels")).start()
        lines: list[str] = []

        def progress(line: str) -> None:
            lines.append(line)
            if "building" in line or "not rebuilt" in line or "models ready" in line:
                note(line)

        t = time.monotonic()
        built = images.build_local(env.client, weights="casia-webface", base_image=env.base_image, on_progress=progress,
                                   build_args=house.build_args, network_mode="host", root=source_snapshot(tmp / "source"),
                                   models=images.built_models("casia-webface"), timeout=1800)  # fmt: skip
        note(f"images ready in {time.monotonic() - t:.0f} s: " + ", ".join(f"{k} {v.reference}" for k, v in built.items()))
        # Older builds of this workdir's engine (the code changed since): removed, their layers with them
        # (vfs keeps a full copy of every layer), the shared ones kept as the build cache.
        keep = {image.image_id for image in built.values()}
        for old in env.client.images.list(name=images.LOCAL_REPOSITORY):
            if old.id not in keep:
                with contextlib.suppress(Exception):
                    env.client.images.remove(old.id, force=True)

        gallery = gallery_file(workdir)
        note("local cloud: moto server, the pipeline deployed with the gallery")
        if priority is not None:
            parent = priority.enter()
            note(f"--priority: the containers and this process in the cgroup {parent} (cpu.shares {priority.SHARES})")
        cloud = Cloud(gallery)
        names = cloud.names
        photo = Path(args.photo) if args.photo else min((DATA / "5celeb" / "val" / PERSON).iterdir())
        person = photo.parent.name
        course = still_video(photo, tmp / f"{person}_course.mp4", seconds=1.5, size=(1280, 720))
        note(f"course video: {photo.name} ({person}) as a 1.5 s 1280x720 clip")
        crowd = DATA / "videos" / CROWD
        rows: list[dict[str, Any]] = []

        # --- face-recognition
        rec_env = cloud.environment(names.recognition_function)
        note("stage-1 frames of the course video and the crowd clip")
        requests = {"course": stage1(cloud, course, "bench/course"), "crowd": stage1(cloud, crowd, "bench/crowd")}

        def rec_case(case: str):
            return lambda fn, i: fresh(requests[case], f"{fn.memory_mb}-{i}")

        def rec_check(fn: Function, inv: Invocation) -> None:
            stem = inv.answer["stem"]
            result = json.loads(cloud.s3.get_object(Bucket=names.details_bucket, Key=f"{stem}.json")["Body"].read())
            if result["status"] == "error" or ("/course-" in stem and (result["status"] != "ok" or result["name"] != person)):
                raise RuntimeError(f"recognition at {fn.memory_mb} MB: {result}")
            inv.stages = {k: float(v) for k, v in (result.get("timings_ms") or {}).items()}
            inv.stages["frames_read"] = float(result.get("frames", 0))
            inv.stages["faces"] = float(len(result.get("faces") or []))

        for threads in args.threads:  # each setting on every size, one setting after the other
            variant = dict(rec_env, FACEREC_THREADS=threads) if threads != "auto" else rec_env
            rec_fns = [Function(env.client, built["recognition"].reference, "recognition", mb, variant, parent, threads) for mb in args.recognition_sizes]
            started_fns += rec_fns
            measure(rec_fns, {"course": rec_case("course"), "crowd": rec_case("crowd")}, {"course": args.warm, "crowd": args.crowd}, "course", rec_check)
            for fn in rec_fns:
                rows += [row(fn, "course")] + ([row(fn, "crowd")] if args.crowd else [])
                fn.remove()

        # --- video-splitting
        split_env = cloud.environment(names.splitting_function)

        def split_case(fn: Function, i: int) -> dict[str, Any]:
            return cloud.upload_event(course, f"uploads/{fn.memory_mb}/{i}/{course.name}")

        def split_check(fn: Function, inv: Invocation) -> None:
            videos = (inv.answer or {}).get("videos") or {}
            if not videos or set(videos.values()) != {"split"}:
                raise RuntimeError(f"splitting at {fn.memory_mb} MB: {inv.answer}\n{fn.logs()[-2000:]}")
            sent = [c for c in cloud.calls if c["function"] == names.recognition_function][-1]["event"]
            inv.stages = {k: float(v) for k, v in (sent.get("timings_ms") or {}).items()}

        split_fns = [Function(env.client, built["splitting"].reference, "splitting", mb, split_env, parent, "-") for mb in args.splitting_sizes]
        started_fns += split_fns
        measure(split_fns, {"course": split_case}, {"course": args.warm}, "course", split_check)
        invokes = [c for c in cloud.calls if c["function"] == names.recognition_function]
        expected = len(split_fns) * (args.warm + 1)
        if len(invokes) != expected:
            raise RuntimeError(f"splitting invoked face-recognition {len(invokes)} times, expected {expected}")
        for fn in split_fns:
            rows.append(row(fn, "course"))
            fn.remove()

        load_after = os.getloadavg()
        for r in rows:
            print(json.dumps(r), flush=True)
        print()
        print(f"Lambda memory sizes, emulated (docker --cpus = memory / {MB_PER_VCPU} MB, --memory = the size) on {os.cpu_count()} cores; "
              f"warm = median of {args.warm} (crowd: {args.crowd}) invocations, the emulator's Duration; code {code_state()}; "
              f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
              f"{'--priority (the functions and moto ahead of other work here)' if priority else 'no --priority (sharing the cores with other work here)'}"
              f"; {time.monotonic() - began:.0f} s in all")  # fmt: skip
        print()
        print_table(rows)
        print()
        for line in verdicts(rows):
            print(line)
        print()
        print("The functions' own timings of a video (median ms; frames_read and faces are counts):")
        for r in rows:
            print(f"  {r['function']} {r['case']} {r['memory_mb']} MB: " + ", ".join(f"{k} {v:g}" for k, v in r["stages_ms_p50"].items()))
        return 0
    finally:
        for fn in started_fns:
            fn.remove()
        with contextlib.suppress(Exception):
            for c in env.client.containers.list(all=True, filters={"label": LABEL}):
                c.remove(force=True)
        if cloud is not None:
            cloud.close()
        if priority is not None:
            priority.close()
        if house is not None:
            house.stop()
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.clean:
            shutil.rmtree(workdir, ignore_errors=True)


def _threads(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()] or ["auto"]
    for value in values:
        if value != "auto" and not (value.isdigit() and int(value) > 0):
            raise argparse.ArgumentTypeError(f"{value!r}: a thread count or auto")
    return values


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=int, default=10, help="warm invocations per size (course videos), default 10")
    parser.add_argument("--crowd", type=int, default=5, help="warm invocations per size of the many-faces case (recognition), default 5")
    parser.add_argument("--recognition-sizes", type=_sizes, default=[1024, 2048, 3072], help="MB, comma-separated (default 1024,2048,3072)")
    parser.add_argument("--splitting-sizes", type=_sizes, default=[512, 1024, 2048, 3072], help="MB, comma-separated (default 512,1024,2048,3072)")
    parser.add_argument("--threads", type=_threads, default=["auto"],
                        help="FACEREC_THREADS settings of face-recognition to measure, comma-separated; auto = not set, as deployed (default auto)")
    parser.add_argument("--photo", default="", help=f"the photo of the course video (default: the first of 5celeb/val/{PERSON}); its folder names the person")
    parser.add_argument("--priority", action="store_true",
                        help="the containers and the moto server in a cgroup with a large cpu.shares, ahead of other work on this machine")
    # Short: dockerd's unix sockets live under it (108-byte limit). Kept between runs: images are not rebuilt.
    parser.add_argument("--workdir", default="/tmp/facerec-lmem", help="engine data, wheels, gallery; kept for the next run (default /tmp/facerec-lmem)")
    parser.add_argument("--clean", action="store_true", help="remove --workdir afterwards (the next run rebuilds everything)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
