"""A living gallery (#23): `facerec gallery list|show|add|remove|rename|push` on real photos (5celeb),
through the CLI (typer's CliRunner) and through the functions; push against a real moto server over
HTTP, read back and used by the recognition function's warm state.

The 5celeb gallery comes from conftest (enrolled once per session); the 4-person gallery is the same
without ben_afflek, whose real photos the tests then add. Every error case compares the file's bytes."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.core import gallery_edit, openset
from lambdas.core.errors import GalleryError
from lambdas.core.gallery import Gallery
from tests.cli_run import error_lines, facerec, wide  # noqa: F401  (wide: autouse fixture)

ADDED = "ben_afflek"



@pytest.fixture(scope="module")
def four(celeb_gallery: Any) -> Gallery:
    """5celeb/train enrolled, without ben_afflek."""
    return gallery_edit.without_person(celeb_gallery[1], ADDED)


@pytest.fixture
def four_file(four: Gallery, tmp_path: Path) -> Path:
    path = tmp_path / "gallery.safetensors"
    four.save(path)
    return path


def photos_of(data: Path, person: str, count: int | None = None, split: str = "train") -> list[Path]:
    return sorted((data / "5celeb" / split / person).iterdir())[:count]


# ------------------------------------------------------------------------------------------ the functions


def test_removing_then_adding_a_person_gives_enrolments_rule(celeb_gallery: Any, four: Gallery) -> None:
    _, full = celeb_gallery
    rows = [i for i, n in enumerate(full.names) if n == ADDED]
    assert four.calibration is not None and not four.calibration.calibrated  # 4 people: too few to calibrate
    assert four.threshold is None and ADDED not in four.people
    back = gallery_edit.with_photos(four, [full.names[i] for i in rows], full.embeddings[rows], [full.sources[i] for i in rows])
    assert back.calibration is not None and back.calibration.calibrated
    assert (back.threshold, back.margin) == (full.threshold, full.margin)
    assert back.people == full.people and sorted(back.sources) == sorted(full.sources)
    np.testing.assert_allclose(back.centroids, full.centroids, atol=1e-6)


def test_rename_and_remove_one_photo(celeb_gallery: Any) -> None:
    _, full = celeb_gallery
    renamed = gallery_edit.renamed(full, "madonna", "Madonna Ciccone")
    assert "madonna" not in renamed.people and renamed.names.count("Madonna Ciccone") == full.names.count("madonna")
    assert renamed.sources == full.sources  # a photo keeps the path it came from
    source = next(s for n, s in zip(full.names, full.sources) if n == "elton_john")
    smaller, removed = gallery_edit.without_source(full, Path("/somewhere") / source)  # a path ending in the source works
    assert removed == source and source not in smaller.sources and len(smaller.names) == len(full.names) - 1
    assert smaller.calibration is not None  # calibrated again
    with pytest.raises(GalleryError, match="already in the gallery .* --merge"):
        gallery_edit.renamed(full, "madonna", "elton_john")


def test_a_count_of_one_reads_in_the_singular(celeb_gallery: Any) -> None:
    """Plurals read right (#30 item 6): a rename onto a person left with one photo says "(1 photo)"."""
    _, full = celeb_gallery
    smaller = full
    for source in [s for n, s in zip(full.names, full.sources) if n == "elton_john"][1:]:
        smaller, _ = gallery_edit.without_source(smaller, Path(source))
    assert smaller.names.count("elton_john") == 1
    with pytest.raises(GalleryError, match=r"'elton_john' is already in the gallery \(1 photo\): pass --merge"):
        gallery_edit.renamed(smaller, "madonna", "elton_john")
    with pytest.raises(GalleryError, match=r"\(\d+ photos\): pass --merge"):
        gallery_edit.renamed(full, "madonna", "elton_john")


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "unknown", "Unknown ", "a\nb"])
def test_bad_person_names_are_refused(name: str) -> None:
    with pytest.raises(GalleryError, match="name"):
        gallery_edit.person_name(name)


def test_two_people_under_one_name_are_found_and_one_person_is_not(celeb_gallery: Any) -> None:
    """Every pair of the five people merged into one name is found, split as they really are; no real
    person's photos are (their two 2-means groups lie well within OUTLIER_DISTANCE)."""
    _, full = celeb_gallery
    assert gallery_edit.two_people(full) == []
    for a, b in itertools.combinations(full.people, 2):
        merged = gallery_edit.renamed(full, b, a, merge=True)
        (found,) = gallery_edit.two_people(merged, [a])
        assert found.person == a and found.distance > openset.OUTLIER_DISTANCE
        truth = {tuple(sorted(s for n, s in zip(full.names, full.sources) if n == p)) for p in (a, b)}
        assert {tuple(sorted(g)) for g in found.groups} == truth


