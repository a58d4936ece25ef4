"""Results where `facerec people`, `search` and `results --reidentify` find them: the deployment's
buckets (``<stem>.json`` in the details bucket, ``<stem>.txt`` in the output bucket), or a folder of
``<stem>.json`` files (what ``run-local --out DIR`` writes). Both read the raw JSON (search filters on the
text before parsing) and write a result back as the pipeline does: ``<stem>.json`` then ``<stem>.txt``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambdas.core.names import plural
from lambdas.core.results import Result
from lambdas.env import ResultBuckets
from lambdas.events import RESULT_PREFIX_SKIP, result_keys

from facerec_cli.errors import UserError
from facerec_cli.pipeline.observe.results import list_result_keys

FETCH_THREADS = 16  # S3 GETs in flight: reading thousands of results is latency-bound


def _video_key(value: str) -> str:
    return value.rsplit("/", 1)[-1]


@dataclass
class DirStore:
    path: Path

    def __post_init__(self) -> None:
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a folder of results", hint="pass the folder `facerec run-local --out DIR` wrote")

    @property
    def where(self) -> str:
        return str(self.path)

    def stems(self) -> list[str]:
        return sorted(p.name[: -len(".json")] for p in self.path.glob("*.json") if not p.name.startswith(RESULT_PREFIX_SKIP))

    def read(self, stem: str) -> tuple[str, bytes]:
        return stem, (self.path / f"{stem}.json").read_bytes()

    def items(self) -> Iterator[tuple[str, bytes]]:
        for stem in self.stems():
            yield self.read(stem)

    def locate(self, key: str) -> str | None:
        """Where a file a result refers to (a best-view crop) is, if the folder holds it."""
        path = self.path / key
        return str(path) if path.is_file() and path.resolve().is_relative_to(self.path.resolve()) else None

    def write(self, stem: str, result: Result) -> None:
        json_key, txt_key = result_keys(stem)
        for key, body in ((json_key, result.to_json() + "\n"), (txt_key, result.name)):
            tmp = self.path / f".{key}.tmp"
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self.path / key)


@dataclass
class BucketStore:
    s3: Any
    buckets: ResultBuckets
    _seen: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)  # stem -> (ETag, metadata) as read

    @property
    def bucket(self) -> str:
        """Where the details (and the deployed gallery) are."""
        return self.buckets.details

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}"

    def stems(self) -> list[str]:
        return sorted(list_result_keys(self.s3, self.bucket))

    def read(self, stem: str) -> tuple[str, bytes]:
        reply = self.s3.get_object(Bucket=self.bucket, Key=f"{stem}.json")
        self._seen[stem] = (reply["ETag"], reply.get("Metadata") or {})
        return stem, reply["Body"].read()

    def items(self) -> Iterator[tuple[str, bytes]]:
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            yield from pool.map(self.read, self.stems())

    def locate(self, key: str) -> str | None:
        return f"s3://{self.bucket}/{key}"

    def write(self, stem: str, result: Result) -> None:
        """Only over the object as it was read (If-Match): a re-upload answered meanwhile is left alone."""
        from lambdas.storage import EVENT_META, write_result

        etag, meta = self._seen[stem]
        if not write_result(self.buckets, stem, result, meta.get(EVENT_META, "reidentify"), self.s3, replaces=etag):
            raise UserError(f"s3://{self.bucket}/{stem}.json changed while it was re-answered: left as it is",
                            hint="run the command again")  # fmt: skip


Store = DirStore | BucketStore


def load_result(text: bytes, stem: str) -> Result:
    try:
        return Result.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{stem}.json is not a readable result: {exc}") from exc


def find_result(store: Store, video: str) -> tuple[str, Result]:
    """(stem, result) of ``video``: a video name (as results name it), a stem, or a ``.json`` file name."""
    wanted = _video_key(video.strip())
    stems = store.stems()
    by_stem = wanted.removesuffix(".json")
    candidates = [s for s in stems if s == by_stem] or [s for s in stems if s == wanted.rsplit(".", 1)[0]]
    for stem in candidates:
        result = load_result(store.read(stem)[1], stem)
        if result.video in (wanted, by_stem) or stem == by_stem or len(candidates) == 1:
            return stem, result
    # A stem that is not the video's own (run-local renames clashing stems: clip-2.mov): look inside.
    needle = json.dumps(wanted, ensure_ascii=False).encode()
    for stem, text in store.items():
        if needle in text:
            result = load_result(text, stem)
            if result.video == wanted:
                return stem, result
    raise UserError(f"no result for {video!r} in {store.where} ({plural(len(stems), 'result')})",
                    hint="name the video as `facerec results` lists it")  # fmt: skip
