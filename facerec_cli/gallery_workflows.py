"""``facerec gallery``: gallery files, kept current without enrolling again or redeploying.

``list``/``show`` read; ``add``/``remove``/``rename`` edit (``lambdas.core.gallery_edit``) and save
atomically, only once the edit succeeded (an error leaves the file's bytes as they were); ``push`` and
``--to-cloud`` upload the file alone (``pipeline.gallery_push``). Models, numpy and boto3 are imported
inside the functions, so registering these commands costs ``facerec identify`` nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from facerec_cli.cli.options import AwsTarget, GalleryOutputOpt, aws_target_options, user_errors_as_exit_codes
from facerec_cli.errors import UserError
from facerec_cli.render import err, out, plural, print_json

if TYPE_CHECKING:
    from lambdas.core.gallery import Gallery

app = typer.Typer(
    name="gallery", no_args_is_help=True,
    help="Gallery files: list, show, add, remove and rename people; push one to the deployed functions; convert old ones.",
)  # fmt: skip

GalleryFlag = Annotated[
    Path | None, typer.Option("--gallery", "-g", help="The gallery file (from `facerec enroll`); required. Until the next release it may "
                              "also come as the first argument, as before.")
]
# Before -g/--gallery (as every other command takes it), the gallery was these commands' first argument:
# that form still works for a release, with a note (``_gallery``).
OldGalleryArg = Annotated[str | None, typer.Argument(metavar="GALLERY", hidden=True, show_default=False)]


def _gallery(option: Path | None, positional: list[Any], command: str) -> tuple[Path, list[Any]]:
    """(the gallery, the other arguments given): ``-g GALLERY``, or the first argument (the old form)."""
    if option is not None:
        if sum(a is not None for a in positional) > _MOST_ARGS.get(command, len(positional)):
            raise UserError(f"too many arguments for `facerec gallery {command} -g GALLERY`", hint=f"see `facerec gallery {command} --help`")
        return option, positional
    if not positional or positional[0] is None:
        raise UserError("which gallery? pass -g GALLERY", hint=f"`facerec gallery {command} -g gallery.safetensors ...`")
    err.print(f"[yellow]note[/]: `facerec gallery {command} GALLERY ...` is the old form (it works until the next release): "
              f"pass the gallery as -g GALLERY, as every other command takes it", highlight=False, soft_wrap=True)  # fmt: skip
    return Path(positional[0]), positional[1:]


_MOST_ARGS = {"list": 0, "push": 0, "show": 1, "remove": 1, "rename": 2}  # arguments besides the gallery
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, nothing else.")]
ToCloudOpt = Annotated[
    bool, typer.Option("--to-cloud", help="Then upload it to the deployment (--prefix...) as `facerec gallery push` does.")
]


@app.command("convert")
@user_errors_as_exit_codes
def gallery_convert(
    old: Annotated[Path, typer.Argument(help="A gallery: an old torch .pt gallery, a course data.pt, or a safetensors gallery.")],
    new: Annotated[Path, typer.Argument(help="The safetensors gallery to write, e.g. gallery.safetensors.")],
) -> None:
    """Convert an old torch gallery or a course data.pt to a safetensors gallery.

    Enroll writes safetensors galleries, and the runtime reads only those (no torch, no pickle);
    identify, run-local and bootstrap convert old files on the fly. A course data.pt means vggface2 weights."""
    from facerec_cli.galleries import convert_gallery
    gallery = convert_gallery(old, new)
    err.print(f"{new}: {plural(len(gallery.names), 'embedding')} of {plural(len(gallery.people), 'person', 'people')}, {gallery.weights} weights")


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



def _rule_line(rule: dict[str, Any]) -> str:
    why = {"calibrated": "calibrated on the gallery's own photos", "stored": "threshold stored in the gallery",
           "default": "the defaults: calibrating needs 5 people with 2+ photos"}[rule["source"]]  # fmt: skip
    return f"open-set rule: threshold {rule['threshold']:g}, margin {rule['margin']:g} ({why})"


@app.command("list")
@user_errors_as_exit_codes
def gallery_list(old_gallery: OldGalleryArg = None, gallery_opt: GalleryFlag = None, json_out: JsonFlag = False) -> None:
    """The people in a gallery with their photo counts, and its open-set rule."""
    from rich.table import Table

    from facerec_cli.galleries import load_gallery

    gallery, _ = _gallery(gallery_opt, [old_gallery], "list")

    summary = gallery_summary(load_gallery(gallery))
    if json_out:
        print_json({"gallery": str(gallery), **summary})
        return
    out.print(f"{escape(str(gallery))}: {plural(len(summary['people']), 'person', 'people')}, {plural(summary['photos'], 'photo')}, {summary['weights']} weights",
              highlight=False, soft_wrap=True)  # fmt: skip
    table = Table("person", "photos")
    for p in summary["people"]:
        table.add_row(escape(p["name"]), str(p["photos"]))
    out.print(table)
    out.print(_rule_line(summary["rule"]), highlight=False)


@app.command("show")
@user_errors_as_exit_codes
def gallery_show(
    person: Annotated[str | None, typer.Argument(help="One person (default: everyone).")] = None,
    old_second: OldGalleryArg = None,
    gallery_opt: GalleryFlag = None,
    json_out: JsonFlag = False,
) -> None:
    """A person's photos (or everyone's), how consistent they are, and the gallery's open-set rule.

    Consistency: each photo against the centroid of the person's other photos; far ones are likely
    someone else. Two far-apart groups of photos under one name are likely two people."""
    from lambdas.core.gallery_edit import enrolled_person

    from facerec_cli.galleries import load_gallery

    gallery, rest = _gallery(gallery_opt, [person, old_second], "show")
    person = rest[0]
    loaded = load_gallery(gallery)
    people = None if person is None else [enrolled_person(loaded, person)]
    details = person_details(loaded, people)
    if json_out:
        print_json({"gallery": str(gallery), "weights": loaded.weights, "rule": rule_info(loaded), "people": details})
        return
    for d in details:
        c = d["consistency"]
        stats = "single photo: nothing to compare it with" if c["mean"] is None else f"mean {c['mean']:.2f}, worst {c['worst']:.2f}"
        out.print(f"[bold]{escape(d['name'])}[/]: {plural(len(d['photos']), 'photo')} ({stats})", highlight=False)
        for photo in d["photos"]:
            far = "  [yellow]far from the others: likely another person[/]" if photo in c["outliers"] else ""
            out.print(f"  {escape(photo)}{far}", highlight=False, soft_wrap=True)
        if d["two_groups"]:
            from facerec_cli.cli.identify import warn_two_groups

            warn_two_groups(d["name"], d["two_groups"]["distance"], d["two_groups"]["groups"])
    out.print(_rule_line(rule_info(loaded)), highlight=False)


# ------------------------------------------------------------------------------------------ editing


def report_edit(before: Gallery, after: Gallery, touched: list[str], path: Path) -> None:
    """What changed that a person should know: the touched people's photos that sit far from the others,
    two far-apart groups, and the open-set rule before and after."""
    from lambdas.core.gallery_edit import two_people

    from facerec_cli.cli.identify import warn_two_groups

    consistency = {c.person: c for c in after.calibration.people} if after.calibration else {}
    for person in (p for p in touched if p in consistency):
        c = consistency[person]
        for photo in c.outliers:
            err.print(f"[yellow]warning[/]: {escape(photo)} is far from {escape(person)}'s other photos (over {_outlier():g}): "
                      "likely another person", highlight=False, soft_wrap=True)  # fmt: skip
    for t in two_people(after, [p for p in touched if p in after.people]):
        warn_two_groups(t.person, t.distance, [list(g) for g in t.groups])
    old, new = rule_info(before), rule_info(after)
    change = "unchanged" if old == new else f"was threshold {old['threshold']:g}, margin {old['margin']:g} ({old['source']})"
    from facerec_cli.cli.identify import left_out_note

    err.print(f"{_rule_line(new)}; {change}" + (left_out_note(after.calibration) if after.calibration else ""), highlight=False, soft_wrap=True)
    err.print(f"[green]wrote {escape(str(path))}[/]: {plural(len(after.names), 'photo')} of {plural(len(after.people), 'person', 'people')}", highlight=False, soft_wrap=True)


def _outlier() -> float:
    from lambdas.core.openset import OUTLIER_DISTANCE

    return OUTLIER_DISTANCE


def _load_for_edit(path: Path) -> Gallery:
    from lambdas.core.gallery import Gallery

    return Gallery.load(path)  # a torch gallery is refused with the command that converts it: edits write safetensors


def _cloud(to_cloud: bool, target: AwsTarget) -> Any:
    """(settings, clients, deployed target) when --to-cloud, checked before anything changes; else None."""
    if not to_cloud:
        if any(v is not None for v in (target.prefix, target.region, target.endpoint_url, target.profile)):
            raise UserError("--prefix, --region, --endpoint-url and --profile are for --to-cloud", hint="add --to-cloud to upload the gallery")
        return None
    from facerec_cli.infra.clients import Clients
    from facerec_cli.pipeline.gallery_push import deployed_target

    settings = target.settings()
    clients = Clients.from_settings(settings)
    return settings, clients, deployed_target(settings, clients)


def _save_and_push(before: Gallery, after: Gallery, touched: list[str], path: Path, cloud: Any) -> None:
    from facerec_cli.galleries import check_new_gallery_path

    check_new_gallery_path(path, force=True)  # -o onto a folder or a file that is not a gallery: refused, nothing written
    if cloud is not None:  # the deployed function would refuse it: say so before the file changes
        from facerec_cli.pipeline.gallery_push import check_for_functions

        check_for_functions(after, cloud[2])
    after.save(path)
    report_edit(before, after, touched, path)
    if cloud is not None:
        settings, clients, target = cloud
        try:
            _push(settings, path, clients=clients, target=target)
        except UserError as exc:
            raise UserError(f"{path} was saved, but {exc}", hint=f"upload it with `facerec gallery push -g {path}`") from exc


def _push(settings: Any, path: Path, **kwargs: Any) -> None:
    from facerec_cli.pipeline.gallery_push import push_gallery

    from lambdas.core.gallery import read_gallery_file

    body = read_gallery_file(Path(path))
    pushed = push_gallery(settings, body, origin=str(path), **kwargs)
    t = pushed.target
    if not pushed.changed:
        err.print(f"{escape(t.uri)} holds this gallery already (md5 {pushed.md5}): nothing uploaded", highlight=False, soft_wrap=True)
    else:
        err.print(f"[green]uploaded[/] {escape(str(path))} to {escape(t.uri)} ({pushed.size / 1e6:.2f} MB, md5 {pushed.md5}): "
                  f"{t.function} uses it from its next invocation (videos being recognised now finish with the old one)",
                  highlight=False, soft_wrap=True)  # fmt: skip


@app.command("add")
@user_errors_as_exit_codes
@aws_target_options()
def gallery_add(
    photos: Annotated[list[Path], typer.Argument(help="Photos or folders: a folder named after a person, or PHOTOS_DIR/<person>/ as enroll takes.")],
    gallery_opt: GalleryFlag = None,
    person: Annotated[str | None, typer.Option("--person", "-p", help="Whose photos these are (default: each folder's name).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Only for a gallery enrolled with a state_dict file: that file.")] = None,
    output: GalleryOutputOpt = None,
    to_cloud: ToCloudOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Add photos of a person (new or enrolled), embedded with the gallery's own weights.

    Photos with no face are skipped and reported, photos already in the gallery too; photos far from
    their person, and a person whose photos form two far-apart groups, are warned about. The open-set
    rule is calibrated again."""
    gallery, photos = _gallery(gallery_opt, list(photos), "add")
    if not photos:
        raise UserError("which photos? name photos or folders after the gallery", hint="`facerec gallery add -g GALLERY PHOTOS...`")
    run_add(gallery, photos, person=person, weights=weights, output=output, cloud=_cloud(to_cloud, target))


