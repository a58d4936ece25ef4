"""Environment variables the functions read: the contract between deploy (which sets them on the
function) and the handlers (which read them). One place, so the two never drift apart."""

from __future__ import annotations

import os
from dataclasses import dataclass

# video-splitting
STAGE1_BUCKET = "STAGE1_BUCKET"
RECOGNITION_FUNCTION = "RECOGNITION_FUNCTION"
FRAMES = "FACEREC_FRAMES"  # frames sampled per video
FPS = "FACEREC_FPS"  # sampling rate in frames per second of video; 0 = spread evenly over the video
MAX_BYTES = "FACEREC_MAX_BYTES"  # larger uploads are refused with an error result
MAX_SECONDS = "FACEREC_MAX_SECONDS"  # longer videos are refused with an error result
# Seconds of decoding allowed per video (PyAV, in process); past it the video gets an error result.
DECODE_TIMEOUT = "FACEREC_DECODE_TIMEOUT"
DECODE_TIMEOUT_OLD_NAME = "FACEREC_FFMPEG_TIMEOUT"  # still read when DECODE_TIMEOUT is not set
# Timelines (lambdas/segments.py): "1" gives every upload a timeline of who is on screen when, sampled at
# FACEREC_TIMELINE_FPS and recognised in segments of FACEREC_SEGMENT_SECONDS, each its own invocation.
TIMELINE = "FACEREC_TIMELINE"
TIMELINE_FPS = "FACEREC_TIMELINE_FPS"
SEGMENT_SECONDS = "FACEREC_SEGMENT_SECONDS"
# "gop": stage-1 in Part 1's layout, <stem>/output-00.jpg ... output-09.jpg (lambdas/gop.py); unset or
# "frames": <stem>.jpg and <stem>/NNN.jpg
STAGE1_LAYOUT = "FACEREC_STAGE1_LAYOUT"

# face-recognition
OUTPUT_BUCKET = "OUTPUT_BUCKET"
GALLERY_URI = "FACEREC_GALLERY"  # s3://bucket/key or a path inside the image
WEIGHTS = "FACEREC_WEIGHTS"  # casia-webface | vggface2 | path to a state_dict
THRESHOLD = "FACEREC_THRESHOLD"
DEVICE = "FACEREC_DEVICE"
ANNOTATE = "FACEREC_ANNOTATE"  # "1": store an annotated frame next to the result
ALL_FRAMES = "FACEREC_ALL_FRAMES"  # "1": no early exit, every sampled frame is recognised

# <prefix>-on-failure (lambdas/on_failure.py); it writes results to OUTPUT_BUCKET too
FAILURE_QUEUE = "FACEREC_FAILURE_QUEUE"  # name of the queue it forwards failure records to

DEFAULT_FRAMES = 3
DEFAULT_FPS = 0.0
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_DECODE_TIMEOUT = 60.0
DEFAULT_TIMELINE_FPS = 2.0
DEFAULT_SEGMENT_SECONDS = 30.0


def get_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def get_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"environment variable {name} is not set on this function")
    return value


@dataclass(frozen=True)
class SplittingEnv:
    stage1_bucket: str
    recognition_function: str
    output_bucket: str
    frames: int
    fps: float
    max_bytes: int
    max_seconds: float
    decode_timeout: float
    timeline: bool = False
    timeline_fps: float = DEFAULT_TIMELINE_FPS
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    stage1_layout: str = "frames"

    @classmethod
    def from_environ(cls) -> "SplittingEnv":
        return cls(
            stage1_bucket=require(STAGE1_BUCKET),
            recognition_function=require(RECOGNITION_FUNCTION),
            output_bucket=require(OUTPUT_BUCKET),
            frames=get_int(FRAMES, DEFAULT_FRAMES),
            fps=get_float(FPS, DEFAULT_FPS),
            max_bytes=get_int(MAX_BYTES, DEFAULT_MAX_BYTES),
            max_seconds=get_float(MAX_SECONDS, DEFAULT_MAX_SECONDS),
            decode_timeout=get_float(DECODE_TIMEOUT, get_float(DECODE_TIMEOUT_OLD_NAME, DEFAULT_DECODE_TIMEOUT)),
            timeline=os.environ.get(TIMELINE, "") == "1",
            timeline_fps=get_float(TIMELINE_FPS, DEFAULT_TIMELINE_FPS) or DEFAULT_TIMELINE_FPS,
            segment_seconds=get_float(SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS) or DEFAULT_SEGMENT_SECONDS,
            stage1_layout=os.environ.get(STAGE1_LAYOUT) or "frames",
        )


@dataclass(frozen=True)
class RecognitionEnv:
    output_bucket: str
    gallery_uri: str
    weights: str | None
    threshold: float | None
    device: str
    annotate: bool
    all_frames: bool = False

    @classmethod
    def from_environ(cls) -> "RecognitionEnv":
        threshold = os.environ.get(THRESHOLD)
        return cls(
            output_bucket=require(OUTPUT_BUCKET),
            gallery_uri=require(GALLERY_URI),
            weights=os.environ.get(WEIGHTS) or None,
            threshold=float(threshold) if threshold else None,
            device=os.environ.get(DEVICE) or "cpu",
            annotate=os.environ.get(ANNOTATE, "") == "1",
            all_frames=os.environ.get(ALL_FRAMES, "") == "1",
        )
