"""Naming strangers after the fact and searching stored results (issue #23 parts 2-3), on the Hamilton
clip recognised with a gallery of Lin-Manuel Miranda alone, so that Alex Lacamoire (at the piano,
0-0.5 s) is the stranger ``unknown-1``; through the CLI, from a folder of results and from a moto
deployment's buckets (details in ``<prefix>-details``, and the older layout with everything in the
output bucket)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.core import people, search
from lambdas.core.gallery import Gallery
from lambdas.core.results import Result, unpack_embedding
from tests.cli_run import error_lines, facerec, wide  # noqa: F401  (wide: autouse fixture)

CLIP = "hamilton_miranda_lacamoire_10s.mp4"
SAMPLED = "hamilton_sampled.mp4"  # the same clip without a timeline (3 sampled frames)
LACAMOIRE = "alex_lacamoire"
MIRANDA = "lin_manuel_miranda"



@pytest.fixture(scope="module")
def miranda_gallery(data: Path, encoder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lambdas.core.enroll import build_gallery

    photos = tmp_path_factory.mktemp("enroll")
    shutil.copytree(data / "enroll" / MIRANDA, photos / MIRANDA)
    gallery, _ = build_gallery(photos, encoder)
    path = tmp_path_factory.mktemp("galleries") / "miranda.safetensors"
    gallery.save(path)
    return path


@pytest.fixture(scope="module")
def recognised(data: Path, miranda_gallery: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The clip's results as `facerec identify --json` prints them: with a timeline, sampled, and an
    old result (the sampled one without its embeddings, as results were before they stored them)."""
    clip = data / "videos" / CLIP
    timeline = facerec("identify", clip, "--gallery", miranda_gallery, "--timeline", "--json")
    sampled = facerec("identify", clip, "--gallery", miranda_gallery, "--json")
    assert timeline.exit_code == 0 and sampled.exit_code == 0, timeline.stderr + sampled.stderr
    old = json.loads(sampled.stdout)
    old["video"] = "old.mp4"
    for face in old["faces"]:
        del face["embedding"]
    renamed = json.loads(sampled.stdout)
    renamed["video"] = SAMPLED
    return {"hamilton_miranda_lacamoire_10s": timeline.stdout.strip(), "hamilton_sampled": json.dumps(renamed), "old": json.dumps(old)}


