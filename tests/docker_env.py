"""A real Docker engine, a local registry and a local Lambda base image for the container tests.

No image can be pulled on these machines, so everything the container tests need is made here:

* ``dockerd`` from Debian's ``docker.io`` (installed with apt-get when missing and running as root),
  started with its own data/exec root and unix socket (vfs storage, no iptables, no bridge: containers
  use ``network_mode="host"`` and everything binds to 127.0.0.1);
* a registry (Debian's ``docker-registry``) on 127.0.0.1 and a free port;
* a base image made with ``docker import`` from a root file system built out of this machine's own
  Python (3.11 here), its shared libraries and a static busybox, plus pip, ``awslambdaric`` and the
  Lambda Runtime Interface Emulator. It is laid out like ``public.ecr.aws/lambda/python:3.12``
  (``/var/lang``, ``/var/task``, ``LAMBDA_TASK_ROOT``, ``/lambda-entrypoint.sh``,
  ``/usr/local/bin/aws-lambda-rie``) so that the project's Dockerfiles build on it unchanged: they call
  ``python3`` and ``pip`` through ``python3 -m pip``, never a versioned name. That its Python is 3.11, not
  3.12, does not matter to them: the wheels they install exist for both, and pip picks this
  interpreter's; this machine's glibc (2.36) is newer than the 2.28 that those wheels need, as is Amazon
  Linux 2023's (2.34);
* the Lambda Runtime Interface Emulator, taken out of the ``aws-sam-cli`` wheel;
* a wheelhouse of the images' requirements (read from the Dockerfiles) and their dependencies, served
  over HTTP on 127.0.0.1 so that ``pip install`` inside a build needs no index.

Used by tests/test_containers.py, and by ``scripts/docker-up.sh`` (``python -m tests.docker_env up``)
to leave an engine, a registry and a wheelhouse running for manual work (``facerec bootstrap --registry``,
``facerec run-local --runtime containers``). Every wait has a timeout; every process
started here is stopped by the object that started it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASE_REPOSITORY = "facerec-test/lambda-python"
# Packages of the local base image: what the AWS base image provides that our Dockerfiles rely on, and
# the boto3 it carries, as old as an AWS base image's may be (one without PutObject's IfMatch): an image
# that does not require a newer one keeps it (tests/test_containers.py checks the version in the images).
BASE_PACKAGES = ("pip", "awslambdaric", "boto3==1.34.131")
# Bump when the base image's recipe changes (part of the base image's tag).
BASE_RECIPE = "5"
RIE_PATH_IN_WHEEL = "samcli/local/rapid/aws-lambda-rie-x86_64"
RIE_IN_IMAGE = "/usr/local/bin/aws-lambda-rie"  # where the AWS base images have the emulator
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"  # the interpreter the base image copies
ENTRYPOINT_SCRIPT = """#!/bin/sh
# Like the AWS base image's entrypoint: inside Lambda (AWS_LAMBDA_RUNTIME_API set) run the runtime
# interface client; elsewhere run it behind the emulator when one is at /usr/local/bin/aws-lambda-rie.
if [ $# -lt 1 ]; then
  echo "usage: the handler (module.function) is the first argument (the image's CMD)" 1>&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ] && [ -x /usr/local/bin/aws-lambda-rie ]; then
  exec /usr/local/bin/aws-lambda-rie /var/lang/bin/python3 -m awslambdaric "$@"
