"""Naming strangers after the fact, from what results store: each face's embedding (``Face.embedding``).

A result's faces are grouped into people by the timeline's own rule (``face_groups.labelled_groups``):
for a timeline result the groups and their ``unknown-N`` names are exactly its rows; a result without
a timeline (a few sampled frames) gets its strangers grouped and numbered the same way, so
``facerec people list`` shows the names ``facerec people label`` takes for either kind.

Labelling adds a group's faces to the gallery as photos of the person (``gallery_edit.with_photos``:
the open-set rule is calibrated again); re-answering matches the stored embeddings against a gallery
and recomputes the main identity and the timeline, without the video. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import GalleryError
from .gallery import Gallery
from .gallery_edit import person_name, same_photos, with_photos
from .names import lookup_name, plural
from .openset import AMBIGUOUS, BEYOND_THRESHOLD, UNSUPPORTED
from .results import UNKNOWN, Result, Timeline, main_identity, unpack_embedding
from .face_groups import Observation, build_timeline, labelled_groups, ranges_of, supported_names

# A group's faces added to the gallery at most (spread over its time on screen): a stranger seen for an
# hour would otherwise add thousands of near-identical rows.
MAX_FACES_PER_LABEL = 20
_MATCH_REASONS = (BEYOND_THRESHOLD, AMBIGUOUS, UNSUPPORTED, None)  # reasons a new gallery may change; others are the face's quality


class NoEmbeddings(GalleryError):
    """The result predates stored embeddings: nothing to label or re-answer without the video."""


@dataclass
class Group:
    label: str  # a gallery name, or unknown-N
    known: bool
    faces: list[int]  # indices into result.faces, in time order
    ranges: list[list[float]]
    image: str | None = None  # the timeline row's best-view crop (a key beside the result), if one was stored


def has_embeddings(result: Result) -> bool:
    """Every face carries its embedding (a result with no faces has nothing to miss)."""
    return all(f.embedding for f in result.faces)


def _require_embeddings(result: Result) -> None:
    if not has_embeddings(result):
        missing = sum(1 for f in result.faces if not f.embedding)
        raise NoEmbeddings(
            f"{result.video}: {missing} of its {plural(len(result.faces), 'face')} {'has' if missing == 1 else 'have'} no stored embedding (the result was made "
            "before facerec stored them): recognise the video again"
        )


def _observations(result: Result) -> list[Observation]:
    return [
        Observation(frame=f.frame, t=f.t, box=list(f.box), prob=f.prob, name=f.name, distance=f.distance, nearest="",
                    embedding=unpack_embedding(f.embedding or "").astype(np.float16), reason=f.reason, group=f.group)
        for f in result.faces
    ]  # fmt: skip


def groups(result: Result) -> list[Group]:
    """The result's people: named ones and ``unknown-N`` strangers, by first appearance."""
    _require_embeddings(result)
    obs = _observations(result)
    index = {id(o): i for i, o in enumerate(obs)}
    images = {p.person: p.image for p in result.timeline.people} if result.timeline else {}
    out = []
    for label, known, members in labelled_groups(obs):
        faces = sorted((index[id(o)] for o in members), key=lambda i: (result.faces[i].frame, i))
        ranges = ranges_of(sorted({(result.faces[i].frame, result.faces[i].t) for i in faces}))
        out.append(Group(label, known, faces, ranges, images.get(label)))
    return out


def find_group(result: Result, label: str) -> Group:
    """The stranger ``label`` (``unknown-N``) of a result; a GalleryError naming the choices otherwise."""
    found = groups(result)
    strangers = [g.label for g in found if not g.known]
    for g in found:
        if g.label == label.strip():
            if g.known:
                raise GalleryError(f"{label!r} in {result.video} is an enrolled person, not a stranger: "
                                   "`facerec gallery rename` renames an enrolled person")  # fmt: skip
            return g
    now = sorted({f.name for f in result.faces if f.group == label.strip() and f.name != UNKNOWN})
    if now:  # the stranger was named since (a label, then results --reidentify): its number is not reused
        raise GalleryError(f"{label.strip()} in {result.video} is {', '.join(now)} now (re-answered since): nothing to label; "
                           f"`facerec people list {result.video}` shows the groups as they are")  # fmt: skip
    choices = ", ".join(strangers) if strangers else "none: every face there is named"
    raise GalleryError(f"{result.video} has no group {label!r}; its strangers: {choices} (`facerec people list {result.video}`)")


def group_of(result: Result, label: str) -> Group:
    """One group of a result, an enrolled person or a stranger, by the name ``people list`` gives it
    (exact, else without regard to case); a GalleryError naming the result's groups otherwise."""
    found = groups(result)
    wanted = lookup_name(label)  # NFC: a name typed either way finds its group
    match = next((g for g in found if g.label == wanted), None) or next((g for g in found if g.label.casefold() == wanted.casefold()), None)
    if match is not None:
        return match
    now = sorted({f.name for f in result.faces if f.group == wanted and f.name != UNKNOWN})
    if now:  # a stranger named since keeps its number in the faces' group: say who it is now
        raise GalleryError(f"{wanted} in {result.video} is {', '.join(now)} now (re-answered since)")
    choices = ", ".join(g.label for g in found) or "none: no face was found"
    raise GalleryError(f"{result.video} has no group {label!r}; its groups: {choices}")


