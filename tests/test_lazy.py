"""Recognition that stops when it knows (issue #29): one "settled" rule, lazy decoding, coarse-to-fine
detection, on the real test photos and videos."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from lambdas.core import images, media
from lambdas.core.gallery import Match
from lambdas.core.openset import SECOND_GAP, SETTLED_MARGIN, OpenSetRule
from lambdas.core.recognise import Recogniser, SamplingOptions, Stopwatch
from lambdas.core.results import UNKNOWN, Face, answer_decided


def _inputs(data: Path) -> list[Path]:
    return [*sorted((data / "5celeb" / "val").glob("*/*")), data / "multiface" / "friends_cast_6faces.jpg",
            *sorted((data / "noface").iterdir()), *sorted((data / "videos").glob("*.mp4"))]  # fmt: skip


def _answer(recogniser: Recogniser, path: Path) -> tuple[str, str, list[str]]:
    r = recogniser.recognise_file(path)
    return r.status, r.name, sorted(set(r.names))


def test_settled_is_the_rule_with_room_to_spare():
    rule = OpenSetRule(threshold=1.0, margin=0.1)
    room = SETTLED_MARGIN
    assert rule.settled(1.0 - room, None, None)
    assert not rule.settled(1.0 - room + 0.01, None, None)  # accepted by the rule, but too near its threshold
    assert rule.reason(1.0 - room + 0.01, None, None) is None
    assert rule.settled(0.5, 0.5 + 0.1 + room, 0.5 + SECOND_GAP + room)
    assert not rule.settled(0.5, 0.5 + 0.1 + room - 0.01, None)  # too near the margin
    assert not rule.settled(0.5, None, 0.5 + SECOND_GAP + room - 0.01)  # a look-alike too near


def test_a_face_is_settled_only_when_named(celeb_gallery, encoder, data):
    recogniser = Recogniser(celeb_gallery[1], encoder)
    named = Match("madonna", 0.5, "madonna", 1.3, 1.35)
    assert recogniser.settled([named, Match(UNKNOWN, 0.5, "madonna", 1.3, 1.35, "profile")]) == [True, False]


def test_coarse_to_fine_gives_the_full_resolution_answers_on_every_test_input(data, celeb_gallery, hamilton_gallery, encoder):
    """The coarse pass (320 px) with early exit answers as the full-resolution pass on every sampled frame
    does: 5celeb val, the Friends photo, the no-face images, the crowd and the Hamilton clip."""
    for gallery in (celeb_gallery[1], hamilton_gallery[1]):
        fast = Recogniser(gallery, encoder)
        full = Recogniser(gallery, encoder, sampling=SamplingOptions(early_exit=False, coarse_size=0))
        for path in _inputs(data):
            assert _answer(fast, path) == _answer(full, path), (gallery.people, path.name)
    hamilton = Recogniser(hamilton_gallery[1], encoder).recognise_file(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4")
    assert set(hamilton.names) == {"lin_manuel_miranda", "alex_lacamoire"}


def test_the_coarse_pass_alone_answers_a_settled_frame(data, celeb_gallery, encoder, tmp_path):
    """An enrolled face filling a 1280x720 frame: found and settled at 320 px, no full-resolution pass
    (the detector is asked for the coarse size only), and no mirror-image embedding."""
    from PIL import Image

    from lambdas.core.media import Frame

    photo = images.load_image(sorted((data / "5celeb" / "train" / "madonna").iterdir())[0])
    frame = Image.new("RGB", (1280, 720), (40, 40, 40))
    photo.thumbnail((700, 700))
    frame.paste(photo, (300, 10))
    recogniser = Recogniser(celeb_gallery[1], encoder)
    sizes: list[int | None] = []
    embedded: list[int] = []
    detect, run = encoder.detector.detect, encoder._run

    def spy_detect(images, size=None):  # a spy: records the pass and runs the real detector
        sizes.append(size)
        return detect(images, size)

    def spy_run(crops, mirrored):
        embedded.append(len(crops) * (-1 if mirrored else 1))
        return run(crops, mirrored)

    encoder.detector.detect, encoder._run = spy_detect, spy_run
    try:
        result = recogniser.recognise_loaded("still", 1, [Frame(0, 0.0, frame)].__getitem__)[0]
    finally:
        del encoder.detector.detect, encoder._run
    assert (result.name, sizes, embedded) == ("madonna", [320], [1])


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many sampled frames each opened video decoded (a spy around the real Video.frames)."""
    counts: list[int] = []
    frames = media.Video.frames

    def counting(self: media.Video, times: Sequence[float]) -> Iterator[media.Frame]:
        counts.append(0)
        for frame in frames(self, times):
            counts[-1] += 1
            yield frame

    monkeypatch.setattr(media.Video, "frames", counting)
    return counts


