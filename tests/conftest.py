"""Shared fixtures: the labelled test data (../shared/data or $FACEREC_TEST_DATA) and models/galleries
built once per test session."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))


def _require_data() -> Path:
    if not (DATA / "5celeb").is_dir():
        message = f"test data not found at {DATA} (set FACEREC_TEST_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # under CI, missing data is a failure, not a skip
        pytest.skip(message)
    return DATA


@pytest.fixture(scope="session")
def data() -> Path:
    return _require_data()


@pytest.fixture(scope="session")
def encoder():
    from lambdas.core.recognise import FaceEncoder

    return FaceEncoder()


@pytest.fixture(scope="session")
def celeb_gallery(data, encoder, tmp_path_factory):
    """5celeb/train enrolled, saved to disk (path, gallery)."""
    from lambdas.core.enroll import build_gallery

    gallery, _ = build_gallery(data / "5celeb" / "train", encoder)
    path = tmp_path_factory.mktemp("galleries") / "5celeb.pt"
    gallery.save(path)
    return path, gallery


@pytest.fixture(scope="session")
def hamilton_gallery(data, encoder, tmp_path_factory):
    from lambdas.core.enroll import build_gallery

    gallery, reports = build_gallery(data / "enroll", encoder)
    path = tmp_path_factory.mktemp("galleries") / "hamilton.pt"
    gallery.save(path)
    return path, gallery, reports


@pytest.fixture
def bad_inputs(tmp_path: Path, data: Path) -> dict[str, Path]:
    """Files that must end in ``status: error``: a truncated (corrupt) video, an empty file, a text file
    named .mp4."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes((data / "videos" / "hamilton_miranda_lacamoire_10s.mp4").read_bytes()[:4096])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    return {"corrupt": corrupt, "empty": empty, "text": text}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real moto server over HTTP on 127.0.0.1 (a port the OS picks), one per test module."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()  # moto 5.2.1: the port the OS picked for port=0
    yield f"http://{host}:{port}"
    server.stop()
    inner = getattr(server, "_server", None)  # stop() leaves the listening socket open
    if inner is not None:
        inner.server_close()
