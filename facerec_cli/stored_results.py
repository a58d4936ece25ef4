"""What ``facerec people``, ``search`` and ``results --reidentify`` do with the embeddings results store,
as plain functions that return reports (the commands, ``cli/people.py`` and ``cli/pipeline.py``, parse
options and print): open the store (the details bucket or a ``run-local --out`` folder,
``pipeline.observe.result_store``), find the gallery to answer with (``--gallery``, else the deployed
one), re-answer every stored result against it, label a stranger of a result as a person of the gallery,
and find where a photo's face was seen (``lambdas.core.people``, ``lambdas.core.search``). The videos
are never read. numpy, the models and boto3 are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facerec_cli.errors import UserError

if TYPE_CHECKING:
    from lambdas.core.enroll import PhotoReport
    from lambdas.core.gallery import Gallery
    from lambdas.core.people import Labelled
    from lambdas.core.results import Result

    from facerec_cli.config import Settings
    from facerec_cli.pipeline.observe.result_store import Store


def open_store(results_dir: Path | None, settings: Callable[[], Settings]) -> Store:
    """A folder of results (``results_dir``), else the deployment's result buckets (``settings()``, asked
    only then)."""
    from facerec_cli.pipeline.observe.result_store import BucketStore, DirStore

    if results_dir is not None:
        return DirStore(results_dir)
    from facerec_cli.infra import aws
    from facerec_cli.infra.clients import owner_checked_s3
    from facerec_cli.pipeline.result_buckets import result_buckets

    chosen = settings()
    sess = aws.session(chosen)
    s3 = owner_checked_s3(chosen, aws.client(chosen, "s3", sess=sess), aws.client(chosen, "sts", sess=sess))
    return BucketStore(s3, result_buckets(s3, chosen.names))


def gallery_for(gallery: Path | None, store: Store, settings: Callable[[], Settings], *, required: bool) -> Gallery | None:
    """``--gallery``; else the deployed one when results come from the bucket (None if there is none and
    it is not ``required``)."""
    from facerec_cli.gallery_files import load_gallery
    from facerec_cli.pipeline.observe.result_store import BucketStore

    if gallery is not None:
        return load_gallery(gallery)
    if isinstance(store, BucketStore):
        from lambdas.core.gallery import Gallery

        from facerec_cli.infra.readers import get_or_none

        key = settings().names.gallery_key
        reply = get_or_none(store.s3.get_object, Bucket=store.bucket, Key=key)
        if reply is not None:
            return Gallery.from_bytes(reply["Body"].read(), origin=f"s3://{store.bucket}/{key}")
        if required:
            raise UserError(f"no gallery deployed at s3://{store.bucket}/{key}", hint="pass --gallery GALLERY")
        return None
    if required:
        raise UserError("which gallery? pass --gallery GALLERY")
    return None


# ------------------------------------------------------------------------------------------ reidentify


@dataclass
class Reidentified:
    where: str  # the store, as people read it
    results: int = 0
    changed: int = 0
    skipped_no_embeddings: int = 0  # stored before results kept embeddings
    skipped_other_weights: int = 0  # made with other weights than the gallery's


def reidentify(store: Store, gallery: Gallery, *, threshold: float | None = None,
               on_rewritten: Callable[[Result, Result], None] | None = None) -> Reidentified:  # fmt: skip
    """Re-answer every stored result against ``gallery`` and write back those whose answer changed
    (``on_rewritten(before, after)`` after each write). Every result is read and re-answered before any
    is written: one unreadable result stops it with nothing rewritten."""
    from lambdas.core.errors import GalleryError
    from lambdas.core.people import NoEmbeddings, changed, reanswer

    from facerec_cli.pipeline.observe.result_store import load_result

    report = Reidentified(store.where)
    todo = []
    for stem, text in store.items():
        report.results += 1
        result = load_result(text, stem)
        try:
            after = reanswer(result, gallery, threshold)
        except NoEmbeddings:
            report.skipped_no_embeddings += 1
            continue
        except GalleryError:
            report.skipped_other_weights += 1
            continue
        if changed(result, after):
            todo.append((stem, result, after))
    done: list[str] = []
    for stem, result, after in todo:
        try:
            store.write(stem, after)
        except (OSError, UserError) as exc:  # the ones written stay written: say exactly which
            shown = ", ".join(done) if done else "none"
            raise UserError(f"re-answering stopped at {stem}: {exc}; rewritten before it ({len(done)} of {len(todo)}): {shown}; "
                            f"{stem} and the {len(todo) - len(done) - 1} after it are unchanged", hint="run the command again") from exc
        done.append(stem)
        report.changed += 1
        if on_rewritten is not None:
            on_rewritten(result, after)
    return report


# ------------------------------------------------------------------------------------------ label


def label_stranger(before: Gallery, store: Store, video: str, group: str, name: str) -> tuple[Result, Labelled]:
    """(the result, the label): a group of ``video``'s result (a stranger, ``unknown-N``) added to
    ``before`` as ``name``, from the embeddings the result stores (saving it is the caller's)."""
    from lambdas.core.people import label

    from facerec_cli.pipeline.observe.result_store import find_result

    _, result = find_result(store, video)
    return result, label(before, result, group, name)


# ------------------------------------------------------------------------------------------ search


@dataclass
class PhotoSearch:
    found: list[Any]  # lambdas.core.search.Sighting, one per video
    looked: int  # results looked at
    notes: list[str]  # what was not compared, and under which rule
    photos: list[PhotoReport] = field(default_factory=list)  # each photo's report (a note unless "ok")


def search_photo(store: Store, photos: list[Path], gallery_path: Path | None, threshold: float | None,
                 settings: Callable[[], Settings]) -> PhotoSearch:  # fmt: skip
    """Where the face of ``photos`` (several: their centroid, as a gallery matches) was seen, under the
    gallery's open-set rule (``--gallery``, else the deployed one, else the default threshold)."""
    import numpy as np

    from lambdas.core.enroll import embed_photos
    from lambdas.core.gallery import weights_for
    from lambdas.core.names import plural
    from lambdas.core.recognise import FaceEncoder
    from lambdas.core.search import FaceIndex, find_face

    gallery = gallery_for(gallery_path, store, settings, required=False)
    index = FaceIndex.build(store.items())
    models = {m: c for m, c in index.models().items() if m}
    weights = weights_for(gallery) if gallery is not None else max(models, key=models.__getitem__) if models else "casia-webface"
    encoder = FaceEncoder(weights=weights)
    embedded, reports = embed_photos([("photo", p) for p in photos], encoder)
    if not embedded.names:  # each photo's own problem, said once: unreadable, or no face
        raise UserError("; ".join(f"{r.path.name}: {r.error or 'no face found'}" for r in reports))
    query = embedded.embeddings.mean(axis=0)
    found = find_face(index, query / max(float(np.linalg.norm(query)), 1e-12), gallery, threshold=threshold, model=encoder.weights)
    notes = []
    if index.skipped:
        notes.append(f"{plural(index.skipped, 'result')} skipped: stored before results kept embeddings")
    other = sum(c for m, c in models.items() if m != encoder.weights)
    if other:
        notes.append(f"{plural(other, 'result')} of other weights than {encoder.weights} not compared")
    rule = "the default threshold" if gallery is None else "the gallery's open-set rule"
    notes.append(f"{plural(len(index), 'stored face')} compared under {rule}")
    return PhotoSearch(found, index.looked, notes, reports)
