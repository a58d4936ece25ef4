"""``facerec people`` (name the strangers of a result), ``facerec search`` (where a person or a face was
seen) and ``facerec results --reidentify`` (re-answer stored results against the gallery as it is now),
all from the embeddings results store (``lambdas.core.people``, ``lambdas.core.search``), never the videos.

Results come from the output bucket (the AWS options) or from a folder (``--results DIR``, what
``run-local --out`` writes). numpy, the models and boto3 are imported inside the functions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from facerec_cli.cli.options import AwsTarget, GalleryOutputOpt, aws_target_options, user_errors_as_exit_codes
from facerec_cli.errors import UserError
from facerec_cli.render import clock, err, out, plural, print_json

if TYPE_CHECKING:
    from lambdas.core.gallery import Gallery
    from lambdas.core.people import Group

    from facerec_cli.pipeline.observe.result_store import Store

app = typer.Typer(name="people", no_args_is_help=True, help="Name the strangers of a result (`unknown-N`) in the gallery.")
search_app = typer.Typer()  # no group name: `facerec search` sits at the top level

ResultsDirOpt = Annotated[
    Path | None, typer.Option("--results", help="A folder of results (`run-local --out DIR`) instead of the output bucket.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, nothing else.")]
VideoArg = Annotated[str, typer.Argument(help="The video, as results name it (or its stem).")]


def open_store(results_dir: Path | None, target: AwsTarget) -> Store:
    from facerec_cli.pipeline.observe.result_store import BucketStore, DirStore

    if results_dir is not None:
        return DirStore(results_dir)
    from facerec_cli.infra import aws
    from facerec_cli.infra.clients import owner_checked_s3

    settings = target.settings()
    sess = aws.session(settings)
    s3 = owner_checked_s3(settings, aws.client(settings, "s3", sess=sess), aws.client(settings, "sts", sess=sess))
    from facerec_cli.pipeline.result_buckets import result_buckets

    return BucketStore(s3, result_buckets(s3, settings.names))


def gallery_for(gallery: Path | None, store: Store, target: AwsTarget, *, required: bool) -> Gallery | None:
    """``--gallery``; else the deployed one when results come from the bucket (None if there is none and
    it is not ``required``)."""
    from facerec_cli.galleries import load_gallery
    from facerec_cli.pipeline.observe.result_store import BucketStore

    if gallery is not None:
        return load_gallery(gallery)
    if isinstance(store, BucketStore):
        from lambdas.core.gallery import Gallery

        from facerec_cli.infra.readers import get_or_none

        key = target.settings().names.gallery_key
        reply = get_or_none(store.s3.get_object, Bucket=store.bucket, Key=key)
        if reply is not None:
            return Gallery.from_bytes(reply["Body"].read(), origin=f"s3://{store.bucket}/{key}")
        if required:
            raise UserError(f"no gallery deployed at s3://{store.bucket}/{key}", hint="pass --gallery GALLERY")
        return None
    if required:
        raise UserError("which gallery? pass --gallery GALLERY")
    return None



def _ranges(ranges: list[list[float]], limit: int = 8) -> str:
    shown = [clock(a) if a == b else f"{clock(a)}-{clock(b)}" for a, b in ranges[:limit]]
    return ", ".join(shown) + (f" (+{len(ranges) - limit} more)" if len(ranges) > limit else "")


# ------------------------------------------------------------------------------------------ people


@app.command("list")
@user_errors_as_exit_codes
@aws_target_options()
def people_list(video: VideoArg, results_dir: ResultsDirOpt = None, json_out: JsonFlag = False, target: AwsTarget = AwsTarget()) -> None:
    """The people of one result: enrolled ones and `unknown-N` strangers (grouped as timelines group
    them, for results without a timeline too), with their faces and time ranges."""
    from lambdas.core.people import groups

    from facerec_cli.pipeline.observe.result_store import find_result

    store = open_store(results_dir, target)
    stem, result = find_result(store, video)
    found = groups(result)
    if json_out:
        print_json({"video": result.video, "stem": stem, "people": [_group_dict(g, store) for g in found]})
        return
    out.print(f"{escape(result.video)}: {result.name} ({result.status}), {plural(len(result.faces), 'face')}", highlight=False)
    for g in found:
        out.print(f"  {_group_line(g, store)}", highlight=False, soft_wrap=True)


@app.command("show")
@user_errors_as_exit_codes
@aws_target_options()
def people_show(
    video: VideoArg,
    group: Annotated[str, typer.Argument(help="The person or stranger (unknown-N), as `facerec people list` names it.")],
    results_dir: ResultsDirOpt = None,
    json_out: JsonFlag = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """One group of one result: who it is (a name or unknown-N), when it is on screen, its faces and
    where its best-view crop is."""
    from lambdas.core.people import group_of

    from facerec_cli.pipeline.observe.result_store import find_result

    store = open_store(results_dir, target)
    stem, result = find_result(store, video)
    g = group_of(result, group)
    if json_out:
        print_json({"video": result.video, "stem": stem, **_group_dict(g, store)})
        return
    out.print(f"{escape(result.video)}: {_group_line(g, store)}", highlight=False, soft_wrap=True)


def _group_dict(g: Group, store: Store) -> dict[str, Any]:
    return {"person": g.label, "known": g.known, "faces": len(g.faces), "ranges": g.ranges, "image": store.locate(g.image) if g.image else None}


def _group_line(g: Group, store: Store) -> str:
    where = store.locate(g.image) if g.image else None
    view = f"; best view: {escape(where)}" if where else ""
    return f"[{'green' if g.known else 'yellow'}]{escape(g.label)}[/]: {plural(len(g.faces), 'face')} at {_ranges(g.ranges)}{view}"


@app.command("label")
@user_errors_as_exit_codes
@aws_target_options()
def people_label(
    video: VideoArg,
    group: Annotated[str, typer.Argument(help="The stranger, as `facerec people list` or the timeline names it: unknown-N.")],
    name: Annotated[str, typer.Argument(help="Who it is: a new person, or one enrolled (their photos grow).")],
    gallery: Annotated[Path, typer.Option("--gallery", "-g", help="The gallery file to add the faces to.")],
    output: GalleryOutputOpt = None,
    results_dir: ResultsDirOpt = None,
    to_cloud: Annotated[bool, typer.Option("--to-cloud", help="Then upload the gallery to the deployment, as `facerec gallery push` does.")] = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Add a stranger's faces from a result to the gallery as NAME (from the embeddings the result
    stores; the video is not read). The open-set rule is calibrated again; `facerec results
    --reidentify` then re-answers the stored results."""
    from lambdas.core.gallery import Gallery
    from lambdas.core.people import label

    from facerec_cli.cli.gallery import _save_and_push
    from facerec_cli.pipeline.observe.result_store import find_result

    cloud = None
    if to_cloud:  # checked before anything changes
        from facerec_cli.infra.clients import Clients
        from facerec_cli.pipeline.gallery_push import deployed_target

        settings = target.settings()
        clients = Clients.from_settings(settings)
        cloud = settings, clients, deployed_target(settings, clients)
    before = Gallery.load(gallery)
    stem, result = find_result(open_store(results_dir, target), video)
    done = label(before, result, group, name)
    new = "" if done.person in before.people else " (new)"
    skipped = f"; {done.same} already in the gallery" if done.same else ""
    was = f"; it holds faces shown before as {', '.join(done.was)} (re-answered since)" if done.was else ""
    err.print(f"added {plural(len(done.added), 'face')} of {escape(group.strip())} (on screen {_ranges(done.ranges)}) in {escape(result.video)} "
              f"as {escape(done.person)}{new}: {done.gallery.names.count(done.person)} in all{skipped}{escape(was)}",
              highlight=False, soft_wrap=True)  # fmt: skip
    _save_and_push(before, done.gallery, [done.person], output or gallery, cloud)
    err.print("re-answer the stored results with `facerec results --reidentify`" + (f" --results {results_dir}" if results_dir else "")
              + ("" if to_cloud else f" --gallery {output or gallery}"), highlight=False, soft_wrap=True)  # fmt: skip