@pytest.fixture
def results_dir(recognised: dict[str, str], tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    for stem, text in recognised.items():
        (folder / f"{stem}.json").write_text(text + "\n")
        (folder / f"{stem}.txt").write_text(json.loads(text)["name"])
    return folder


@pytest.fixture
def gallery_copy(miranda_gallery: Path, tmp_path: Path) -> Path:
    path = tmp_path / "gallery.safetensors"
    shutil.copy(miranda_gallery, path)
    return path


def read(folder: Path, stem: str = "hamilton_miranda_lacamoire_10s") -> Result:
    return Result.from_dict(json.loads((folder / f"{stem}.json").read_text()))


# ------------------------------------------------------------------------------------------ what results store


def test_every_face_stores_its_embedding_compactly(recognised: dict[str, str]) -> None:
    result = Result.from_dict(json.loads(recognised["hamilton_miranda_lacamoire_10s"]))
    assert result.faces and all(f.embedding and len(f.embedding) == 1368 for f in result.faces)
    vectors = np.stack([unpack_embedding(f.embedding or "") for f in result.faces])
    assert vectors.shape == (len(result.faces), 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    # The JSON round trip keeps them; an old result reads and writes without the key, as before.
    assert Result.from_dict(json.loads(result.to_json())).faces == result.faces
    old = json.loads(recognised["old"])
    assert all("embedding" not in f for f in Result.from_dict(old).to_dict()["faces"])


def test_the_stranger_groups_are_the_timelines_rows(results_dir: Path) -> None:
    """Lacamoire is the timeline's unknown-1; `people list` names the groups as the timeline does, and
    groups the strangers of a result without a timeline the same way."""
    result = read(results_dir)
    rows = {p.person: p.ranges for p in result.timeline.people}  # type: ignore[union-attr]
    assert rows["unknown-1"] == [[0.0, pytest.approx(0.5, abs=0.01)]] and LACAMOIRE not in rows
    listed = facerec("people", "list", CLIP, "--results", results_dir, "--json")
    assert listed.exit_code == 0, listed.stderr
    groups = {g["person"]: g for g in json.loads(listed.stdout)["people"]}
    assert {p: g["ranges"] for p, g in groups.items()} == {p: [[pytest.approx(a, abs=1e-3), pytest.approx(b, abs=1e-3)] for a, b in r]
                                                          for p, r in rows.items()}  # fmt: skip
    assert all(g["faces"] == p.detections for p in result.timeline.people for g in [groups[p.person]])  # type: ignore[union-attr]
    sampled = facerec("people", "list", SAMPLED, "--results", results_dir, "--json")
    assert [g["person"] for g in json.loads(sampled.stdout)["people"]][0] == MIRANDA


def test_people_show_gives_one_group_as_list_does(results_dir: Path) -> None:
    """`people show VIDEO GROUP`: one row of `people list` (a stranger or an enrolled person, the name
    in any case), for results with and without a timeline; an unknown group names the ones there are."""
    for video in (CLIP, SAMPLED):
        listed = {g["person"]: g for g in json.loads(facerec("people", "list", video, "--results", results_dir, "--json").stdout)["people"]}
        assert MIRANDA in listed and (video != CLIP or "unknown-1" in listed), listed
        for label in listed:
            shown = facerec("people", "show", video, label.upper(), "--results", results_dir, "--json")
            assert shown.exit_code == 0, shown.stderr
            data = json.loads(shown.stdout)
            assert data.pop("video") == video and data.pop("stem") and data == listed[label]
    rows = {p.person: p for p in read(results_dir).timeline.people}  # type: ignore[union-attr]
    human = facerec("people", "show", CLIP, "unknown-1", "--results", results_dir)
    assert human.exit_code == 0 and human.stdout.startswith(f"{CLIP}: unknown-1: {rows['unknown-1'].detections} faces at 0:00"), human.stdout
    missing = facerec("people", "show", CLIP, "unknown-99", "--results", results_dir)
    assert missing.exit_code != 0 and len(error_lines(missing)) == 1, (missing.stdout, missing.stderr)
    assert "has no group 'unknown-99'; its groups:" in missing.stderr and all(label in missing.stderr for label in rows)


# ------------------------------------------------------------------------------------------ search


def test_search_photo_finds_a_face_nobody_enrolled(results_dir: Path, miranda_gallery: Path, data: Path) -> None:
    photo = data / "enroll" / LACAMOIRE / "alex_lacamoire_01.png"
    found = facerec("search", "--photo", photo, "--results", results_dir, "--gallery", miranda_gallery, "--json")
    assert found.exit_code == 0, found.stderr
    hits = {h["video"]: h for h in map(json.loads, found.stdout.splitlines())}
    assert CLIP in hits and hits[CLIP]["ranges"][0][0] == 0.0 and hits[CLIP]["distance"] <= 1.07
    assert "old.mp4" not in hits
    human = facerec("search", "--photo", photo, "--results", results_dir, "--gallery", miranda_gallery)
    assert "1 result skipped: stored before results kept embeddings" in human.stderr, human.stderr
    # Miranda's photo is enrolled: his faces are nearer his own centroid than the photo's only when the
    # photo is not his; with his photo as the query they are found, Lacamoire's are not.
    own = facerec("search", "--photo", data / "enroll" / MIRANDA / "lin_manuel_miranda_01.png", "--results", results_dir, "--json")
    ranges = next(h for h in map(json.loads, own.stdout.splitlines()) if h["video"] == CLIP)["ranges"]
    assert any(a >= 3.0 for a, _ in ranges), ranges


def test_search_person_lists_videos_and_time_ranges(results_dir: Path) -> None:
    found = facerec("search", "--person", MIRANDA, "--results", results_dir, "--json")
    assert found.exit_code == 0, found.stderr
    hits = {h["video"]: h for h in map(json.loads, found.stdout.splitlines())}
    assert set(hits) == {CLIP, SAMPLED, "old.mp4"}  # names need no embeddings
    assert hits[CLIP]["timeline"] and hits[CLIP]["ranges"][0][0] == 0.0 and any(a <= 3.1 and b >= 6.9 for a, b in hits[CLIP]["ranges"])
    assert not hits[SAMPLED]["timeline"] and all(a == b for a, b in hits[SAMPLED]["ranges"])
    assert facerec("search", "--person", "nobody", "--results", results_dir, "--json").stdout == ""


# ------------------------------------------------------------------------------------------ label, re-identify


def test_label_a_stranger_then_reidentify(results_dir: Path, gallery_copy: Path) -> None:
    stranger = people.find_group(read(results_dir), "unknown-1").faces
    labelled = facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, "--results", results_dir)
    assert labelled.exit_code == 0, labelled.stderr
    assert f"added 2 faces of unknown-1 (on screen 0:00.0-0:00.5) in {CLIP} as {LACAMOIRE} (new)" in labelled.stderr, labelled.stderr
    gallery = Gallery.load(gallery_copy)
    assert gallery.people == [LACAMOIRE, MIRANDA] and all(s.startswith(f"{CLIP}@") for n, s in zip(gallery.names, gallery.sources) if n == LACAMOIRE)

    before = {p.name: p.read_bytes() for p in results_dir.iterdir()}
    again = facerec("results", "--reidentify", "--results", results_dir, "--gallery", gallery_copy)
    assert again.exit_code == 0, again.stderr
    assert "1 skipped: stored before results kept embeddings" in again.stderr, again.stderr
    after = read(results_dir)
    rows = {p.person: p for p in after.timeline.people}  # type: ignore[union-attr]
    assert rows[LACAMOIRE].known and rows[LACAMOIRE].first == 0.0 and rows[LACAMOIRE].ranges[0][1] >= 0.5 - 0.01
    assert len(stranger) == 2 and {after.faces[i].name for i in stranger} == {LACAMOIRE}
    assert after.name == MIRANDA and (results_dir / "hamilton_miranda_lacamoire_10s.txt").read_text() == MIRANDA
    assert (results_dir / "old.json").read_bytes() == before["old.json"]
    # The sampled result of the same clip had him as its one unknown face: named now too.
    assert {f.name for f in read(results_dir, "hamilton_sampled").faces} == {MIRANDA, LACAMOIRE}
    # Searching for him by name now finds him where he was a stranger; a second pass changes nothing.
    hits = [json.loads(line) for line in facerec("search", "--person", LACAMOIRE, "--results", results_dir, "--json").stdout.splitlines()]
    assert [h["video"] for h in hits if h["timeline"]] == [CLIP] and hits[0]["ranges"][0][0] == 0.0
    assert "0 changed" in facerec("results", "--reidentify", "--results", results_dir, "--gallery", gallery_copy).stderr


def test_label_refusals_leave_the_gallery_as_it_was(results_dir: Path, gallery_copy: Path) -> None:
    original = gallery_copy.read_bytes()
    other = Gallery(weights="vggface2", embeddings=np.eye(2, 512, dtype=np.float32), names=["a", "b"])
    other_path = gallery_copy.with_name("vgg.safetensors")
    other.save(other_path)
    cases = {
        "unknown-99": (gallery_copy, "has no group 'unknown-99'; its strangers: unknown-1"),
        MIRANDA: (gallery_copy, "is an enrolled person, not a stranger"),
        "unknown-1 ": (other_path, "recognised with casia-webface weights, the gallery holds vggface2"),
    }
    for group, (path, message) in cases.items():
        result = facerec("people", "label", CLIP, group, "Someone", "--gallery", path, "--results", results_dir)
        assert result.exit_code == 1 and len(error_lines(result)) == 1 and message in error_lines(result)[0], (group, result.stderr)
    blank = facerec("people", "label", CLIP, "unknown-1", "   ", "--gallery", gallery_copy, "--results", results_dir)
    assert blank.exit_code == 1 and "cannot be empty or only whitespace" in error_lines(blank)[0]
    old = facerec("people", "label", "old.mp4", "unknown-1", "Someone", "--gallery", gallery_copy, "--results", results_dir)
    assert old.exit_code == 1 and "no stored embedding" in error_lines(old)[0]
    missing = facerec("people", "label", "nope.mp4", "unknown-1", "Someone", "--gallery", gallery_copy, "--results", results_dir)
    assert missing.exit_code == 1 and "no result for 'nope.mp4'" in error_lines(missing)[0]
    assert gallery_copy.read_bytes() == original and Gallery.load(other_path) == other


def test_a_stranger_keeps_its_number_after_a_relabel(results_dir: Path, gallery_copy: Path) -> None:
    """After unknown-1 is named and the results re-answered, the other strangers keep their numbers (today
    unknown-2 became unknown-1), and labelling unknown-1 again is refused instead of adding another face."""
    before = {g.label: g for g in people.groups(read(results_dir)) if not g.known}
    assert {"unknown-1", "unknown-2"} <= set(before)
    assert facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, "--results", results_dir).exit_code == 0
    assert facerec("results", "--reidentify", "--results", results_dir, "--gallery", gallery_copy).exit_code == 0
    after = read(results_dir)
    strangers = {g.label: g for g in people.groups(after) if not g.known}
    assert "unknown-1" not in strangers and "unknown-2" in strangers
    for label, group in strangers.items():  # the same faces (less those now named) under the same number
        assert label in before and set(group.faces) <= set(before[label].faces), label
    rows = [p.person for p in after.timeline.people if not p.known]  # type: ignore[union-attr]
    assert sorted(rows) == sorted(strangers)  # the timeline's rows say the same
    listed = json.loads(facerec("people", "list", CLIP, "--results", results_dir, "--json").stdout)
    assert {g["person"] for g in listed["people"] if not g["known"]} == set(strangers)

    # unknown-2 is the stranger shown as unknown-2 before: labelling it says when it is on screen.
    second = facerec("people", "label", CLIP, "unknown-2", "Second Person", "--gallery", gallery_copy, "--results", results_dir,
                     "-o", gallery_copy.with_name("second.safetensors"))  # fmt: skip
    assert second.exit_code == 0 and f"of unknown-2 (on screen {people_ranges(strangers['unknown-2'])})" in second.stderr, second.stderr
    gallery = gallery_copy.read_bytes()
    again = facerec("people", "label", CLIP, "unknown-1", "Someone Else", "--gallery", gallery_copy, "--results", results_dir)
    assert again.exit_code == 1 and f"unknown-1 in {CLIP} is {LACAMOIRE} now" in error_lines(again)[0], again.stderr
    assert gallery_copy.read_bytes() == gallery
    # A second re-answer changes nothing, numbers included.
    assert "0 changed" in facerec("results", "--reidentify", "--results", results_dir, "--gallery", gallery_copy).stderr