fi
exec /var/lang/bin/python3 -m awslambdaric "$@"
"""
DOCKERFILES = ("Dockerfile.splitting", "Dockerfile.recognition")
# Parts of the standard library a Lambda function never uses (GUI, tests, the build's own files).
_STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}
_BASE_LIBS = ("libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libmvec.so.1", "libutil.so.1",
              "libresolv.so.2", "libanl.so.1", "libnss_files.so.2", "libnss_dns.so.2", "libgcc_s.so.1", "libstdc++.so.6",
              "libz.so.1")
_DYNLOAD_SKIP = ("_tkinter", "_curses", "readline", "nis", "_test", "xx", "_ctypes_test")


class DockerUnavailable(Exception):
    """No engine could be found or started; the message says why."""


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.2, process: subprocess.Popen | None = None, log: Path | None = None):
    """Call ``check`` until it returns something truthy; raise DockerUnavailable after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DockerUnavailable(f"{what}: the process exited with {process.returncode}{_tail(log)}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise DockerUnavailable(f"{what}: not ready after {timeout:.0f} s ({last}){_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.is_file():
        return ""
    text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return "\n" + "\n".join(text) if text else ""


def _run(args: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    if proc.returncode != 0:
        raise DockerUnavailable(f"`{' '.join(args[:4])} ...` failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def _stop(process: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL: only the process this module started (by its pid)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# --------------------------------------------------------------------------------------- packages


def _static_busybox() -> str | None:
    path = shutil.which("busybox")
    if path is None:
        return None
    proc = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
    text = proc.stdout + proc.stderr
    return path if ("not a dynamic executable" in text or "statically linked" in text) else None


def missing_packages() -> list[str]:
    """Debian packages this module needs that are not installed (by the commands they provide)."""
    missing = [pkg for binary, pkg in (("dockerd", "docker.io"), ("docker-registry", "docker-registry")) if not shutil.which(binary)]
    if _static_busybox() is None:
        missing.append("busybox-static")  # /bin/sh of the base image
    return missing


def ensure_packages(timeout: float = 600.0) -> None:
    """apt-get install what is missing of docker.io, docker-registry, busybox-static (root only)."""
    missing = missing_packages()
    if not missing:
        return
    if not is_root():
        raise DockerUnavailable(f"{', '.join(missing)} not installed, and installing them needs root "
                                f"(apt-get install {' '.join(missing)})")
    if not shutil.which("apt-get"):
        raise DockerUnavailable(f"{', '.join(missing)} not installed, and there is no apt-get to install them with")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    started = time.monotonic()
    _run(["apt-get", "update", "-qq"], timeout=timeout, env=env)
    _run(["apt-get", "install", "-y", "-qq", *missing], timeout=max(60.0, timeout - (time.monotonic() - started)), env=env)
    still = missing_packages()
    if still:
        raise DockerUnavailable(f"apt-get ran, but {', '.join(still)} is still missing")


# ----------------------------------------------------------------------------------------- daemons


@dataclass
class Dockerd:
    """A private dockerd: its own data root, exec root and unix socket under ``workdir``."""

    workdir: Path
    process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.workdir / "dockerd.log"

    def start(self, timeout: float = 90.0) -> "Dockerd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "daemon.json"
        config.write_text("{}\n")  # ignore /etc/docker/daemon.json
        args = [
            shutil.which("dockerd") or "dockerd",
            "--config-file", str(config),
            "--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--data-root", str(self.workdir / "data"), "--exec-root", str(self.workdir / "exec"),
            "--pidfile", str(self.workdir / "dockerd.pid"), "-H", self.url,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.ping, timeout, f"dockerd ({self.url})", process=self.process, log=self.log)
        return self

    def ping(self) -> bool:
        return ping(self.url)

    def stop(self) -> None:
        _stop(self.process, timeout=30.0)
        unmount_under(self.workdir)


def unmount_under(directory: Path) -> None:
    """Unmount what a stopped dockerd left mounted under its own directories (the host network
    namespace is bind-mounted at exec-root/netns/default), deepest first, so that they can be removed."""
    prefix = str(directory.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)


def ping(url: str, timeout: float = 5.0) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


@dataclass
class Registry:
    """Debian's docker-registry (distribution 2.8) bound to 127.0.0.1:port, storing under ``workdir``."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "registry.log"

    def start(self, timeout: float = 30.0) -> "Registry":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.workdir / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [shutil.which("docker-registry") or "docker-registry", "serve", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_for(lambda: registry_get(self.host, "/v2/") is not None, timeout, f"registry ({self.host})", process=self.process, log=self.log)
        return self

    def stop(self) -> None:
        _stop(self.process)


def registry_get(host: str, path: str, timeout: float = 5.0) -> dict | None:
    """GET http://host/path as JSON (None on 404)."""
    try:
        with urllib.request.urlopen(f"http://{host}{path}", timeout=timeout) as resp:
            body = resp.read()
            return json.loads(body) if body.strip() else {}
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def registry_tags(host: str, repository: str) -> list[str]:
    found = registry_get(host, f"/v2/{repository}/tags/list")
    return list((found or {}).get("tags") or [])


# ------------------------------------------------------------------------------------ wheels, RIE


def pip_download(requirements: Sequence[str], dest: Path, timeout: float = 600.0, no_deps: bool = False) -> Path:
    """``pip download`` wheels (binary only) for this interpreter into ``dest``, through pip's own
    configuration (index, mirrors)."""
    dest.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "-d", str(dest)]
    _run([*args, *(["--no-deps"] if no_deps else []), *requirements], timeout=timeout)
    return dest


def image_requirements(names: Sequence[str] = DOCKERFILES) -> list[str]:
    """The requirements the Dockerfiles install, as they spell them (quoted ``name>=x`` words), so that
    the wheelhouse never drifts from them."""
    found: list[str] = []
    for name in names:
        text = (ROOT / name).read_text()
        for requirement in re.findall(r'"([A-Za-z][\w.\-]*\s*(?:>=|==|~=|<=|<|>)[^"]*)"', text):
            if requirement not in found:
                found.append(requirement)
    if not found:
        raise DockerUnavailable(f"no quoted requirements found in {', '.join(names)}")
    return found


def prepare_wheelhouse(directory: Path, names: Sequence[str] = DOCKERFILES, timeout: float = 900.0) -> Path:
    """Wheels of the images' requirements and all their dependencies (onnxruntime's flatbuffers,
    protobuf and packaging; boto3's botocore...) for this interpreter, through pip's own configuration."""
    return pip_download(image_requirements(names), directory, timeout=timeout)


def lambda_rie(cache: Path, timeout: float = 300.0) -> Path:
    """The Lambda Runtime Interface Emulator binary, extracted from the aws-sam-cli wheel (cached)."""
    target = cache / "aws-lambda-rie-x86_64"
    if target.is_file():
        return target
    wheels = pip_download(["aws-sam-cli"], cache / "sam-wheel", timeout=timeout, no_deps=True)
    wheel = next(iter(sorted(wheels.glob("aws_sam_cli-*.whl"))), None)
    if wheel is None:
        raise DockerUnavailable(f"pip download aws-sam-cli left no wheel in {wheels}")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(RIE_PATH_IN_WHEEL)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(target)
    shutil.rmtree(wheels, ignore_errors=True)
    return target


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@dataclass
class Wheelhouse:
    """A directory of wheels served on http://127.0.0.1:port/ for ``pip --no-index --find-links``
    inside a build running with ``network_mode="host"``."""

    directory: Path
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    @property
    def build_args(self) -> dict[str, str]:
        return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": self.url}

    @property
    def build_environ(self) -> dict[str, str]:
        """The same for the CLI (``facerec bootstrap``, ``run-local --runtime containers``): build
        arguments and the build's network (the wheelhouse is on 127.0.0.1) from the environment."""
        words = " ".join(shlex.quote(f"{k}={v}") for k, v in self.build_args.items())
        return {"FACEREC_IMAGE_BUILD_ARGS": words, "FACEREC_IMAGE_BUILD_NETWORK": "host"}

    def start(self) -> "Wheelhouse":
        handler = functools.partial(_QuietHandler, directory=str(self.directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="wheelhouse", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# --------------------------------------------------------------------------------------- base image


def _python_prefix() -> Path:
    prefix = Path(sys.base_prefix)
    if not (prefix / "bin" / PYTHON).is_file() or not (prefix / "lib" / PYTHON).is_dir():
        raise DockerUnavailable(f"the local Lambda base image copies the interpreter under {prefix}, which has no "
                                f"bin/{PYTHON} and lib/{PYTHON} (a python.org-style build such as pyenv's is needed)")
    return prefix


def base_image_tag() -> str:
    """Tag of the local base image: changes with the interpreter and the recipe."""
    key = f"{BASE_RECIPE}:{sys.version}:{sys.base_prefix}:{','.join(BASE_PACKAGES)}:{ENTRYPOINT_SCRIPT}"
    return f"{BASE_REPOSITORY}:{PYTHON[len('python'):]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _ldd(path: Path, library_path: str) -> list[Path]:
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, LD_LIBRARY_PATH=library_path))  # fmt: skip
    found = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                found.append(Path(target))
        elif parts and parts[0].startswith("/"):
            found.append(Path(parts[0]))  # the dynamic loader
    return found


def _copy_into(rootfs: Path, host_path: Path) -> None:
    """Copy a host file to the same path inside rootfs, keeping the symlink chain (soname -> file)."""
    chain = [host_path]
    while chain[-1].is_symlink():
        link = chain[-1]
        chain.append((link.parent / os.readlink(link)))
    real = chain[-1].resolve()
    dest = rootfs / str(real).lstrip("/")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dest)
    for path in {Path(os.path.normpath(p)) for p in chain[:-1]} | {host_path}:
        # Resolve the directory part (/lib -> /usr/lib on merged-/usr systems) and link the name.
        name = rootfs / str(path.parent.resolve()).lstrip("/") / path.name
        if name != dest and not name.exists() and not name.is_symlink():
            name.parent.mkdir(parents=True, exist_ok=True)
            name.symlink_to(real)


def build_rootfs(rootfs: Path, rie: Path, wheels: Path | None = None, timeout: float = 600.0) -> Path:
    """A minimal root file system laid out like public.ecr.aws/lambda/python:3.12 (see module doc), with
    the emulator ``rie`` at /usr/local/bin/aws-lambda-rie as in the AWS base images."""
    prefix = _python_prefix()
    if rootfs.exists():
        shutil.rmtree(rootfs)
    for d in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "var/lang/bin", "var/lang/lib",
              "var/task", "var/runtime", "opt", "etc", "tmp", "root", "proc", "sys", "dev", "usr/local/bin"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (rootfs / link).symlink_to(target)
    (rootfs / "tmp").chmod(0o1777)

    # Python: the interpreter, libpython, the standard library without tests/GUI, no site-packages.
    lang = rootfs / "var/lang"
    shutil.copy2(prefix / "bin" / PYTHON, lang / "bin" / PYTHON)
    for name in ("python3", "python"):
        (lang / "bin" / name).symlink_to(PYTHON)
    for lib in prefix.joinpath("lib").glob("libpython3*.so*"):
        if lib.is_symlink():
            (lang / "lib" / lib.name).symlink_to(os.readlink(lib))
        else:
            shutil.copy2(lib, lang / "lib" / lib.name)
    stdlib = prefix / "lib" / PYTHON

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n.endswith((".opt-1.pyc", ".opt-2.pyc"))}
        if Path(directory) == stdlib:
            skip |= {n for n in names if n in _STDLIB_SKIP or n.startswith("config-")}
        if Path(directory).name == "lib-dynload":
            skip |= {n for n in names if n.startswith(_DYNLOAD_SKIP)}
        return skip

    shutil.copytree(stdlib, lang / "lib" / PYTHON, ignore=ignore, symlinks=True)
    site = lang / "lib" / PYTHON / "site-packages"
    site.mkdir()

    # pip and the runtime interface client, for this interpreter.
    args = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-script-location",
            "--only-binary=:all:", "--target", str(site)]  # fmt: skip
    if wheels is not None:
        args += ["--no-index", "--find-links", str(wheels)]
    _run([*args, *BASE_PACKAGES], timeout=timeout)
    shutil.rmtree(site / "bin", ignore_errors=True)
    (lang / "bin/pip").write_text(f"#!/var/lang/bin/{PYTHON}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n")
    (lang / "bin/pip").chmod(0o755)
    (lang / "bin/pip3").symlink_to("pip")

    # busybox (static) for /bin/sh and the usual commands.
    busybox = _static_busybox()
    if busybox is None:
        raise DockerUnavailable("a static busybox is not installed (apt-get install busybox-static)")
    shutil.copy2(busybox, rootfs / "usr/bin/busybox")
    applets = _run([busybox, "--list"], timeout=30).stdout.split()
    for applet in applets:
        dest = rootfs / "usr/bin" / applet
        if not dest.exists() and not dest.is_symlink():
            dest.symlink_to("busybox")

    # The emulator, where the AWS base images have it (a static Go binary).
    shutil.copy2(rie, rootfs / RIE_IN_IMAGE.lstrip("/"))
    (rootfs / RIE_IN_IMAGE.lstrip("/")).chmod(0o755)

    # Shared libraries of every ELF file in the tree, resolved on this host, copied to the same paths.
    library_path = str(lang / "lib")
    needed: set[Path] = set()
    for path in rootfs.rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.suffix == ".so" or ".so." in path.name or os.access(path, os.X_OK)) and _is_elf(path):
            needed.update(_ldd(path, library_path))
    libc = next((p for p in needed if p.name == "libc.so.6"), None)
    if libc is not None:  # all of glibc, libgcc and libstdc++, as the AWS base image has them
        needed.update(libc.parent / name for name in _BASE_LIBS if (libc.parent / name).exists())
    rootfs_str = str(rootfs.resolve())
    for lib in sorted(needed):
        if not str(lib.resolve()).startswith(rootfs_str) and lib.exists():
            _copy_into(rootfs, lib)

    (rootfs / "etc/ld.so.conf").write_text("/var/lang/lib\n/usr/lib/x86_64-linux-gnu\n/usr/lib64\n/usr/lib\n")
    if shutil.which("ldconfig"):
        subprocess.run(["ldconfig", "-r", str(rootfs)], capture_output=True, timeout=60)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (rootfs / "etc/nsswitch.conf").write_text("hosts: files dns\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n")
    entry = rootfs / "lambda-entrypoint.sh"
    entry.write_text(ENTRYPOINT_SCRIPT)
    entry.chmod(0o755)
    return rootfs


