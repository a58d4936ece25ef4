"""``facerec identify`` over many files: worker processes that each load the gallery and the models
once (while the caller goes on), and results as each file finishes.

With one worker (or one file) everything runs in the caller's process. Workers are forked before the
caller starts any thread (the progress display), so they start with its imports already done (when it
has threads already, as under a test runner, they are spawned), and
each uses one onnxruntime thread (the processes, not threads within one, use the cores). They end with
the caller, however it ends (:mod:`facerec_cli.lifeline`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from lambdas.core.errors import FacerecError
from lambdas.core.media import Frame
from lambdas.core.models import THREADS_ENV
from lambdas.core.recognise import Recogniser, SamplingOptions
from lambdas.core.results import Result, error_result

from facerec_cli import lifeline


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class BatchSettings:
    """What each worker builds its recogniser from (sent to the workers: plain values only)."""

    gallery: Path
    sampling: SamplingOptions
    weights: str | None = None
    device: str = "cpu"
    threshold: float | None = None
    annotate_dir: Path | None = None  # each sampled frame with faces, drawn, written here by the worker


@dataclass
class Done:
    index: int  # position of the file in the caller's list
    result: Result
    annotated: list[Path]


class _Worker:
    """The recogniser of this process (one per worker; the caller's own when it runs alone)."""

    recogniser: Recogniser | None = None
    error: FacerecError | None = None
    settings: BatchSettings | None = None

    @classmethod
    def load(cls, settings: BatchSettings) -> None:
        from facerec_cli.gallery_files import load_gallery

        cls.settings, cls.recogniser, cls.error = settings, None, None
        try:
            cls.recogniser = Recogniser(
                load_gallery(settings.gallery), weights=settings.weights, device=settings.device, threshold=settings.threshold,
                sampling=settings.sampling,
            )  # fmt: skip
        except FacerecError as exc:  # a bad gallery or weights: reported with the first file, in the caller
            cls.error = exc

    @classmethod
    def run(cls, index: int, path: Path) -> Done:
        if cls.error is not None:
            raise cls.error
        assert cls.recogniser is not None and cls.settings is not None
        if cls.settings.annotate_dir is None:
            return Done(index, cls.recogniser.recognise_file(path), [])

        result, frames = cls.recogniser.recognise_file_frames(path)
        return Done(index, result, write_annotated(cls.settings.annotate_dir, path.stem, result, frames))


def _start_worker(settings: BatchSettings, parent: int) -> None:
    lifeline.follow(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the caller decides
    os.environ.setdefault(THREADS_ENV, "1")
    _Worker.load(settings)


def _run(index: int, path: Path) -> Done:
    return _Worker.run(index, path)


class Batch:
    """Recognises ``files``: construct it before starting any thread, then iterate :meth:`results`."""

    def __init__(self, files: list[Path], settings: BatchSettings, workers: int) -> None:
        self.files = files
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future[Done], int] = {}
        if workers > 1 and len(files) > 1:
            # Fork only a process without other threads (one could hold a lock the child then waits on).
            fork = sys.platform == "linux" and threading.active_count() == 1
            context = multiprocessing.get_context("fork" if fork else "spawn")
            self._pool = ProcessPoolExecutor(
                min(workers, len(files)), mp_context=context, initializer=_start_worker, initargs=(settings, os.getpid())
            )  # fmt: skip
            self._futures = {self._pool.submit(_run, i, path): i for i, path in enumerate(files)}  # forks the workers now
        else:
            _Worker.load(settings)

    def results(self) -> Iterator[Done]:
        """Each file's result as soon as it is ready (in the order they finish)."""
        if self._pool is None:
            for i, path in enumerate(self.files):
                yield _Worker.run(i, path)
            return
        for future in as_completed(self._futures):
            index = self._futures[future]
            try:
                yield future.result()
            except BrokenProcessPool:
                name = self.files[index].name
                yield Done(index, error_result(name, f"{name}: the worker recognising it died (out of memory?); try --workers 1"), [])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_annotated(directory: Path, stem: str, result: Result, frames: list[Frame]) -> list[Path]:
    """``<stem>_f<frame>.jpg`` for every frame with faces, boxes and names drawn on it."""
    from lambdas.core.annotate import annotate_frame, faces_in_frame, jpeg_bytes

    paths = []
    for frame in frames:
        if not faces_in_frame(result.faces, frame.index):
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}_f{frame.index}.jpg"
        path.write_bytes(jpeg_bytes(annotate_frame(frame.image, result.faces, frame.index)))
        paths.append(path)
    return paths