def test_a_settled_first_frame_decodes_nothing_more(data, celeb_gallery, encoder, tmp_path, decoded):
    from facerec_cli.samples import still_video

    video = still_video(sorted((data / "5celeb" / "train" / "jerry_seinfeld").iterdir())[0], tmp_path / "jerry.mp4", seconds=3)
    result = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=5)).recognise_file(video)
    assert (result.name, result.frames, decoded) == ("jerry_seinfeld", 1, [1])
    everything = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=5, early_exit=False)).recognise_file(video)
    assert (everything.name, everything.frames, decoded) == ("jerry_seinfeld", 5, [1, 5])


def test_unsettled_frames_decode_further_samples(data, celeb_gallery, encoder, decoded):
    """The crowd (strangers: never settled) needs every sample; so does an unknown answer."""
    result = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=4)).recognise_file(data / "videos" / "crowd_unlabeled_4s.mp4")
    assert (result.name, result.frames, decoded) == (UNKNOWN, 4, [4])


def test_a_stranger_is_final_only_far_beyond_the_threshold():
    rule = OpenSetRule(threshold=1.0, margin=0.1)
    assert rule.settled_unknown(1.0 + SETTLED_MARGIN)
    assert not rule.settled_unknown(1.0 + SETTLED_MARGIN - 0.01)  # unknown by the rule, but a mirror could name it


def _face(name: str, frame: int) -> Face:
    return Face(frame=frame, t=float(frame), box=[0, 0, 50, 50], prob=0.99, name=name, distance=0.9)


def test_the_answer_is_decided_once_no_other_name_can_catch_up():
    two_frames = [_face("ada", 0), _face("ada", 1), _face(UNKNOWN, 1)]
    assert answer_decided(two_frames, remaining=1)  # 2 frames against at most 1 for anyone else
    assert not answer_decided(two_frames, remaining=2)  # a newcomer in the 2 frames left would tie
    assert not answer_decided([_face("ada", 0), _face("bo", 1), _face("ada", 1)], remaining=1)  # bo could tie
    assert not answer_decided([_face(UNKNOWN, 0), _face(UNKNOWN, 1)], remaining=0)  # no name: nothing to decide
    assert answer_decided([_face("ada", 0), _face("ada", 0)], remaining=0)  # two faces of one frame are one vote


def test_frames_that_agree_stop_before_the_last_sample(data, celeb_gallery, encoder, tmp_path, decoded):
    """A face named but never settled (its nearest person not far enough ahead): once it was named in
    more frames than the samples left, the rest are not decoded; the answer is the full run's."""
    from facerec_cli.samples import still_video

    fast = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=5))
    for photo in sorted((data / "5celeb" / "val").glob("*/*")):
        video = still_video(photo, tmp_path / f"{photo.stem}.mp4", seconds=3)
        result = fast.recognise_file(video)
        if result.frames > 1 and result.name == photo.parent.name:  # named on frame 0, but not settled
            break
    else:
        raise AssertionError("every 5celeb val photo settles on its first frame: nothing to test this with")
    full = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=5, early_exit=False)).recognise_file(video)
    assert full.name == result.name
    assert (result.frames, decoded[-2:]) == (3, [3, 5])  # 3 votes > 0 + the 2 frames left: frames 4 and 5 never decoded


def test_strangers_far_beyond_the_threshold_skip_their_mirror_image(data, celeb_gallery, encoder):
    """The crowd's faces: those beyond the threshold with room to spare are embedded once, the others
    with their mirror image; the answers are those of every face embedded both ways."""
    with media.open_video(data / "videos" / "crowd_unlabeled_4s.mp4") as video:
        frame = next(video.frames([0.0]))
    recogniser = Recogniser(celeb_gallery[1], encoder)
    plain = encoder.encode([frame], settled=lambda embeddings: [True] * len(embeddings))
    far = recogniser.final(recogniser.gallery.match(np.stack([e.embedding for e in plain])))
    flipped: list[int] = []
    run = encoder._run

    def spy_run(crops, mirrored):  # a spy: records how many crops were mirrored, runs the real embedder
        if mirrored:
            flipped.append(len(crops))
        return run(crops, mirrored)

    encoder._run = spy_run
    try:
        lean = recogniser.match(encoder.encode([frame], settled=recogniser._settled_embeddings))
    finally:
        del encoder._run
    both = recogniser.match(encoder.encode([frame]))
    assert any(far) and sum(flipped) == len(far) - sum(far)
    assert [m.name for m in lean] == [m.name for m in both] == [UNKNOWN] * len(both)


