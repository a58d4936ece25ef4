"""Open-set decisions on real faces: the gallery's calibrated rule (threshold and margin), the reasons an
unknown face carries, faces not to be trusted, and what enroll reports about each person's photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from facerec_cli.cli.app import app
from lambdas.core import openset
from lambdas.core.enroll import build_gallery
from lambdas.core.faces import BLURRED, PROFILE, TOO_SMALL, Detection, quality_issue, yaw
from lambdas.core.gallery import Gallery
from lambdas.core.images import load_image
from lambdas.core.media import Frame
from lambdas.core.recognise import Recogniser
from lambdas.core.results import UNKNOWN


def test_enrolment_calibrates_the_rule_from_its_own_photos(celeb_gallery) -> None:
    path, gallery = celeb_gallery
    cal = gallery.calibration
    assert cal is not None and cal.calibrated
    # Never looser than the default, which was chosen against real unenrolled faces.
    assert 0.7 <= gallery.threshold <= openset.DEFAULT_THRESHOLD and gallery.margin is not None
    assert cal.known_named >= 0.9 and cal.strangers_rejected >= 0.99
    assert cal.known_probes == cal.stranger_probes == 25  # 5 photos of each of the 5 people
    loaded = Gallery.load(path)  # the rule is in the file
    assert (loaded.threshold, loaded.margin) == (gallery.threshold, gallery.margin)
    assert loaded.rule() == openset.OpenSetRule(gallery.threshold, gallery.margin)


def test_too_few_people_keep_the_defaults(hamilton_gallery) -> None:
    _, gallery, _ = hamilton_gallery  # 2 people, one with a single photo
    assert gallery.calibration is not None and not gallery.calibration.calibrated
    assert gallery.threshold is None and gallery.margin is None
    assert gallery.rule() == openset.OpenSetRule(openset.DEFAULT_THRESHOLD, openset.DEFAULT_MARGIN)


def test_choose_rule_names_most_within_the_stranger_budget() -> None:
    # Known probes at 0.6-0.9, the next people far; strangers just as near (0.85-0.92), but with the next
    # people about as near: no threshold tells them apart, the margin does.
    d = {"own": np.array([0.6, 0.7, 0.8, 0.9, 1.3, 1.3, 1.3, 1.3]),
         "others": np.array([[1.3, 1.3], [1.3, 1.35], [1.25, 1.3], [1.3, 1.3],
                             [0.85, 0.87], [0.88, 0.95], [0.9, 0.93], [0.92, 0.96]])}  # fmt: skip
    known, strangers = openset.features(d)
    known = {k: v[:4] for k, v in known.items()}
    strangers = {k: v[4:] for k, v in strangers.items()}
    k = openset.accepted(known, openset._THRESHOLDS, openset._MARGINS).mean(axis=2)
    s = openset.accepted(strangers, openset._THRESHOLDS, openset._MARGINS).mean(axis=2)
    rule = openset.choose_rule(k, s, budget=0.0)
    assert rule.threshold >= 0.9 and 0.07 <= rule.margin <= 0.35
    assert [rule.reason(a, b) for a, b in zip(strangers["d1"], strangers["next"])] == [openset.AMBIGUOUS] * 4
    assert all(rule.reason(a, b, c) is None for a, b, c in zip(known["d1"], known["next"], known["d2"]))
    assert openset.OpenSetRule(1.0, 0.0).reason(0.8, 1.3, 0.82) == openset.AMBIGUOUS  # two people as near
    assert openset.OpenSetRule(0.8, 0.0).reason(0.9, 1.3) == openset.BEYOND_THRESHOLD
    # A known probe nearer someone else than its own person is never counted as named right.
    wrong = openset.features({"own": np.array([0.8]), "others": np.array([[0.7, 1.3]])})[0]
    assert not openset.accepted(wrong, openset._THRESHOLDS, openset._MARGINS).any()


def test_a_look_alike_between_two_people_is_ambiguous(celeb_gallery) -> None:
    _, gallery = celeb_gallery
    g = Gallery(weights=gallery.weights, embeddings=gallery.embeddings, names=gallery.names, threshold=1.07, margin=0.1)
    c = g.centroids
    between = c[0] + c[1]  # as near to the first two people as can be
    [m] = g.match(between / np.linalg.norm(between))
    assert m.name == UNKNOWN and m.reason == openset.AMBIGUOUS and m.distance <= 1.07
    assert m.second is not None and m.second - m.distance < openset.SECOND_GAP  # the next five hide it; the second does not
    [own] = g.match(c[2])
    assert own.name == g.people[2] and own.reason is None and own.next_mean - own.distance >= 0.1


def test_enroll_reports_a_mislabelled_photo_and_the_rule(data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(data / "5celeb" / "train", photos)
    intruder = sorted((data / "5celeb" / "val" / "madonna").iterdir())[0]
    shutil.copy(intruder, photos / "ben_afflek" / "not_ben.jpg")
    result = CliRunner().invoke(app, ["enroll", str(photos), "-o", str(tmp_path / "g.safetensors")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "ben_afflek/not_ben.jpg" in text  # the outlier, named in ben_afflek's row
    assert "open-set rule calibrated on the gallery's own photos: threshold" in text
    cal = Gallery.load(tmp_path / "g.safetensors")
    assert cal.threshold is not None and cal.margin is not None
    ben = next(p for p in build_gallery(photos, _encoder())[0].calibration.people if p.person == "ben_afflek")
    assert ben.outliers == ["ben_afflek/not_ben.jpg"] and ben.worst > openset.OUTLIER_DISTANCE


def _encoder():
    from lambdas.core.recognise import FaceEncoder

    return FaceEncoder()


def test_blurred_and_tiny_faces_are_unknown_with_a_reason(celeb_gallery, data: Path) -> None:
    _, gallery = celeb_gallery
    recogniser = Recogniser(gallery)
    photo = data / "5celeb" / "val" / "jerry_seinfeld"
    image = load_image(sorted(photo.iterdir())[1])
    sharp = recogniser.recognise_loaded("sharp", 1, [Frame(0, 0.0, image)].__getitem__)[0]
    assert sharp.name == "jerry_seinfeld" and sharp.faces[0].reason is None
    blurred = image.filter(ImageFilter.GaussianBlur(4 * max(image.size) / 250))  # still detected, no longer sharp
    result = recogniser.recognise_loaded("blurred", 1, [Frame(0, 0.0, blurred)].__getitem__)[0]
    assert result.status == UNKNOWN and result.faces and {f.reason for f in result.faces} == {BLURRED}
    face = sharp.faces[0]
    scale = 14 / (face.box[2] - face.box[0])  # the face 14 px wide: too small to be trusted
    tiny = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    canvas = Image.new("RGB", (200, 200), (128, 128, 128))
    canvas.paste(tiny, (10, 10))
    small = recogniser.recognise_loaded("tiny", 1, [Frame(0, 0.0, canvas)].__getitem__)[0]
    assert small.faces and all(f.name == UNKNOWN for f in small.faces)  # found, and refused for its size alone
    assert {f.reason for f in small.faces} == {TOO_SMALL}
    dict_faces = json.loads(result.to_json())["faces"]
    assert dict_faces[0]["reason"] == BLURRED and dict_faces[0]["name"] == UNKNOWN


def test_profile_geometry() -> None:
    # Eyes 40 px apart; the nose at their midpoint (frontal), beside one eye, and far beyond it.
    def det(nose_x: float) -> Detection:
        return Detection((0, 0, 100, 120), 0.99, ((30, 50), (70, 50), (nose_x, 75), (35, 95), (65, 95)))

    assert yaw(det(50)) == 0 and abs(yaw(det(80))) == pytest.approx(0.75)
    image = Image.effect_noise((100, 120), 60).convert("RGB")  # sharp texture: only the pose decides
    assert quality_issue(image, det(50)) is None
    assert quality_issue(image, det(100)) is None  # 1.25 eye distances off the middle: three-quarter
    assert quality_issue(image, det(120)) == PROFILE  # 1.75: the nose far outside the eyes
    assert quality_issue(image, Detection((0, 0, 15, 18), 0.99, None)) == TOO_SMALL


def test_unknown_faces_carry_why(celeb_gallery, data: Path) -> None:
    _, gallery = celeb_gallery
    result = Recogniser(gallery).recognise_file(data / "videos" / "crowd_unlabeled_4s.mp4")
    assert result.status == UNKNOWN and result.faces
    assert all(f.reason in (openset.BEYOND_THRESHOLD, openset.AMBIGUOUS, TOO_SMALL, BLURRED, PROFILE) for f in result.faces)
