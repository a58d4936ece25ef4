"""The lean runtime: the ONNX models and the numpy MTCNN against facenet-pytorch's torch models on real
photos and video frames, the model cache, and no torch in the processes that recognise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lambdas.core import images, mtcnn, sampling
from lambdas.core import models as M
from lambdas.core.faces import DEFAULT_DETECT_SIZE, FaceDetector, crop

ROOT = Path(__file__).resolve().parents[1]


def _downscaled(image: Image.Image) -> Image.Image:
    scale = min(1.0, DEFAULT_DETECT_SIZE / max(image.size))
    if scale == 1.0:
        return image
    return image.resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))), Image.BILINEAR)


def _all_pictures(data: Path) -> list[tuple[str, Image.Image]]:
    """Every photo of the test data and frames sampled at 2 fps from every video, as the detector gets
    them (downscaled to 640 pixels on the long side)."""
    pictures = [(str(p.relative_to(data)), _downscaled(images.load_image(p)))
                for p in sorted(data.rglob("*")) if p.is_file() and images.is_image(p)]
    for video in sorted((data / "videos").glob("*.mp4")):
        frames, _ = sampling.read_frames(video, count=20, fps=2.0)
        pictures += [(f"{video.name}@{f.t:.1f}s", _downscaled(f.image)) for f in frames]
    return pictures


@pytest.fixture(scope="module")
def torch_mtcnn():
    torch = pytest.importorskip("torch")
    from facenet_pytorch import MTCNN

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return MTCNN(keep_all=True)


@pytest.mark.slow
def test_same_faces_as_facenet_pytorch_on_every_photo_and_frame(data: Path, torch_mtcnn) -> None:
    nets = M.load_models()
    pictures = _all_pictures(data)
    assert len(pictures) > 120
    faces = 0
    for name, image in pictures:
        boxes, probs, points = torch_mtcnn.detect(image, landmarks=True)
        want = np.zeros((0, 15), np.float32) if boxes is None else np.column_stack(
            [np.asarray(boxes, np.float32), np.asarray(probs, np.float32),
             np.asarray(points, np.float32).reshape(-1, 5, 2).transpose(0, 2, 1).reshape(-1, 10)])
        got = mtcnn.detect(nets, [np.asarray(image)])[0]
        got = got[np.argsort(-(got[:, 2] - got[:, 0]) * (got[:, 3] - got[:, 1]), kind="stable")]  # facenet: largest first
        assert len(got) == len(want), f"{name}: {len(got)} faces, facenet-pytorch finds {len(want)}"
        size = np.maximum(want[:, 2] - want[:, 0], want[:, 3] - want[:, 1])
        allowed = np.maximum(2.0, 0.01 * size)[:, None]
        assert (np.abs(got[:, :4] - want[:, :4]) <= allowed).all(), f"{name}: boxes {got[:, :4]} vs {want[:, :4]}"
        assert np.abs(got[:, 4] - want[:, 4]).max(initial=0) <= 1e-3, name
        # the five landmarks (x then y), which the profile check reads
        assert (np.abs(got[:, 5:] - want[:, 5:]) <= allowed).all(), f"{name}: landmarks {got[:, 5:]} vs {want[:, 5:]}"
        faces += len(got)
    assert faces > 100  # the comparison covered real faces, not only empty pictures


def test_embeddings_match_the_torch_model(data: Path) -> None:
    torch_models = pytest.importorskip("lambdas.core.torch_models")
    nets = M.load_models()
    detector = FaceDetector(nets)
    crops = []
    for photo in sorted((data / "5celeb" / "val").glob("*/*.jpg")):
        image = images.load_image(photo)
        crops += [crop(image, d) for d in detector.detect([image])[0]]
    x = np.stack(crops)
    want = torch_models.TorchModels("casia-webface").embed(x)
    got = nets.embed(x)
    assert len(x) >= 25 and got.shape == (len(x), 512)
    assert np.abs(got - want).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_area_resize_is_torch_area_interpolation() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)
    table = mtcnn.integral(image)
    for out_h, out_w, box in [(24, 24, (0, 37, 0, 53)), (48, 48, (3, 30, 5, 50)), (13, 19, (0, 37, 0, 53)), (40, 60, (0, 37, 0, 53))]:
        y0, y1, x0, x1 = box
        x = torch.from_numpy(image[y0:y1, x0:x1].astype(np.float32)).permute(2, 0, 1)[None]
        want = torch.nn.functional.interpolate(x, size=(out_h, out_w), mode="area")[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(mtcnn.area_resize(table, y0, y1, x0, x1, out_h, out_w), want, atol=1e-4)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    assert mtcnn.nms(boxes, scores, 0.5).tolist() == [1, 2]
    # Per image: the same boxes in another image are not suppressed by the first image's.
    groups = np.array([0, 0, 0, 1])
    assert sorted(mtcnn.batched_nms(boxes, scores, groups, 0.5).tolist()) == [1, 2, 3]
    # "min": a small box inside a large one is suppressed however small it is.
    nested = np.array([[0, 0, 100, 100], [10, 10, 20, 20]], np.float32)
    assert mtcnn.nms(nested, np.array([0.9, 0.8], np.float32), 0.7, method="min", plus_one=True).tolist() == [0]


def test_models_are_built_once_into_a_keyed_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    first = M.model_dir("casia-webface")
    again = M.model_dir("casia-webface", build=False)
    assert again == first and first.weights == "casia-webface"
    assert first.path == M.cached_dir("casia-webface") and first.path.name.startswith("onnx-casia-webface-")
    built = sorted(p.name for p in first.path.iterdir() if p.name != "optimized")  # optimized/: onnxruntime's graphs, kept per machine
    assert built == ["embedder.onnx", "manifest.json", "onet.onnx", "pnet.onnx", "rnet.onnx"]
    assert not [p for p in first.path.parent.iterdir() if ".tmp-" in p.name]  # no half-built directories left


def test_the_optimised_graph_is_kept_for_the_next_process_with_the_same_outputs(tmp_path: Path) -> None:
    """onnxruntime's fully optimised InceptionResnetV1 is kept beside the model, for this machine: a later
    process loads it instead of optimising again (200 -> 50 ms of its start); the outputs are the same bit
    for bit, and a damaged copy is replaced, never trusted."""
    model = tmp_path / "embedder.onnx"
    model.symlink_to(M.model_dir("casia-webface").file("embedder"))
    kept = M.optimized_path(model)
    assert kept is not None and kept.parent == tmp_path / "optimized" and not kept.exists()
    x = np.random.default_rng(0).standard_normal((2, 3, 160, 160)).astype(np.float32)

    def embed(session) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    plain = embed(M._new_session(model, 1, keep_optimized=False))
    assert not kept.exists()
    first = M._new_session(model, 1, keep_optimized=True)  # optimises, and keeps the graph
    assert kept.is_file() and [p.name for p in kept.parent.iterdir()] == [kept.name]  # no half-written copy left
    later = M._new_session(model, 1, keep_optimized=True)
    assert later._model_path == str(kept)  # loaded from the kept graph
    assert np.array_equal(embed(first), plain) and np.array_equal(embed(later), plain)
    kept.write_bytes(b"not a model")
    repaired = M._new_session(model, 1, keep_optimized=True)
    assert np.array_equal(embed(repaired), plain) and kept.stat().st_size > 1_000_000


def test_models_build_out_copies_the_models_not_this_machines_graphs(tmp_path: Path) -> None:
    from tests.cli_run import facerec

    M.load_models()  # this process keeps its optimised graphs in the cache's optimized/ folder
    assert (M.model_dir("casia-webface").path / "optimized").is_dir()
    result = facerec("models", "build", "--out", tmp_path / "models")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["embedder.onnx", "manifest.json", "onet.onnx", "pnet.onnx", "rnet.onnx"]


def test_models_of_an_explicit_directory_keep_no_graph_beside_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # An image's models ($FACEREC_MODELS) are read-only on Lambda and were built on another machine.
    built = M.model_dir("casia-webface")
    assert built.cached
    monkeypatch.setenv(M.MODELS_ENV, str(built.path))
    assert not M.model_dir("casia-webface").cached


def test_an_explicit_models_directory_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built = M.model_dir("casia-webface")
    monkeypatch.setenv(M.MODELS_ENV, str(built.path))
    assert M.model_dir("casia-webface").path == built.path
    with pytest.raises(M.WeightsError, match="built for 'casia-webface' weights, not 'vggface2'"):
        M.model_dir("vggface2")
    monkeypatch.setenv(M.MODELS_ENV, str(tmp_path))
    with pytest.raises(M.WeightsError, match="holds no built models"):
        M.model_dir("casia-webface")


def test_missing_models_without_build_say_how_to_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEREC_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(M.WeightsError, match="facerec models build"):
        M.model_dir("casia-webface", build=False)


def test_preloading_makes_single_threaded_sessions_of_built_models_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The local runtime's fork server preloads (runtime/preload.py): it never builds (that needs torch and
    # minutes), and its sessions are single-threaded (a thread pool would not survive the fork).
    built = M.model_dir("casia-webface")
    monkeypatch.setattr(M, "_sessions", {})
    assert M.preload("casia-webface")
    assert sorted(M._sessions) == sorted((str(built.file(net)), 1) for net in M.NETS)
    monkeypatch.setattr(M, "_sessions", {})
    monkeypatch.setenv("FACEREC_WEIGHTS_DIR", str(tmp_path))  # an empty cache: nothing built
    assert not M.preload("casia-webface") and M._sessions == {} and not any(tmp_path.iterdir())


_NO_TORCH = """
import json, sys
from typer.testing import CliRunner
from facerec_cli.cli.app import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                  "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "facenet_pytorch")))}))
"""


def _cli_without_torch(args: list[str], cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_identify_and_both_handlers_run_without_torch(data: Path, hamilton_gallery, tmp_path: Path) -> None:
    M.model_dir("casia-webface")  # built (with torch) before: what runs below must not need it
    gallery = str(hamilton_gallery[0])
    video = str(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4")

    found = _cli_without_torch(["identify", video, "--gallery", gallery, "--json"], tmp_path)
    assert found["code"] == 0, found["stderr"]
    assert json.loads(found["stdout"])["status"] == "ok"
    assert found["torch"] == []

    # --workers 0: the video-splitting and face-recognition handlers run in this very process.
    piped = _cli_without_torch(["run-local", video, "--gallery", gallery, "--workers", "0", "--json"], tmp_path)
    assert piped["code"] == 0, piped["stderr"]
    assert json.loads(piped["stdout"].strip().splitlines()[-1])["status"] == "ok"
    assert piped["torch"] == []
