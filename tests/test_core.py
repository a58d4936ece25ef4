"""The recognition core on real photos and videos (issue: foundation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from facerec_cli.gallery_files import load_gallery
from facerec_cli.cli.app import app
from lambdas.core import images, media, sampling
from lambdas.core.errors import GalleryError
from lambdas.core.gallery import Gallery
from lambdas.core.recognise import Recogniser
from lambdas.core.results import ERROR, NO_FACE, OK, UNKNOWN, Face, main_identity

runner = CliRunner()


def test_5celeb_val_all_recognised(data, celeb_gallery, encoder):
    _, gallery = celeb_gallery
    recogniser = Recogniser(gallery, encoder)
    photos = sorted((data / "5celeb" / "val").glob("*/*"))
    assert len(photos) == 25
    wrong = [(p.parent.name, r.name) for p in photos if (r := recogniser.recognise_file(p)).name != p.parent.name]
    assert wrong == []


def test_unenrolled_faces_are_unknown(data, celeb_gallery, encoder):
    _, gallery = celeb_gallery
    recogniser = Recogniser(gallery, encoder)
    friends = recogniser.recognise_file(data / "multiface" / "friends_cast_6faces.jpg")
    assert len(friends.faces) == 6
    crowd = recogniser.recognise_file(data / "videos" / "crowd_unlabeled_4s.mp4")
    assert crowd.frames == 3 and len(crowd.faces) >= 6  # several faces per frame
    for result in (friends, crowd):
        assert result.status == UNKNOWN and result.name == UNKNOWN
        assert {f.name for f in result.faces} == {UNKNOWN}
        assert all(f.distance > gallery.threshold_or_default for f in result.faces)


def test_no_face_images(data, celeb_gallery, encoder):
    recogniser = Recogniser(celeb_gallery[1], encoder)
    for photo in sorted((data / "noface").iterdir()):
        result = recogniser.recognise_file(photo)
        assert (result.status, result.name, result.faces) == (NO_FACE, NO_FACE, []), photo.name


def test_hamilton_clip_names_both_people(data, hamilton_gallery, encoder):
    _, gallery, _ = hamilton_gallery
    recogniser = Recogniser(gallery, encoder)  # default sampling: 3 frames across the clip
    result = recogniser.recognise_file(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4")
    assert result.status == OK
    assert result.name == "lin_manuel_miranda"  # on stage in most of the clip
    assert set(result.names) == {"lin_manuel_miranda", "alex_lacamoire"}


def test_bad_files_give_error_results_and_others_go_on(data, celeb_gallery, bad_inputs):
    gallery_path, _ = celeb_gallery
    good = data / "5celeb" / "val" / "madonna"
    good_photo = sorted(good.iterdir())[0]
    files = [bad_inputs["corrupt"], good_photo, bad_inputs["empty"], bad_inputs["text"]]
    result = runner.invoke(app, ["identify", *map(str, files), "--gallery", str(gallery_path), "--json"])
    assert result.exit_code == 1  # some files failed
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_video = {r["video"]: r for r in lines}
    assert len(lines) == len(files) and sorted(by_video) == sorted(f.name for f in files)  # printed as each finishes
    assert by_video[good_photo.name]["name"] == "madonna"
    assert "empty" in by_video["empty.mp4"]["error"]
    for name in ("corrupt.mp4", "empty.mp4", "notes.mp4"):
        r = by_video[name]
        assert r["status"] == ERROR and r["faces"] == []
        assert r["error"].startswith(name)  # names the file, then says what is wrong
        assert "Traceback" not in r["error"]


def test_enroll_cli_reports_photos_and_records_weights(data, tmp_path):
    out = tmp_path / "g.pt"
    result = runner.invoke(app, ["enroll", str(data / "enroll"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 faces: the largest was taken" in result.stderr  # the Miranda photo shows two people
    gallery = Gallery.load(out)
    assert gallery.weights == "casia-webface"
    assert gallery.people == ["alex_lacamoire", "lin_manuel_miranda"]
    assert sorted(gallery.sources) == sorted(f"{p.parent.name}/{p.name}" for p in (data / "enroll").glob("*/*"))


def test_identify_table_output(data, celeb_gallery):
    photo = sorted((data / "5celeb" / "val" / "elton_john").iterdir())[0]
    result = runner.invoke(app, ["identify", str(photo), "--gallery", str(celeb_gallery[0])], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "elton_john" in result.stdout and photo.name[:20] in result.stdout


def test_gallery_from_other_weights_is_refused(celeb_gallery, encoder, tmp_path):
    _, gallery = celeb_gallery
    # A course data.pt: [embedding_list, name_list] made with vggface2.
    course = tmp_path / "data.pt"
    torch.save([[torch.from_numpy(e.copy()).unsqueeze(0) for e in gallery.embeddings[:3]], gallery.names[:3]], course)
    loaded = load_gallery(course)  # converted on the CLI side (the runtime refuses torch files)
    assert loaded.weights == "vggface2" and loaded.names == gallery.names[:3]
    with pytest.raises(GalleryError, match="vggface2.*casia-webface"):
        Recogniser(loaded, encoder)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"not a gallery", "not a facerec gallery"), (None, "not found")],
)
def test_bad_gallery_files(tmp_path, content, message):
    path = tmp_path / "g.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GalleryError, match=message):
        Gallery.load(path)
    result = runner.invoke(app, ["identify", str(path), "--gallery", str(path)])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output


def test_sampling_spreads_frames_and_reads_video_info(data):
    video = data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"
    info = media.probe(video)
    assert (info.width, info.height) == (640, 360) and 9.9 < info.duration < 10.1
    frames, _ = sampling.read_frames(video, count=4)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [round(f.t, 1) for f in frames] == [0.0, 2.5, 5.0, 7.5]
    assert all(f.image.size == (640, 360) for f in frames)
    assert sampling.sample_times(10.0, 3, fps=1.0) == [0.0, 1.0, 2.0]
    with pytest.raises(media.InputError, match="over the limit"):
        sampling.read_frames(video, max_seconds=5)


def test_transparent_png_is_composited_on_white(tmp_path):
    from PIL import Image

    path = tmp_path / "cutout.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert images.load_image(path).getpixel((0, 0)) == (255, 255, 255)


def face(frame: int, name: str, distance: float, size: float = 10.0) -> Face:
    return Face(frame=frame, t=float(frame), box=[0, 0, size, size], prob=1.0, name=name, distance=distance)


def test_main_identity_rule():
    assert main_identity([]) == (NO_FACE, NO_FACE)
    assert main_identity([face(0, UNKNOWN, 1.3)]) == (UNKNOWN, UNKNOWN)
    # seen in more frames wins, even against a closer single match
    faces = [face(0, "a", 0.9), face(1, "a", 0.9), face(1, "b", 0.3)]
    assert main_identity(faces) == (OK, "a")
    # several faces of one person in one frame count once
    assert main_identity([face(0, "a", 0.9), face(0, "a", 0.9), face(1, "b", 0.9), face(2, "b", 0.9)]) == (OK, "b")
    # tie on frames: the larger face (nearer the camera) wins
    assert main_identity([face(0, "a", 0.5, size=10), face(0, "b", 0.9, size=40)]) == (OK, "b")


def _ffmpeg() -> str:
    """The ffmpeg binary (imageio-ffmpeg, in the test extra): tests make odd videos with it."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="pip install imageio-ffmpeg (in the test extra)")
    return imageio_ffmpeg.get_ffmpeg_exe()