def run_add(path: Path, paths: list[Path], *, person: str | None = None, weights: str | None = None, output: Path | None = None,
            cloud: Any = None) -> Gallery:  # fmt: skip
    from lambdas.core.enroll import collect_photos, embed_photos
    from lambdas.core.errors import GalleryError
    from lambdas.core.gallery import weights_for
    from lambdas.core.gallery_edit import person_name, same_photos, with_photos
    from lambdas.core.recognise import RECIPE, FaceEncoder
    from lambdas.core.weights import weights_id

    from facerec_cli.cli.identify import progress

    before = _load_for_edit(path)
    pairs = [(person_name(p), photo) for p, photo in collect_photos(paths, None if person is None else person_name(person))]
    chosen = weights_for(before, weights)  # the gallery's own weights, never another
    before.check_weights(weights_id(chosen), RECIPE)
    with progress() as bar:
        task = bar.add_task("loading models", total=len(pairs))
        encoder = FaceEncoder(weights=chosen)
        embedded, reports = embed_photos(pairs, encoder, lambda r: bar.update(task, advance=1, description=f"embedding {r.person}"))
    for r in reports:
        if r.note != "ok":
            err.print(f"[yellow]{escape(r.person)}/{escape(r.path.name)}[/]: {escape(r.note)}", highlight=False, soft_wrap=True)
    if not embedded.names:
        raise GalleryError(f"no face found in any of the {plural(len(pairs), 'photo')}: {path} is unchanged")
    keep = []
    for i, same in enumerate(same_photos(before, embedded.embeddings, embedded.sources)):
        if same is None:
            keep.append(i)
        else:
            err.print(f"[yellow]{escape(embedded.sources[i])}[/]: the same photo as {escape(same)}: skipped", highlight=False, soft_wrap=True)
    if not keep:
        err.print(f"every photo is in the gallery already: {path} is unchanged", highlight=False)
        return before
    names = [embedded.names[i] for i in keep]
    after = with_photos(before, names, embedded.embeddings[keep], [embedded.sources[i] for i in keep])
    added = {n: names.count(n) for n in dict.fromkeys(names)}
    for name, count in added.items():
        new = "" if name in before.people else " (new)"
        err.print(f"added {plural(count, 'photo')} of {escape(name)}{new}: {after.names.count(name)} in all", highlight=False)
    _save_and_push(before, after, list(added), output or path, cloud)
    return after