# ------------------------------------------------------------------------------------------ the CLI


def test_add_a_person_from_their_folder_calibrates_and_lists(data: Path, celeb_gallery: Any, four_file: Path) -> None:
    _, full = celeb_gallery
    before = json.loads(facerec("gallery", "list", four_file, "--json").stdout)
    assert before["rule"]["source"] == "default" and ADDED not in {p["name"] for p in before["people"]}

    result = facerec("gallery", "add", four_file, data / "5celeb" / "train" / ADDED)  # the folder's name is the person
    assert result.exit_code == 0, result.output
    assert f"of {ADDED} (new)" in result.stderr and "two groups" not in result.stderr
    after = Gallery.load(four_file)
    assert after.names.count(ADDED) == full.names.count(ADDED)
    assert (after.threshold, after.margin) == (full.threshold, full.margin)  # as if enrolled together
    listed = json.loads(facerec("gallery", "list", four_file, "--json").stdout)
    assert listed["rule"] == {"threshold": full.threshold, "margin": full.margin, "source": "calibrated"}
    assert {p["name"]: p["photos"] for p in listed["people"]} == {p: full.names.count(p) for p in full.people}
    # the rule's change is reported (here the calibrated numbers may equal the defaults; its source changed)
    assert f"was threshold {openset.DEFAULT_THRESHOLD:g}, margin {openset.DEFAULT_MARGIN:g} (default)" in result.stderr

    shown = json.loads(facerec("gallery", "show", four_file, ADDED, "--json").stdout)
    (person,) = shown["people"]
    assert sorted(person["photos"]) == sorted(s for n, s in zip(full.names, full.sources) if n == ADDED)
    assert person["consistency"]["mean"] < person["consistency"]["worst"] < openset.OUTLIER_DISTANCE
    assert person["two_groups"] is None
    text = facerec("gallery", "show", four_file, ADDED)
    assert text.exit_code == 0 and f"{ADDED}: {len(person['photos'])} photos" in text.stdout and "open-set rule" in text.stdout


def test_add_photos_to_an_enrolled_person_skips_no_face_and_duplicates(data: Path, four_file: Path) -> None:
    before = Gallery.load(four_file)
    new = photos_of(data, "madonna", 2, split="val")
    enrolled = data / "5celeb" / "train" / next(s for s in before.sources if s.startswith("madonna/"))
    noface = sorted((data / "noface").iterdir())[0]
    result = facerec("gallery", "add", four_file, *new, enrolled, new[0], noface, "--person", " madonna ")
    assert result.exit_code == 0, result.output
    assert f"{noface.name}: no face found" in result.stderr
    assert f"madonna/{enrolled.name}: the same photo as madonna/{enrolled.name}: skipped" in result.stderr  # enrolled already
    assert f"madonna/{new[0].name}: the same photo as madonna/{new[0].name}: skipped" in result.stderr  # given twice
    assert sorted(p.name for p in four_file.parent.iterdir()) == [four_file.name]  # written in place, no temporary left
    after = Gallery.load(four_file)
    assert after.names.count("madonna") == before.names.count("madonna") + 2
    assert after.sources[-2:] == [f"madonna/{p.name}" for p in new]


def assert_refused(result: Any, path: Path, before: bytes, message: str) -> None:
    assert result.exit_code != 0, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert path.read_bytes() == before  # the file unchanged


