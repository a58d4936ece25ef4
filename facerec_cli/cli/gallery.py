"""``facerec gallery``: gallery files, kept current without enrolling again or redeploying.

``list``/``show`` read; ``add``/``remove``/``rename`` edit and save, ``push`` and ``--to-cloud`` upload
the file alone: the workflows are ``facerec_cli.gallery_workflows``, which return reports; these
commands parse the options and print them (``render``). Models, numpy and boto3 are imported inside
the functions, so registering these commands costs ``facerec identify`` nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from facerec_cli.cli.options import AwsTarget, GalleryOutputOpt, aws_target_options, user_errors_as_exit_codes
from facerec_cli.errors import UserError
from facerec_cli.render import err, out, plural, print_json, rule_line

if TYPE_CHECKING:
    from facerec_cli.gallery_workflows import Cloud

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
    from facerec_cli.gallery_files import convert_gallery
    gallery = convert_gallery(old, new)
    err.print(f"{new}: {plural(len(gallery.names), 'embedding')} of {plural(len(gallery.people), 'person', 'people')}, {gallery.weights} weights")


@app.command("list")
@user_errors_as_exit_codes
def gallery_list(old_gallery: OldGalleryArg = None, gallery_opt: GalleryFlag = None, json_out: JsonFlag = False) -> None:
    """The people in a gallery with their photo counts, and its open-set rule."""
    from rich.table import Table

    from facerec_cli.gallery_files import load_gallery
    from facerec_cli.gallery_workflows import gallery_summary

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
    out.print(rule_line(summary["rule"]), highlight=False)


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

    from facerec_cli.gallery_files import load_gallery
    from facerec_cli.gallery_workflows import person_details, rule_info
    from facerec_cli.render import warn_two_groups

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
            warn_two_groups(d["name"], d["two_groups"]["distance"], d["two_groups"]["groups"])
    out.print(rule_line(rule_info(loaded)), highlight=False)


# ------------------------------------------------------------------------------------------ editing


def _cloud(to_cloud: bool, target: AwsTarget) -> Cloud | None:
    """Where --to-cloud pushes, checked before anything changes; else None."""
    if not to_cloud:
        if any(v is not None for v in (target.prefix, target.region, target.endpoint_url, target.profile)):
            raise UserError("--prefix, --region, --endpoint-url and --profile are for --to-cloud", hint="add --to-cloud to upload the gallery")
        return None
    from facerec_cli.gallery_workflows import cloud_for

    return cloud_for(target.settings())


def save_and_push(before: Any, after: Any, touched: list[str], path: Path, cloud: Cloud | None) -> None:
    """Save an edit (and with --to-cloud push it), printing what it changed."""
    from facerec_cli.gallery_workflows import push_saved, save_edit
    from facerec_cli.render import print_pushed, print_saved_edit

    print_saved_edit(save_edit(before, after, touched, path, cloud))
    if cloud is not None:
        print_pushed(push_saved(cloud, path), path)


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
    from facerec_cli.gallery_workflows import Additions, load_for_edit
    from facerec_cli.render import progress

    gallery, photos = _gallery(gallery_opt, list(photos), "add")
    if not photos:
        raise UserError("which photos? name photos or folders after the gallery", hint="`facerec gallery add -g GALLERY PHOTOS...`")
    cloud = _cloud(to_cloud, target)
    additions = Additions.plan(load_for_edit(gallery), photos, person=person, weights=weights)
    with progress() as bar:
        task = bar.add_task("loading models", total=len(additions.pairs))
        reports = additions.embed(lambda r: bar.update(task, advance=1, description=f"embedding {r.person}"))
    for r in reports:
        if r.note != "ok":
            err.print(f"[yellow]{escape(r.person)}/{escape(r.path.name)}[/]: {escape(r.note)}", highlight=False, soft_wrap=True)
    added = additions.apply(gallery)
    for source, same in added.same:
        err.print(f"[yellow]{escape(source)}[/]: the same photo as {escape(same)}: skipped", highlight=False, soft_wrap=True)
    if added.after is None:
        err.print(f"every photo is in the gallery already: {gallery} is unchanged", highlight=False)
        return
    for name, count in added.added.items():
        new = "" if name in additions.before.people else " (new)"
        err.print(f"added {plural(count, 'photo')} of {escape(name)}{new}: {added.after.names.count(name)} in all", highlight=False)
    save_and_push(additions.before, added.after, list(added.added), output or gallery, cloud)


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
    from facerec_cli.gallery_workflows import remove

    gallery, rest = _gallery(gallery_opt, [person, old_second], "remove")
    cloud = _cloud(to_cloud, target)
    before, done = remove(gallery, person=rest[0], photo=photo)
    if done.person is not None:
        err.print(f"removed {escape(done.person)} and {plural(done.photos, 'photo')}", highlight=False)
    else:
        whose, source = escape(str(done.whose)), escape(str(done.source))
        err.print(f"removed {source}: {whose} has {plural(done.left, 'photo')} left" if done.left else
                  f"removed {source}, {whose}'s only photo: {whose} is no longer in the gallery", highlight=False)
    save_and_push(before, done.after, done.touched, output or gallery, cloud)


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
    from facerec_cli.gallery_workflows import rename

    gallery, rest = _gallery(gallery_opt, [old, new, old_third], "rename")
    if rest[1] is None:
        raise UserError("rename needs the person's name now and the new name", hint="`facerec gallery rename -g GALLERY OLD NEW`")
    cloud = _cloud(to_cloud, target)
    before, done = rename(gallery, rest[0], rest[1], merge=merge)
    merged = "" if done.merged is None else f", merged with the {plural(done.merged, 'photo')} of {escape(done.new)}"
    err.print(f"renamed {escape(done.old)} to {escape(done.new)}{merged}", highlight=False)
    save_and_push(before, done.after, [done.new], output or gallery, cloud)


@app.command("push")
@user_errors_as_exit_codes
@aws_target_options()
def gallery_push(old_gallery: OldGalleryArg = None, gallery_opt: GalleryFlag = None, target: AwsTarget = AwsTarget()) -> None:
    """Upload a gallery to the deployed functions alone, without `facerec bootstrap`.

    It goes where bootstrap puts it (s3://<prefix>-details/.facerec/gallery.safetensors); the
    face-recognition function uses it from its next invocation. A gallery that does not load, or was made
    with other weights than the functions', is refused."""
    from facerec_cli.gallery_workflows import cloud_for, push
    from facerec_cli.render import print_pushed

    gallery, _ = _gallery(gallery_opt, [old_gallery], "push")
    cloud = cloud_for(target.settings())
    print_pushed(push(cloud.settings, gallery, clients=cloud.clients, target=cloud.target), gallery)
