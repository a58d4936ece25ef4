"""Galleries as safetensors, read with numpy: the file format, matching, old torch galleries converted on
the CLI side, and files that must be refused without running anything (issue 11, point 4)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facerec_cli.gallery_files import convert_gallery, load_gallery, upload_body
from facerec_cli.cli.app import app
from lambdas.core.errors import GalleryError, LegacyGalleryError
from lambdas.core.gallery import FORMAT, UNKNOWN, VERSION, Gallery, Match

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def parts() -> tuple[np.ndarray, list[str], list[str]]:
    """40 photos of 12 people, shuffled (one person has 10 photos, several have one)."""
    rng = np.random.default_rng(7)
    names = [f"p{i:02d}" for i in range(12)] + ["p03"] * 9 + [f"p{i:02d}" for i in rng.integers(0, 12, 19)]
    order = rng.permutation(len(names))
    names = [names[i] for i in order]
    embeddings = unit(rng.standard_normal((len(names), 512))).astype(np.float32)
    sources = [f"{n}/photo_{k}.jpg" for k, n in enumerate(names)]
    return embeddings, names, sources


@pytest.fixture
def gallery(parts) -> Gallery:
    embeddings, names, sources = parts
    return Gallery(weights="casia-webface", embeddings=embeddings, names=names, sources=sources, threshold=0.9, recipe="margin44+flip")


def old_torch_gallery_bytes(g: Gallery, **save_kwargs) -> bytes:
    """A gallery file as the torch implementation wrote it (format version 1)."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save(
        {
            "format": FORMAT, "version": 1, "weights": g.weights, "embeddings": torch.from_numpy(np.array(g.embeddings)),
            "names": list(g.names), "sources": list(g.sources), "threshold": g.threshold, "recipe": g.recipe,
        },
        buf,
        **save_kwargs,
    )
    return buf.getvalue()


def reference_match(g: Gallery, queries: np.ndarray, limit: float) -> list[tuple[str, float, str]]:
    """Brute force in float64: every person's centroid from scratch, every distance."""
    people = sorted(set(g.names))
    emb = np.asarray(g.embeddings, dtype=np.float64)
    rows = np.array(g.names)
    centroids = unit(np.stack([emb[rows == p].mean(axis=0) for p in people]))
    q = unit(queries.astype(np.float64))
    dist = np.linalg.norm(q[:, None, :] - centroids[None, :, :], axis=2)
    out = []
    for d in dist:
        i = int(d.argmin())
        out.append((people[i] if d[i] <= limit else UNKNOWN, float(d[i]), people[i]))
    return out


# ------------------------------------------------------------------------------------- format


def test_round_trip_keeps_everything(gallery, tmp_path):
    path = tmp_path / "g.safetensors"
    gallery.save(path)
    for loaded in (Gallery.load(path), Gallery.from_bytes(gallery.to_bytes()), load_gallery(path)):
        assert loaded == gallery
        assert (loaded.weights, loaded.threshold, loaded.recipe) == ("casia-webface", 0.9, "margin44+flip")
        assert loaded.names == gallery.names and loaded.sources == gallery.sources
        assert loaded.people == gallery.people == sorted(set(gallery.names))
        assert loaded.embeddings.dtype == np.float32 and loaded.embeddings.shape == (40, 512)
        np.testing.assert_array_equal(loaded.centroids, gallery.centroids)
    assert Gallery.load(path).digest() == gallery.digest()
    # Defaults survive too: no threshold, no recipe, no sources.
    bare = Gallery(weights="vggface2", embeddings=gallery.embeddings[:3], names=gallery.names[:3])
    again = Gallery.from_bytes(bare.to_bytes())
    assert again == bare and again.threshold is None and again.recipe is None and again.sources == ["", "", ""]