def test_bad_input_is_refused_and_the_file_is_unchanged(data: Path, four_file: Path, tmp_path: Path) -> None:
    before = four_file.read_bytes()
    photo = photos_of(data, ADDED, 1)[0]
    cases = [
        (("add", four_file, photo, "--person", "   "), "cannot be empty or only whitespace"),
        (("add", four_file, photo), "pass --person NAME"),
        (("add", four_file, data / "noface", "--person", "nobody"), "no face found in any of the 5 photos"),
        (("add", four_file, tmp_path / "missing.jpg", "--person", "x"), "no such file or folder"),
        (("rename", four_file, "madonna", " "), "cannot be empty or only whitespace"),
        (("rename", four_file, "madonna", "elton_john"), "pass --merge"),
        (("rename", four_file, "madona", "x"), "did you mean madonna"),
        (("remove", four_file, "nobody"), "is not in the gallery"),
        (("remove", four_file, "--photo", "madonna/nothing.jpg"), "no photo"),
        (("remove", four_file), "name a PERSON to remove"),
        (("add", four_file, photo, "--person", "x", "--prefix", "p"), "are for --to-cloud"),
    ]
    for args, message in cases:
        assert_refused(facerec("gallery", *args), four_file, before, message)
    single = tmp_path / "one.safetensors"
    g = Gallery.load(four_file)
    Gallery(weights=g.weights, embeddings=g.embeddings[:1], names=g.names[:1], sources=g.sources[:1], recipe=g.recipe).save(single)
    one = single.read_bytes()
    assert_refused(facerec("gallery", "remove", single, g.names[0]), single, one, "leave the gallery empty")


def test_galleries_of_other_weights_or_files_are_refused_unchanged(data: Path, four: Gallery, tmp_path: Path) -> None:
    photo = photos_of(data, ADDED, 1)[0]
    other = tmp_path / "file-weights.safetensors"
    Gallery(weights="file:0123456789ab", embeddings=four.embeddings, names=four.names, sources=four.sources, recipe=four.recipe).save(other)
    recipe = tmp_path / "other-recipe.safetensors"
    Gallery(weights=four.weights, embeddings=four.embeddings, names=four.names, sources=four.sources, recipe="mtcnn-crop160m20-noflip").save(recipe)
    torch_like = tmp_path / "old.pt"
    torch_like.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a torch.save zip, as the first bytes tell
    for path, args, message in [
        (other, (), "made with weights from a file"),
        (other, ("--weights", "casia-webface"), "are not the weights the gallery was made with"),
        (recipe, (), "enrol the photos again"),
        (torch_like, (), "facerec gallery convert"),
    ]:
        before = path.read_bytes()
        assert_refused(facerec("gallery", "add", path, photo, "--person", ADDED, *args), path, before, message)


def test_a_merged_folder_is_warned_about(data: Path, four: Gallery, tmp_path: Path) -> None:
    """Photos of two people in one person's folder: added (the user may mean it), with a warning that
    names the two groups as they really are."""
    base = gallery_edit.without_person(four, "madonna")
    path = tmp_path / "three.safetensors"
    base.save(path)
    folder = tmp_path / "madonna"
    folder.mkdir()
    mixed = photos_of(data, "madonna", 3) + photos_of(data, ADDED, 3)
    for p in mixed:
        shutil.copy(p, folder / p.name)
    result = facerec("gallery", "add", path, folder)
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stderr.splitlines() if "two groups" in ln]
    assert "madonna's photos form two groups" in line
    assert all(f"madonna/{p.name}" in line for p in mixed)
    shown = json.loads(facerec("gallery", "show", path, "--json").stdout)
    groups = next(p for p in shown["people"] if p["name"] == "madonna")["two_groups"]["groups"]
    assert {tuple(sorted(g)) for g in groups} == {tuple(sorted(f"madonna/{p.name}" for p in part)) for part in (mixed[:3], mixed[3:])}