BASE_CHANGES = (
    "ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin",
    "ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "ENV LANG=C.UTF-8",
    "ENV TZ=:/etc/localtime",
    "ENV LAMBDA_TASK_ROOT=/var/task",
    "ENV LAMBDA_RUNTIME_DIR=/var/runtime",
    "WORKDIR /var/task",
    'ENTRYPOINT ["/lambda-entrypoint.sh"]',
)


def make_base_image(client, workdir: Path, rie: Path, wheels: Path | None = None, timeout: float = 900.0) -> str:
    """Build (once per engine) the local Lambda-like base image, with the emulator ``rie``; returns its tag."""
    import docker

    tag = base_image_tag()
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    rootfs = build_rootfs(workdir / "rootfs", rie, wheels=wheels, timeout=timeout)
    archive = workdir / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(rootfs.iterdir()):
            tar.add(path, arcname=path.name, filter=_root_owned)
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_file(str(archive), repository=repository, tag=version, changes=list(BASE_CHANGES))
    archive.unlink()
    shutil.rmtree(rootfs, ignore_errors=True)
    client.images.get(tag)  # raises if the import did not produce it
    return tag


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# ------------------------------------------------------------------------------------ environment


@dataclass
class DockerEnv:
    """An engine (ours or the caller's), a registry and the base image; ``close()`` stops what we started."""

    docker_host: str
    registry: str
    workdir: Path
    base_image: str = ""
    dockerd: Dockerd | None = None
    registry_daemon: Registry | None = None
    _client: object | None = field(default=None, repr=False)

    @property
    def client(self):
        import docker

        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, timeout=900)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()  # type: ignore[attr-defined]
            self._client = None
        if self.registry_daemon is not None:
            self.registry_daemon.stop()
        if self.dockerd is not None:
            self.dockerd.stop()


