"""lambdas.core.weights and torch_models against real files: the converted casia-webface weights must compute what the
original TensorFlow graph computes (run by OpenCV's dnn module), and the cache/loading rules must hold."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facerec_cli.cli.app import app
from lambdas.core import torch_models as T
from lambdas.core import weights as W
from lambdas.core.gallery import Gallery



@pytest.fixture(scope="module")
def face_photos(data: Path) -> list[Path]:
    return sorted((data / "5celeb" / "val").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private weights cache with the state_dict built once for the whole module."""
    path = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(W.WEIGHTS_DIR_ENV, str(path))
        T.casia_state_dict_path()
    return path


@pytest.fixture
def cache_env(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(weights_dir))
    return weights_dir


@pytest.fixture(scope="module")
def casia_model(weights_dir: Path) -> torch.nn.Module:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(W.WEIGHTS_DIR_ENV, str(weights_dir))
        return T.load_embedder("casia-webface")


def _embed(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _face_crop(photos: list[Path]) -> torch.Tensor:
    """One real face, cropped and standardised as the pipeline does (MTCNN post_process = (x-127.5)/128)."""
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(image_size=160, margin=20, post_process=True)
    for photo in photos:
        crop = mtcnn(Image.open(photo).convert("RGB"))
        if crop is not None:
            return crop.unsqueeze(0)
    pytest.fail("no face found in the 5celeb photos")


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _spans(buf: memoryview) -> Iterator[tuple[int, int, memoryview, memoryview | None]]:
    """(field, wire type, the field's raw bytes, its payload if length-delimited) of one protobuf message."""
    i = 0
    while i < len(buf):
        start = i
        key, i = W._varint(buf, i)
        payload = None
        if key & 7 == 0:
            i = W._varint(buf, i)[1]
        elif key & 7 in (1, 5):
            i += 8 if key & 7 == 1 else 4
        else:
            n, i = W._varint(buf, i)
            payload, i = buf[i : i + n], i + n
        yield key >> 3, key & 7, buf[start:i], payload


def _without_control_inputs(graph: bytes) -> bytes:
    """The GraphDef with every NodeDef's ``^name`` inputs (control dependencies) removed."""
    out = bytearray()
    for field, wire, raw, node in _spans(memoryview(graph)):
        if field == 1 and wire == 2 and node is not None:  # GraphDef.node
            kept = b"".join(bytes(r) for f, _, r, p in _spans(node) if not (f == 3 and bytes(p or b"").startswith(b"^")))
            out += _encode_varint(field << 3 | wire) + _encode_varint(len(kept)) + kept
        else:
            out += raw
    return bytes(out)


def test_matches_tensorflow_graph_run_by_opencv(casia_model: torch.nn.Module, face_photos: list[Path]) -> None:
    # Only this test needs OpenCV (in the test extra): without it, only this test skips (under CI it fails).
    cv2 = pytest.importorskip("cv2", reason="pip install opencv-python-headless (in the test extra)")
    # OpenCV 5 has no TensorFlow importer (pyproject keeps the test extra below 5); OpenCV 4.9+'s graph
    # simplifier asserts on control-dependency inputs, which two Const nodes of this graph carry and
    # which change nothing a Const computes: they are dropped, every other byte is passed as it is.
    graph = _without_control_inputs(W._graph_path().read_bytes())
    net = cv2.dnn.readNetFromTensorflow(np.frombuffer(graph, np.uint8))
    inputs = [torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32))]
    inputs.append(_face_crop(face_photos))
    for x in inputs:
        net.setInput(x.numpy())  # cv2 takes NCHW blobs and transposes for the NHWC graph itself
        reference = net.forward("embeddings").reshape(1, -1)
        ours = _embed(casia_model, x)
        assert ours.shape == (1, 512)
        assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)
        assert np.abs(ours - reference).max() <= 1e-4


def test_cache_is_built_once(cache_env: Path) -> None:
    first = T.casia_state_dict_path()
    mtime = first.stat().st_mtime_ns
    second = T.casia_state_dict_path()
    assert second == first and first.parent == cache_env
    assert second.stat().st_mtime_ns == mtime
    assert [p.name for p in cache_env.iterdir()] == [first.name]  # no temp files left behind


def test_embedder_is_loaded_once_per_process(cache_env: Path, casia_model: torch.nn.Module) -> None:
    model = T.load_embedder("casia-webface")
    assert model is casia_model and not model.training