def chosen_faces(result: Result, group: Group, limit: int = MAX_FACES_PER_LABEL) -> list[int]:
    """Up to ``limit`` of the group's faces, spread evenly over its time on screen; faces the recogniser
    did not trust (too small, blurred, profile) only when it has no others."""
    trusted = [i for i in group.faces if result.faces[i].reason in _MATCH_REASONS] or group.faces
    if len(trusted) <= limit:
        return trusted
    return [trusted[int(k)] for k in np.linspace(0, len(trusted) - 1, limit).round().astype(int)]


@dataclass
class Labelled:
    gallery: Gallery
    person: str
    added: list[str]  # the sources of the faces added ("video@12.500s")
    same: int  # faces skipped as already in the gallery (the same face within gallery_edit.SAME_PHOTO)
    ranges: list[list[float]] = field(default_factory=list)  # when the group is on screen: what the user labelled
    was: list[str] = field(default_factory=list)  # other stranger labels its faces were shown under before a re-answer


def label(gallery: Gallery, result: Result, group_label: str, name: str, *, limit: int = MAX_FACES_PER_LABEL) -> Labelled:
    """``gallery`` with the faces of the result's stranger ``group_label`` added as ``name`` (a new
    gallery; the one given is unchanged). Refuses a result of other weights than the gallery's."""
    person = person_name(name)
    if result.model and result.model != gallery.weights:
        raise GalleryError(
            f"{result.video} was recognised with {result.model} weights, the gallery holds {gallery.weights} embeddings: "
            "the two cannot be compared"
        )
    group = find_group(result, group_label)
    picked = chosen_faces(result, group, limit)
    embeddings = np.stack([unpack_embedding(result.faces[i].embedding or "") for i in picked])
    sources = [f"{result.video}@{result.faces[i].t:.3f}s" for i in picked]
    keep = [k for k, same in enumerate(same_photos(gallery, embeddings, sources)) if same is None]
    if not keep:
        raise GalleryError(f"every face of {group.label} in {result.video} is in the gallery already: nothing to add")
    after = with_photos(gallery, [person] * len(keep), embeddings[keep], [sources[k] for k in keep])
    was = sorted({f.group for f in (result.faces[i] for i in group.faces) if f.group and f.group != group.label})
    return Labelled(after, person, [sources[k] for k in keep], len(picked) - len(keep), group.ranges, was)


def reanswer(result: Result, gallery: Gallery, threshold: float | None = None) -> Result:
    """``result`` as ``gallery`` answers it now: each stored embedding matched again (faces the recogniser
    did not trust stay unknown), the main identity, and the timeline rebuilt (best-view crops kept where the
    row's best view is the same face). Results without faces are returned as they are; NoEmbeddings when a
    face has no stored embedding."""
    if not result.faces:
        return result
    _require_embeddings(result)
    gallery.check_weights(result.model or gallery.weights)
    matches = gallery.match(np.stack([unpack_embedding(f.embedding or "") for f in result.faces]), threshold)
    faces, nearest = [], []
    for f, m in zip(result.faces, matches):
        kept = f.reason not in _MATCH_REASONS  # a quality problem: the embedding is not to be trusted
        faces.append(replace(f, name=UNKNOWN if kept else m.name, distance=m.distance, reason=f.reason if kept else m.reason))
        nearest.append(m.nearest)
    # Each face carries the stranger label it was shown under (its group's, as `people list` showed it):
    # the groups after the re-answer keep those labels, so unknown-2 is still the stranger it was.
    for g in groups(result):
        if not g.known:
            for i in g.faces:
                faces[i] = replace(faces[i], group=g.label)
    obs = _observations(replace(result, faces=faces))
    if result.timeline is not None:  # as the timeline was made: a name its group does not support is dropped
        supported_names(obs)
        faces = [replace(f, name=o.name, reason=o.reason) for f, o in zip(faces, obs)]
    for label, known, members in labelled_groups(obs):
        for o in members:
            if not known:
                o.group = label
    faces = [replace(f, group=o.group) for f, o in zip(faces, obs)]
    status, name = main_identity(faces)
    timeline = result.timeline
    if timeline is not None:
        for o, near in zip(obs, nearest):
            o.nearest = near
        members = {label: [(o.frame, o.box) for o in group] for label, _, group in labelled_groups(obs)}
        timeline = _with_images(build_timeline(obs, timeline.fps, timeline.duration, timeline.segments), timeline, members)
    return replace(result, faces=faces, status=status, name=name, timeline=timeline)


def _view_key(frame: int, box: list[float]) -> tuple[int, tuple[float, ...]]:
    return frame, tuple(round(v, 1) for v in box)


def _with_images(new: Timeline, old: Timeline, members: dict[str, list[tuple[int, list[float]]]]) -> Timeline:
    """The old crops on the new rows: a row whose best view is the same face keeps its crop; else a crop
    of one of its own faces (a stranger just named keeps the picture it was named from) rather than none."""
    images = {_view_key(p.best.frame, p.best.box): p.image for p in old.people if p.image}
    for p in new.people:
        p.image = images.get(_view_key(p.best.frame, p.best.box)) or next(
            (images[k] for k in (_view_key(f, b) for f, b in members.get(p.person, [])) if k in images), None)
    return new


def changed(before: Result, after: Result) -> bool:
    """The answer changed: the main identity, a face's name, or the timeline's people."""
    def people(r: Result) -> list[tuple[str, list[list[float]]]]:
        return [(p.person, p.ranges) for p in r.timeline.people] if r.timeline else []

    return (before.status, before.name, [f.name for f in before.faces], people(before)) != (
        after.status, after.name, [f.name for f in after.faces], people(after))

