"""The four nets (MTCNN's P-Net, R-Net, O-Net and InceptionResnetV1) as ONNX files run by onnxruntime:
the run-time path of the functions, the workers and the CLI, with no torch in the process.

The files are built once from facenet-pytorch's modules and the chosen embedding weights
(``torch_models.export_onnx``, which needs torch) into the weights cache, in a directory keyed by a hash
of what made them; ``facerec models build`` does it ahead of time, anything else on first use. The
container images bake a built directory in and name it with ``FACEREC_MODELS``. Sessions are made once
per net per process and shared.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .weights import WEIGHTS_CHOICES, WeightsError, is_file_id, weights_cache_dir, weights_fingerprint, weights_id

MODELS_ENV = "FACEREC_MODELS"  # a directory of built models, used as is (the images set it)
THREADS_ENV = "FACEREC_THREADS"  # onnxruntime intra-op threads per session (0 or unset: onnxruntime's choice)
NETS = ("pnet", "rnet", "onet", "embedder")
MANIFEST = "manifest.json"
# Bump when the export or the ONNX files change, so that directories built by older code are rebuilt.
EXPORT_VERSION = "1"

Progress = Callable[[str], None]


class Nets(Protocol):
    """What detection and embedding need of a model set (ONNX here, torch for ``--device cuda``)."""

    weights: str

    def pnet(self, x: np.ndarray) -> list[np.ndarray]: ...  # reg N x 4 x h x w, prob N x 2 x h x w
    def rnet(self, x: np.ndarray) -> list[np.ndarray]: ...  # reg N x 4, prob N x 2
    def onet(self, x: np.ndarray) -> list[np.ndarray]: ...  # reg N x 4, landmarks N x 10, prob N x 2
    def embed(self, x: np.ndarray) -> np.ndarray: ...  # N x 3 x 160 x 160 standardised -> N x 512, unit rows


@dataclass(frozen=True)
class ModelDir:
    path: Path
    weights: str  # id of the embedding weights (weights.weights_id)
    # The user's weights cache (built here, ours to write): onnxruntime's optimised graphs are kept beside
    # the models (``session``). Not in an image's directory ($FACEREC_MODELS): read-only on Lambda, and
    # built on another machine than the one that runs it.
    cached: bool = False

    def file(self, net: str) -> Path:
        return self.path / f"{net}.onnx"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40]


def _read_manifest(path: Path) -> ModelDir | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not all((path / f"{net}.onnx").is_file() for net in NETS):
        return None
    return ModelDir(path, str(manifest.get("weights")))


def _requested_id(weights: str) -> str:
    # An id (a name, or file:<hash> as an image records it) as it is; a path to a state_dict is hashed.
    return weights if weights in WEIGHTS_CHOICES or is_file_id(weights) else weights_id(weights)


def cached_dir(weights: str) -> Path:
    """Where the cache keeps the models for ``weights``: keyed by the export version and what the
    embedder's weights were made from."""
    key = hashlib.sha256(f"{EXPORT_VERSION}|{weights_fingerprint(weights)}".encode()).hexdigest()[:12]
    return weights_cache_dir() / f"onnx-{_slug(_requested_id(weights))}-{key}"


def model_dir(weights: str = "casia-webface", *, build: bool = True, progress: Progress | None = None) -> ModelDir:
    """The built models for ``weights``: $FACEREC_MODELS when set (checked to be for these weights), else
    the cache, built there first when missing and ``build`` (needs torch and facenet-pytorch)."""
    explicit = os.environ.get(MODELS_ENV)
    if explicit:
        found = _read_manifest(Path(explicit))
        if found is None:
            raise WeightsError(f"{MODELS_ENV}={explicit} holds no built models (pnet/rnet/onet/embedder.onnx and {MANIFEST})")
        wanted = _requested_id(weights)
        if found.weights != wanted:
            raise WeightsError(f"the models in {explicit} were built for {found.weights!r} weights, not {wanted!r}; "
                               f"rebuild with `facerec models build --weights {weights}`")
        return found
    target = cached_dir(weights)
    found = _read_manifest(target)
    if found is None:
        if not build:
            raise WeightsError(f"the models for {weights!r} are not built; run `facerec models build --weights {weights}`")
        found = build_models(weights, target, progress)
    return ModelDir(found.path, found.weights, cached=True)


_build_lock = threading.Lock()


def build_models(weights: str, target: Path, progress: Progress | None = None) -> ModelDir:
    """Export the four nets into ``target`` (written beside it and renamed: concurrent builders and
    readers never see half a directory)."""
    try:
        from .torch_models import export_onnx
    except ImportError as exc:
        raise WeightsError(
            f"the models for {weights!r} must be built once and that needs torch and facenet-pytorch ({exc}); "
            "run `facerec models build` where they are installed, or set FACEREC_MODELS to a built directory"
        ) from exc
    # A build takes ~20 s once: say so on stderr (the CLI's progress line, the function's log) by default.
    say = progress or (lambda message: print(f"facerec: {message}", file=sys.stderr, flush=True))
    with _build_lock:
        found = _read_manifest(target)
        if found is not None:
            return found
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
        try:
            say(f"building the ONNX models for {weights} into {target} (once)")
            export_onnx(weights, tmp, say)
            (tmp / MANIFEST).write_text(json.dumps({"weights": _requested_id(weights), "export": EXPORT_VERSION,
                                                    "fingerprint": weights_fingerprint(weights)}, indent=1))
            for item in [tmp, *tmp.iterdir()]:  # mkdtemp is 0700; images run the function as another user
                item.chmod(0o755 if item.is_dir() else 0o644)
            try:
                tmp.rename(target)
            except OSError:  # another process finished first
                if _read_manifest(target) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    found = _read_manifest(target)
    assert found is not None
    return found