def people_ranges(group: Any) -> str:
    from facerec_cli.render import clock_ranges

    return clock_ranges(group.ranges)


def test_search_person_ignores_case_and_suggests_names(results_dir: Path) -> None:
    found = facerec("search", "--person", MIRANDA.upper(), "--results", results_dir, "--json")
    assert {json.loads(line)["video"] for line in found.stdout.splitlines()} == {CLIP, SAMPLED, "old.mp4"}
    typo = facerec("search", "--person", "lin_manuel_mirand", "--results", results_dir)
    assert typo.exit_code == 0 and f"did you mean {MIRANDA}?" in typo.stderr, typo.stderr


def test_results_lists_a_folder_of_results(results_dir: Path) -> None:
    listed = facerec("results", "--results", results_dir, "--json")
    assert listed.exit_code == 0, listed.stderr
    assert sorted(json.loads(line)["video"] for line in listed.stdout.splitlines()) == sorted([CLIP, SAMPLED, "old.mp4"])
    human = facerec("results", "--results", results_dir)
    assert human.exit_code == 0 and CLIP in human.stdout and "3 results in" in human.stderr, human.output


def test_reidentify_rewrites_all_or_none(results_dir: Path, gallery_copy: Path) -> None:
    """One unreadable result stops the re-answer before any result is rewritten."""
    assert facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, "--results", results_dir).exit_code == 0
    (results_dir / "zz_broken.json").write_text('{"video": "broken.mp4", "faces": [')
    before = {p.name: p.read_bytes() for p in results_dir.iterdir()}
    stopped = facerec("results", "--reidentify", "--results", results_dir, "--gallery", gallery_copy)
    assert stopped.exit_code == 1 and "zz_broken.json is not a readable result" in error_lines(stopped)[0], stopped.stderr
    assert {p.name: p.read_bytes() for p in results_dir.iterdir()} == before