def test_duration_and_size_agree_with_the_ffmpeg_binary(data):
    import re
    import subprocess

    for video in sorted((data / "videos").iterdir()):
        said = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(video)], capture_output=True, text=True, check=False).stderr  # exits 1: no output
        h, m, sec = re.search(r"Duration: (\d+):(\d\d):(\d\d\.\d+)", said).groups()
        width, height = map(int, re.search(r"Video: .*?(\d{2,5})x(\d{2,5})", said).groups())
        info = media.probe(video)
        assert abs(info.duration - (int(h) * 3600 + int(m) * 60 + float(sec))) < 0.01, video.name
        assert (info.width, info.height, info.rotation) == (width, height, 0), video.name
        assert media.duration(video) == info.duration


def test_unreadable_videos_say_what_is_wrong(bad_inputs, tmp_path):
    import subprocess

    cases = {
        bad_inputs["corrupt"]: "corrupt.mp4: not a readable video (moov atom not found)",  # truncated upload
        bad_inputs["text"]: "notes.mp4: not a readable video (",
        bad_inputs["empty"]: "empty.mp4: the file is empty (0 bytes)",
        tmp_path / "gone.mp4": "gone.mp4: file not found",
    }
    audio = tmp_path / "voice memo.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:a", "aac", str(audio)], check=True)  # fmt: skip
    cases[audio] = "voice memo.mp4: the file has no video stream (audio only?): nothing to recognise"
    for path, message in cases.items():
        for call in (media.probe, media.duration, sampling.read_frames, media.open_video):
            with pytest.raises(media.InputError) as caught:
                call(path)
            assert str(caught.value).startswith(message), (call.__name__, str(caught.value))


def test_a_video_cut_short_gives_the_frames_before_the_cut(data, tmp_path):
    """An MP4 whose header (moov) comes first and whose data is cut off: what is there is decoded, the
    samples past the cut are missing, and nothing raises."""
    import subprocess

    whole = tmp_path / "whole.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"),
                    "-c", "copy", "-movflags", "+faststart", str(whole)], check=True)  # fmt: skip
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    frames, seconds = sampling.read_frames(cut, count=4)
    assert 9.9 < seconds < 10.1  # the header still says 10 s
    assert 1 <= len(frames) < 4 and [f.index for f in frames] == list(range(len(frames)))


def test_early_exit_and_all_frames(data, celeb_gallery, tmp_path):
    from facerec_cli.samples import still_video

    # An enrolled photo as a 3-second video: the first frame settles it, unless --all-frames.
    video = still_video(sorted((data / "5celeb" / "train" / "jerry_seinfeld").iterdir())[0], tmp_path / "jerry.mp4", seconds=3)
    for flags, frames in (([], 1), (["--all-frames"], 3)):
        result = runner.invoke(app, ["identify", str(video), "--gallery", str(celeb_gallery[0]), "--json", *flags])
        assert result.exit_code == 0, result.output
        line = json.loads(result.stdout.strip().splitlines()[-1])
        assert (line["name"], line["frames"], len({f["frame"] for f in line["faces"]})) == ("jerry_seinfeld", frames, frames)


def _rgb_distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a[:3], b[:3])) ** 0.5


