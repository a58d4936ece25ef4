"""Where the video-splitting function puts things and how long it may decode: stage-1 frame keys, the
done marker's key, the local file name of a download, and the decode budget. Shared with the timeline's
segment fan-out (:mod:`.segments`), which splits for the same function."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import PurePosixPath

from .env import SplittingEnv

# Seconds of the invocation kept back from the decode budget for what follows decoding: the Invoke of
# face-recognition, or the error result, and the done marker.
RESERVE_S = 5.0
MIN_BUDGET_S = 1.0


def frame_key(stem: str, index: int) -> str:
    return f"{stem}.jpg" if index == 0 else f"{stem}/{index:03d}.jpg"


SPLIT_MARKERS = ".facerec/split/"


def marker_key(stem: str) -> str:
    """The done marker of a video, in the details bucket: a fixed-length key whatever the stem (keys may
    be 1024 bytes long), under the prefix result listings skip (not counted as a result)."""
    return f"{SPLIT_MARKERS}{hashlib.sha256(stem.encode()).hexdigest()[:40]}"


def local_name(key: str) -> str:
    """The downloaded file's name: independent of the key (which may be long, unicode or odd), keeping
    only a short ASCII suffix for the demuxer's guess; messages name the upload, not this file."""
    suffix = PurePosixPath(key).suffix.lower()
    return "upload" + (suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else "")


def invocation_deadline(context: object) -> float | None:
    """When the invocation ends (``time.monotonic()`` clock), from Lambda's context; None without one."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return time.monotonic() + remaining() / 1000 if callable(remaining) else None


def budget_within(wanted: float, deadline: float | None, reserve: float = RESERVE_S, least: float = MIN_BUDGET_S) -> float:
    """``wanted`` seconds of decoding, cut to what is left of the invocation less ``reserve`` for what
    follows it (never under ``least``), so that a slow file ends in an error result, not a timeout."""
    if deadline is None:
        return wanted
    return max(least, min(wanted, deadline - time.monotonic() - reserve))


def decode_budget(env: SplittingEnv, deadline: float | None) -> float:
    """Seconds decoding may take: the function's setting, cut to what is left of the invocation."""
    return budget_within(env.decode_timeout, deadline)