def test_the_file_is_plain_safetensors_with_strings_in_its_metadata(gallery, tmp_path):
    pytest.importorskip("safetensors", reason="the reference reader (safetensors, in the test extra)")
    from safetensors import safe_open
    from safetensors.numpy import load, save

    path = tmp_path / "g.safetensors"
    gallery.save(path)
    tensors = load(path.read_bytes())  # the reference reader agrees with ours
    np.testing.assert_array_equal(tensors["embeddings"], gallery.embeddings)
    assert [gallery.people[i] for i in tensors["person"]] == gallery.names
    assert tensors["people"].tobytes().decode().split("\0") == gallery.people
    assert tensors["sources"].tobytes().decode().split("\0") == gallery.sources
    np.testing.assert_array_equal(tensors["centroids"].T, gallery.centroids)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["version"] == str(VERSION) == "2"
    assert meta["weights"] == "casia-webface" and meta["recipe"] == "margin44+flip" and float(meta["threshold"]) == 0.9
    # And the other way: what the package writes, ours reads.
    assert Gallery.from_bytes(save(tensors, metadata=meta)) == gallery
    # The bytes are a function of the gallery (digest() and bootstrap's md5 rely on it).
    assert Gallery.load(path).to_bytes() == path.read_bytes() == gallery.to_bytes()


def test_unicode_names_and_an_empty_gallery(tmp_path):
    rng = np.random.default_rng(1)
    names = ["Zoë Saldaña", "周杰伦", 'quote " and \\ backslash', "Zoë Saldaña"]
    g = Gallery(weights="casia-webface", embeddings=rng.standard_normal((4, 512)), names=names)
    assert Gallery.from_bytes(g.to_bytes()).names == names
    empty = Gallery.from_bytes(Gallery(weights="casia-webface", embeddings=np.zeros((0, 512)), names=[]).to_bytes())
    assert empty.names == [] and empty.people == []
    with pytest.raises(GalleryError, match="empty: enrol at least one person"):
        empty.match(np.ones((1, 512), np.float32))


def test_constructor_refuses_inconsistent_parts(parts):
    embeddings, names, sources = parts
    with pytest.raises(GalleryError, match="40 embeddings for 39 names"):
        Gallery(weights="w", embeddings=embeddings, names=names[:-1])
    with pytest.raises(GalleryError, match="39 sources for 40 names"):
        Gallery(weights="w", embeddings=embeddings, names=names, sources=sources[:-1])
    with pytest.raises(GalleryError, match="expected N x 512"):
        Gallery(weights="w", embeddings=embeddings[:, :128], names=names)
    with pytest.raises(GalleryError, match="NUL"):
        Gallery(weights="w", embeddings=embeddings, names=names, sources=[*sources[:-1], "a\0b"])
    bad = embeddings.copy()
    bad[3, 5] = np.nan
    with pytest.raises(GalleryError, match="NaN"):
        Gallery(weights="w", embeddings=bad, names=names)


# ------------------------------------------------------------------------------------- matching


def test_centroids_are_each_persons_renormalised_mean(gallery):
    emb, rows = gallery.embeddings.astype(np.float64), np.array(gallery.names)
    for j, person in enumerate(gallery.people):
        expected = emb[rows == person].mean(axis=0)
        np.testing.assert_allclose(gallery.centroids[j], expected / np.linalg.norm(expected), atol=1e-6)
    # Rows need not be unit when given: they are normalised first.
    scaled = Gallery(weights="w", embeddings=gallery.embeddings * 7.5, names=gallery.names)
    np.testing.assert_allclose(scaled.centroids, gallery.centroids, atol=1e-6)


def test_match_equals_a_brute_force_reference(gallery):
    rng = np.random.default_rng(3)
    queries = np.concatenate([
        gallery.embeddings[:10] + 0.2 * rng.standard_normal((10, 512)),  # near enrolled photos
        rng.standard_normal((10, 512)),  # strangers
        gallery.centroids[:2] * 3.0,  # exactly a centroid (distance 0), not unit length
    ]).astype(np.float32)
    for limit in (0.9, 1.3):
        got = gallery.match(queries, threshold=limit)
        want = reference_match(gallery, queries, limit)
        assert all(isinstance(m, Match) for m in got)
        assert [(m.name, m.nearest) for m in got] == [(name, nearest) for name, _, nearest in want]
        np.testing.assert_allclose([m.distance for m in got], [w[1] for w in want], atol=1e-5)
    assert {m.name for m in gallery.match(queries[10:20])} == {UNKNOWN}  # the gallery's threshold 0.9
    assert gallery.match(queries[20:])[0].distance < 1e-5
    # One face as a vector, none at all.
    [one] = gallery.match(queries[0])
    assert one == gallery.match(queries[:1])[0]
    assert gallery.match(np.zeros((0, 512), np.float32)) == []


