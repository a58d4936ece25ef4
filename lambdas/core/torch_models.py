"""The torch side of the models: facenet-pytorch's MTCNN and InceptionResnetV1 with the offline weights.

Used for three things only, never on the run-time path of the functions and workers (which run ONNX,
``models``): converting the casia-webface graph into a state_dict, exporting the four ONNX files
(``export``), and ``--device cuda``. Importing this module imports torch (1-3 s, ~0.5-1 GB): import it
lazily, where one of those is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch

from .weights import (
    WEIGHTS_CHOICES,
    WeightsError,
    _read_graph,
    _tf_layer,
    _SCOPE,
    casia_graph,
    weights_cache_dir,
    weights_id,
)

log = logging.getLogger(__name__)


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



def casia_state_dict_path() -> Path:
    """The converted casia-webface state_dict, built into the cache on first use and reused afterwards."""
    graph, key = casia_graph()
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


def _load_file(path: Path) -> torch.nn.Module:
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




# --- the four nets in torch (reference, export, GPU) --------------------------------------------------


def mtcnn_nets(device: str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """facenet-pytorch's P-Net, R-Net and O-Net with the weights its wheel ships, in eval mode."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    return tuple(net().eval().requires_grad_(False).to(device) for net in (PNet, RNet, ONet))  # type: ignore[return-value]


class TorchModels:
    """The same four nets as ``models.OnnxModels``, run by torch on ``device`` (``--device cuda``).
    Inputs and outputs are numpy arrays, so ``mtcnn.detect`` and the encoder use either alike."""

    def __init__(self, weights: str, device: str = "cpu") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise WeightsError(f"--device {device}: torch finds no CUDA device here; use --device cpu")
        self.device = device
        self.weights = weights_id(weights)
        self._pnet, self._rnet, self._onet = mtcnn_nets(device)
        self._embedder = load_embedder(weights, device)

    def _run(self, net: torch.nn.Module, x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        outs = out if isinstance(out, tuple) else (out,)
        return [o.float().cpu().numpy() for o in outs]

    def pnet(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(self._pnet, x)

    def rnet(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(self._rnet, x)

    def onet(self, x: np.ndarray) -> list[np.ndarray]:
        return self._run(self._onet, x)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._run(self._embedder, x)[0]


# --- ONNX export -------------------------------------------------------------------------------------

OPSET = 17


def export_onnx(weights: str, target: Path, progress=None) -> None:
    """Write pnet.onnx, rnet.onnx, onet.onnx and embedder.onnx for ``weights`` into ``target`` (a new
    directory). Each net is exported with a dynamic batch (and P-Net with dynamic height and width)."""
    import torch.onnx  # noqa: F401 - part of torch; named for readers

    say = progress or (lambda message: None)
    pnet, rnet, onet = mtcnn_nets("cpu")
    say("loading the embedding weights")
    embedder = load_embedder(weights, "cpu")
    specs = [
        ("pnet", pnet, torch.zeros(1, 3, 24, 24), {"x": {0: "n", 2: "h", 3: "w"}}),
        ("rnet", rnet, torch.zeros(1, 3, 24, 24), {"x": {0: "n"}}),
        ("onet", onet, torch.zeros(1, 3, 48, 48), {"x": {0: "n"}}),
        ("embedder", embedder, torch.zeros(1, 3, 160, 160), {"x": {0: "n"}}),
    ]
    for name, module, example, axes in specs:
        say(f"exporting {name}")
        with torch.inference_mode():
            n_out = len(module(example)) if isinstance(module(example), tuple) else 1
        outputs = [f"y{i}" for i in range(n_out)]
        dynamic = dict(axes, **{o: {0: "n"} for o in outputs})
        torch.onnx.export(
            module, (example,), str(target / f"{name}.onnx"), input_names=["x"], output_names=outputs,
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )
