"""Terminal output: result tables and JSON Lines, the progress bar of local work, and what enrolling or
editing a gallery found (photo consistency, the open-set rule, two people under one name). ``--json``
prints one object per video on stdout and nothing else; everything for people goes to stderr or into
rich tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lambdas.core.names import plural  # noqa: F401  (the one plural rule; here for the CLI's messages)
from lambdas.core.results import ERROR, NO_FACE, OK, UNKNOWN, Result

if TYPE_CHECKING:
    from rich.progress import Progress

    from lambdas.core.openset import Calibration

out = Console()
err = Console(stderr=True)

STATUS_STYLE = {OK: "green", UNKNOWN: "yellow", NO_FACE: "cyan", ERROR: "bold red"}


def print_json(value: Any) -> None:
    """One JSON line on stdout, written directly (rich would wrap long names)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_json_lines(results: Iterable[Result]) -> None:
    for result in results:
        sys.stdout.write(result.to_json() + "\n")
    sys.stdout.flush()


def results_table(results: Iterable[Result], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("video", overflow="fold")
    table.add_column("status")
    table.add_column("name", overflow="fold")
    table.add_column("faces", justify="right")
    table.add_column("distances")
    table.add_column("frames", justify="right")
    table.add_column("ms", justify="right")
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        distances = " ".join(f"{f.distance:.2f}" for f in r.faces[:4]) + (" …" if len(r.faces) > 4 else "")
        t = r.timings_ms
        # In the pipeline "recognise" already contains decode/detect/embed/match.
        stages = ("split", "recognise") if "recognise" in t else ("decode", "detect", "embed", "match")
        total = sum(t.get(k, 0.0) for k in stages)
        table.add_row(
            escape(r.video),
            f"[{style}]{r.status}[/]",
            escape(r.name),
            str(len(r.faces)),
            distances,
            str(r.frames),
            f"{total:.0f}",
        )
    return table


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_errors(results: Iterable[Result]) -> None:
    """The message of every error result, one line each, below the table."""
    for r in results:
        if r.status == ERROR:
            err.print(f"[red]{escape(r.video)}[/]: {escape(str(r.error))}", highlight=False, soft_wrap=True)


def clock(seconds: float) -> str:
    """``m:ss.s``: a time in a video."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def clock_ranges(ranges: list[list[float]], limit: int = 8) -> str:
    """Time ranges in a video, ``m:ss.s-m:ss.s``, the first ``limit`` of them."""
    shown = [clock(a) if a == b else f"{clock(a)}-{clock(b)}" for a, b in ranges[:limit]]
    return ", ".join(shown) + (f" (+{len(ranges) - limit} more)" if len(ranges) > limit else "")


def timeline_table(result: Result, max_ranges: int = 6) -> Table | None:
    """Who is on screen when (a result with a timeline): a row per person, their time ranges."""
    timeline = result.timeline
    if timeline is None:
        return None
    length = f", {clock(timeline.duration)} long" if timeline.duration else ""
    table = Table(title=f"{escape(result.video)}: timeline at {timeline.fps:g} fps{length}, {plural(timeline.segments, 'segment')}", title_justify="left")
    table.add_column("person", overflow="fold")
    table.add_column("on screen", overflow="fold")
    table.add_column("seen", justify="right")
    table.add_column("best", justify="right")
    table.add_column("best view", justify="right")
    for person in timeline.people:
        spans = [f"{clock(a)}–{clock(b)}" if b > a else clock(a) for a, b in person.ranges]
        shown = ", ".join(spans[:max_ranges]) + (f" … (+{len(spans) - max_ranges})" if len(spans) > max_ranges else "")
        best = f"{person.best_distance:.2f}" + ("" if person.known else f" ({escape(person.nearest)})")
        table.add_row(
            f"[{'green' if person.known else 'yellow'}]{escape(person.person)}[/]", shown, str(person.detections), best,
            clock(person.best.t),
        )
    if not timeline.people:
        table.caption = "nobody on screen"
    return table


def print_timelines(results: Iterable[Result]) -> None:
    for result in results:
        table = timeline_table(result)
        if table is not None:
            out.print(table)


# ------------------------------------------------------------------------------ progress, galleries


def progress() -> Progress:
    """The transient progress bar of local work (enrolling, embedding photos, identify's files), on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    )


def warn_two_groups(person: str, distance: float, groups: list[list[str]]) -> None:
    """One person's photos in two far-apart groups (``gallery_edit.two_people``): likely two people."""
    shown = "; ".join(f"{len(g)}: {', '.join(g[:4])}{', ...' if len(g) > 4 else ''}" for g in groups)
    err.print(
        f"[yellow]warning[/]: {escape(person)}'s photos form two groups {distance:.2f} apart ({escape(shown)}): two people under one name? "
        "remove the wrong ones with `facerec gallery remove -g GALLERY --photo PERSON/PHOTO`", highlight=False, soft_wrap=True,
    )  # fmt: skip


def print_calibration(calibration: Calibration, *, every_person: bool | None = None) -> None:
    """How consistent each person's photos are, and the open-set rule chosen (or why none was)."""
    from lambdas.core.openset import MIN_CALIBRATION_PEOPLE

    people = calibration.people
    every_person = len(people) <= 30 if every_person is None else every_person
    table = Table("person", "photos", "mean", "worst", "far from the others (likely another person)", title="photo consistency: "
                  "each photo against the centroid of the person's other photos", title_justify="left")
    for p in people:
        if every_person or p.outliers:
            table.add_row(p.person, str(p.photos), "-" if p.mean is None else f"{p.mean:.2f}",
                          "-" if p.worst is None else f"{p.worst:.2f}", ", ".join(p.outliers))
    if table.rows:
        err.print(table)
    single = sum(p.photos == 1 for p in people)
    if single:
        err.print(f"{single} of {plural(len(people), 'person', 'people')} {'has' if single == 1 else 'have'} a single photo: nothing to check it against; "
                  "3-5 photos each also calibrate the gallery better", highlight=False)
    rule = calibration.rule
    if calibration.calibrated:
        err.print(
            f"open-set rule calibrated on the gallery's own photos: threshold {rule.threshold:g}, margin {rule.margin:g} "
            + (f"(named {calibration.known_named:.1%} of {plural(calibration.known_probes, 'photo')} against their person's other photos; "
               if calibration.known_probes else "(no person with a second photo to check names against; ")
            + (f"answered {calibration.strangers_rejected:.1%} of {plural(calibration.reference, 'reference face')} nobody enrolled unknown)"
               if calibration.reference else
               f"answered {calibration.strangers_rejected:.1%} of {plural(calibration.stranger_probes, 'photo')} unknown with their person "
               "left out, as strangers)")
            + left_out_note(calibration), highlight=False, soft_wrap=True,
        )
    else:
        err.print(
            f"open-set rule: the defaults (threshold {rule.threshold:g}, margin {rule.margin:g}): calibrating needs "
            f"{MIN_CALIBRATION_PEOPLE} people with 2+ photos" + left_out_note(calibration), highlight=False, soft_wrap=True,
        )


def left_out_note(calibration: Calibration) -> str:
    """The photos calibration did not use (far from their person's others: likely mislabelled)."""
    n = len(calibration.left_out)
    if not n:
        return ""
    return f"; {plural(n, 'photo')} left out of the calibration as likely mislabelled (still enrolled): {', '.join(calibration.left_out[:5])}" + (
        ", ..." if n > 5 else "")


def rule_line(rule: dict[str, Any]) -> str:
    """A gallery's open-set rule in one line (``gallery_workflows.rule_info``), and where it comes from."""
    why = {"calibrated": "calibrated on the gallery's own photos", "stored": "threshold stored in the gallery",
           "default": "the defaults: calibrating needs 5 people with 2+ photos"}[rule["source"]]  # fmt: skip
    return f"open-set rule: threshold {rule['threshold']:g}, margin {rule['margin']:g} ({why})"


def print_saved_edit(report: Any) -> None:
    """A saved gallery edit (``gallery_workflows.save_edit``): the touched people's photos that sit far
    from the others, two far-apart groups, the open-set rule before and after, and the file written."""
    for photo, person in report.outliers:
        err.print(f"[yellow]warning[/]: {escape(photo)} is far from {escape(person)}'s other photos (over {report.outlier_distance:g}): "
                  "likely another person", highlight=False, soft_wrap=True)  # fmt: skip
    for t in report.two_people:
        warn_two_groups(t.person, t.distance, [list(g) for g in t.groups])
    old, new = report.rule_before, report.rule_after
    change = "unchanged" if old == new else f"was threshold {old['threshold']:g}, margin {old['margin']:g} ({old['source']})"
    err.print(f"{rule_line(new)}; {change}" + (left_out_note(report.calibration) if report.calibration else ""), highlight=False, soft_wrap=True)
    after = report.after
    err.print(f"[green]wrote {escape(str(report.path))}[/]: {plural(len(after.names), 'photo')} of {plural(len(after.people), 'person', 'people')}",
              highlight=False, soft_wrap=True)  # fmt: skip


def print_pushed(pushed: Any, path: Any) -> None:
    """A gallery pushed to the deployment (``gallery push``, ``--to-cloud``; ``pipeline.gallery_push.Pushed``),
    or found there already."""
    t = pushed.target
    if not pushed.changed:
        err.print(f"{escape(t.uri)} holds this gallery already (md5 {pushed.md5}): nothing uploaded", highlight=False, soft_wrap=True)
    else:
        err.print(f"[green]uploaded[/] {escape(str(path))} to {escape(t.uri)} ({pushed.size / 1e6:.2f} MB, md5 {pushed.md5}): "
                  f"{t.function} uses it from its next invocation (videos being recognised now finish with the old one)",
                  highlight=False, soft_wrap=True)  # fmt: skip


def print_rewritten(before: Result, after: Result, *, json_lines: bool = False) -> None:
    """A stored result re-answered and rewritten (``results --reidentify``): its JSON line, or what changed."""
    if json_lines:
        sys.stdout.write(after.to_json() + "\n")
        return
    change = ""
    if after.timeline is not None:
        was = {p.person for p in before.timeline.people} if before.timeline else set()
        change = "".join(f"; {escape(p.person)} at {clock_ranges(p.ranges)}" for p in after.timeline.people if p.known and p.person not in was)
    err.print(f"{escape(before.video)}: {escape(before.name)} -> [bold]{escape(after.name)}[/]" + change, highlight=False, soft_wrap=True)


def print_reidentified(report: Any) -> None:
    """The summary of ``results --reidentify`` (``stored_results.Reidentified``)."""
    skipped, other = report.skipped_no_embeddings, report.skipped_other_weights
    err.print(f"re-answered {plural(report.results, 'result')} in {escape(report.where)}: {report.changed} changed and rewritten"
              + (f"; {skipped} skipped: stored before results kept embeddings (recognise those videos again)" if skipped else "")
              + (f"; {other} skipped: made with other weights than the gallery's" if other else ""),
              highlight=False, soft_wrap=True)  # fmt: skip


def print_enrolment(done: Any) -> None:
    """What ``facerec enroll`` did (``enrolment.Enrolment``): the photos with a note, the gallery written,
    the photos' consistency and the open-set rule, and two people under one name."""
    for r in done.reports:
        if r.note != "ok":
            err.print(f"[yellow]{r.person}/{r.path.name}[/]: {r.note}", highlight=False, soft_wrap=True)
    gallery = done.gallery
    people = gallery.people
    shown = ", ".join(people) if len(people) <= 12 else f"{', '.join(people[:12])}, ..."
    err.print(
        f"[green]wrote {done.output}[/]: {plural(len(gallery.names), 'face')} of {plural(len(people), 'person', 'people')} ({shown}), weights {gallery.weights}",
        highlight=False, soft_wrap=True,
    )
    if gallery.calibration is not None:
        print_calibration(gallery.calibration)
    for t in done.two_people:
        warn_two_groups(t.person, t.distance, [list(g) for g in t.groups])