def test_remove_and_rename_through_the_cli(four_file: Path, tmp_path: Path) -> None:
    before = Gallery.load(four_file)
    source = next(s for s in before.sources if s.startswith("elton_john/"))
    out = tmp_path / "edited.safetensors"
    original = four_file.read_bytes()
    result = facerec("gallery", "remove", four_file, "--photo", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert four_file.read_bytes() == original  # -o leaves the original alone
    assert source not in Gallery.load(out).sources
    assert facerec("gallery", "remove", out, "jerry_seinfeld").exit_code == 0
    assert facerec("gallery", "rename", out, "mindy_kaling", "Mindy Kaling").exit_code == 0
    edited = Gallery.load(out)
    assert edited.people == sorted(["elton_john", "madonna", "Mindy Kaling"])
    assert len(edited.names) == len(before.names) - 1 - before.names.count("jerry_seinfeld")
    merged = facerec("gallery", "rename", out, "elton_john", "madonna", "--merge")
    assert merged.exit_code == 0 and "two groups" in merged.stderr, merged.output


def test_the_edit_workflows_return_reports_and_print_nothing(four_file: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The workflows behind the commands (facerec_cli.gallery_workflows) are plain functions: they return
    what happened and leave printing to the command (#31)."""
    from facerec_cli.gallery_workflows import remove, rename, save_edit

    before, removal = remove(four_file, photo=next(s for s in Gallery.load(four_file).sources if s.startswith("madonna/")))
    assert removal.whose == "madonna" and removal.left == before.names.count("madonna") - 1 and removal.touched == ["madonna"]
    out = tmp_path / "edited.safetensors"
    report = save_edit(before, removal.after, removal.touched, out)
    assert report.path == out and Gallery.load(out) == removal.after and report.rule_before == report.rule_after
    _, renaming = rename(out, "elton_john", "madonna", merge=True)
    assert (renaming.old, renaming.new, renaming.merged) == ("elton_john", "madonna", removal.left)
    assert capfd.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------ push (moto over HTTP)


def test_push_uploads_the_gallery_alone_and_the_function_uses_it_next(
    data: Path, four_file: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.test_cloud_cli import _destroy, _new_settings, _use, _user_environment

    from facerec_cli.infra.clients import Clients
    from lambdas import warm
    from lambdas.env import RecognitionEnv

    _user_environment(monkeypatch, moto_url, tmp_path)
    settings = _new_settings(moto_url)
    _use(monkeypatch, settings)
    monkeypatch.setenv("AWS_REGION", settings.region)  # the handlers' clients
    monkeypatch.setattr(warm, "_state", {})
    n = settings.names
    try:
        deployed = facerec("bootstrap", "--skip-images", "--gallery", four_file)
        assert deployed.exit_code == 0, deployed.output
        s3 = Clients.from_settings(settings).s3
        env = RecognitionEnv(n.output_bucket, f"s3://{n.details_bucket}/{n.gallery_key}", "casia-webface", None, "cpu", False, details_bucket=n.details_bucket)
        probe = photos_of(data, ADDED, 1, split="val")[0]
        assert warm.recogniser(env).recognise_file(probe).name != ADDED  # not enrolled yet

        added = facerec("gallery", "add", four_file, data / "5celeb" / "train" / ADDED, "--to-cloud")
        assert added.exit_code == 0, added.output
        assert "uses it from its next invocation" in added.stderr
        body = s3.get_object(Bucket=n.details_bucket, Key=n.gallery_key)["Body"].read()
        assert body == four_file.read_bytes()
        assert warm.recogniser(env).recognise_file(probe).name == ADDED  # the next invocation reloads it (ETag)

        again = facerec("gallery", "push", four_file)
        assert again.exit_code == 0 and "holds this gallery already" in again.stderr, again.output
        same = facerec("bootstrap", "--skip-images", "--gallery", four_file)
        assert same.exit_code == 0 and "No changes" in same.stdout, same.output  # pushed as bootstrap writes it

        g = Gallery.load(four_file)
        vgg = tmp_path / "vgg.safetensors"
        Gallery(weights="vggface2", embeddings=g.embeddings, names=g.names, sources=g.sources, recipe=g.recipe).save(vgg)
        for path, message in [(vgg, "embeds faces with casia-webface"), (data / "noface" / "noface_01_coins.png", "not a facerec gallery")]:
            refused = facerec("gallery", "push", path)
            assert refused.exit_code != 0 and message in " ".join(error_lines(refused)), refused.output
        assert s3.get_object(Bucket=n.details_bucket, Key=n.gallery_key)["Body"].read() == body  # untouched
        vgg_before = vgg.read_bytes()
        refused = facerec("gallery", "rename", vgg, "madonna", "M", "--to-cloud")
        assert_refused(refused, vgg, vgg_before, "embeds faces with casia-webface")  # checked before the file changes

        nowhere = facerec("gallery", "push", four_file, "--prefix", "nothing-here")
        assert nowhere.exit_code != 0 and "belongs to another deployment" in " ".join(error_lines(nowhere)), nowhere.output
    finally:
        _destroy(settings)


def test_enroll_warns_of_two_people_in_one_folder(data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    folders = {"madonna": photos_of(data, "madonna", 2) + photos_of(data, ADDED, 2), "jerry_seinfeld": photos_of(data, "jerry_seinfeld", 4)}
    for person, sources in folders.items():
        (photos / person).mkdir(parents=True)
        for p in sources:
            shutil.copy(p, photos / person / p.name)
    result = facerec("enroll", photos, "-o", tmp_path / "g.safetensors")
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stderr.splitlines() if "two groups" in ln]
    assert line.startswith("warning: madonna's photos form two groups")
