"""What ``facerec gallery`` and ``facerec people label`` do to a gallery file, as plain functions that
return reports (the commands, ``cli/gallery.py`` and ``cli/people.py``, parse options and print them
with ``render``): its summary (``list``, ``show``); its edits (add photos, remove a person or a photo,
rename; ``lambdas.core.gallery_edit``), saved atomically only once the edit succeeded (an error leaves
the file's bytes as they were); and pushing it alone to the deployed functions (``pipeline.gallery_push``).

Models, numpy and boto3 are imported inside the functions, so registering the commands costs
``facerec identify`` nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facerec_cli.errors import UserError

if TYPE_CHECKING:
    from lambdas.core.enroll import Embedded, PhotoReport
    from lambdas.core.gallery import Gallery
    from lambdas.core.gallery_edit import TwoGroups
    from lambdas.core.openset import Calibration

    from facerec_cli.config import Settings
    from facerec_cli.infra.clients import Clients
    from facerec_cli.pipeline.gallery_push import Pushed, Target


# ------------------------------------------------------------------------------------------ reading


def rule_info(gallery: Gallery) -> dict[str, Any]:
    """The gallery's open-set rule and where it comes from: ``calibrated`` (threshold and margin stored
    by enrol or an edit), ``stored`` (a threshold alone, from an older gallery) or ``default``."""
    rule = gallery.rule()
    source = "calibrated" if gallery.margin is not None else "stored" if gallery.threshold is not None else "default"
    return {"threshold": rule.threshold, "margin": rule.margin, "source": source}


def gallery_summary(gallery: Gallery) -> dict[str, Any]:
    counts = {p: 0 for p in gallery.people}
    for name in gallery.names:
        counts[name] += 1
    return {
        "weights": gallery.weights, "recipe": gallery.recipe, "photos": len(gallery.names),
        "people": [{"name": p, "photos": c} for p, c in counts.items()], "rule": rule_info(gallery),
    }  # fmt: skip


def person_details(gallery: Gallery, people: list[str] | None = None) -> list[dict[str, Any]]:
    """Each person's (or each of ``people``'s) photos, how consistent they are and whether they form
    two far-apart groups."""
    from lambdas.core.gallery_edit import two_people
    from lambdas.core.openset import calibrate

    wanted = gallery.people if people is None else people
    consistency = {c.person: c for c in calibrate(gallery.embeddings, gallery.names, gallery.sources).people}
    split = {t.person: t for t in two_people(gallery, wanted)}
    rows = []
    for person in wanted:
        c = consistency[person]
        groups = split.get(person)
        rows.append({
            "name": person, "photos": [s or f"photo {i}" for i, (n, s) in enumerate(zip(gallery.names, gallery.sources)) if n == person],
            "consistency": {"mean": c.mean, "worst": c.worst, "outliers": c.outliers},
            "two_groups": None if groups is None else {"distance": groups.distance, "groups": [list(g) for g in groups.groups]},
        })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------ editing


def load_for_edit(path: Path) -> Gallery:
    from lambdas.core.gallery import Gallery

    return Gallery.load(path)  # a torch gallery is refused with the command that converts it: edits write safetensors


@dataclass(frozen=True)
class Cloud:
    """Where ``--to-cloud`` pushes an edited gallery: resolved (and the deployment checked) before
    anything changes."""

    settings: Settings
    clients: Clients
    target: Target


def cloud_for(settings: Settings) -> Cloud:
    from facerec_cli.infra.clients import Clients
    from facerec_cli.pipeline.gallery_push import deployed_target

    clients = Clients.from_settings(settings)
    return Cloud(settings, clients, deployed_target(settings, clients))


@dataclass
class AddReport:
    after: Gallery | None  # None: every photo was in the gallery already (nothing to save)
    same: list[tuple[str, str]] = field(default_factory=list)  # (photo skipped, the gallery's photo it is)
    added: dict[str, int] = field(default_factory=dict)  # person -> photos added


@dataclass
class Additions:
    """``gallery add`` in its steps: the photos and weights (checked before any model loads), embedding
    them (:meth:`embed`, the slow one), and the edit (:meth:`apply`)."""

    before: Gallery
    pairs: list[tuple[str, Path]]  # (person, photo)
    weights: str
    embedded: Embedded | None = None
    reports: list[PhotoReport] = field(default_factory=list)

    @classmethod
    def plan(cls, before: Gallery, paths: list[Path], *, person: str | None = None, weights: str | None = None) -> Additions:
        from lambdas.core.enroll import collect_photos
        from lambdas.core.gallery import weights_for
        from lambdas.core.gallery_edit import person_name
        from lambdas.core.recognise import RECIPE
        from lambdas.core.weights import weights_id

        pairs = [(person_name(p), photo) for p, photo in collect_photos(paths, None if person is None else person_name(person))]
        chosen = weights_for(before, weights)  # the gallery's own weights, never another
        before.check_weights(weights_id(chosen), RECIPE)
        return cls(before, pairs, chosen)

    def embed(self, on_photo: Callable[[PhotoReport], None] | None = None) -> list[PhotoReport]:
        """Embed the photos with the gallery's weights; each photo's report (no face, several faces...)."""
        from lambdas.core.enroll import embed_photos
        from lambdas.core.recognise import FaceEncoder

        encoder = FaceEncoder(weights=self.weights)
        self.embedded, self.reports = embed_photos(self.pairs, encoder, on_photo)
        return self.reports

    def apply(self, path: Path) -> AddReport:
        """The gallery with the embedded photos added, less those it holds already; a GalleryError when
        no photo had a face."""
        from lambdas.core.errors import GalleryError
        from lambdas.core.gallery_edit import same_photos, with_photos
        from lambdas.core.names import plural

        embedded = self.embedded
        assert embedded is not None, "embed() first"
        if not embedded.names:
            raise GalleryError(f"no face found in any of the {plural(len(self.pairs), 'photo')}: {path} is unchanged")
        report = AddReport(None)
        keep = []
        for i, same in enumerate(same_photos(self.before, embedded.embeddings, embedded.sources)):
            if same is None:
                keep.append(i)
            else:
                report.same.append((embedded.sources[i], same))
        if not keep:
            return report
        names = [embedded.names[i] for i in keep]
        report.after = with_photos(self.before, names, embedded.embeddings[keep], [embedded.sources[i] for i in keep])
        report.added = {n: names.count(n) for n in dict.fromkeys(names)}
        return report


@dataclass
class Removal:
    after: Gallery
    touched: list[str]  # the people whose photos changed and who are still enrolled
    person: str | None = None  # a person removed, with ``photos`` photos
    photos: int = 0
    source: str | None = None  # or one photo removed: ``whose``, with ``left`` photos left
    whose: str | None = None
    left: int = 0


def remove(path: Path, *, person: str | None = None, photo: str | None = None) -> tuple[Gallery, Removal]:
    """(the gallery before, the edit): a person removed with all their photos, or one photo."""
    from lambdas.core.gallery_edit import enrolled_person, without_person, without_source

    if (person is None) == (photo is None):
        raise UserError("name a PERSON to remove, or one photo with --photo PERSON/PHOTO (not both)")
    before = load_for_edit(path)
    if person is not None:
        name = enrolled_person(before, person)
        return before, Removal(without_person(before, name), [], person=name, photos=before.names.count(name))
    after, source = without_source(before, str(photo))
    whose = before.names[before.sources.index(source)]
    left = after.names.count(whose)
    return before, Removal(after, [whose] if left else [], source=source, whose=whose, left=left)


@dataclass
class Renaming:
    after: Gallery
    old: str  # as enrolled
    new: str  # as stored: merged under the enrolled spelling of a person who differs by case alone
    merged: int | None  # photos ``new`` had before (a merge), None for a new name


def rename(path: Path, old: str, new: str, *, merge: bool = False) -> tuple[Gallery, Renaming]:
    """(the gallery before, the edit)."""
    from lambdas.core.gallery_edit import enrolled_person, person_name, renamed
    from lambdas.core.names import case_clash

    before = load_for_edit(path)
    after = renamed(before, old, new, merge=merge)
    old, new = enrolled_person(before, old), person_name(new)
    new = case_clash(new, [p for p in before.people if p != old]) or new
    return before, Renaming(after, old, new, before.names.count(new) if new in before.people else None)


# ------------------------------------------------------------------------------------------ saving


@dataclass
class EditReport:
    """What a saved edit changed that a person should know."""

    path: Path
    after: Gallery
    outliers: list[tuple[str, str]]  # (photo, person): a touched person's photo far from their others
    outlier_distance: float
    two_people: list[TwoGroups]  # touched people whose photos form two far-apart groups
    rule_before: dict[str, Any]
    rule_after: dict[str, Any]
    calibration: Calibration | None


def save_edit(before: Gallery, after: Gallery, touched: list[str], path: Path, cloud: Cloud | None = None) -> EditReport:
    """Write ``after`` to ``path`` (a folder or a file that is not a gallery is refused, nothing written;
    with ``cloud``, so is a gallery the deployed function would refuse), and report on it."""
    from lambdas.core.gallery_edit import two_people
    from lambdas.core.openset import OUTLIER_DISTANCE

    from facerec_cli.gallery_files import check_new_gallery_path

    check_new_gallery_path(path, force=True)  # -o onto a folder or a file that is not a gallery: refused, nothing written
    if cloud is not None:  # the deployed function would refuse it: say so before the file changes
        from facerec_cli.pipeline.gallery_push import check_for_functions

        check_for_functions(after, cloud.target)
    after.save(path)
    consistency = {c.person: c for c in after.calibration.people} if after.calibration else {}
    outliers = [(photo, person) for person in touched if person in consistency for photo in consistency[person].outliers]
    split = two_people(after, [p for p in touched if p in after.people])
    return EditReport(path, after, outliers, OUTLIER_DISTANCE, split, rule_info(before), rule_info(after), after.calibration)


def push_saved(cloud: Cloud, path: Path) -> Pushed:
    """Push the gallery just saved at ``path`` (--to-cloud); a failure says that the file was saved."""
    try:
        return push(cloud.settings, path, clients=cloud.clients, target=cloud.target)
    except UserError as exc:
        raise UserError(f"{path} was saved, but {exc}", hint=f"upload it with `facerec gallery push -g {path}`") from exc


def push(settings: Settings, path: Path, **kwargs: Any) -> Pushed:
    """Upload the gallery file ``path`` to the deployment's gallery object (``pipeline.gallery_push``)."""
    from lambdas.core.gallery import read_gallery_file

    from facerec_cli.pipeline.gallery_push import push_gallery

    return push_gallery(settings, read_gallery_file(Path(path)), origin=str(path), **kwargs)