@app.command("remove")
@user_errors_as_exit_codes
@aws_target_options()
def gallery_remove(
    person: Annotated[str | None, typer.Argument(help="The person to remove, with all their photos.")] = None,
    old_second: OldGalleryArg = None,
    gallery_opt: GalleryFlag = None,
    photo: Annotated[str | None, typer.Option("--photo", help="Remove this one photo instead, as `show` lists it (person/photo.jpg).")] = None,
    output: GalleryOutputOpt = None,
    to_cloud: ToCloudOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Remove a person, or one photo (--photo); the open-set rule is calibrated again."""
    gallery, rest = _gallery(gallery_opt, [person, old_second], "remove")
    person = rest[0]
    run_remove(gallery, person=person, photo=photo, output=output, cloud=_cloud(to_cloud, target))


def run_remove(path: Path, *, person: str | None = None, photo: str | None = None, output: Path | None = None, cloud: Any = None) -> Gallery:
    from lambdas.core.gallery_edit import enrolled_person, without_person, without_source

    if (person is None) == (photo is None):
        raise UserError("name a PERSON to remove, or one photo with --photo PERSON/PHOTO (not both)")
    before = _load_for_edit(path)
    if person is not None:
        name = enrolled_person(before, person)
        after = without_person(before, name)
        err.print(f"removed {escape(name)} and {plural(before.names.count(name), 'photo')}", highlight=False)
        touched: list[str] = []
    else:
        after, source = without_source(before, str(photo))
        whose = before.names[before.sources.index(source)]
        left = after.names.count(whose)
        err.print(f"removed {escape(source)}: {escape(whose)} has {plural(left, 'photo')} left" if left else
                  f"removed {escape(source)}, {escape(whose)}'s only photo: {escape(whose)} is no longer in the gallery", highlight=False)
        touched = [whose] if left else []
    _save_and_push(before, after, touched, output or path, cloud)
    return after


@app.command("rename")
@user_errors_as_exit_codes
@aws_target_options()
def gallery_rename(
    old: Annotated[str, typer.Argument(help="The person's name now.")],
    new: Annotated[str, typer.Argument(help="The new name.")],
    old_third: OldGalleryArg = None,
    gallery_opt: GalleryFlag = None,
    merge: Annotated[bool, typer.Option("--merge", help="NEW is enrolled already: make the two one person.")] = False,
    output: GalleryOutputOpt = None,
    to_cloud: ToCloudOpt = False,
    target: AwsTarget = AwsTarget(),
) -> None:
    """Rename a person (results name them so from then on)."""
    gallery, rest = _gallery(gallery_opt, [old, new, old_third], "rename")
    if rest[1] is None:
        raise UserError("rename needs the person's name now and the new name", hint="`facerec gallery rename -g GALLERY OLD NEW`")
    old, new = rest[0], rest[1]
    run_rename(gallery, old, new, merge=merge, output=output, cloud=_cloud(to_cloud, target))


def run_rename(path: Path, old: str, new: str, *, merge: bool = False, output: Path | None = None, cloud: Any = None) -> Gallery:
    from lambdas.core.gallery_edit import enrolled_person, person_name, renamed
    from lambdas.core.names import case_clash

    before = _load_for_edit(path)
    after = renamed(before, old, new, merge=merge)
    old, new = enrolled_person(before, old), person_name(new)
    new = case_clash(new, [p for p in before.people if p != old]) or new  # merged under the enrolled spelling
    err.print(f"renamed {escape(old)} to {escape(new)}" + (f", merged with the {plural(before.names.count(new), 'photo')} of {escape(new)}"
              if new in before.people else ""), highlight=False)  # fmt: skip
    _save_and_push(before, after, [new], output or path, cloud)
    return after


@app.command("push")
@user_errors_as_exit_codes
@aws_target_options()
def gallery_push(old_gallery: OldGalleryArg = None, gallery_opt: GalleryFlag = None, target: AwsTarget = AwsTarget()) -> None:
    """Upload a gallery to the deployed functions alone, without `facerec bootstrap`.

    It goes where bootstrap puts it (s3://<prefix>-details/.facerec/gallery.safetensors); the
    face-recognition function uses it from its next invocation. A gallery that does not load, or was made
    with other weights than the functions', is refused."""
    from facerec_cli.infra.clients import Clients
    from facerec_cli.pipeline.gallery_push import deployed_target

    gallery, _ = _gallery(gallery_opt, [old_gallery], "push")
    settings = target.settings()
    clients = Clients.from_settings(settings)
    _push(settings, gallery, clients=clients, target=deployed_target(settings, clients))