def test_identify_annotate_writes_every_sampled_frame_with_its_boxes(data, hamilton_gallery, celeb_gallery, tmp_path):
    from PIL import Image

    from facerec_cli.samples import still_video
    from lambdas.core import annotate

    video = data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"
    out = tmp_path / "annotated"
    result = runner.invoke(app, ["identify", str(video), "--gallery", str(hamilton_gallery[0]), "--annotate", str(out), "--frames", "3", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    with_faces = sorted({f["frame"] for f in found["faces"]})
    assert found["frames"] == 3 and len(with_faces) > 1
    assert sorted(p.name for p in out.iterdir()) == [f"{video.stem}_f{i}.jpg" for i in with_faces]

    frames, _ = sampling.read_frames(video, count=3)  # the pixels identify saw, from the same sampling
    for face in found["faces"]:
        plain = frames[face["frame"]].image
        drawn = Image.open(out / f"{video.stem}_f{face['frame']}.jpg").convert("RGB")
        assert drawn.size == plain.size
        colour = annotate.UNKNOWN_COLOUR if face["name"] == UNKNOWN else annotate.KNOWN_COLOUR
        width = annotate.line_width(plain.size)
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        # annotate draws a `width`-pixel band outwards from the box edge: sample the band's middle
        m = (width - 1) // 2
        lx, rx, ty, by = x1 - m, x2 + m, y1 - m, y2 + m
        line = [(x, y) for x in range(lx, rx + 1, 2) for y in (ty, by)] + [(x, y) for y in range(ty, by + 1, 2) for x in (lx, rx)]
        assert sum(_rgb_distance(drawn.getpixel(p), colour) < 60 for p in line) / len(line) > 0.9
        assert sum(_rgb_distance(drawn.getpixel(p), plain.getpixel(p)) > 40 for p in line) / len(line) > 0.9
        # well inside the face, and just outside the band beside it: only JPEG noise
        qx, qy = (x2 - x1) // 4, (y2 - y1) // 4
        inner = [(x, y) for x in range(x1 + qx, x2 - qx, 2) for y in range(y1 + qy, y2 - qy, 2)]
        beside = [(x, y) for y in range(y1 + qy, y2 - qy, 2) for x in (x1 - width - 3, x2 + width + 3)]
        assert max(_rgb_distance(drawn.getpixel(p), plain.getpixel(p)) for p in inner + beside) < 30

    # A first frame that settles the answer would stop identify there; --annotate looks at them all.
    still = still_video(sorted((data / "5celeb" / "train" / "jerry_seinfeld").iterdir())[0], tmp_path / "jerry.mp4", seconds=3)
    result = runner.invoke(app, ["identify", str(still), "--gallery", str(celeb_gallery[0]), "--annotate", str(tmp_path / "jerry"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == 3
    assert sorted(p.name for p in (tmp_path / "jerry").iterdir()) == ["jerry_f0.jpg", "jerry_f1.jpg", "jerry_f2.jpg"]


def test_webp_image_is_identified(data, celeb_gallery, tmp_path):
    from PIL import Image

    photo = sorted((data / "5celeb" / "val" / "ben_afflek").iterdir())[0]
    webp = tmp_path / "ben.webp"
    Image.open(photo).convert("RGB").save(webp, format="WEBP", quality=90)
    assert webp.read_bytes()[8:12] == b"WEBP"
    result = runner.invoke(app, ["identify", str(webp), "--gallery", str(celeb_gallery[0]), "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert (line["video"], line["status"], line["name"]) == ("ben.webp", OK, "ben_afflek")


def test_exif_orientation_is_applied_like_a_photo_viewer_does(data, celeb_gallery, tmp_path):
    """A phone photo: pixels stored sideways, EXIF Orientation 6 ("rotate 90 degrees clockwise to
    show"). Every person in 5celeb/val, so that a sideways face found by luck cannot pass the test."""
    from PIL import Image

    files, expected = [], {}
    for person in ("ben_afflek", "madonna", "mindy_kaling"):
        photo = sorted((data / "5celeb" / "val" / person).iterdir())[0]
        upright = Image.open(photo).convert("RGB")
        stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation
        path = tmp_path / f"{person}_phone.jpg"
        stored.save(path, format="JPEG", quality=92, exif=exif)
        assert Image.open(path).size == (upright.height, upright.width)
        files.append(str(path))
        expected[path.name] = person
    result = runner.invoke(app, ["identify", *files, "--gallery", str(celeb_gallery[0]), "--json"])
    assert result.exit_code == 0, result.output
    got = {r["video"]: (r["status"], r["name"]) for r in map(json.loads, result.stdout.splitlines())}
    assert got == {name: (OK, person) for name, person in expected.items()}


def test_phone_video_with_display_rotation_is_seen_upright(data, celeb_gallery, tmp_path):
    """A phone video: frames encoded sideways plus a display-matrix rotation that players apply.
    ffmpeg applies it when it extracts frames (autorotate); this keeps it that way."""
    import subprocess

    from PIL import Image

    person = "jerry_seinfeld"
    photo = next(p for p in sorted((data / "5celeb" / "val" / person).iterdir()) if Image.open(p).width != Image.open(p).height)
    upright = Image.open(photo).convert("RGB")
    upright = upright.resize((upright.width // 2 * 2, upright.height // 2 * 2))
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png")
    quiet = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run([*quiet, "-loop", "1", "-i", str(tmp_path / "sideways.png"), "-t", "2", "-r", "10", "-pix_fmt", "yuv420p",
                    str(tmp_path / "raw.mp4")], check=True)  # fmt: skip
    video = tmp_path / "phone.mp4"
    subprocess.run([*quiet, "-display_rotation", "-90", "-i", str(tmp_path / "raw.mp4"), "-c", "copy", str(video)], check=True)

    frames, _ = sampling.read_frames(video, count=2)
    assert frames[0].image.size == upright.size  # portrait, as shown, not the stored landscape
    assert media.probe(video) == media.VideoInfo(duration=pytest.approx(2.0, abs=0.05), width=upright.width, height=upright.height,
                                                 fps=10.0, rotation=270)  # fmt: skip
    small = (upright.width // 8, upright.height // 8)

    def off(a, b):  # mean absolute difference of the two pictures, downscaled
        import numpy as np

        return float(np.abs(np.asarray(a.resize(small), dtype=np.float32) - np.asarray(b.resize(small), dtype=np.float32)).mean())

    assert off(frames[0].image, upright) < 8  # the same picture (after H.264), the right way up
    assert off(frames[0].image, upright.transpose(Image.Transpose.ROTATE_180)) > 3 * off(frames[0].image, upright)
    result = runner.invoke(app, ["identify", str(video), "--gallery", str(celeb_gallery[0]), "--json"])
    line = json.loads(result.stdout)
    assert (line["status"], line["name"]) == (OK, person), result.output


def test_audio_only_file_says_it_has_no_video_stream(tmp_path):
    import subprocess

    audio = tmp_path / "voice memo.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:a", "aac", str(audio)], check=True)  # fmt: skip
    with pytest.raises(media.InputError, match=r"voice memo\.mp4: the file has no video stream \(audio only\?\)"):
        sampling.read_frames(audio, count=3)


def test_enroll_reports_a_photo_without_a_face(data, tmp_path):
    import shutil

    person = tmp_path / "photos" / "madonna"
    person.mkdir(parents=True)
    for photo in sorted((data / "5celeb" / "train" / "madonna").iterdir())[:2]:
        shutil.copy(photo, person / photo.name)
    shutil.copy(data / "noface" / "noface_02_peppers.png", person / "peppers.png")
    out = tmp_path / "g.pt"
    result = runner.invoke(app, ["enroll", str(tmp_path / "photos"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "madonna/peppers.png: no face found: photo skipped" in result.stderr
    gallery = Gallery.load(out)
    assert gallery.names == ["madonna", "madonna"] and "madonna/peppers.png" not in gallery.sources


def test_decode_budget_stops_a_video_with_an_input_error_naming_the_file(data):
    video = data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"
    # time: counted from opening the file, checked before every frame
    with pytest.raises(media.InputError) as caught:
        sampling.read_frames(video, count=3, timeout=0)
    message = str(caught.value)
    assert message.startswith(f"{video.name}: decoding took longer than 0 s and was stopped") and "FACEREC_DECODE_TIMEOUT" in message
    with pytest.raises(media.InputError, match="took longer than 0 s"):
        media.probe(video, timeout=0)
    # frames: in a video with one keyframe (at 0 s), the sample at 2 s is 50 frames after frame 0 and
    # cannot be reached by seeking; 25 of them are decoded (the decoder drops the B-frames before it): a
    # cap of 20 decoded frames per sample stops the decode there
    video = data / "videos" / "crowd_unlabeled_4s.mp4"
    with media.open_video(video, max_frames_per_sample=20) as opened:
        frames = opened.frames([0.0, 2.0])
        assert next(frames).index == 0  # frame 0 came out before the budget ran out
        with pytest.raises(media.InputError, match=rf"{video.name}: decoded 20 frames without reaching 2\.00 s"):
            next(frames)
    with media.open_video(video, max_frames_per_sample=50) as opened:
        assert [(f.index, f.t) for f in opened.frames([0.0, 2.0])] == [(0, 0.0), (1, 2.0)]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # MP4 has its seek index up front, Matroska reads it at the first seek
def test_far_samples_are_reached_by_seeking_and_match_a_full_decode(tmp_path, suffix, monkeypatch):
    """A 60 s video with a keyframe every 2 s: samples 12 s apart are reached by seeking, and each is
    the very frame a decode of the whole video finds (the first at or after its time)."""
    import subprocess

    import av
    import numpy as np

    video = tmp_path / f"long{suffix}"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", str(video)], check=True)  # fmt: skip
    seeks = []
    should_seek = media.Video._should_seek
    monkeypatch.setattr(media.Video, "_should_seek", lambda self, pos, target: (r := should_seek(self, pos, target)) and not seeks.append(target) or r)
    with media.open_video(video) as opened:
        times = sampling.sample_times(opened.duration, 5)
        got = list(opened.frames(times))
    assert times == [0.0, 12.0, 24.0, 36.0, 48.0] and len(seeks) == 4
    with av.open(str(video)) as container:  # the reference: every frame, in order, no seeking
        decoded = [(float(f.pts * f.time_base), f) for f in container.decode(video=0)]
        want = [next((t, np.asarray(f.to_image())) for t, f in decoded if t >= s - 0.0005) for s in times]
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert [round(f.t, 3) for f in got] == [round(t, 3) for t, _ in want]
    assert all(np.array_equal(np.asarray(f.image), pixels) for f, (_, pixels) in zip(got, want))


def test_close_samples_take_one_pass_and_distinct_frames(data, monkeypatch):
    video = data / "videos" / "crowd_unlabeled_4s.mp4"  # one keyframe in 105 frames: seeking cannot help
    should_seek = media.Video._should_seek
    monkeypatch.setattr(media.Video, "_should_seek", lambda *a: should_seek(*a) and pytest.fail("seeked"))
    with media.open_video(video) as opened:
        # 100 fps asked of a 25 fps video: each sample takes the next frame, never one twice
        assert [round(f.t, 2) for f in opened.frames(sampling.sample_times(opened.duration, 4, fps=100))] == [0.0, 0.04, 0.08, 0.12]
        # a second call starts again from the start
        assert [f.index for f in opened.frames([0.0])] == [0]


def test_images_and_video_frames_over_the_pixel_limit_are_refused(data, tmp_path, monkeypatch):
    from PIL import Image

    # 196 megapixels (Pillow's own bomb check fires inside Image.open) and 64 (ours, from the header)
    for side in (14000, 8000):
        path = tmp_path / f"huge{side}.png"
        Image.new("1", (side, side)).save(path)
        with pytest.raises(media.InputError) as caught:
            images.load_image(path)
        message = str(caught.value)
        assert message.startswith(f"{path.name}: the image is ") and f"over the limit of {images.MAX_PIXELS // 10**6} megapixels" in message
        assert "scale it down" in message and str(side * side // 10**6) in message
    # a video whose frames are over the limit is refused before decoding
    monkeypatch.setattr(media, "MAX_PIXELS", 200_000)
    video = data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"  # 640x360 = 0.23 megapixels
    with pytest.raises(media.InputError, match=r"frames are 640x360 \(0\.23 megapixels\), over the limit of 0\.20 megapixels"):
        sampling.read_frames(video)


def test_jpeg_encoding_of_a_frame(data):
    from PIL import Image

    frame = sampling.read_frames(data / "videos" / "hamilton_miranda_lacamoire_10s.mp4", count=1)[0][0]
    jpeg = images.encode_jpeg(frame.image)
    assert jpeg[:3] == b"\xff\xd8\xff"
    import io

    back = Image.open(io.BytesIO(jpeg))
    assert back.size == frame.image.size and back.mode == "RGB"


def test_split_stores_each_sampled_frame_in_the_course_layout(data, moto_url, monkeypatch, tmp_path):
    """video-splitting's split() on a real video against a real moto S3: frame 0 as <stem>.jpg (JPEG
    bytes with their content type, event id and time); the other samples' times handed on, not decoded."""
    import io

    import boto3
    from PIL import Image

    from lambdas import video_splitting
    from lambdas.env import SplittingEnv
    from lambdas.events import Upload
    from lambdas.storage import EVENT_META

    for name, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    for bucket in ("split-in", "split-stage-1"):
        s3.create_bucket(Bucket=bucket)
    video = data / "videos" / "hamilton_miranda_lacamoire_10s.mp4"
    key = "clips/hamilton clip.mp4"
    s3.upload_file(str(video), "split-in", key)
    env = SplittingEnv(stage1_bucket="split-stage-1", recognition_function="face-recognition", output_bucket="out",
                       frames=4, fps=0.0, max_bytes=10**9, max_seconds=600.0, decode_timeout=60.0)  # fmt: skip
    upload = Upload(bucket="split-in", key=key, etag="e", size=video.stat().st_size, event_id="ev-1")
    work = tmp_path / "work"
    work.mkdir()
    request = video_splitting.split(upload, env, work)
    keys = [f.key for f in request.frames]
    assert keys == ["clips/hamilton clip.jpg"] and [f.t for f in request.frames] == [0.0]
    assert [round(t, 1) for t in request.samples] == [2.5, 5.0, 7.5]
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="split-stage-1")["Contents"])
    assert listed == sorted(keys)
    for ref in request.frames:
        obj = s3.get_object(Bucket="split-stage-1", Key=ref.key)
        assert obj["ContentType"] == "image/jpeg"
        assert obj["Metadata"] == {EVENT_META: "ev-1", "t": f"{ref.t:.3f}"}
        image = Image.open(io.BytesIO(obj["Body"].read()))
        assert image.format == "JPEG" and image.size == (640, 360)
    assert request.video == "hamilton clip.mp4" and request.stem == "clips/hamilton clip"
    # an unreadable upload: InputError naming the file, nothing stored
    s3.put_object(Bucket="split-in", Key="notes.mp4", Body=b"this is not a video\n")
    bad = Upload(bucket="split-in", key="notes.mp4", etag="e", size=20, event_id="ev-2")
    (tmp_path / "work2").mkdir()
    with pytest.raises(media.InputError, match="notes.mp4: not a readable video"):
        video_splitting.split(bad, env, tmp_path / "work2")
    assert not [o for o in s3.list_objects_v2(Bucket="split-stage-1")["Contents"] if o["Key"].startswith("notes")]


def test_still_video_output_named_like_an_option(data, tmp_path, monkeypatch):
    from facerec_cli.samples import still_video

    monkeypatch.chdir(tmp_path)  # a relative name starting with '-', as a user might type it
    made = still_video(sorted((data / "5celeb" / "val" / "madonna").iterdir())[0], Path("-clip.mp4"), seconds=1)
    assert (tmp_path / "-clip.mp4").is_file()
    assert media.probe(made).duration == pytest.approx(1.0, abs=0.1)
