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
CI = os.environ.get("CI") == "true"

# Under CI every test must run: a skip (pytest.skip, importorskip, a skipif mark, a module skipped at
# collection) is turned into a failure, except these, which cannot run on some CI machines whatever is
# installed. Each: test id -> (words of its skip reason, why that skip is legitimate).
ALLOWED_CI_SKIPS = {
    "tests/test_weights.py::test_vggface2_offline_names_casia": (
        "this machine is online",
        "it checks the error an offline machine gives; where the vggface2 download succeeds there is no such error",
    ),
    "tests/test_gallery.py::test_match_gives_the_old_torch_galleries_distances": (
        "git HEAD has no torch gallery",
        "it compares with the torch gallery of git HEAD, which only exists until the commit that replaced it",
    ),
}


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _allowed_skip(nodeid: str, reason: str) -> bool:
    allowed = ALLOWED_CI_SKIPS.get(nodeid.split("[", 1)[0])
    return allowed is not None and allowed[0] in reason


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not _allowed_skip(item.nodeid, reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, where every test must run (tests/conftest.py): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped:  # e.g. a module-level importorskip: the whole module would vanish
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped at collection under CI=true, where every test must run: {_skip_reason(report)}"


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