# ------------------------------------------------------------------------------------------ reidentify


def run_reidentify(store: Store, gallery: Gallery, *, threshold: float | None = None, json_lines: bool = False) -> dict[str, int]:
    """Re-answer every stored result against ``gallery``; write back those whose answer changed."""
    from lambdas.core.errors import GalleryError
    from lambdas.core.people import NoEmbeddings, changed, reanswer

    from facerec_cli.pipeline.observe.result_store import load_result

    counts = {"results": 0, "changed": 0, "skipped_no_embeddings": 0, "skipped_other_weights": 0}
    # Every result is read and re-answered before any is written: one unreadable result stops the
    # command with nothing rewritten.
    todo = []
    for stem, text in store.items():
        counts["results"] += 1
        result = load_result(text, stem)
        try:
            after = reanswer(result, gallery, threshold)
        except NoEmbeddings:
            counts["skipped_no_embeddings"] += 1
            continue
        except GalleryError:
            counts["skipped_other_weights"] += 1
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
        counts["changed"] += 1
        if json_lines:
            sys.stdout.write(after.to_json() + "\n")
        else:
            err.print(f"{escape(result.video)}: {escape(result.name)} -> [bold]{escape(after.name)}[/]" + _people_change(result, after),
                      highlight=False, soft_wrap=True)  # fmt: skip
    if not json_lines:
        skipped = counts["skipped_no_embeddings"]
        other = counts["skipped_other_weights"]
        err.print(f"re-answered {plural(counts['results'], 'result')} in {escape(store.where)}: {counts['changed']} changed and rewritten"
                  + (f"; {skipped} skipped: stored before results kept embeddings (recognise those videos again)" if skipped else "")
                  + (f"; {other} skipped: made with other weights than the gallery's" if other else ""),
                  highlight=False, soft_wrap=True)  # fmt: skip
    sys.stdout.flush()
    return counts