def test_large_galleries_match_exactly_through_int8_centroids():
    """At 20k people and more the first pass reads int8 centroids (quantized.py); the answer must be the
    float32 answer: the same nearest people, distances and margins."""
    from lambdas.core import quantized
    from lambdas.core.openset import NEIGHBOURS, nearest_people

    rng = np.random.default_rng(5)
    people = quantized.MIN_PEOPLE + 1000
    emb = rng.standard_normal((people, 512)).astype(np.float32)
    big = Gallery(weights="w", embeddings=emb, names=[f"p{i:06d}" for i in range(people)], threshold=1.1, margin=0.01)
    queries = np.concatenate([
        emb[:20] + 0.6 * rng.standard_normal((20, 512)),  # near enrolled people, at varied distances
        rng.standard_normal((20, 512)),  # strangers: the best few are all about as near (the hard case)
    ]).astype(np.float32)
    got = big.match(queries)
    assert big._quantized is not None  # the int8 pass ran
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    top, cos = nearest_people(q @ big._centroids_t, NEIGHBOURS + 1)  # the float32 pass, every column
    assert [m.nearest for m in got] == [big.people[i] for i in top[:, 0]]
    d = np.sqrt(np.maximum(2 - 2 * cos, 0))
    np.testing.assert_allclose([m.distance for m in got], d[:, 0], atol=1e-4)
    np.testing.assert_allclose([m.second for m in got], d[:, 1], atol=1e-5)
    np.testing.assert_allclose([m.next_mean for m in got], d[:, 1:].mean(axis=1), atol=1e-5)
    assert sum(m.name != UNKNOWN for m in got[:20]) >= 15 and all(m.name == UNKNOWN for m in got[20:])


def test_match_refuses_embeddings_of_another_size(gallery):
    with pytest.raises(GalleryError, match="512-d"):
        gallery.match(np.ones((2, 128), np.float32))


TORCH_GALLERY_COMMIT = "3e84a7c74a2ce92e6806f0bdc0bf3adc0ced3fa7"


def test_match_gives_the_old_torch_galleries_distances(gallery, tmp_path):
    """The torch implementation (the last commit that has it: the parent of 880b398, which moved galleries
    to numpy) and this one agree."""
    torch = pytest.importorskip("torch")
    source = subprocess.run(["git", "show", f"{TORCH_GALLERY_COMMIT}:lambdas/core/gallery.py"], cwd=ROOT, capture_output=True, text=True)
    if source.returncode != 0:  # a checkout without the project's history (an sdist, a shallow clone)
        pytest.skip(f"no git history with commit {TORCH_GALLERY_COMMIT[:7]} to compare with: {source.stderr.strip()}")
    assert "torch.cdist" in source.stdout
    import importlib.util

    path = tmp_path / "old_gallery.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("lambdas.core._old_gallery_test", path)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    try:
        spec.loader.exec_module(old)
        og = old.Gallery(weights=gallery.weights, embeddings=torch.from_numpy(np.array(gallery.embeddings)), names=gallery.names)
        queries = (gallery.embeddings[:12] + 0.3 * np.random.default_rng(5).standard_normal((12, 512))).astype(np.float32)
        new, before = gallery.match(queries, 1.0), og.match(torch.from_numpy(queries), 1.0)
        assert [(m.name, m.nearest) for m in new] == [(m.name, m.nearest) for m in before]
        np.testing.assert_allclose([m.distance for m in new], [m.distance for m in before], atol=1e-5)
    finally:
        del sys.modules[spec.name]