def test_a_results_folder_holds_the_crops_its_json_names(data: Path, miranda_gallery: Path, gallery_copy: Path, tmp_path: Path) -> None:
    """`run-local --timeline --out DIR` copies each row's best-view crop into DIR; `people list` points at
    it; after a relabel and a re-answer the named stranger's row keeps a picture (the README's lanes
    showed empty boxes)."""
    out = tmp_path / "out"
    done = facerec("run-local", data / "videos" / CLIP, "--gallery", miranda_gallery, "--timeline", "--workers", "0", "--out", out, "--json")
    assert done.exit_code == 0, done.stderr
    result = read(out)
    rows = result.timeline.people  # type: ignore[union-attr]
    assert rows and all(p.image and (out / p.image).is_file() for p in rows), [p.image for p in rows]
    listed = json.loads(facerec("people", "list", CLIP, "--results", out, "--json").stdout)
    images = {g["person"]: g["image"] for g in listed["people"]}
    assert images["unknown-1"] == str(out / next(p.image for p in rows if p.person == "unknown-1"))
    human = facerec("people", "list", CLIP, "--results", out)
    assert f"best view: {out}" in human.stdout, human.stdout
    shown = facerec("people", "show", CLIP, "unknown-1", "--results", out, "--json")
    assert json.loads(shown.stdout)["image"] == images["unknown-1"]
    assert f"best view: {images['unknown-1']}" in facerec("people", "show", CLIP, "unknown-1", "--results", out).stdout

    assert facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, "--results", out).exit_code == 0
    assert facerec("results", "--reidentify", "--results", out, "--gallery", gallery_copy).exit_code == 0
    named = next(p for p in read(out).timeline.people if p.person == LACAMOIRE)  # type: ignore[union-attr]
    assert named.image and (out / named.image).is_file()


