"""`facerec search` over 10,000 stored results: by name (--person) and by face (--photo).

The results are made from real ones (never committed): the Hamilton clip with a timeline and the crowd
clip and the Friends photo sampled, recognised here with a gallery of the Hamilton enrolment photos.
Each synthetic result copies one of them with every face's embedding moved by noise (distance ~0.2
from the original, then re-normalised) and the names of its named faces replaced by one of ``--people``
synthetic people, so that names are spread as in a real collection; one result in ``--hamilton-every``
keeps Miranda's name and the Hamilton clip's faces. The query photo is Lacamoire's enrolment photo,
searched with a gallery of Miranda alone (he is a stranger to it).

Times: through the functions ``facerec search`` runs (reading the folder included; then with the files
already in memory), and the whole command once each (model loading included for --photo).

    python benchmarks/search.py [--results 10000] [--people 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))


def seeds(workdir: Path) -> tuple[list[dict], Path, object]:
    """Real results to copy, a gallery of Miranda alone (file), and the encoder."""
    from lambdas.core.enroll import build_gallery
    from lambdas.core.recognise import FaceEncoder, Recogniser
    from lambdas.core.timeline import recognise_timeline

    encoder = FaceEncoder()
    enrol = workdir / "enrol"
    shutil.copytree(DATA / "enroll" / "lin_manuel_miranda", enrol / "lin_manuel_miranda")
    gallery, _ = build_gallery(enrol, encoder)
    path = workdir / "miranda.safetensors"
    gallery.save(path)
    recogniser = Recogniser(gallery, encoder)
    videos = DATA / "videos"
    out = [recognise_timeline(recogniser, videos / "hamilton_miranda_lacamoire_10s.mp4").to_dict()]
    out += [recogniser.recognise_file(p).to_dict() for p in (videos / "crowd_unlabeled_4s.mp4", DATA / "multiface" / "friends_cast_6faces.jpg")]
    return out, path, encoder


def synthesise(seed_results: list[dict], folder: Path, count: int, people: int, hamilton_every: int) -> dict:
    import numpy as np

    from lambdas.core.results import pack_embedding, unpack_embedding

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    hamilton, others = seed_results[0], seed_results[1:]
    sizes, faces = 0, 0
    for i in range(count):
        base = hamilton if i % hamilton_every == 0 else others[i % len(others)]
        data = json.loads(json.dumps(base))
        data["video"] = f"video_{i:05d}.mp4"
        who = None if base is hamilton else f"person_{rng.integers(people):04d}"
        for face in data["faces"]:
            v = unpack_embedding(face["embedding"]) + rng.normal(scale=0.2 / np.sqrt(512), size=512)
            face["embedding"] = pack_embedding(v / np.linalg.norm(v))
            if who and rng.random() < 0.3:  # some faces of the sampled ones named, as a collection would have
                face["name"] = who
        if who and any(f["name"] == who for f in data["faces"]):
            data["status"], data["name"] = "ok", who
        text = json.dumps(data, ensure_ascii=False)
        (folder / f"video_{i:05d}.json").write_text(text + "\n")
        (folder / f"video_{i:05d}.txt").write_text(data["name"])
        sizes += len(text) + 1
        faces += len(data["faces"])
    return {"results": count, "faces": faces, "json_mb": round(sizes / 1e6, 1)}


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--people", type=int, default=500)
    parser.add_argument("--hamilton-every", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="write the results here and keep them")
    args = parser.parse_args()

    import numpy as np

    from lambdas.core.enroll import embed_photos
    from lambdas.core.gallery import Gallery
    from lambdas.core.search import FaceIndex, find_face, find_person

    from facerec_cli.pipeline.observe.result_store import DirStore

    with tempfile.TemporaryDirectory(prefix="facerec-search-") as tmp:
        workdir = Path(tmp)
        seed_results, gallery_path, encoder = seeds(workdir)
        folder = args.keep or workdir / "results"
        shape = synthesise(seed_results, folder, args.results, args.people, args.hamilton_every)
        store = DirStore(folder)
        gallery = Gallery.load(gallery_path)
        photo = DATA / "enroll" / "alex_lacamoire" / "alex_lacamoire_01.png"
        query = embed_photos([("q", photo)], encoder)[0].embeddings[0]
        figures: dict = {"shape": shape}

        read_s, items = timed(lambda: list(store.items()))
        figures["read_files_s"] = round(read_s, 3)
        t, (hits, _) = timed(lambda: find_person(store.items(), "lin_manuel_miranda"))
        figures["person_with_reading_s"] = round(t, 3)
        figures["person_hits"] = len(hits)
        t, (hits, _) = timed(lambda: find_person(items, "lin_manuel_miranda"))
        figures["person_loaded_s"] = round(t, 3)
        t, (rare, _) = timed(lambda: find_person(items, "person_0007"))
        figures["person_synthetic_loaded_s"] = round(t, 3)
        figures["person_synthetic_hits"] = len(rare)

        t, index = timed(lambda: FaceIndex.build(store.items()), repeat=2)
        figures["photo_index_with_reading_s"] = round(t, 3)
        t, index = timed(lambda: FaceIndex.build(items), repeat=2)
        figures["photo_index_loaded_s"] = round(t, 3)
        t, found = timed(lambda: find_face(index, query, gallery, model=gallery.weights), repeat=5)
        figures["photo_query_s"] = round(t, 4)
        figures["photo_hits"] = len(found)
        figures["photo_faces_compared"] = len(index)
        figures["index_mb"] = round(index.embeddings.nbytes / 1e6, 1)
        expected = args.results // args.hamilton_every + (args.results % args.hamilton_every > 0)
        figures["photo_hamilton_found"] = sum(1 for s in found if s.ranges and s.ranges[0][0] == 0.0)
        figures["photo_hamilton_results"] = expected

        from typer.testing import CliRunner

        from facerec_cli.cli.app import app

        runner = CliRunner()
        for label, argv in (("cli_person_s", ["search", "--person", "lin_manuel_miranda", "--results", str(folder), "--json"]),
                            ("cli_photo_s", ["search", "--photo", str(photo), "--gallery", str(gallery_path), "--results", str(folder), "--json"])):  # fmt: skip
            started = time.perf_counter()
            result = runner.invoke(app, argv)
            figures[label] = round(time.perf_counter() - started, 3)
            assert result.exit_code == 0, result.stderr
        figures["cpu_count"] = os.cpu_count()
        figures["numpy"] = np.__version__
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
