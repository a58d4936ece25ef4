"""Make the README's picture of the report's lanes after a relabel (docs/relabel_lanes.png) from a real run:

    facerec enroll PHOTOS -o g.safetensors          # PHOTOS/lin_manuel_miranda/ (../shared/data/enroll's one photo)
    facerec run-local hamilton_miranda_lacamoire_10s.mp4 -g g.safetensors --timeline --out res
    facerec people label hamilton_miranda_lacamoire_10s.mp4 unknown-1 alex_lacamoire -g g.safetensors --results res
    facerec results --reidentify -g g.safetensors --results res
    python scripts/relabel_lanes.py res hamilton_miranda_lacamoire_10s.mp4 --html report.html --png docs/relabel_lanes.png

The HTML is the report's own (``facerec_cli/pipeline/observe/report.py``: ``render_html``) for the result
in the results folder, with what a deployment's report shows beside it: the video's first frame as its
thumbnail (the stage-1 frame) and each lane's best-view crop (the folder's ``<stem>.timeline/N.jpg``).
``results --html`` reads a deployment's buckets, not a folder, hence this script. The PNG is a headless
Chromium screenshot of it (as tests/test_watch_report.py takes them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerec_cli.pipeline.observe.report import MAX_LANES, VIEW_SIZE, ReportRow, render_html, thumbnail  # noqa: E402
from lambdas.core.images import encode_jpeg  # noqa: E402
from lambdas.core.media import open_video  # noqa: E402
from lambdas.core.results import Result  # noqa: E402

SUBTITLE = "after `facerec people label ... unknown-1 alex_lacamoire` and `facerec results --reidentify`"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--hide-scrollbars"]


def report_row(results: Path, video: Path) -> ReportRow:
    stem = video.stem
    result = Result.from_dict(json.loads((results / f"{stem}.json").read_text()))
    row = ReportRow.of(stem, result)
    with open_video(video) as opened:
        row.image, row.image_kind = thumbnail(encode_jpeg(opened.first_frame().image)), "frame"
    for person in (result.timeline.people if result.timeline else [])[:MAX_LANES]:
        crop = results / person.image if person.image else None
        small = thumbnail(crop.read_bytes(), VIEW_SIZE) if crop and crop.is_file() else None
        if small:
            row.views[person.person] = small
    return row


def screenshot(html: Path, png: Path, size: str) -> None:
    chromium = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
    if chromium is None:
        sys.exit("no headless Chromium found (apt-get install chromium): the HTML is written, the PNG is not")
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}", f"--screenshot={png.resolve()}",
                   html.resolve().as_uri()]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the folder run-local --out wrote (re-answered in place)")
    parser.add_argument("video", type=Path, help="the video itself (its first frame is the row's thumbnail)")
    parser.add_argument("--html", type=Path, required=True)
    parser.add_argument("--png", type=Path, help="also a screenshot of the HTML")
    parser.add_argument("--size", default="1500,1000", help="the screenshot's width,height in px")
    args = parser.parse_args()
    args.html.write_text(render_html([report_row(args.results, args.video)], subtitle=SUBTITLE))
    if args.png:
        screenshot(args.html, args.png, args.size)
        print(f"wrote {args.html} and {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