def test_reidentify_names_what_it_rewrote_when_a_write_fails(results_dir: Path, gallery_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facerec_cli.pipeline.observe.result_store import DirStore

    assert facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, "--results", results_dir).exit_code == 0
    real_write, calls = DirStore.write, []

    def write_then_fail(self: DirStore, stem: str, result: Result) -> None:
        # A full disk on the second write: not something a test running as root can cause for real.
        calls.append(stem)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(self, stem, result)

    monkeypatch.setattr(DirStore, "write", write_then_fail)
    before = {p.name: p.read_bytes() for p in results_dir.iterdir()}
    stopped = facerec("results", "--reidentify", "--results", results_dir, "--gallery", gallery_copy)
    line = " ".join(error_lines(stopped))
    assert stopped.exit_code == 1 and f"re-answering stopped at {calls[1]}" in line and f"(1 of 2): {calls[0]}" in line, stopped.stderr
    assert (results_dir / f"{calls[0]}.json").read_bytes() != before[f"{calls[0]}.json"]  # rewritten, as the message says
    assert (results_dir / f"{calls[1]}.json").read_bytes() == before[f"{calls[1]}.json"]  # not


# ------------------------------------------------------------------------------------------ the core


def test_reanswer_keeps_untrusted_faces_unknown(recognised: dict[str, str], miranda_gallery: Path) -> None:
    result = Result.from_dict(json.loads(recognised["hamilton_miranda_lacamoire_10s"]))
    gallery = Gallery.load(miranda_gallery)
    assert not people.changed(result, people.reanswer(result, gallery))  # the same gallery: the same answer
    result.faces[0].reason, result.faces[0].name = "blurred", "unknown"
    again = people.reanswer(result, gallery)
    assert (again.faces[0].name, again.faces[0].reason) == ("unknown", "blurred")