def test_after_a_failed_coarse_pass_the_video_goes_straight_to_full_resolution(data, celeb_gallery, encoder):
    """The crowd (strangers, nobody settled): frame 0 is tried at 320 px and then at full resolution;
    the later frames of the same video skip the coarse pass. The answer is the full run's."""
    sizes: list[int | None] = []
    detect = encoder.detector.detect

    def spy_detect(images, size=None):  # a spy: records each pass's size and runs the real detector
        sizes.append(size)
        return detect(images, size)

    encoder.detector.detect = spy_detect
    try:
        result = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=3)).recognise_file(data / "videos" / "crowd_unlabeled_4s.mp4")
    finally:
        del encoder.detector.detect
    assert (result.name, result.frames, sizes) == (UNKNOWN, 3, [320, None, None, None])


def test_the_full_pass_keeps_the_coarse_pass_final_faces(data, celeb_gallery, encoder):
    """The crowd's frame 0: the coarse pass finds a stranger beyond doubt (final) but nobody named, so the
    full pass runs. It embeds only what the coarse pass left open (the faces it missed, any unsettled
    one); the final face keeps its coarse answer. The faces and answers are those of a full pass alone."""
    from lambdas.core.recognise import SAME_FACE_IOU, _iou

    recogniser = Recogniser(celeb_gallery[1], encoder, sampling=SamplingOptions(frames=3))
    frames = list(media.open_video(data / "videos" / "crowd_unlabeled_4s.mp4").frames([0.0]))
    coarse, _, coarse_final = recogniser._faces(frames, Stopwatch(), 320, mirror=False)
    assert any(coarse_final)  # the case: a final stranger at 320 px, nobody named, and more faces at full resolution

    embedded: list[int] = []
    run = encoder._run

    def spy_run(crops, mirrored):  # a spy: counts the crops embedded and runs the real model
        embedded.append(0 if mirrored else len(crops))
        return run(crops, mirrored)

    encoder._run = spy_run
    try:
        faces, settled, final, _ = recogniser._frame_faces(frames[0], Stopwatch())
    finally:
        del encoder._run
    full, full_settled, full_final = recogniser._faces(frames, Stopwatch())
    kept = [f for f in faces if any(f.box == c.box for c, done in zip(coarse, coarse_final) if done)]  # the coarse box: kept
    # the plain embeddings of the coarse pass, then of the full pass: only the faces not kept
    assert embedded[0] == len(coarse) and sum(embedded[1:]) == len(faces) - len(kept) and kept and len(faces) > len(coarse)
    assert len(faces) == len(full) and all(max(_iou(f.box, g.box) for g in full) >= SAME_FACE_IOU for f in faces)
    assert [f.name for f in faces] == [f.name for f in full] == [UNKNOWN] * len(full)
    assert final == full_final and settled == full_settled


def test_decoding_to_a_sample_drops_the_frames_nothing_needs(data):
    """Frames no other frame refers to (B-frames) shown before a sample are dropped by the decoder
    undecoded: the samples are the very frames a full decode gives (pixel for pixel), with fewer frames
    decoded. The crowd clip (1080p H.264 with B-frames) at three samples."""
    import av

    path = data / "videos" / "crowd_unlabeled_4s.mp4"
    with media.open_video(path) as video:
        times = [0.0, video.duration / 3, 2 * video.duration / 3]
        got = [(f.t, np.asarray(f.image)) for f in video.frames(times)]
        decoded = video.decoded
    full, seen = [], 0  # every frame decoded, up to the last sample
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start, tb = stream.start_time or 0, float(stream.time_base)
        for frame in container.decode(stream):
            seen += 1
            if len(full) < len(times) and (frame.pts - start) * tb >= times[len(full)] - 0.0005:
                full.append(((frame.pts - start) * tb, np.asarray(frame.to_image())))
            if len(full) == len(times):
                break
    assert [t for t, _ in got] == pytest.approx([t for t, _ in full]) and len(got) == 3
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, full))
    assert decoded < seen * 0.8, (decoded, seen)
