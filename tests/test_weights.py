"""lambdas.core.weights against real files: the converted casia-webface weights must compute what the
original TensorFlow graph computes (run by OpenCV's dnn module), and the cache/loading rules must hold."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch

from lambdas.core import weights as W

cv2 = pytest.importorskip("cv2")

FACE_PHOTOS = sorted(glob.glob("/work/shared/data/5celeb/val/*/*.jpg"))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private weights cache with the state_dict built once for the whole module."""
    path = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(W.WEIGHTS_DIR_ENV, str(path))
        W.casia_state_dict_path()
    return path


@pytest.fixture
def cache_env(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(weights_dir))
    return weights_dir


@pytest.fixture(scope="module")
def casia_model(weights_dir: Path) -> torch.nn.Module:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(W.WEIGHTS_DIR_ENV, str(weights_dir))
        return W.load_embedder("casia-webface")


def _embed(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _face_crop() -> torch.Tensor:
    """One real face, cropped and standardised as the pipeline does (MTCNN post_process = (x-127.5)/128)."""
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(image_size=160, margin=20, post_process=True)
    for photo in FACE_PHOTOS:
        crop = mtcnn(Image.open(photo).convert("RGB"))
        if crop is not None:
            return crop.unsqueeze(0)
    pytest.skip("no face found in the 5celeb photos")


def test_matches_tensorflow_graph_run_by_opencv(casia_model: torch.nn.Module) -> None:
    net = cv2.dnn.readNetFromTensorflow(str(W._graph_path()))
    inputs = [torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32))]
    if FACE_PHOTOS:
        inputs.append(_face_crop())
    for x in inputs:
        net.setInput(x.numpy())  # cv2 takes NCHW blobs and transposes for the NHWC graph itself
        reference = net.forward("embeddings").reshape(1, -1)
        ours = _embed(casia_model, x)
        assert ours.shape == (1, 512)
        assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)
        assert np.abs(ours - reference).max() <= 1e-4


def test_cache_is_built_once(cache_env: Path) -> None:
    first = W.casia_state_dict_path()
    mtime = first.stat().st_mtime_ns
    second = W.casia_state_dict_path()
    assert second == first and first.parent == cache_env
    assert second.stat().st_mtime_ns == mtime
    assert [p.name for p in cache_env.iterdir()] == [first.name]  # no temp files left behind


def test_embedder_is_loaded_once_per_process(cache_env: Path, casia_model: torch.nn.Module) -> None:
    model = W.load_embedder("casia-webface")
    assert model is casia_model and not model.training


def test_state_dict_path(cache_env: Path, casia_model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    path.write_bytes(W.casia_state_dict_path().read_bytes())
    model = W.load_embedder(str(path))
    assert model is not casia_model and not model.training
    x = torch.zeros(1, 3, 160, 160)
    np.testing.assert_array_equal(_embed(model, x), _embed(casia_model, x))
    assert W.weights_id(str(path)).startswith("file:") and len(W.weights_id(str(path))) == len("file:") + 12
    assert W.weights_id("casia-webface") == "casia-webface"


def test_bad_paths_raise_weights_error(tmp_path: Path) -> None:
    with pytest.raises(W.WeightsError, match="not found"):
        W.load_embedder(str(tmp_path / "missing.pt"))
    with pytest.raises(W.WeightsError, match="not found"):
        W.weights_id(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(W.WeightsError, match="not an InceptionResnetV1 state_dict"):
        W.load_embedder(str(junk))
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(W.WeightsError, match="not an InceptionResnetV1 state_dict"):
        W.load_embedder(str(wrong))


def test_vggface2_offline_names_casia(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh TORCH_HOME so that a previously downloaded file cannot stand in for the download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        W.load_embedder("vggface2")
    except W.WeightsError as exc:
        assert "download" in str(exc) and "casia-webface" in str(exc)
    else:
        pytest.skip("this machine is online: the vggface2 download succeeded")