def test_face_index_skips_old_results_and_other_models() -> None:
    rng = np.random.default_rng(0)
    query = rng.normal(size=512).astype(np.float32)
    query /= np.linalg.norm(query)

    def face(vector: np.ndarray, t: float) -> dict[str, Any]:
        vector = vector / np.linalg.norm(vector)
        return {"frame": int(t * 2), "t": t, "name": "unknown", "embedding": base64.b64encode(vector.astype("<f2").tobytes()).decode()}

    near = query + rng.normal(scale=0.02, size=512)
    items = [
        ("a", json.dumps({"video": "a.mp4", "model": "casia-webface", "faces": [face(near, 1.0), face(rng.normal(size=512), 2.0)],
                          "timeline": {"fps": 2.0, "people": []}})),
        ("b", json.dumps({"video": "b.mp4", "model": "vggface2", "faces": [face(near, 1.0)]})),
        ("c", json.dumps({"video": "c.mp4", "faces": [{"frame": 0, "t": 0.0, "name": "unknown"}]})),
        ("d", "not json"),
    ]
    index = search.FaceIndex.build(items)
    assert (len(index), index.skipped, index.unreadable, index.looked) == (3, 1, 1, 4)
    hits = search.find_face(index, query, model="casia-webface")
    assert [(h.video, h.ranges, h.faces) for h in hits] == [("a.mp4", [[1.0, 1.0]], 1)]


# ------------------------------------------------------------------------------------------ the output bucket


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI pointed at the module's moto server and away from any real AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "FACEREC_PROFILE", "FACEREC_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
                        "FACEREC_STATE_DIR": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)


def test_from_an_older_deployment(recognised: dict[str, str], gallery_copy: Path, moto_url: str, aws_env: None) -> None:
    """Deployed by a release before the details bucket: everything in the output bucket, read there."""
    import boto3

    prefix = "people-search"
    aws = ["--prefix", prefix, "--region", "us-east-1", "--endpoint-url", moto_url]
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    bucket = f"{prefix}-output"
    s3.create_bucket(Bucket=bucket)
    for stem, text in recognised.items():
        s3.put_object(Bucket=bucket, Key=f"{stem}.txt", Body=json.loads(text)["name"].encode(), Metadata={"facerec-event": f"e-{stem}"})
        s3.put_object(Bucket=bucket, Key=f"{stem}.json", Body=text.encode(), Metadata={"facerec-event": f"e-{stem}"})

    person = facerec("search", "--person", MIRANDA, *aws, "--json")
    assert person.exit_code == 0, person.stderr
    assert {json.loads(line)["video"] for line in person.stdout.splitlines()} == {CLIP, SAMPLED, "old.mp4"}
    labelled = facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, *aws)
    assert labelled.exit_code == 0, labelled.stderr
    again = facerec("results", "--reidentify", "--gallery", gallery_copy, *aws, "--json")
    assert again.exit_code == 0, again.stderr
    assert sorted(json.loads(line)["video"] for line in again.stdout.splitlines()) == [CLIP, SAMPLED]
    stored = s3.get_object(Bucket=bucket, Key="hamilton_miranda_lacamoire_10s.json")
    assert stored["Metadata"]["facerec-event"] == "e-hamilton_miranda_lacamoire_10s"  # a redelivered upload is still recognised as done
    rows = [p["person"] for p in json.loads(stored["Body"].read())["timeline"]["people"]]
    assert LACAMOIRE in rows
    # Without --gallery it takes the deployed gallery: here none is deployed.
    none = facerec("results", "--reidentify", *aws)
    assert none.exit_code == 1 and "no gallery deployed at s3://people-search-output/" in error_lines(none)[0]


