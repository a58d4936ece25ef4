"""The commands that recognise on this machine: enroll, identify, run-local, demo.

Their bodies are in cli/enroll.py, cli/identify.py, cli/run_local.py (cli/serve.py) and cli/demo.py,
imported when a command runs: importing this module loads neither the models nor boto3. ``app`` has no group name: the root app
merges its commands.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from facerec_cli.cli.options import (
    Device,
    DeviceOpt,
    FpsOpt,
    FramesOpt,
    GalleryOpt,
    JsonOpt,
    RecogniseWeightsOpt,
    Stage1LayoutOpt,
    ThresholdOpt,
    user_errors_as_exit_codes,
)

app = typer.Typer()


@app.command()
@user_errors_as_exit_codes
def enroll(
    photos_dir: Annotated[Path, typer.Argument(help="Folder with one sub-folder of photos per person: PHOTOS_DIR/<person>/*.jpg")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Gallery file to write (a safetensors file; name it .safetensors).")
    ] = Path("gallery.safetensors"),
    weights: Annotated[str, typer.Option("--weights", help="casia-webface (offline), vggface2 (downloads once) or a state_dict path.")] = "casia-webface",
    device: DeviceOpt = Device.cpu,
    force: Annotated[bool, typer.Option("--force", help="Replace GALLERY if it is a gallery already (a file that is not a gallery is never replaced).")] = False,
) -> None:
    """Build a gallery from photos; reports photos with no face or several faces."""
    from facerec_cli.cli.enroll import run_enroll

    run_enroll(photos_dir, output, weights=weights, device=device.value, force=force)


@app.command()
@user_errors_as_exit_codes
def identify(
    files: Annotated[list[Path], typer.Argument(help="Videos or images (.jpg .png .webp).")],
    gallery: GalleryOpt,
    json_lines: JsonOpt = False,
    frames: FramesOpt = 3,
    fps: FpsOpt = 0.0,
    threshold: ThresholdOpt = None,
    weights: RecogniseWeightsOpt = None,
    device: DeviceOpt = Device.cpu,
    annotate: Annotated[
        Path | None,
        typer.Option(
            "--annotate",
            help="Write every sampled frame with faces here, boxes and names drawn on it: DIR/<stem>_f<frame>.jpg. "
            "Implies --all-frames (every sampled frame is looked at).",
        ),
    ] = None,
    all_frames: Annotated[
        bool,
        typer.Option("--all-frames", help="Look at every sampled frame even when the first one settles the answer (slower; reports every face)."),
    ] = False,
    timeline: Annotated[
        bool,
        typer.Option("--timeline", help="Who is on screen when: a frame every 1/--fps seconds (default 2 fps), in one pass; "
                     "each person's time ranges, strangers grouped as unknown-1, unknown-2... With --annotate, each person's best view."),
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=0, max=64, help="Files recognised at once, each in a process of its own (0: one per core; 1: in this process). "
                          "Results are printed as they finish.")
    ] = 0,
) -> None:
    """Recognise faces in files directly, without any bucket. Exits 1 if any file ended in error."""
    from facerec_cli.cli.identify import run_identify

    failed = run_identify(
        files, gallery, json_lines=json_lines, frames=frames, fps=fps, threshold=threshold, weights=weights, device=device.value,
        annotate_dir=annotate, all_frames=all_frames, timeline=timeline, workers=workers,
    )
    if failed:
        raise typer.Exit(1)


class Runtime(str, Enum):
    workers = "workers"
    containers = "containers"


@app.command("run-local")
@user_errors_as_exit_codes
def run_local(
    inputs: Annotated[list[Path] | None, typer.Argument(help="Videos, or folders of videos (none with --serve).", show_default=False)] = None,
    *,
    gallery: GalleryOpt,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, max=16, show_default=False,
                     help="Warm worker processes per function (default: one per core, at most 4; 1 with --runtime containers); "
                          "0 runs handlers in this process."),
    ] = None,
    json_lines: JsonOpt = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write <stem>.json and <stem>.txt per video here (with --timeline, each row's best-view crop too).")] = None,
    frames: FramesOpt = 3,
    fps: FpsOpt = 0.0,
    threshold: ThresholdOpt = None,
    weights: RecogniseWeightsOpt = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for all results.")] = 900.0,
    html: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report (a row per video, with its annotated frame).")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the `facerec watch` dashboard of the local cloud (buckets, in flight, failed, latency) instead of the per-video progress.")
    ] = False,
    runtime: Annotated[
        Runtime,
        typer.Option("--runtime", help="workers: the handlers in warm local processes; containers: in the functions' images as bootstrap builds them, "
                     "behind the Lambda Runtime Interface Emulator (needs a Docker engine)."),
    ] = Runtime.workers,
    base_image: Annotated[str | None, typer.Option("--base-image", help="With --runtime containers: base image of the function images (default: bootstrap's).")] = None,
    timeline: Annotated[
        bool,
        typer.Option("--timeline", help="Who is on screen when: a frame every 1/--fps seconds (default 2 fps), recognised in segments "
                     "of --segment-seconds in parallel on the workers; each result gains its timeline."),
    ] = False,
    segment_seconds: Annotated[
        float, typer.Option("--segment-seconds", min=1.0, help="With --timeline: seconds of video per segment invocation.")
    ] = 30.0,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Keep the local cloud up on 127.0.0.1:--port until Ctrl-C or SIGTERM, for any AWS client "
                     "(AWS_ENDPOINT_URL, any credentials): upload to <prefix>-input, read <prefix>-output; the course's grader works."),
    ] = False,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="With --serve: the port on 127.0.0.1 (0: any free one, printed).")] = 0,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Resource name prefix (the course's: your ASU ID): buckets <prefix>-input, -stage-1, -output, -details.")
    ] = None,
    stage1_layout: Stage1LayoutOpt = None,
) -> None:
    """Run the whole pipeline (S3 -> video-splitting -> face-recognition -> S3) on an embedded local cloud.
    Exits 1 if any video ended in error. With --serve, keep it up for outside AWS clients instead."""
    if inputs and not serve and runtime == Runtime.workers and workers != 0:
        from facerec_cli.localcloud.runtime.workers import start_fork_server

        # First: the workers' imports, and the recognition models, run beside this command's own (boto3, moto).
        start_fork_server(gallery, weights, workers)
    from lambdas.core.results import ERROR

    from facerec_cli.cli.run_local import private_log_file, run_local as run
    from facerec_cli.config import Settings
    from facerec_cli.errors import UserError
    from facerec_cli.localcloud.runtime.workers import default_workers
    from facerec_cli.pipeline.local.runner import LOCAL_PREFIX, RunOptions

    extra_env: dict[str, str] = {}
    if timeline:  # video-splitting's timeline settings (lambdas/env.py), as `bootstrap --timeline` sets them
        from lambdas import env as fenv

        extra_env = {fenv.TIMELINE: "1", fenv.TIMELINE_FPS: f"{fps or fenv.DEFAULT_TIMELINE_FPS:g}", fenv.SEGMENT_SECONDS: f"{segment_seconds:g}"}
    if stage1_layout is not None:  # as `bootstrap --stage1-layout` sets it (timelines refused with gop there too)
        from facerec_cli.pipeline.deployer import layout_env

        extra_env.update(layout_env({}, stage1_layout.value, timeline=timeline))
    prefix = Settings(prefix=prefix).prefix if prefix else LOCAL_PREFIX  # an invalid prefix: one red line, before anything starts
    workers = default_workers(runtime.value) if workers is None else workers
    options = RunOptions(workers=workers, frames=frames, fps=fps, threshold=threshold, weights=weights, timeout_s=timeout, extra_env=extra_env,
                         runtime=runtime.value, base_image=base_image, prefix=prefix, port=port)  # fmt: skip
    if serve:
        if inputs or json_lines or out_dir or html or watch:
            raise UserError("--serve takes no videos and no --json, --out, --html or --watch",
                            hint="upload videos to the served input bucket with any AWS client; read results with `facerec results --endpoint-url`")
        from facerec_cli.cli.serve import serve as serve_forever

        serve_forever(gallery, options, log_path=private_log_file())
        return
    if port:
        raise UserError("--port is for --serve", hint="add --serve, or leave --port out")
    if not inputs:
        raise UserError("no videos given", hint="name videos or folders of videos, or pass --serve to drive the local cloud from outside")
    results = run(inputs, gallery, options, json_lines=json_lines, out_dir=out_dir, html=html, watch=watch)
    if any(r.status == ERROR for r in results):
        raise typer.Exit(1)


@app.command()
@user_errors_as_exit_codes
def demo(
    workers: Annotated[int, typer.Option("--workers", min=0, max=8, help="Warm worker processes per function.")] = 1,
    keep: Annotated[Path | None, typer.Option("--keep", help="Keep the sample photos, videos, gallery and results in this folder.")] = None,
) -> None:
    """Enrol and recognise sample data shipped in installed packages, through run-local (no network, no AWS)."""
    from facerec_cli.cli.demo import run_demo

    results, expected = run_demo(workers=workers, keep=keep)
    if any(expected.get(r.video) != r.name for r in results):
        raise typer.Exit(1)
