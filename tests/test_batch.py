"""``facerec identify`` over many files in worker processes (issue #29), and workers that end with
whatever started them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from facerec_cli.lifeline import POLL_S

FACEREC = [sys.executable, "-c", "from facerec_cli.cli.app import main; main()"]


def _answers(stdout: str) -> dict[str, tuple]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {r["video"]: (r["status"], r["name"], r["frames"], [(f["frame"], f["name"], round(f["distance"], 4)) for f in r["faces"]])
            for r in rows}  # fmt: skip


def test_parallel_identify_answers_as_one_process_does(data, celeb_gallery, tmp_path):
    """Two workers against one process on photos, a no-face image, the crowd and the Hamilton clip: the
    same answer for every file (printed as each finishes, so in any order), each file once."""
    files = [*sorted((data / "5celeb" / "val").glob("*/*"))[::3], sorted((data / "noface").iterdir())[0], *sorted((data / "videos").glob("*.mp4"))]
    runs = {}
    for workers in ("1", "2"):
        done = subprocess.run([*FACEREC, "identify", *map(str, files), "--gallery", str(celeb_gallery[0]), "--json", "--workers", workers],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == len(files)
        runs[workers] = _answers(done.stdout)
    assert runs["2"] == runs["1"] and len(runs["1"]) == len(files)
    assert {v[1] for v in runs["1"].values()} >= {"unknown", "no_face", "elton_john"}


def test_a_bad_gallery_in_the_workers_is_one_error_line(data, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a gallery")
    photos = sorted((data / "5celeb" / "val").glob("*/*"))[:2]
    done = subprocess.run([*FACEREC, "identify", *map(str, photos), "--gallery", str(bad), "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")], done.stderr
    assert "Traceback" not in done.stderr


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_until(condition, limit_s: float = 60.0) -> bool:
    """Polls ``condition`` (a deadline against a hang, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_identify_workers_end_when_it_is_killed(data, celeb_gallery, tmp_path):
    """SIGKILL of `facerec identify` (no chance to clean up): its workers end on their own."""
    crowd = data / "videos" / "crowd_unlabeled_4s.mp4"
    files = []
    for i in range(40):
        files.append(tmp_path / f"crowd{i}.mp4")
        shutil.copy(crowd, files[-1])
    proc = subprocess.Popen([*FACEREC, "identify", *map(str, files), "--gallery", str(celeb_gallery[0]), "--json", "--workers", "2", "--frames", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline()  # the workers are busy: a first result came back
        workers = _children(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _wait_until(lambda: not _alive(workers), 10 + 10 * POLL_S), _alive(workers)
    finally:
        proc.kill()


def test_run_local_workers_end_with_their_parent_even_when_they_ignore_sigterm(tmp_path):
    """A run-local worker busy in a handler that ignores SIGTERM (as two did once, holding 900 MB): its
    parent is SIGKILLed, and the worker ends anyway."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        from facerec_cli.localcloud.runtime.functions import LocalFunction
        from facerec_cli.localcloud.runtime.workers import WorkerProcess
        worker = WorkerProcess(LocalFunction("stubborn", "arn:aws:lambda:us-east-1:000000000000:function:stubborn",
                                             "tests.runtime_handlers.stubborn", timeout_s=900), {})
        threading.Thread(target=worker.run, args=(worker.spec, "r1", "{}"), daemon=True).start()
        while worker.pid is None:
            time.sleep(0.05)
        print(worker.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert parent.stdout is not None
        worker = {int(parent.stdout.readline())}
        assert _wait_until(lambda: bool(_alive(worker)))
        time.sleep(1.0)  # let it enter the handler (ignoring SIGTERM from then on); not a timing assertion
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait_until(lambda: not _alive(worker), 10 + 10 * POLL_S), "the worker outlived its parent"
    finally:
        parent.kill()
