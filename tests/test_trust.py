"""Names people can trust (#30): names checked and normalised wherever they enter, files derived from any
name safe, gallery writes that never destroy, photo errors that say what happened, and a calibration
that a few mislabelled photos cannot steer; on real photos (5celeb, the Hamilton enrolment) and the
Hamilton clip, through the CLI."""

from __future__ import annotations

import math
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.core import gallery_edit, names, openset
from lambdas.core.enroll import embed_photos, find_photos
from lambdas.core.errors import GalleryError
from lambdas.core.gallery import Gallery
from tests.cli_run import error_lines, facerec, wide  # noqa: F401  (wide: autouse fixture)

NFD = unicodedata.normalize("NFD", "José Müller")
NFC = unicodedata.normalize("NFC", "José Müller")


def photos_of(data: Path, person: str, count: int, split: str = "train") -> list[Path]:
    return sorted((data / "5celeb" / split / person).iterdir())[:count]


def make_photos(root: Path, folders: dict[str, list[Path]]) -> Path:
    for person, sources in folders.items():
        (root / person).mkdir(parents=True)
        for p in sources:
            shutil.copy(p, root / person / p.name)
    return root


# ------------------------------------------------------------------------------------------ 1. names


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a/b", "/"), ("a\\b", "/"), ("..", "/"), (".", "/"), ("unknown-5", "unknown-1"), ("Unknown-12", "unknown-1"),
        ("unknown", "unknown"), ("Ann\u200bSmith", "invisible"), ("Ann\nSmith", "control"), ("x" * 101, "at most 100"), ("  ", "empty"),
    ],
)  # fmt: skip
def test_bad_names_are_refused_saying_why(name: str, why: str) -> None:
    with pytest.raises(GalleryError, match=why.replace("\\", "\\\\")):
        names.person_name(name)


def test_a_name_is_one_person_however_it_was_typed(data: Path, tmp_path: Path) -> None:
    """A folder named in NFD (as macOS writes names) and `gallery add -p` typed in NFC are one person; a
    name differing only by case is refused unless merged; reserved and path-like names never enter."""
    photos = make_photos(tmp_path / "photos", {NFD: photos_of(data, "madonna", 3), "jerry": photos_of(data, "jerry_seinfeld", 3)})
    g = tmp_path / "g.safetensors"
    assert facerec("enroll", photos, "-o", g).exit_code == 0
    assert Gallery.load(g).people == sorted([NFC, "jerry"])  # stored NFC
    added = facerec("gallery", "add", g, photos_of(data, "madonna", 4)[3], "-p", NFC)
    assert added.exit_code == 0, added.output
    assert "added 1 photo of José Müller: 4 in all" in added.stderr and Gallery.load(g).people == sorted([NFC, "jerry"])

    before = g.read_bytes()
    for args, message in [
        (("gallery", "add", g, photos_of(data, "madonna", 5)[4], "-p", "josé müller"), "differs from 'José Müller' only by case"),
        (("gallery", "rename", g, "jerry", "unknown-5"), "cannot be a person's name"),
        (("gallery", "rename", g, "jerry", "a/b"), "cannot hold /"),
        (("gallery", "rename", g, "jerry", "JOSÉ MÜLLER"), "only by case: pass --merge"),
    ]:
        refused = facerec(*args)
        assert refused.exit_code != 0 and message in " ".join(error_lines(refused)), refused.output
        assert g.read_bytes() == before

    merged = facerec("gallery", "rename", g, "jerry", "JOSÉ MÜLLER", "--merge")
    assert merged.exit_code == 0, merged.output
    assert Gallery.load(g).people == [NFC]  # merged under the spelling already enrolled

    clash = make_photos(tmp_path / "clash", {"Madonna": photos_of(data, "madonna", 1), "madonna": photos_of(data, "madonna", 2)[1:]})
    refused = facerec("enroll", clash, "-o", tmp_path / "c.safetensors")
    assert refused.exit_code != 0 and "differ only by case" in " ".join(error_lines(refused)), refused.output
    reserved = make_photos(tmp_path / "reserved", {"unknown-2": photos_of(data, "madonna", 1)})
    refused = facerec("enroll", reserved, "-o", tmp_path / "r.safetensors")
    assert refused.exit_code != 0 and "unknown-2" in " ".join(error_lines(refused)) and "rename the folder" in refused.stderr