def _people_change(before: Any, after: Any) -> str:
    if after.timeline is None:
        return ""
    was = {p.person for p in before.timeline.people} if before.timeline else set()
    new = [p for p in after.timeline.people if p.known and p.person not in was]
    return "".join(f"; {escape(p.person)} at {_ranges(p.ranges)}" for p in new)


# ------------------------------------------------------------------------------------------ search


@search_app.command("search")
@user_errors_as_exit_codes
@aws_target_options()
def search(
    person: Annotated[str | None, typer.Option("--person", "-p", help="A name as results give it: every video and time range they were seen.")] = None,
    photo: Annotated[
        list[Path] | None, typer.Option("--photo", help="A photo of a face (repeat for several photos of one person): where it appeared, enrolled or not.")
    ] = None,
    gallery: Annotated[
        Path | None, typer.Option("--gallery", "-g", help="With --photo: the gallery whose open-set rule decides (default: the deployed one; with --results DIR none, the default threshold alone).")
    ] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="With --photo: override the rule's threshold.")] = None,
    results_dir: ResultsDirOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON Lines (one object per video) on stdout, nothing else.")] = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Where a person (--person NAME) or a face (--photo FACE.jpg) was seen, from the stored results:
    videos and time ranges. A photo's face is compared with every stored face under the open-set rule,
    as if the photo were enrolled."""
    if (person is None) == (not photo):
        raise UserError("search for --person NAME or --photo FACE.jpg (one of them)")
    store = open_store(results_dir, target)
    started = time.perf_counter()
    if person is not None:
        from lambdas.core.search import find_person

        found, looked = find_person(store.items(), person.strip())
        what, note = person.strip(), ""
        if not found and looked:
            from lambdas.core.search import close_names

            close = close_names(store.items(), what)
            note = f"; did you mean {', '.join(close)}?" if close else ""
    else:
        found, looked, note = _search_photo(store, photo or [], gallery, threshold, target)
        what = ", ".join(p.name for p in photo or [])
    if json_out:
        for s in found:
            print_json(s.to_dict())
        return
    for s in found:
        near = "" if s.distance is None else f" (distance {s.distance:.2f})"
        kind = "" if s.timeline else " (sampled frames)"
        out.print(f"{escape(s.video)}: {_ranges(s.ranges)}{kind}, {plural(s.faces, 'face')}{near}", highlight=False, soft_wrap=True)
    err.print(f"{escape(what)}: seen in {len(found)} of {plural(looked, 'result')} in {escape(store.where)} "
              f"({(time.perf_counter() - started):.2f} s){note}", highlight=False, soft_wrap=True)  # fmt: skip


def _search_photo(store: Store, photos: list[Path], gallery_path: Path | None, threshold: float | None, target: AwsTarget) -> tuple[list[Any], int, str]:
    import numpy as np

    from lambdas.core.enroll import embed_photos
    from lambdas.core.gallery import weights_for
    from lambdas.core.recognise import FaceEncoder
    from lambdas.core.search import FaceIndex, find_face

    gallery = gallery_for(gallery_path, store, target, required=False)
    index = FaceIndex.build(store.items())
    models = {m: c for m, c in index.models().items() if m}
    weights = weights_for(gallery) if gallery is not None else max(models, key=models.__getitem__) if models else "casia-webface"
    encoder = FaceEncoder(weights=weights)
    embedded, reports = embed_photos([("photo", p) for p in photos], encoder)
    if not embedded.names:  # each photo's own problem, said once: unreadable, or no face
        raise UserError("; ".join(f"{r.path.name}: {r.error or 'no face found'}" for r in reports))
    for r in reports:
        if r.note != "ok":
            err.print(f"[yellow]{escape(r.path.name)}[/]: {escape(r.note)}", highlight=False, soft_wrap=True)
    query = embedded.embeddings.mean(axis=0)  # several photos: their centroid, as a gallery matches
    found = find_face(index, query / max(float(np.linalg.norm(query)), 1e-12), gallery, threshold=threshold, model=encoder.weights)
    notes = []
    if index.skipped:
        notes.append(f"{plural(index.skipped, 'result')} skipped: stored before results kept embeddings")
    other = sum(c for m, c in models.items() if m != encoder.weights)
    if other:
        notes.append(f"{plural(other, 'result')} of other weights than {encoder.weights} not compared")
    rule = "the default threshold" if gallery is None else "the gallery's open-set rule"
    notes.append(f"{plural(len(index), 'stored face')} compared under {rule}")
    return found, index.looked, "; " + "; ".join(notes)