def deployment(s3: Any, prefix: str, recognised: dict[str, str]) -> tuple[str, str]:
    """A deployment as this release writes it: answers in <prefix>-output, details in <prefix>-details."""
    from lambdas.env import ResultBuckets
    from lambdas.storage import write_result

    output, details = f"{prefix}-output", f"{prefix}-details"
    for bucket in (output, details):
        s3.create_bucket(Bucket=bucket)
    for stem, text in recognised.items():
        assert write_result(ResultBuckets(output, details), stem, Result.from_dict(json.loads(text)), f"e-{stem}", s3, replaces=None)
    return output, details


def test_from_the_details_bucket(recognised: dict[str, str], gallery_copy: Path, moto_url: str, aws_env: None) -> None:
    import boto3

    prefix = "people-details"
    aws = ["--prefix", prefix, "--region", "us-east-1", "--endpoint-url", moto_url]
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    output, details = deployment(s3, prefix, recognised)
    labelled = facerec("people", "label", CLIP, "unknown-1", LACAMOIRE, "--gallery", gallery_copy, *aws)
    assert labelled.exit_code == 0, labelled.stderr
    again = facerec("results", "--reidentify", "--gallery", gallery_copy, *aws, "--json")
    assert again.exit_code == 0, again.stderr
    assert sorted(json.loads(line)["video"] for line in again.stdout.splitlines()) == [CLIP, SAMPLED]
    stored = json.loads(s3.get_object(Bucket=details, Key="hamilton_miranda_lacamoire_10s.json")["Body"].read())
    assert LACAMOIRE in [p["person"] for p in stored["timeline"]["people"]]
    # The output bucket still holds the answers alone, the name of each as its details say.
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=output)["Contents"])
    assert keys == sorted(f"{stem}.txt" for stem in recognised)
    for stem in recognised:
        name = json.loads(s3.get_object(Bucket=details, Key=f"{stem}.json")["Body"].read())["name"]
        assert s3.get_object(Bucket=output, Key=f"{stem}.txt")["Body"].read().decode() == name
    none = facerec("results", "--reidentify", *aws)
    assert none.exit_code == 1 and f"no gallery deployed at s3://{details}/" in error_lines(none)[0]


def test_reidentify_losing_the_race_changes_neither_half(recognised: dict[str, str], gallery_copy: Path, moto_url: str, aws_env: None) -> None:
    """`results --reidentify` read a result; a newer upload of the video is answered before it writes back
    (the same calls in the same order as the race: the store's read, the pipeline's write, the store's
    write). Its write must fail before touching the answer: both halves stay the newer answer's."""
    import boto3

    from facerec_cli.errors import UserError
    from facerec_cli.pipeline.observe.result_store import BucketStore
    from facerec_cli.pipeline.result_buckets import result_buckets
    from facerec_cli.config import Names
    from lambdas.core.results import OK
    from lambdas.storage import result_state, write_result

    prefix = "people-race"
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    output, details = deployment(s3, prefix, recognised)
    stem = "hamilton_sampled"
    store = BucketStore(s3, result_buckets(s3, Names(prefix)))
    assert store.bucket == details
    _, text = store.read(stem)
    before = Result.from_dict(json.loads(text))
    newer = Result(video=SAMPLED, status=OK, name="newer_upload_answer")
    assert write_result(store.buckets, stem, newer, "e-newer", s3, replaces=result_state(store.buckets, stem, f"e-{stem}", s3)[1])
    relabelled = Result.from_dict(before.to_dict())
    relabelled.name = LACAMOIRE
    with pytest.raises(UserError, match="changed while it was re-answered"):
        store.write(stem, relabelled)
    assert s3.get_object(Bucket=output, Key=f"{stem}.txt")["Body"].read().decode() == "newer_upload_answer"
    stored = s3.get_object(Bucket=details, Key=f"{stem}.json")
    assert json.loads(stored["Body"].read())["name"] == "newer_upload_answer"
    assert stored["Metadata"]["facerec-event"] == "e-newer"
    assert result_state(store.buckets, stem, "e-newer", s3)[0]  # the newer answer is complete: both halves agree