# ------------------------------------------------------------------------------------- old files


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-pickle"])
def test_old_torch_gallery_loads_through_the_cli_and_is_refused_by_the_runtime(gallery, tmp_path, zipped):
    old = tmp_path / "gallery.pt"
    old.write_bytes(old_torch_gallery_bytes(gallery, _use_new_zipfile_serialization=zipped))
    with pytest.raises(LegacyGalleryError) as refused:
        Gallery.from_bytes(old.read_bytes(), origin=str(old))
    message = str(refused.value)
    assert f"facerec gallery convert {old} gallery.safetensors" in message and "bootstrap" in message
    assert isinstance(refused.value, GalleryError)

    converted = load_gallery(old)
    assert converted == gallery and converted.threshold == 0.9 and converted.recipe == "margin44+flip"
    queries = gallery.embeddings[::4] + 0.1
    assert converted.match(queries) == gallery.match(queries)


def test_course_data_pt_loads_as_vggface2(gallery, tmp_path):
    torch = pytest.importorskip("torch")
    course = tmp_path / "data.pt"
    rows = [torch.from_numpy(np.array(e)).unsqueeze(0) for e in gallery.embeddings[:5]]  # 1 x 512 each
    torch.save([rows, gallery.names[:5]], course)
    loaded = load_gallery(course)
    assert loaded.weights == "vggface2" and loaded.names == gallery.names[:5] and loaded.recipe is None
    np.testing.assert_allclose(loaded.embeddings, gallery.embeddings[:5], atol=1e-6)
    with pytest.raises(LegacyGalleryError):
        Gallery.load(course)