def threads() -> int:
    value = os.environ.get(THREADS_ENV) or os.environ.get("FACEREC_TORCH_THREADS") or "0"
    return max(0, int(value))


_sessions: dict[tuple[str, int], object] = {}
_session_lock = threading.Lock()


def _options(n: int, level: str = "ORT_ENABLE_ALL"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = n
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # No arena: it kept the peak of every P-Net shape of the pyramid (18 MB more peak RSS for
    # `identify`) and bought no speed here (detection 74-79 ms per frame with or without it).
    options.enable_cpu_mem_arena = False
    return options


@functools.lru_cache(maxsize=1)
def _cpu_key() -> str | None:
    """This CPU as onnxruntime picks its kernels by (its vendor, model and instruction-set flags), hashed;
    None where the flags cannot be read."""
    import platform

    seen: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name = line.split(":", 1)[0].strip()
                if name in ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part"):
                    seen.setdefault(name, line.strip())
    except OSError:
        return None
    if "flags" not in seen and "Features" not in seen:
        return None
    return hashlib.sha256("|".join([platform.machine(), *sorted(seen.values())]).encode()).hexdigest()[:12]


def optimized_path(model: Path) -> Path | None:
    """Where onnxruntime's fully optimised graph of ``model`` is kept for this machine: beside the model,
    keyed by the onnxruntime version and the CPU's instruction sets (the layouts ORT_ENABLE_ALL picks
    depend on both, so a graph optimised elsewhere is never used). None where the CPU cannot be told."""
    import onnxruntime as ort

    cpu = _cpu_key()
    return None if cpu is None else model.parent / "optimized" / f"{model.stem}-ort{ort.__version__}-{cpu}.onnx"


def _new_session(path: Path, n: int, keep_optimized: bool):
    """A session of the model at ``path``. With ``keep_optimized``: from the graph an earlier process
    optimised on this machine when there is one, else optimised now and kept for the next. Optimising
    InceptionResnetV1 (ORT_ENABLE_ALL: 20% faster per face than ORT_ENABLE_EXTENDED) took 200 ms of every
    process's start, loading the kept graph 50 ms; its outputs are the same bit for bit."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    kept = optimized_path(path) if keep_optimized else None
    if kept is not None and kept.is_file():
        try:
            return ort.InferenceSession(str(kept), sess_options=_options(n, "ORT_DISABLE_ALL"), providers=providers)
        except Exception:  # noqa: BLE001 - a damaged copy: optimise the model again (and replace the copy)
            pass
    if kept is not None:
        tmp = kept.with_name(f"{kept.stem}.tmp-{os.getpid()}-{threading.get_ident()}.onnx")
        try:
            kept.parent.mkdir(exist_ok=True)
            options = _options(n)
            options.optimized_model_filepath = str(tmp)  # written whole, then renamed: readers never see half
            found = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            os.replace(tmp, kept)
            return found
        except Exception:  # noqa: BLE001 - cannot keep it (read-only, disk full): the plain session below
            with contextlib.suppress(OSError):
                tmp.unlink()
    return ort.InferenceSession(str(path), sess_options=_options(n), providers=providers)


def session(path: Path, n_threads: int | None = None, keep_optimized: bool = False):
    """One onnxruntime session per file (and thread count) per process; ``keep_optimized``: see
    :func:`_new_session` (for models in the user's cache)."""
    n = threads() if n_threads is None else n_threads
    key = (str(path), n)
    with _session_lock:
        found = _sessions.get(key)
        if found is None:
            found = _new_session(path, n, keep_optimized)
            _sessions[key] = found
        return found


class OnnxModels:
    """The four nets of one built model directory on onnxruntime's CPU provider."""

    def __init__(self, models: ModelDir) -> None:
        self.weights = models.weights
        self.dir = models
        self._sessions = {net: session(models.file(net), keep_optimized=models.cached) for net in NETS}

    def _run(self, net: str, x: np.ndarray) -> list[np.ndarray]:
        return self._sessions[net].run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})

    def pnet(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run("pnet", x)

    def rnet(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run("rnet", x)

    def onet(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run("onet", x)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._run("embedder", x)[0]


def preload(weights: str) -> bool:
    """Make the single-threaded sessions of the built models for ``weights`` now, in a process that forks
    workers (the local runtime's fork server): a worker whose sessions are single-threaded too
    (FACEREC_THREADS=1) finds them made (:func:`session`) instead of making its own, 0.2-0.25 s of its
    start, and shares their memory. Only single-threaded sessions may cross a fork: a session's thread
    pool would stay behind in the parent. Never builds (that needs torch): False when they are not built."""
    try:
        found = model_dir(weights, build=False)
    except WeightsError:
        return False
    for net in NETS:
        session(found.file(net), n_threads=1, keep_optimized=found.cached)
    return True


_loaded: dict[tuple[str, str], Nets] = {}
_load_lock = threading.Lock()


def load_models(weights: str = "casia-webface", device: str = "cpu", progress: Progress | None = None) -> Nets:
    """The nets for ``weights`` on ``device``, once per process: ONNX on the CPU; torch for a GPU."""
    key = (weights, device)
    with _load_lock:
        found = _loaded.get(key)
        if found is None:
            if device == "cpu":
                found = OnnxModels(model_dir(weights, progress=progress))
            else:
                from .torch_models import TorchModels  # torch only where a GPU is asked for

                found = TorchModels(weights, device)
            _loaded[key] = found
        return found
