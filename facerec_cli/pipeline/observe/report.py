"""``--html REPORT.html`` of `facerec results` and `facerec run-local`: one self-contained page (no
network: images are inlined as data URIs, the filter is a few lines of plain JavaScript), a row per
video: a thumbnail of its annotated frame (``<stem>.annotated.jpg``, written when the recognition
function runs with ``FACEREC_ANNOTATE=1``) or else its first stage-1 frame (``<stem>.jpg``), the
name, status, faces with their distances, and timings.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import botocore.exceptions
from PIL import Image

from lambdas.core.annotate import ANNOTATED_SUFFIX
from lambdas.core.results import ERROR, NO_FACE, OK, UNKNOWN, Face, Result, Timeline
from lambdas.gop import first_frame_key

from facerec_cli.config import Settings
from facerec_cli.pipeline.observe.dashboard import S3Object, list_objects
from facerec_cli.pipeline.result_buckets import result_buckets
from facerec_cli.pipeline.upload_ledger import stem_of
from facerec_cli.render import clock, plural

PENDING = "pending"  # uploaded, no result yet
STATUS_ORDER = (OK, UNKNOWN, NO_FACE, ERROR, PENDING)
THUMBNAIL = (480, 360)
VIEW_SIZE = (160, 160)  # a best-view crop in a timeline lane
MAX_LANES = 24  # people drawn per video; the rest are counted


@dataclass
class ReportRow:
    stem: str
    video: str
    status: str
    name: str = ""
    faces: list[Face] = field(default_factory=list)
    frames: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    latency_s: float | None = None  # result LastModified - upload LastModified
    image: bytes | None = None  # JPEG thumbnail
    image_kind: str | None = None  # "annotated" | "frame"
    timeline: Timeline | None = None  # who is on screen when (FACEREC_TIMELINE=1)
    views: dict[str, bytes] = field(default_factory=dict)  # person -> JPEG crop of their best view

    @classmethod
    def of(cls, stem: str, result: Result) -> "ReportRow":
        return cls(
            stem=stem, video=result.video, status=result.status, name=result.name, faces=list(result.faces),
            frames=result.frames, timings_ms=dict(result.timings_ms), error=result.error, timeline=result.timeline,
        )  # fmt: skip


def thumbnail(data: bytes, size: tuple[int, int] = THUMBNAIL) -> bytes | None:
    """A JPEG no larger than ``size``; None for bytes that are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            img.thumbnail(size)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=85)
            return buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _get(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError:
        return None


def collect_rows(settings: Settings, s3: Any, sqs: Any, *, extra: Iterable[Result] = ()) -> list[ReportRow]:
    """A row per video of the deployment: results and failure records (as ``error``), and uploads
    still without an answer (``pending``); ``extra``: results of inputs that never reached a bucket."""
    from facerec_cli.pipeline.observe.watch_results import ResultsReader

    names = settings.names
    results = ResultsReader(settings, s3, sqs).refresh().results
    inputs = {stem_of(o.key): o for o in list_objects(s3, names.input_bucket)}
    stage1 = {o.key: o for o in list_objects(s3, names.stage1_bucket)}
    details = result_buckets(s3, names).details
    details_objects = {o.key: o for o in list_objects(s3, details)}

    rows: dict[str, ReportRow] = {}
    for stem, result in results.items():
        row = ReportRow.of(stem, result)
        upload, answer = inputs.get(stem), details_objects.get(f"{stem}.json")
        if upload is not None and answer is not None and answer.modified >= upload.modified.replace(microsecond=0):
            row.latency_s = (answer.modified - upload.modified).total_seconds()
        elif upload is not None and answer is not None:
            row = ReportRow(stem, upload.key.rsplit("/", 1)[-1], PENDING)  # the result is of an earlier upload
        rows[stem] = row
    for stem, upload in inputs.items():
        rows.setdefault(stem, ReportRow(stem, upload.key.rsplit("/", 1)[-1], PENDING))

    for stem, row in rows.items():
        upload = inputs.get(stem)
        since = upload.modified.replace(microsecond=0) if upload else None
        for kind, bucket, objects, key in (
            ("annotated", details, details_objects, f"{stem}{ANNOTATED_SUFFIX}"),
            ("frame", names.stage1_bucket, stage1, first_frame_key(stem, stage1) or f"{stem}.jpg"),
        ):
            obj: S3Object | None = objects.get(key)
            if obj is None or (since is not None and obj.modified < since):
                continue  # none, or left by an earlier upload of the same name
            data = _get(s3, bucket, key)
            small = thumbnail(data) if data else None
            if small:
                row.image, row.image_kind = small, kind
                break
        if row.timeline is not None:  # the best view of each person, stored beside the result
            for person in row.timeline.people[:MAX_LANES]:
                data = _get(s3, details, person.image) if person.image else None
                small = thumbnail(data, VIEW_SIZE) if data else None
                if small:
                    row.views[person.person] = small
    ordered = sorted(rows.values(), key=lambda r: (STATUS_ORDER.index(r.status) if r.status in STATUS_ORDER else 9, r.video))
    return ordered + [ReportRow.of(r.video.rsplit(".", 1)[0], r) for r in extra]


# -------------------------------------------------------------------------------------------- HTML

CSS = """
:root { --ok:#1b873f; --unknown:#b7791f; --no_face:#2b7a99; --error:#c62828; --pending:#6b7280; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1f2328; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.sub { color: #57606a; margin-bottom: 16px; }
.filters { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin-bottom: 12px; }
.filters label { border: 1px solid #d0d7de; border-radius: 16px; padding: 3px 10px; background: #fff; cursor: pointer; user-select: none; }
.filters label.off { opacity: .45; }
.filters button { border: 1px solid #d0d7de; border-radius: 6px; background: #fff; padding: 3px 10px; cursor: pointer; }
.shown { color: #57606a; margin-left: 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; position: sticky; top: 0; }
td.thumb img { max-width: 240px; max-height: 180px; display: block; cursor: zoom-in; border-radius: 3px; }
td.thumb img.big { max-width: 100%; max-height: none; cursor: zoom-out; }
td.thumb .kind { color: #57606a; font-size: 12px; }
.status { font-weight: 600; padding: 1px 8px; border-radius: 10px; color: #fff; white-space: nowrap; }
.status.ok { background: var(--ok); } .status.unknown { background: var(--unknown); } .status.no_face { background: var(--no_face); }
.status.error { background: var(--error); } .status.pending { background: var(--pending); }
.face { white-space: nowrap; } .face.unknown { color: var(--error); } .face.known { color: var(--ok); }
.err { color: var(--error); max-width: 420px; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.noimg { color: #8c959f; font-size: 12px; }
tr.timeline td { background: #fcfcfd; padding: 4px 8px 12px; }
.tl { position: relative; }
.tl .head { color: #57606a; font-size: 12px; margin: 2px 0 6px; }
.tl .axis, .tl .track { position: relative; margin-left: 210px; }
.tl .axis { height: 16px; border-bottom: 1px solid #d0d7de; font-size: 11px; color: #57606a; }
.tl .axis span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
.tl .lane { position: relative; display: flex; align-items: center; height: 44px; border-bottom: 1px dashed #eef0f2; }
.tl .who { position: absolute; left: 0; width: 204px; display: flex; align-items: center; gap: 6px; overflow: hidden; white-space: nowrap; }
.tl .who img.view { width: 36px; height: 36px; object-fit: cover; border-radius: 4px; flex: none; }
.tl .who .none { width: 36px; height: 36px; border-radius: 4px; background: #eef0f2; flex: none; }
.tl .who .person.known { color: var(--ok); font-weight: 600; } .tl .who .person.unknown { color: var(--unknown); font-weight: 600; }
.tl .who small { color: #57606a; }
.tl .track { flex: 1; height: 18px; background: #f3f4f6; border-radius: 3px; }
.tl .bar { position: absolute; top: 0; height: 18px; border-radius: 3px; min-width: 3px; }
.tl .bar.known { background: var(--ok); } .tl .bar.unknown { background: var(--unknown); }
.tl .bar .mark { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #1f2328; }
.tl .lane .preview { display: none; position: absolute; left: 44px; top: 40px; z-index: 5; background: #fff; padding: 4px;
  border: 1px solid #d0d7de; border-radius: 6px; box-shadow: 0 4px 14px rgba(0,0,0,.18); font-size: 12px; color: #57606a; }
.tl .lane .preview img { display: block; width: 160px; height: auto; margin-bottom: 2px; }
.tl .lane:hover .preview { display: block; }
.tl .lane:hover { background: #f6f8fa; }
.tl .more { color: #57606a; font-size: 12px; margin-top: 4px; }
"""

SCRIPT = """
(function () {
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input.status-filter'));
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr.video'));
  var shown = document.getElementById('shown');
  function apply() {
    var on = {};
    boxes.forEach(function (b) { on[b.value] = b.checked; b.parentNode.classList.toggle('off', !b.checked); });
    var n = 0;
    rows.forEach(function (r) {
      var show = !!on[r.getAttribute('data-status')]; r.hidden = !show; if (show) n++;
      var next = r.nextElementSibling;  // the video's timeline, when it has one, goes with it
      if (next && next.classList.contains('timeline')) { next.hidden = !show; }
    });
    shown.textContent = n + ' of ' + rows.length + ' shown';
  }
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  document.getElementById('all').addEventListener('click', function () { boxes.forEach(function (b) { b.checked = true; }); apply(); });
  document.getElementById('problems').addEventListener('click', function () {
    boxes.forEach(function (b) { b.checked = b.value !== 'ok'; }); apply();
  });
  document.querySelectorAll('td.thumb img').forEach(function (img) {
    img.addEventListener('click', function () { img.classList.toggle('big'); });
  });
  apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _row_html(row: ReportRow) -> str:
    if row.image:
        uri = "data:image/jpeg;base64," + base64.b64encode(row.image).decode("ascii")
        alt = f"{row.image_kind} frame of {row.video}"
        thumb = f'<img src="{uri}" alt="{_e(alt)}" data-kind="{_e(row.image_kind)}"><span class="kind">{_e(row.image_kind)}</span>'
    else:
        thumb = '<span class="noimg">no frame</span>'
    faces = "<br>".join(
        f'<span class="face {"unknown" if f.name == UNKNOWN else "known"}">{_e(f.name)} {f.distance:.2f}'
        f' <small>(frame {f.frame}, p {f.prob:.2f})</small></span>'
        for f in row.faces[:12]
    ) + (f"<br><small>… {len(row.faces) - 12} more</small>" if len(row.faces) > 12 else "")
    t = row.timings_ms
    stages = [(k, t[k]) for k in ("split", "download", "decode", "detect", "embed", "match", "annotate", "recognise") if k in t]
    timing = "<br>".join(f"{_e(k)} {_ms(v)} ms" for k, v in stages)
    latency = "" if row.latency_s is None else f"{row.latency_s:.1f} s"
    error = f'<div class="err">{_e(row.error)}</div>' if row.error else ""
    return (
        f'<tr class="video" data-status="{_e(row.status)}" data-video="{_e(row.video)}">'
        f'<td class="thumb">{thumb}</td>'
        f"<td>{_e(row.video)}{error}</td>"
        f'<td><span class="status {_e(row.status)}">{_e(row.status)}</span></td>'
        f"<td>{_e(row.name) if row.status != PENDING else ''}</td>"
        f'<td class="num">{len(row.faces) if row.status != PENDING else ""}</td>'
        f"<td>{faces}</td>"
        f'<td class="num">{row.frames or ""}</td>'
        f'<td class="num">{timing}</td>'
        f'<td class="num">{latency}</td>'
        "</tr>"
    )


def _ticks(duration: float) -> list[float]:
    """Axis marks: a round step giving 4 to 10 of them."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 10:
            return [i * step for i in range(int(duration // step) + 1)]
    return [0.0, duration]


def _timeline_html(row: ReportRow) -> str:
    """A lane per person: their time ranges as bars on the video's length, the best view beside the
    name (larger, with its time and distance, on hover) and a mark where it was seen."""
    timeline = row.timeline
    if timeline is None:
        return ""
    people = timeline.people
    step = 1 / timeline.fps if timeline.fps else 0.0
    last = max([p.last for p in people] + [0.0])
    duration = timeline.duration or (last + step) or 1.0
    duration = max(duration, 1e-3)

    def pct(t: float) -> float:
        return max(0.0, min(100.0, 100.0 * t / duration))

    axis = "".join(f'<span style="left:{pct(t):.3f}%">{int(t // 60)}:{int(t % 60):02d}</span>' for t in _ticks(duration))
    lanes = []
    for person in people[:MAX_LANES]:
        kind = "known" if person.known else "unknown"
        view = row.views.get(person.person)
        uri = "data:image/jpeg;base64," + base64.b64encode(view).decode("ascii") if view else None
        img = (f'<img class="view" src="{uri}" alt="best view of {_e(person.person)}" data-kind="best-view">' if uri
               else '<span class="none"></span>')  # fmt: skip
        spans = ", ".join(f"{clock(a)}–{clock(b)}" if b > a else clock(a) for a, b in person.ranges)
        bars = []
        for start, end in person.ranges:
            left, right = pct(start), pct(min(duration, end + step))  # on screen until about the next sample
            mark = ""
            if start <= person.best.t <= end + 1e-6:
                at = 100.0 * (person.best.t - start) / max(1e-6, min(duration, end + step) - start)
                mark = f'<span class="mark" style="left:{min(99.0, at):.2f}%" title="best view at {_e(clock(person.best.t))}"></span>'
            bars.append(
                f'<div class="bar {kind}" style="left:{left:.3f}%;width:{max(0.0, right - left):.3f}%" '
                f'data-start="{start:.3f}" data-end="{end:.3f}" title="{_e(person.person)} {_e(clock(start))}–{_e(clock(end))}">{mark}</div>'
            )
        distance = f"{person.best_distance:.2f}" + ("" if person.known else f" to {person.nearest}")
        big = f'<img src="{uri}" alt="best view of {_e(person.person)}" data-kind="preview">' if uri else ""
        preview = (
            f'<div class="preview">{big}{_e(person.person)} · best view at {_e(clock(person.best.t))} · distance {_e(distance)}'
            f" · seen {person.detections}× · {_e(spans)}</div>"
        )
        lanes.append(
            f'<div class="lane" data-person="{_e(person.person)}" data-known="{str(person.known).lower()}">'
            f'<div class="who">{img}<span class="person {kind}">{_e(person.person)}</span><small>{_e(f"{person.best_distance:.2f}")}</small></div>'
            f'<div class="track">{"".join(bars)}</div>{preview}</div>'
        )
    more = f'<div class="more">… and {len(people) - MAX_LANES} more</div>' if len(people) > MAX_LANES else ""
    if not people:
        more = '<div class="more">nobody on screen</div>'
    head = (f"timeline: {len(people)} {'person' if len(people) == 1 else 'people'}, a frame every {step:g} s over "
            f"{clock(duration)}, {plural(timeline.segments, 'segment')}")  # fmt: skip
    return (
        f'<tr class="timeline" data-video="{_e(row.video)}"><td colspan="9"><div class="tl" data-duration="{duration:.3f}">'
        f'<div class="head">{_e(head)}</div><div class="axis">{axis}</div>{"".join(lanes)}{more}</div></td></tr>'
    )


def render_html(rows: list[ReportRow], *, title: str = "facerec results", subtitle: str = "") -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    statuses = [s for s in STATUS_ORDER if s in counts] + sorted(s for s in counts if s not in STATUS_ORDER)
    filters = "".join(
        f'<label class="{_e(s)}"><input type="checkbox" class="status-filter" value="{_e(s)}" checked> {_e(s)} ({counts[s]})</label>'
        for s in statuses
    )
    generated = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    summary = ", ".join(f"{counts[s]} {s}" for s in statuses) or "no videos"
    body = "".join(_row_html(r) + _timeline_html(r) for r in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<div class="sub">{_e(subtitle + " · " if subtitle else "")}{plural(len(rows), "video")}: {_e(summary)} · generated {_e(generated)}</div>
<div class="filters">status: {filters}<button type="button" id="all">all</button><button type="button" id="problems">problems only</button><span class="shown" id="shown"></span></div>
<table id="results"><thead><tr><th>frame</th><th>video</th><th>status</th><th>name</th><th>faces</th><th>names and distances</th><th>frames</th><th>timings</th><th>upload → result</th></tr></thead>
<tbody>{body}</tbody></table>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(path: Path, settings: Settings, s3: Any, sqs: Any, *, title: str | None = None, extra: Iterable[Result] = ()) -> int:
    """Write the report of the deployment ``settings`` names; returns the number of rows."""
    rows = collect_rows(settings, s3, sqs, extra=extra)
    where = f"prefix {settings.prefix}" + (f", endpoint {settings.endpoint_url}" if settings.endpoint_url else f", region {settings.region}")
    text = render_html(rows, title=title or "facerec results", subtitle=where)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return len(rows)


__all__ = ["PENDING", "ReportRow", "collect_rows", "render_html", "thumbnail", "write_report"]
