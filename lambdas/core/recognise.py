"""Frames -> faces -> embeddings -> names -> one Result per video.

Models load once per process (``FaceEncoder`` instances share them through ``models.load_models``);
all faces of a video are embedded in one batch. numpy, Pillow and onnxruntime only: no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import images, media, sampling
from .errors import InputError
from .faces import DEFAULT_DETECT_SIZE, DEFAULT_MIN_PROB, Detection, FaceDetector, crop, quality_issue
from .gallery import Gallery, Match, weights_for
from .media import Frame
from .results import UNKNOWN, Face, Result, answer_decided, error_result, main_identity, pack_embedding
from .models import load_models
from .weights import weights_id

EMBED_BATCH = 32
# How faces become embeddings; galleries record it, and one made another way is refused. Each crop
# and its mirror image are embedded together and averaged ("flip"): it narrowed the worst true match
# and helped profile faces, at the price of twice the embedding work.
RECIPE = "mtcnn640-crop160m44-flip"


@dataclass
class EncodedFace:
    frame: Frame
    detection: Detection
    embedding: np.ndarray  # 512 float32, unit length
    quality: str | None = None  # why the embedding is not to be trusted (faces.quality_issue), None when fine


class Stopwatch:
    """Accumulates milliseconds per stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, stage: str, started: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - started) * 1000


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (as torch's F.normalize: a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# Given plain (unmirrored) unit embeddings, which of them need no mirror image (FaceEncoder.embed).
Settled = Callable[[np.ndarray], "np.ndarray | list[bool]"]


class FaceEncoder:
    """Detector plus embedder for one set of weights on one device."""

    def __init__(
        self,
        weights: str = "casia-webface",
        device: str = "cpu",
        detect_size: int = DEFAULT_DETECT_SIZE,
        min_prob: float = DEFAULT_MIN_PROB,
    ) -> None:
        self.weights = weights_id(weights)
        self.recipe = RECIPE
        self.device = device
        self.nets = load_models(weights, device)
        self.detector = FaceDetector(self.nets, detect_size=detect_size, min_prob=min_prob)

    def _run(self, crops: list[np.ndarray], mirrored: bool) -> np.ndarray:
        """The model's unit embeddings of the crops (or of their mirror images), in batches."""
        out = [self.nets.embed(np.stack(crops[i : i + EMBED_BATCH])[..., ::-1] if mirrored else np.stack(crops[i : i + EMBED_BATCH]))
               for i in range(0, len(crops), EMBED_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)

    def embed(self, crops: list[np.ndarray], settled: Settled | None = None) -> np.ndarray:
        """Unit embeddings (N x 512) of standardised crops, each averaged with its mirror image's.

        ``settled``: given the plain embeddings, which faces they already name beyond doubt; those
        skip the mirror (half the embedding work), the others get it. Without it, every face does."""
        if not crops:
            return np.zeros((0, 512), np.float32)
        if settled is None:
            both = self._run(crops + [c[..., ::-1] for c in crops], mirrored=False)  # crops and mirrors, batched together
            return normalise(both[: len(crops)] + both[len(crops) :])
        plain = self._run(crops, mirrored=False)
        redo = np.flatnonzero(~np.asarray(settled(plain), dtype=bool))
        if len(redo):
            plain[redo] = normalise(plain[redo] + self._run([crops[i] for i in redo], mirrored=True))
        return plain

    def encode(
        self, frames: list[Frame], watch: Stopwatch | None = None, settled: Settled | None = None, size: int | None = None
    ) -> list[EncodedFace]:
        """Every face of every frame, embedded (``settled``: see :meth:`embed`); ``size``: the long side
        to detect at (default the detector's)."""
        watch = watch or Stopwatch()
        return self.embed_detections(self.detect(frames, watch, size), watch, settled)

    def detect(self, frames: list[Frame], watch: Stopwatch, size: int | None = None) -> list[tuple[Frame, Detection]]:
        """Every face of every frame, detected at ``size`` (the long side; default the detector's), with
        its frame, in frame order and largest first within a frame."""
        started = time.perf_counter()
        detections = self.detector.detect([f.image for f in frames], size)
        watch.add("detect", started)
        return [(f, d) for f, dets in zip(frames, detections) for d in dets]

    def embed_detections(
        self, pairs: list[tuple[Frame, Detection]], watch: Stopwatch | None = None, settled: Settled | None = None
    ) -> list[EncodedFace]:
        started = time.perf_counter()
        embeddings = self.embed([crop(frame.image, det) for frame, det in pairs], settled)
        if watch:
            watch.add("embed", started)
        return [EncodedFace(f, d, e, quality_issue(f.image, d)) for (f, d), e in zip(pairs, embeddings)]


# The coarse detection pass (long side in pixels): a face found there whose answer is settled needs no
# full-resolution pass. On course clips MTCNN costs 31-44 ms at 320 px against 84-106 ms at 640 px, with
# the same faces; a frame with no face or an unsettled one is detected again at full resolution.
COARSE_DETECT_SIZE = 320

# Loads frame i of a video on demand; None past the last frame there is.
FrameLoader = Callable[[int], "Frame | None"]


@dataclass
class SamplingOptions:
    frames: int = 3
    fps: float | None = None
    max_seconds: float | None = None
    timeout: float = 60.0
    # Stop as soon as the faces seen so far are settled (frame 0 first, one frame at a time), detect
    # coarse to fine and skip the mirror image of a settled face. False: every sampled frame, full work.
    early_exit: bool = True
    coarse_size: int = COARSE_DETECT_SIZE  # 0: no coarse pass


class Recogniser:
    """Names the faces of videos and images against a gallery."""

    def __init__(
        self,
        gallery: Gallery,
        encoder: FaceEncoder | None = None,
        *,
        weights: str | None = None,
        device: str = "cpu",
        threshold: float | None = None,
        sampling: SamplingOptions | None = None,
    ) -> None:
        self.gallery = gallery
        # `weights`: a name or state_dict path (default: the gallery's); ignored when `encoder` is given.
        self.encoder = encoder or FaceEncoder(weights=weights_for(gallery, weights), device=device)
        gallery.check_weights(self.encoder.weights, self.encoder.recipe)
        self.threshold = threshold
        self.sampling = sampling or SamplingOptions()

    # -- the entry points: a file (recognise_file, recognise_file_frames), frames a loader gives on
    # demand (recognise_loaded: the recognition Lambda's stage-1 JPEGs and upload samples, the IaaS
    # worker's image). Each turns an unreadable input into an ``error`` result.

    def recognise_file(self, path: Path, video: str | None = None) -> Result:
        """A video or image file; a bad input becomes an ``error`` result, never an exception."""
        return self.recognise_file_frames(path, video)[0]

    def recognise_file_frames(self, path: Path, video: str | None = None) -> tuple[Result, list[Frame]]:
        """:meth:`recognise_file`, and the sampled frames too (to draw the faces on); no frames on error."""
        name = video or path.name
        watch = Stopwatch()
        try:
            if images.is_image(path):
                started = time.perf_counter()
                image = [Frame(0, 0.0, images.load_image(path))]
                watch.add("decode", started)
                return self._recognise(name, 1, image.__getitem__, watch)
            s = self.sampling
            started = time.perf_counter()
            # Decoded lazily: a sample is decoded only when recognition asks for it (video packets only).
            with media.open_video(path, timeout=s.timeout) as opened:
                sampling.check_duration(path, opened.duration, s.max_seconds)
                times = sampling.sample_times(opened.duration, s.frames, s.fps)
                decoded = opened.frames(times)
                watch.add("decode", started)
                return self._recognise(name, len(times), lambda _: next(decoded, None), watch)
        except InputError as exc:
            return error_result(name, str(exc), **watch.ms), []

    def recognise_loaded(self, video: str, count: int, load: FrameLoader, watch: Stopwatch | None = None) -> tuple[Result, list[Frame]]:
        """Up to ``count`` frames that ``load(i)`` gives (decodes, fetches) only when recognition asks for
        them (:meth:`_recognise`), so an early exit saves the loading too; a frame that cannot be read
        (InputError) gives an ``error`` result. Returns the result and the frames used."""
        watch = watch or Stopwatch()
        try:
            return self._recognise(video, count, load, watch)
        except InputError as exc:
            return error_result(video, str(exc), **watch.ms), []

    def _recognise(self, video: str, count: int, load: FrameLoader, watch: Stopwatch | None = None) -> tuple[Result, list[Frame]]:
        """Recognise up to ``count`` frames, loading (decoding, fetching) each only when needed.

        With early exit, frames are looked at one at a time from frame 0, and the rest are never loaded
        once the answer is final: every face seen so far is settled (:meth:`settled`, or beyond doubt a
        stranger) and one of them is named, or the leading name was seen in more frames than any other
        could reach in the frames left (:func:`results.answer_decided`). Without it, all in one batch.
        Returns the result and the frames used."""
        watch = watch or Stopwatch()
        faces: list[Face] = []
        used: list[Frame] = []
        if not self.sampling.early_exit:
            used = self._load(range(count), load, watch)
            faces = self._faces(used, watch)[0] if used else []
        else:
            named, all_final, coarse = False, True, True  # a settled name seen; every face seen final
            for i in range(count):
                frame = self._load([i], load, watch)
                if not frame:
                    break
                used += frame
                found, settled, final, coarse = self._frame_faces(frame[0], watch, coarse)
                faces += found
                named, all_final = named or any(settled), all_final and all(final)
                if (named and all_final) or answer_decided(faces, count - i - 1):
                    break
        status, name = main_identity(faces)
        result = Result(video=video, status=status, name=name, faces=faces, model=self.gallery.weights, frames=len(used), timings_ms=watch.ms)
        return result, used

    @staticmethod
    def _load(indices: Iterable[int], load: FrameLoader, watch: Stopwatch) -> list[Frame]:
        """The frames at ``indices`` up to the first missing one (the end of the video)."""
        started = time.perf_counter()
        frames = []
        for i in indices:
            frame = load(i)
            if frame is None:
                break
            frames.append(frame)
        watch.add("decode", started)
        return frames

    def settled(self, matches: list[Match]) -> list[bool]:
        """Which faces' answers are final: named, and settled by the open-set rule (OpenSetRule.settled)."""
        rule = self.gallery.rule(self.threshold)
        return [m.name != UNKNOWN and rule.settled(m.distance, m.next_mean, m.second) for m in matches]

    def final(self, matches: list[Match]) -> list[bool]:
        """Which faces no further look at could answer otherwise: settled names, and strangers beyond the
        threshold with room to spare (OpenSetRule.settled_unknown)."""
        return self._settled_and_final(matches)[1]

    def _settled_and_final(self, matches: list[Match]) -> tuple[list[bool], list[bool]]:
        settled = self.settled(matches)
        rule = self.gallery.rule(self.threshold)
        return settled, [s or (m.name == UNKNOWN and rule.settled_unknown(m.distance)) for s, m in zip(settled, matches)]

    def _settled_embeddings(self, plain: np.ndarray) -> list[bool]:
        """Faces whose plain embedding already answers them for good keep it (the mirror image cannot
        change a settled name, nor name a face that far beyond the threshold: openset.SETTLED_MARGIN);
        the others get the mirror."""
        return self.final(self.gallery.match(plain, self.threshold))

    def match(self, encoded: list[EncodedFace]) -> list[Match]:
        """The gallery's answer for each face; a face whose quality is not to be trusted is unknown, with
        the quality problem as its reason (its distances are kept, for people to see)."""
        if not encoded:
            return []
        matches = self.gallery.match(np.stack([e.embedding for e in encoded]), self.threshold)
        for e, m in zip(encoded, matches):
            if e.quality:
                m.name, m.reason = UNKNOWN, e.quality
        return matches

    def _frame_faces(self, frame: Frame, watch: Stopwatch, try_coarse: bool = True) -> tuple[list[Face], list[bool], list[bool], bool]:
        """One frame's faces, coarse to fine: a pass at ``coarse_size`` first, kept when its faces are all
        final and one is a settled name; otherwise the full-resolution pass decides. Also which faces are
        settled and final (:meth:`final`), and whether the coarse pass is worth trying on the video's next
        frame: not once it failed on this one (the same scene would send that frame to the full pass too,
        and the full pass alone is the reference the coarse one saves)."""
        coarse, detector = self.sampling.coarse_size, self.encoder.detector
        if try_coarse and coarse and detector.scale(frame.image, coarse) < detector.scale(frame.image):
            # No mirror images here: a face its plain embedding settles keeps that anyway, and any other
            # face sends the frame to the full pass, which embeds it again.
            faces, settled, final = self._faces([frame], watch, coarse, mirror=False)
            if any(settled) and all(final):
                return faces, settled, final, True
            # The full pass looks for the faces the coarse one missed and judges its unsettled ones again; a
            # face the coarse pass already answered for good (final) keeps that answer, not a second embedding.
            known = [(f, s) for f, s, done in zip(faces, settled, final) if done]
            return (*self._faces([frame], watch, known=known), False)
        return (*self._faces([frame], watch), try_coarse)

    def _faces(
        self, frames: list[Frame], watch: Stopwatch, size: int | None = None, mirror: bool = True,
        known: list[tuple[Face, bool]] | None = None,
    ) -> tuple[list[Face], list[bool], list[bool]]:
        """The faces of ``frames`` detected at ``size`` (default the detector's), which are settled and
        which final. ``mirror=False``: plain embeddings only. ``known``: final faces of ``frames[0]`` from
        a coarser pass, with whether each is settled: a detection that is one of them (SAME_FACE_IOU)
        takes it as it is, unembedded."""
        if not mirror:
            skip: Settled | None = lambda plain: [True] * len(plain)  # noqa: E731
        else:
            skip = self._settled_embeddings if self.sampling.early_exit else None
        pairs = self.encoder.detect(frames, watch, size)
        reused = _claim_known(pairs, known or [])
        encoded = self.encoder.embed_detections([p for i, p in enumerate(pairs) if i not in reused], watch, skip)
        started = time.perf_counter()
        matches = self.match(encoded)
        new = iter(zip(
            [Face(frame=e.frame.index, t=e.frame.t, box=list(e.detection.box), prob=e.detection.prob, name=m.name,
                  distance=m.distance, reason=m.reason, embedding=pack_embedding(e.embedding)) for e, m in zip(encoded, matches)],
            *self._settled_and_final(matches),
        ))  # fmt: skip
        rows = [(*reused[i], True) if i in reused else next(new) for i in range(len(pairs))]  # detection order
        watch.add("match", started)
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


# A detection of the full pass is a face the coarse pass found when their boxes overlap this much
# (intersection over union). The two passes box one face a few pixels apart (0.73-0.97 on the crowd
# clip); two faces of one frame overlap far less (MTCNN keeps no two boxes over 0.7 of the smaller one).
SAME_FACE_IOU = 0.5


def _iou(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _claim_known(pairs: list[tuple[Frame, Detection]], known: list[tuple[Face, bool]]) -> dict[int, tuple[Face, bool]]:
    """Which detections (index into ``pairs``) are faces of ``known``, each known face claimed once, by
    the detection that overlaps it most."""
    claimed: dict[int, tuple[Face, bool]] = {}
    for face, settled in known:
        best, best_iou = None, SAME_FACE_IOU
        for i, (frame, det) in enumerate(pairs):
            if i not in claimed and frame.index == face.frame and (v := _iou(det.box, face.box)) >= best_iou:
                best, best_iou = i, v
        if best is not None:
            claimed[best] = (face, settled)
    return claimed