def test_a_legacy_name_with_a_slash_annotates_safely(data: Path, hamilton_gallery: Any, tmp_path: Path) -> None:
    """A gallery made before names were checked (or converted from a course data.pt) may hold `a/b`:
    `identify --timeline --annotate` writes its best view as a plain file in the folder."""
    _, gallery, _ = hamilton_gallery
    odd = Gallery(weights=gallery.weights, embeddings=gallery.embeddings, names=[n.replace("lin_manuel_miranda", "Lin/Manuel")
                  for n in gallery.names], sources=gallery.sources, recipe=gallery.recipe)  # fmt: skip
    path = tmp_path / "odd.safetensors"
    odd.save(path)
    views = tmp_path / "views"
    done = facerec("identify", data / "videos" / "hamilton_miranda_lacamoire_10s.mp4", "-g", path, "--timeline", "--annotate", views)
    assert done.exit_code == 0, done.output
    written = sorted(p.name for p in views.iterdir())
    assert "hamilton_miranda_lacamoire_10s_Lin_Manuel.jpg" in written and all(p.is_file() for p in views.iterdir())


# ------------------------------------------------------------------------------------------ 5. writes never destroy


def test_enroll_never_destroys_what_is_at_its_output(data: Path, tmp_path: Path, celeb_gallery: Any) -> None:
    photos = make_photos(tmp_path / "photos", {"madonna": photos_of(data, "madonna", 2)})
    g = tmp_path / "g.safetensors"
    shutil.copy(celeb_gallery[0], g)
    before = g.read_bytes()
    refused = facerec("enroll", photos, "-o", g)
    assert refused.exit_code != 0 and "is a gallery already: pass --force" in " ".join(error_lines(refused)), refused.output
    assert g.read_bytes() == before
    forced = facerec("enroll", photos, "-o", g, "--force")
    assert forced.exit_code == 0, forced.output
    assert Gallery.load(g).people == ["madonna"]

    folder = tmp_path / "folder"
    folder.mkdir()
    onto = facerec("enroll", photos, "-o", folder)
    assert onto.exit_code != 0 and len(error_lines(onto)) == 1 and "is a folder" in error_lines(onto)[0], onto.output
    assert "Traceback" not in onto.output and list(folder.iterdir()) == [] and not list(tmp_path.glob("*.tmp"))

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for extra in ([], ["--force"]):
        refused = facerec("enroll", photos, "-o", notes, *extra)
        assert refused.exit_code != 0 and "exists and is not a gallery" in " ".join(error_lines(refused)), refused.output
        assert notes.read_text() == "my notes\n"


def test_an_edit_never_writes_over_a_file_that_is_not_a_gallery(celeb_gallery: Any, tmp_path: Path) -> None:
    g = tmp_path / "g.safetensors"
    shutil.copy(celeb_gallery[0], g)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    refused = facerec("gallery", "rename", "-g", g, "madonna", "Madonna Ciccone", "-o", notes)
    assert refused.exit_code != 0 and "exists and is not a gallery" in " ".join(error_lines(refused)), refused.output
    assert notes.read_text() == "my notes\n"
    onto = facerec("gallery", "rename", "-g", g, "madonna", "Madonna Ciccone", "-o", tmp_path)
    assert onto.exit_code != 0 and "is a folder" in " ".join(error_lines(onto)) and "Traceback" not in onto.output