def test_state_dict_path(cache_env: Path, casia_model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    path.write_bytes(T.casia_state_dict_path().read_bytes())
    model = T.load_embedder(str(path))
    assert model is not casia_model and not model.training
    x = torch.zeros(1, 3, 160, 160)
    np.testing.assert_array_equal(_embed(model, x), _embed(casia_model, x))
    assert W.weights_id(str(path)).startswith("file:") and len(W.weights_id(str(path))) == len("file:") + 12
    assert W.weights_id("casia-webface") == "casia-webface"


def test_bad_paths_raise_weights_error(tmp_path: Path) -> None:
    with pytest.raises(W.WeightsError, match="not found"):
        T.load_embedder(str(tmp_path / "missing.pt"))
    with pytest.raises(W.WeightsError, match="not found"):
        W.weights_id(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(W.WeightsError, match="not an InceptionResnetV1 state_dict"):
        T.load_embedder(str(junk))
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(W.WeightsError, match="not an InceptionResnetV1 state_dict"):
        T.load_embedder(str(wrong))


def test_vggface2_offline_names_casia(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh TORCH_HOME so that a previously downloaded file cannot stand in for the download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        T.load_embedder("vggface2")
    except W.WeightsError as exc:
        assert "download" in str(exc) and "casia-webface" in str(exc)
    else:
        pytest.skip("this machine is online: the vggface2 download succeeded")


def test_legacy_format_state_dict_loads_without_mmap(cache_env: Path, casia_model: torch.nn.Module, tmp_path: Path) -> None:
    # torch's pre-1.6 format cannot be memory-mapped: it must be read into memory instead.
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(T.casia_state_dict_path(), weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    model = T.load_embedder(str(legacy))
    assert model is not casia_model
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32))
    np.testing.assert_array_equal(_embed(model, x), _embed(casia_model, x))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_gallery_enrolled_from_a_weights_file_needs_that_file(cache_env: Path, data: Path, tmp_path: Path) -> None:
    weights = tmp_path / "my weights.pt"
    torch.save(torch.load(T.casia_state_dict_path(), weights_only=True), weights)
    gallery = tmp_path / "g.pt"
    runner = CliRunner()
    enrolled = runner.invoke(app, ["enroll", str(data / "5celeb" / "train"), "-o", str(gallery), "--weights", str(weights)])
    assert enrolled.exit_code == 0, enrolled.output
    file_id = W.weights_id(str(weights))
    assert Gallery.load(gallery).weights == file_id and W.is_file_id(file_id)

    photo = sorted((data / "5celeb" / "val" / "mindy_kaling").iterdir())[0]
    found = runner.invoke(app, ["identify", str(photo), "--gallery", str(gallery), "--weights", str(weights), "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["name"] == "mindy_kaling"

    # Without the file: the gallery's id names no file, and the message says what to pass.
    missing = runner.invoke(app, ["identify", str(photo), "--gallery", str(gallery), "--json"])
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "this gallery was made with weights from a file; pass --weights PATH" in _one_line(missing.stderr)
    assert "Traceback" not in missing.output

    # Other weights (here the same numbers under their name) are refused, naming both.
    other = runner.invoke(app, ["identify", str(photo), "--gallery", str(gallery), "--weights", "casia-webface"])
    assert other.exit_code == 1
    assert "weights casia-webface are not the weights the gallery was made with" in _one_line(other.stderr)
    assert file_id in other.stderr


CI_PROBE = """
import pytest

pytest.importorskip("a_module_that_is_not_installed")
"""


def test_skips_fail_under_ci_except_the_allowed_ones(tmp_path: Path) -> None:
    """tests/conftest.py: with CI=true a skip is a failure (a skip mark, pytest.skip, an importorskip at
    collection), except an allowed one (this module's vggface2 test when the machine is online)."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "tests").mkdir()
    shutil.copy2(root / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_probe.py").write_text(
        "import pytest\n\n"
        "def test_skips():\n    pytest.skip('no engine here')\n\n"
        "@pytest.mark.skipif(True, reason='not on this machine')\ndef test_marked():\n    pass\n\n"
        "@pytest.mark.xfail(reason='known', strict=True)\ndef test_xfail():\n    assert False\n\n"
        "def test_runs():\n    pass\n"
    )
    (tmp_path / "tests" / "test_missing_module.py").write_text(CI_PROBE)
    (tmp_path / "tests" / "test_weights.py").write_text(
        "import pytest\n\ndef test_vggface2_offline_names_casia():\n    pytest.skip('this machine is online: the vggface2 download succeeded')\n"
    )

    def run(ci: str) -> str:
        env = {**os.environ, "CI": ci, "FACEREC_TEST_DATA": str(tmp_path / "no-data")}
        args = ["-q", "-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors", "tests"]
        done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        return done.stdout

    under_ci = run("true")
    assert "FAILED tests/test_probe.py::test_skips" in under_ci and "every test must run" in under_ci, under_ci
    assert "ERROR tests/test_probe.py::test_marked" in under_ci  # a skip mark acts at setup: an error there
    assert "ERROR tests/test_missing_module.py" in under_ci
    assert "SKIPPED [1] tests/test_weights.py" in under_ci and "XFAIL tests/test_probe.py::test_xfail" in under_ci
    assert "PASSED tests/test_probe.py::test_runs" in under_ci
    elsewhere = run("")
    assert "1 passed, 4 skipped, 1 xfailed in" in elsewhere, elsewhere  # without CI they stay skips