def test_convert_command_and_function(gallery, tmp_path):
    old = tmp_path / "old.pt"
    old.write_bytes(old_torch_gallery_bytes(gallery))
    new = tmp_path / "out" / "gallery.safetensors"
    result = runner.invoke(app, ["gallery", "convert", str(old), str(new)])
    assert result.exit_code == 0, result.output
    assert "40 embeddings of 12 people" in result.stderr
    assert Gallery.load(new) == gallery  # the runtime reads it, no torch needed
    # Content decides, not the suffix: a safetensors gallery named .pt converts (to itself) as well.
    renamed = tmp_path / "new-format.pt"
    gallery.save(renamed)
    assert convert_gallery(renamed, tmp_path / "copy.safetensors") == gallery
    # Errors are one red line and exit 1.
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 but not a zip at all")
    result = runner.invoke(app, ["gallery", "convert", str(junk), str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1 and "not a facerec gallery" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["gallery", "convert", str(tmp_path / "missing.pt"), str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1 and "not found" in result.stderr
    result = runner.invoke(app, ["gallery", "convert", str(old), str(old)])
    assert result.exit_code == 1 and "overwrite its own source" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_upload_body_converts_old_galleries_only(gallery, tmp_path):
    new = tmp_path / "g.safetensors"
    gallery.save(new)
    assert upload_body(new) == (new.read_bytes(), False)
    old = tmp_path / "g.pt"
    old.write_bytes(old_torch_gallery_bytes(gallery))
    body, converted = upload_body(old)
    assert converted and Gallery.from_bytes(body) == gallery
    # What bootstrap and run-local upload (the gallery object's spec): the same bytes at every run, so
    # that a second bootstrap with the same old file has nothing to change.
    import hashlib

    from facerec_cli.config import Settings
    from facerec_cli.gallery_files import gallery_object

    key = Settings(prefix="myid").names.gallery_key
    assert key == ".facerec/gallery.safetensors"
    spec = gallery_object("myid-output", key, old)
    assert "converted from torch" in spec.description and spec.body == body and spec.md5 == hashlib.md5(body).hexdigest()
    assert gallery_object("myid-output", key, old).md5 == spec.md5
    assert "converted" not in gallery_object("myid-output", key, new).description


# ------------------------------------------------------------------------------------- refusals


class WritesAFile:
    """Unpickling this calls ``Path(target).write_text("pwned")``: it must never happen."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


def test_a_pickle_payload_is_refused_without_running_it(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "written-by-the-payload"
    bare = pickle.dumps(WritesAFile(target), protocol=2)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": 1, "embeddings": WritesAFile(target)}, buf)
    for data in (bare, buf.getvalue()):
        with pytest.raises(LegacyGalleryError):
            Gallery.from_bytes(data, origin="evil.pt")
        assert not target.exists()
        # The CLI converts with torch.load(weights_only=True), which refuses the class as well.
        path = tmp_path / "evil.pt"
        path.write_bytes(data)
        with pytest.raises(GalleryError, match="not a facerec gallery"):
            load_gallery(path)
        assert not target.exists()
    pickle.loads(bare)  # the payload is real: unpickling it does write the file
    assert target.read_text() == "pwned"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"garbage that is no gallery", "not a facerec gallery"),
        (b"\x00" * 64, "not a facerec gallery"),
    ],
)
def test_garbage_is_a_gallery_error(tmp_path, content, message):
    path = tmp_path / "g.safetensors"
    path.write_bytes(content)
    with pytest.raises(GalleryError, match=message):
        Gallery.load(path)
    with pytest.raises(GalleryError, match=message):
        load_gallery(path)


def test_truncated_or_foreign_safetensors_are_refused(gallery):
    pytest.importorskip("safetensors", reason="the reference writer (safetensors, in the test extra)")
    from safetensors.numpy import save

    data = gallery.to_bytes()
    (header,) = np.frombuffer(data[:8], "<u8")
    for cut in (len(data) - 1, 8 + int(header) + 100, 8 + int(header) // 2, 20):
        with pytest.raises(GalleryError, match="damaged|truncated|not a facerec gallery"):
            Gallery.from_bytes(data[:cut], origin="cut.safetensors")
    with pytest.raises(GalleryError, match="not a facerec gallery"):
        Gallery.from_bytes(save({"weights": np.ones(3, np.float32)}), origin="model.safetensors")
    with pytest.raises(GalleryError, match="format version 3; this facerec reads 2"):
        Gallery.from_bytes(save({"x": np.ones(1, np.float32)}, metadata={"format": FORMAT, "version": "3"}))
    # Right metadata, wrong structure: a person index out of range, unsorted people.
    def text(values):
        return np.frombuffer("\0".join(values).encode(), np.uint8)

    tensors = {
        "embeddings": np.array(gallery.embeddings), "person": np.full(40, 99, np.int32), "centroids": np.array(gallery.centroids.T),
        "people": text(gallery.people), "sources": text(gallery.sources),
    }
    meta = {"format": FORMAT, "version": "2", "weights": "w"}
    with pytest.raises(GalleryError, match="damaged facerec gallery: its row indices"):
        Gallery.from_bytes(save(tensors, metadata=meta))
    tensors["person"] = np.zeros(40, np.int32)
    with pytest.raises(GalleryError, match="damaged facerec gallery: its people are not sorted"):
        Gallery.from_bytes(save({**tensors, "people": text(gallery.people[::-1])}, metadata=meta))
    with pytest.raises(GalleryError, match="damaged facerec gallery.*sources: 39 entries, expected 40"):
        Gallery.from_bytes(save({**tensors, "sources": text(gallery.sources[1:])}, metadata=meta))
    with pytest.raises(GalleryError, match="damaged facerec gallery.*UnicodeDecodeError"):
        Gallery.from_bytes(save({**tensors, "people": np.full(7, 0xFF, np.uint8)}, metadata=meta))
    with pytest.raises(GalleryError, match="damaged facerec gallery"):
        Gallery.from_bytes(save({**tensors, "embeddings": np.ones((40, 511), np.float32)}, metadata=meta))
    with pytest.raises(GalleryError, match="damaged facerec gallery"):
        Gallery.from_bytes(save({**tensors, "person": np.zeros(40, np.float32)}, metadata=meta))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(GalleryError, match="not found"):
        load_gallery(tmp_path / "nope.safetensors")
    with pytest.raises(GalleryError, match="is a folder"):
        Gallery.load(tmp_path)


def test_importing_the_runtime_gallery_does_not_import_torch():
    code = (
        "import sys, numpy as np; import lambdas.core.gallery as g; import facerec_cli.gallery_files; "
        "x = g.Gallery(weights='w', embeddings=np.eye(2, 512, dtype=np.float32), names=['a', 'b']); "
        "g.Gallery.from_bytes(x.to_bytes()).match(np.eye(1, 512, dtype=np.float32)); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
