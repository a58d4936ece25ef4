"""``facerec people`` (name the strangers of a result) and ``facerec search`` (where a person or a face
was seen), from the embeddings results store, never the videos: the workflows are
``facerec_cli.stored_results`` (``results --reidentify``'s too), which return reports; these commands
parse the options and print them.

Results come from the output bucket (the AWS options) or from a folder (``--results DIR``, what
``run-local --out`` writes). numpy, the models and boto3 are imported inside the functions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from facerec_cli.cli.options import AwsTarget, GalleryOutputOpt, aws_target_options, user_errors_as_exit_codes
from facerec_cli.errors import UserError
from facerec_cli.render import clock_ranges, err, out, plural, print_json

if TYPE_CHECKING:
    from lambdas.core.people import Group

    from facerec_cli.pipeline.observe.result_store import Store

app = typer.Typer(name="people", no_args_is_help=True, help="Name the strangers of a result (`unknown-N`) in the gallery.")
search_app = typer.Typer()  # no group name: `facerec search` sits at the top level

ResultsDirOpt = Annotated[
    Path | None, typer.Option("--results", help="A folder of results (`run-local --out DIR`) instead of the output bucket.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, nothing else.")]
VideoArg = Annotated[str, typer.Argument(help="The video, as results name it (or its stem).")]


# ------------------------------------------------------------------------------------------ people


@app.command("list")
@user_errors_as_exit_codes
@aws_target_options()
def people_list(video: VideoArg, results_dir: ResultsDirOpt = None, json_out: JsonFlag = False, target: AwsTarget = AwsTarget()) -> None:
    """The people of one result: enrolled ones and `unknown-N` strangers (grouped as timelines group
    them, for results without a timeline too), with their faces and time ranges."""
    from lambdas.core.people import groups

    from facerec_cli.pipeline.observe.result_store import find_result
    from facerec_cli.stored_results import open_store

    store = open_store(results_dir, target.settings)
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
    from facerec_cli.stored_results import open_store

    store = open_store(results_dir, target.settings)
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
    return f"[{'green' if g.known else 'yellow'}]{escape(g.label)}[/]: {plural(len(g.faces), 'face')} at {clock_ranges(g.ranges)}{view}"


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

    from facerec_cli.gallery_workflows import cloud_for, push_saved, save_edit
    from facerec_cli.render import print_pushed, print_saved_edit
    from facerec_cli.stored_results import label_stranger, open_store

    cloud = cloud_for(target.settings()) if to_cloud else None  # checked before anything changes
    before = Gallery.load(gallery)
    result, done = label_stranger(before, open_store(results_dir, target.settings), video, group, name)
    new = "" if done.person in before.people else " (new)"
    skipped = f"; {done.same} already in the gallery" if done.same else ""
    was = f"; it holds faces shown before as {', '.join(done.was)} (re-answered since)" if done.was else ""
    err.print(f"added {plural(len(done.added), 'face')} of {escape(group.strip())} (on screen {clock_ranges(done.ranges)}) in {escape(result.video)} "
              f"as {escape(done.person)}{new}: {done.gallery.names.count(done.person)} in all{skipped}{escape(was)}",
              highlight=False, soft_wrap=True)  # fmt: skip
    path = output or gallery
    print_saved_edit(save_edit(before, done.gallery, [done.person], path, cloud))
    if cloud is not None:
        print_pushed(push_saved(cloud, path), path)
    err.print("re-answer the stored results with `facerec results --reidentify`" + (f" --results {results_dir}" if results_dir else "")
              + ("" if to_cloud else f" --gallery {output or gallery}"), highlight=False, soft_wrap=True)  # fmt: skip


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
    from facerec_cli.stored_results import open_store, search_photo

    if (person is None) == (not photo):
        raise UserError("search for --person NAME or --photo FACE.jpg (one of them)")
    store = open_store(results_dir, target.settings)
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
        seen = search_photo(store, photo or [], gallery, threshold, target.settings)
        for r in seen.photos:
            if r.note != "ok":
                err.print(f"[yellow]{escape(r.path.name)}[/]: {escape(r.note)}", highlight=False, soft_wrap=True)
        found, looked, note = seen.found, seen.looked, "; " + "; ".join(seen.notes)
        what = ", ".join(p.name for p in photo or [])
    if json_out:
        for s in found:
            print_json(s.to_dict())
        return
    for s in found:
        near = "" if s.distance is None else f" (distance {s.distance:.2f})"
        kind = "" if s.timeline else " (sampled frames)"
        out.print(f"{escape(s.video)}: {clock_ranges(s.ranges)}{kind}, {plural(s.faces, 'face')}{near}", highlight=False, soft_wrap=True)
    err.print(f"{escape(what)}: seen in {len(found)} of {plural(looked, 'result')} in {escape(store.where)} "
              f"({(time.perf_counter() - started):.2f} s){note}", highlight=False, soft_wrap=True)  # fmt: skip