def start_environment(
    workdir: Path, *, install: bool = True, base_image: bool = True, timeout: float = 900.0, cache: Path | None = None
) -> DockerEnv:
    """Use the engine at $DOCKER_HOST and the registry at $FACEREC_TEST_REGISTRY when they answer;
    otherwise (as root) install and start our own under ``workdir``. Downloads (the emulator) are kept
    in ``cache`` (default ``workdir/cache``). Raises DockerUnavailable."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    dockerd: Dockerd | None = None
    registry: Registry | None = None
    try:
        if install and is_root():
            ensure_packages(timeout=timeout)
        host = os.environ.get("DOCKER_HOST", "")
        if not (host and ping(host)):
            if not is_root():
                raise DockerUnavailable(
                    "no Docker engine: $DOCKER_HOST is not set or does not answer, and starting a private dockerd needs root"
                )
            if not shutil.which("dockerd"):
                raise DockerUnavailable("dockerd is not installed (apt-get install docker.io)")
            dockerd = Dockerd(workdir / "dockerd").start()
            host = dockerd.url
        registry_host = os.environ.get("FACEREC_TEST_REGISTRY", "")
        if not registry_host or registry_get(registry_host, "/v2/") is None:
            if not shutil.which("docker-registry"):
                raise DockerUnavailable("no registry: set FACEREC_TEST_REGISTRY or install docker-registry")
            registry = Registry(workdir / "registry").start()
            registry_host = registry.host
        env = DockerEnv(docker_host=host, registry=registry_host, workdir=workdir, dockerd=dockerd, registry_daemon=registry)
        if base_image:
            remaining = max(120.0, timeout - (time.monotonic() - started))
            rie = lambda_rie(cache or workdir / "cache", timeout=remaining)
            env.base_image = make_base_image(env.client, workdir / "base", rie, timeout=remaining)
        return env
    except BaseException:
        if registry is not None:
            registry.stop()
        if dockerd is not None:
            dockerd.stop()
        raise


@contextlib.contextmanager
def docker_environment(workdir: Path | None = None, **kwargs) -> Iterator[DockerEnv]:
    own = workdir is None
    # A short path: dockerd's unix sockets live under it (108-byte limit).
    workdir = workdir or Path(tempfile.mkdtemp(prefix="facerec-dk-", dir="/tmp"))
    env = start_environment(workdir, **kwargs)
    try:
        yield env
    finally:
        env.close()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------- containers


def run_container(client, image: str, *, name: str, command: Sequence[str] | None = None, entrypoint: Sequence[str] | None = None,
                  environment: dict[str, str] | None = None, volumes: dict[str, dict[str, str]] | None = None,
                  like_lambda: bool = True):
    """Start a detached container on the host network (the engine runs with --bridge=none); a container
    that fails to start is removed. ``like_lambda``: as Lambda runs functions, as a user other than root
    on a read-only file system with a writable /tmp."""
    extra = {"user": "993:990", "read_only": True, "tmpfs": {"/tmp": "rw,size=512m"}} if like_lambda else {}
    container = client.containers.create(
        image, command=list(command) if command is not None else None, entrypoint=list(entrypoint) if entrypoint is not None else None,
        name=name, detach=True, network_mode="host", environment=environment or {}, volumes=volumes or {},
        stdin_open=False, tty=False, **extra,
    )  # fmt: skip
    try:
        container.start()
    except BaseException:
        remove_container(container)
        raise
    return container


def remove_container(container) -> str:
    """Stop and remove; returns its log (for failure messages)."""
    logs = ""
    with contextlib.suppress(Exception):
        logs = container.logs(stdout=True, stderr=True, tail=200).decode(errors="replace")
    with contextlib.suppress(Exception):
        container.remove(force=True)
    return logs


def image_size_mb(client, image: str) -> float:
    return client.images.get(image).attrs["Size"] / 1e6


def _main(argv: list[str]) -> int:
    """``python -m tests.docker_env up [WORKDIR]``: start an engine, a registry, the base image and a
    wheelhouse of the images' requirements, print shell exports, and keep running until interrupted
    (Ctrl-C stops everything)."""
    if len(argv) < 1 or argv[0] != "up":
        print("usage: python -m tests.docker_env up [WORKDIR]", file=sys.stderr)
        return 2
    workdir = Path(argv[1]) if len(argv) > 1 else Path("/tmp/facerec-docker")
    try:
        env = start_environment(workdir)
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        print(f"docker-up: {exc}", file=sys.stderr)
        return 1
    house: Wheelhouse | None = None
    try:
        house = Wheelhouse(prepare_wheelhouse(workdir / "wheels")).start()
    except (DockerUnavailable, subprocess.TimeoutExpired) as exc:
        env.close()
        print(f"docker-up: the wheelhouse: {exc}", file=sys.stderr)
        return 1
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in {
        "DOCKER_HOST": env.docker_host,
        "FACEREC_TEST_REGISTRY": env.registry,
        "FACEREC_TEST_BASE_IMAGE": env.base_image,
        **house.build_environ,  # pip inside image builds: the wheelhouse, no index
    }.items())  # fmt: skip
    (workdir / "env.sh").write_text(exports)
    print(exports, end="", flush=True)
    print(f"# ready ({workdir / 'env.sh'}); e.g. facerec run-local VIDEO --gallery G --runtime containers "
          f"--base-image $FACEREC_TEST_BASE_IMAGE; Ctrl-C or SIGTERM stops dockerd, the registry and the wheelhouse",
          file=sys.stderr, flush=True)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        house.stop()
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