def test_saving_over_a_folder_leaves_nothing_behind(celeb_gallery: Any, tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="is a folder"):
        celeb_gallery[1].save(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ 6. messages


def test_bad_photos_are_reported_once_as_what_they_are(data: Path, tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", {"madonna": photos_of(data, "madonna", 2)})
    (photos / "madonna" / "empty.jpg").write_bytes(b"")
    (photos / "madonna" / "text.jpg").write_text("not a photo\n")
    real = photos_of(data, "madonna", 3)[2].read_bytes()
    (photos / "madonna" / "cut.jpg").write_bytes(real[: len(real) // 4])
    done = facerec("enroll", photos, "-o", tmp_path / "g.safetensors")
    assert done.exit_code == 0, done.output
    lines = done.stderr.splitlines()

    def about(name: str) -> str:
        (line,) = [ln for ln in lines if f"madonna/{name}" in ln]  # once
        assert line.count(name) == 1 and "no face found" not in line and "video" not in line, line
        return line

    assert "the file is empty (0 bytes); replace the photo" in about("empty.jpg")
    assert "not an image" in about("text.jpg")
    assert "damaged or cut short" in about("cut.jpg")
    assert "2 faces of 1 person (madonna)" in done.stderr


# ------------------------------------------------------------------------------------------ 8. calibration


def _plant(names_: list[str], sources: list[str], moves: dict[str, str]) -> list[str]:
    """Names with one photo of each key person labelled as the value person (a planted mislabel)."""
    out = list(names_)
    for wrong_of, labelled in moves.items():
        out[next(i for i, n in enumerate(names_) if n == wrong_of)] = labelled
    return out


MOVES = {"madonna": "jerry_seinfeld", "elton_john": "madonna", "mindy_kaling": "ben_afflek"}


def test_a_few_mislabelled_photos_do_not_steer_the_calibration(celeb_gallery: Any, data: Path, encoder: Any) -> None:
    """Three real photos filed under the wrong person (5celeb/train): today's calibration tightened the
    threshold from 1.07 to 0.955 for them, and answered some of val's true faces unknown. Flagged as
    likely mislabels, they stay enrolled but are left out, and the rule is the clean gallery's."""
    _, clean = celeb_gallery
    planted = _plant(clean.names, clean.sources, MOVES)
    naive = openset.calibrate(clean.embeddings, clean.names, clean.sources)  # the clean gallery's own rule
    cal = openset.calibrate(clean.embeddings, planted, clean.sources)
    assert cal.calibrated and cal.rule == naive.rule
    assert len(cal.left_out) == 3 and {s.split("/")[0] for s in cal.left_out} == set(MOVES)

    gallery = Gallery(weights=clean.weights, embeddings=clean.embeddings, names=planted, sources=clean.sources, recipe=clean.recipe)
    gallery.calibrate()
    val, _ = embed_photos(find_photos(data / "5celeb" / "val"), encoder)
    matches = gallery.match(val.embeddings)
    assert [m.name for m in matches] == val.names  # every left-out true face still named


def test_enroll_says_how_many_photos_calibration_left_out(data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(data / "5celeb" / "train", photos)
    for wrong_of, labelled in MOVES.items():
        moved = sorted((photos / wrong_of).iterdir())[0]
        moved.rename(photos / labelled / moved.name)
    done = facerec("enroll", photos, "-o", tmp_path / "g.safetensors")
    assert done.exit_code == 0, done.output
    text = " ".join(done.stderr.split())
    assert "threshold 1.07" in text and "3 photos left out of the calibration as likely mislabelled" in text
    assert Gallery.load(tmp_path / "g.safetensors").threshold == pytest.approx(1.07)


# ------------------------------------------------------------------------------------------ 4. one match is not a name


def _observations(result: Any) -> list[Any]:
    from lambdas.core.results import unpack_embedding
    from lambdas.core.face_groups import Observation

    return [Observation(frame=f.frame, t=f.t, box=list(f.box), prob=f.prob, name=f.name, distance=f.distance, nearest="",
                        embedding=unpack_embedding(f.embedding or "").astype(np.float16), reason=f.reason) for f in result.faces]  # fmt: skip


def test_one_close_match_does_not_name_a_whole_group(celeb_gallery: Any, hamilton_gallery: Any, data: Path) -> None:
    """The crowd clip's largest stranger group (one pedestrian, several frames), with one of its faces
    matched to an enrolled person as a gallery with a look-alike did (1.026 in the issue; none of the
    test data's galleries holds a look-alike of these pedestrians, so the match is planted on a real
    observation): the group stays a stranger and the video's answer stays unknown. The Hamilton clip,
    where Lacamoire's group has 1 of its 2 faces matched, keeps both names."""
    from lambdas.core.people import groups
    from lambdas.core.recognise import Recogniser
    from lambdas.core.face_groups import timeline_result
    from lambdas.core.timeline import recognise_timeline

    crowd = recognise_timeline(Recogniser(celeb_gallery[1]), data / "videos" / "crowd_unlabeled_4s.mp4")
    assert crowd.name == "unknown"
    largest = max((g for g in groups(crowd) if not g.known), key=lambda g: len(g.faces))
    assert len(largest.faces) >= 4
    obs = _observations(crowd)
    planted = obs[largest.faces[0]]
    planted.name, planted.distance, planted.reason = "elton_john", 1.026, None
    again = timeline_result(crowd.video, obs, frames=crowd.frames, model=crowd.model, fps=2.0, duration=None)
    assert again.name == "unknown" and all(p.person != "elton_john" for p in again.timeline.people)  # type: ignore[union-attr]
    assert [f.reason for f in again.faces if f.frame == planted.frame and f.box == planted.box] == [openset.UNSUPPORTED]

    hamilton = recognise_timeline(Recogniser(hamilton_gallery[1]), data / "videos" / "hamilton_miranda_lacamoire_10s.mp4")
    assert {p.person for p in hamilton.timeline.people if p.known} == {"alex_lacamoire", "lin_manuel_miranda"}  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ 4. the reference set


@pytest.fixture(scope="module")
def reference(encoder: Any) -> np.ndarray:
    from lambdas.core.reference import cached_reference_faces, reference_faces

    faces = reference_faces(encoder)
    assert faces.shape == (100, 512)  # every face of scikit-image's LFW subset is found
    np.testing.assert_array_equal(cached_reference_faces(encoder), faces)  # what enroll takes from the weights cache
    return faces


def test_a_small_gallery_is_calibrated_against_reference_faces(data: Path, encoder: Any, reference: np.ndarray, tmp_path: Path) -> None:
    """The Hamilton enrolment (2 people, one with a single photo) fell back to the default rule; with the
    reference faces it is calibrated, keeps them through save, load and edits, and still names the clip's
    people while the crowd's stay unknown."""
    from lambdas.core.enroll import build_gallery
    from lambdas.core.recognise import Recogniser

    gallery, _ = build_gallery(data / "enroll", encoder, reference=reference)
    cal = gallery.calibration
    assert cal is not None and cal.calibrated and cal.reference == 100 and cal.stranger_probes == 100
    assert cal.strangers_rejected >= 1 - openset.STRANGER_BUDGET and gallery.margin is not None and gallery.reference_rule
    path = tmp_path / "g.safetensors"
    gallery.save(path)
    loaded = Gallery.load(path)
    assert loaded.reference_rule and loaded.reference is not None and np.array_equal(loaded.reference, gallery.reference)
    assert loaded == gallery and loaded.threshold == gallery.threshold
    edited = gallery_edit.renamed(loaded, "alex_lacamoire", "Alex Lacamoire")
    assert edited.reference is not None and edited.reference_rule
    # A reference face as a probe: the other reference faces stand as near as anyone enrolled.
    assert all(m.name == "unknown" for m in loaded.match(reference[:10]))
    recogniser = Recogniser(loaded)
    assert recogniser.recognise_file(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4").name == "lin_manuel_miranda"
    assert recogniser.recognise_file(data / "videos" / "crowd_unlabeled_4s.mp4").name == "unknown"


def same_person_groups(faces: np.ndarray, within: float = 0.95) -> np.ndarray:
    """A group label per face: faces closer than ``within`` (same-person distances) are one person. LFW
    repeats people (12 pairs of the reference faces lie closer than 0.9)."""
    label = np.arange(len(faces))
    close = np.argwhere(openset.distance_of_cosine(faces @ faces.T) < within)
    for _ in range(len(faces)):  # until no pair of close faces has two labels
        merged = label.copy()
        np.minimum.at(merged, close[:, 0], label[close[:, 1]])
        if np.array_equal(merged, label):
            break
        label = merged
    return label


DRAWS = 10


def test_a_calibrated_rule_unlike_the_default_holds_the_stranger_budget_on_left_out_faces(celeb_gallery: Any, data: Path, encoder: Any,
                                                                                           reference: np.ndarray) -> None:  # fmt: skip
    """5celeb/train alone calibrates to exactly the default (a calibrate() that returned the default would
    pass). Here it is enrolled with a crowd: half the reference faces (drawn by person, 10 draws) as
    people with one photo each; the rule gains a margin. The faces left out of the calibration are its
    strangers, through ``Gallery.match`` under the calibrated rule: the other half of the reference
    faces (never enrolled) against the whole gallery; the Hamilton enrolment's photos likewise; and each
    5celeb person's val photos and the train photos calibration did not use (each person's after the
    first MAX_PROBES_PER_PERSON) against the gallery without that person. At most the stranger budget of
    them is named, and val's photos of the enrolled people are named right (or, rarely, unknown: never
    someone else).

    Measured (195 stranger photos, 1427 answers over the draws): while calibration's strangers were the
    25 photos of the 5 people alone, 2 draws kept the default and the others margins 0.105-0.19, and 82
    answers were named (5.7%, nearly twice the budget: this test failed, at draw 0's default rule
    first); with the one-photo people as stranger probes too (64-87 of them; margins 0.19-0.285), 6
    (0.4%), and 247 of 250 val answers right (one Ben Affleck photo, 0.961 from his centroid, answered
    unknown as ambiguous in 3 draws)."""
    from lambdas.core.gallery_edit import without_person

    _, clean = celeb_gallery
    val, _ = embed_photos(find_photos(data / "5celeb" / "val"), encoder)
    hamilton, _ = embed_photos(find_photos(data / "enroll"), encoder)
    group = same_person_groups(reference)
    people = sorted(set(clean.names))
    unused = [i for p in people for i in [k for k, n in enumerate(clean.names) if n == p][openset.MAX_PROBES_PER_PERSON :]]
    named = answers = right = 0
    strangers_seen: set[str] = set()
    for draw in range(DRAWS):
        enrolled_groups = np.random.default_rng(draw).permutation(np.unique(group))[: len(np.unique(group)) // 2]
        crowd = np.flatnonzero(np.isin(group, enrolled_groups))
        out = np.flatnonzero(~np.isin(group, enrolled_groups))
        gallery = Gallery(weights=clean.weights, embeddings=np.concatenate([clean.embeddings, reference[crowd]]),
                          names=clean.names + [f"ref_{i:03d}" for i in crowd], recipe=clean.recipe)  # fmt: skip
        cal = gallery.calibrate()
        assert cal.calibrated and gallery.rule() != openset.OpenSetRule() and gallery.margin > 0

        probes = [(gallery, reference[out], [f"ref_{i:03d}" for i in out]), (gallery, hamilton.embeddings, hamilton.sources)]
        for person in people:
            rest = without_person(gallery, person)
            rest.threshold, rest.margin = gallery.threshold, gallery.margin  # the calibrated rule, this person a stranger
            mine = [i for i in unused if clean.names[i] == person]
            probes.append((rest, np.concatenate([val.embeddings[[i for i, n in enumerate(val.names) if n == person]], clean.embeddings[mine]]),
                           [f"val/{s}" for s, n in zip(val.sources, val.names) if n == person] + [f"train/{clean.sources[i]}" for i in mine]))  # fmt: skip
        for g, faces, sources in probes:
            named += sum(m.name != "unknown" for m in g.match(faces))
            answers += len(faces)
            strangers_seen.update(sources)

        matches = gallery.match(val.embeddings)
        assert all(m.name in (n, "unknown") for m, n in zip(matches, val.names)), [(m.name, n) for m, n in zip(matches, val.names)]
        right += sum(m.name == n for m, n in zip(matches, val.names))

    # The allowance for the sample: a rule whose true rate were exactly the budget would name more than
    # the budget of a finite sample about half the time. Allowed: the budget plus 1.645 standard errors
    # (a one-sided 95% binomial bound), counting each distinct stranger photo once (the draws answer the
    # same photos again, so they are not independent samples): 3% + 2.0% for the 195 photos.
    budget = openset.STRANGER_BUDGET
    allowance = 1.645 * math.sqrt(budget * (1 - budget) / len(strangers_seen))
    rate = named / answers
    assert rate <= budget + allowance, f"{named} of {answers} stranger answers named ({rate:.1%}): budget {budget:.0%} + {allowance:.1%}"
    assert right >= 0.98 * DRAWS * len(val.names), f"{right} of {DRAWS * len(val.names)} val answers right"


def test_enrolling_one_photo_says_there_was_nothing_to_check_names_against(data: Path, tmp_path: Path) -> None:
    """One person, one photo: calibrated on the reference faces alone; the summary used to read "named 0.0%
    of 0 photos", as if every name had failed."""
    import shutil

    from tests.cli_run import facerec

    person = tmp_path / "photos" / "madonna"
    person.mkdir(parents=True)
    shutil.copy(sorted((data / "5celeb" / "train" / "madonna").iterdir())[0], person)
    result = facerec("enroll", str(tmp_path / "photos"), "-o", str(tmp_path / "g.safetensors"))
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "no person with a second photo to check names against" in text and "of 0 photos" not in text
