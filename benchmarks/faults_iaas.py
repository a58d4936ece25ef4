"""Faults on the local IaaS system (`facerec iaas run-local`): nothing lost, memory bounded.

    python benchmarks/faults_iaas.py [--requests 500] [--concurrency 20] [--slow-clients 100]
                                     [--max-instances 2] [--kill-every 6] [--gallery G] [--max-rss-mb 500]

Starts the real command, `facerec iaas run-local` (a subprocess: web tier, auto-scaler, embedded moto
server; its app instances are worker processes; the tiers run with their roles' credentials while
moto enforces IAM; a token is required), then at once:

- N requests (default 500), C at a time, each a 5celeb/val photo (../shared/data or
  $FACEREC_TEST_DATA; they cycle) whose answer must be ``<stem>:<person>``;
- SIGKILLs, from outside, of a random app worker process at random moments (every 1..2x
  ``--kill-every`` seconds; the process is found as a child of run-local), whatever it is doing:
  loading, holding a request, answering;
- S slow clients (default 100) holding connections the whole time: 70 % send their headers a line a
  second and never finish (each must get a 408 and a closed connection, then reconnects), 30 % trickle
  a real photo in ten pieces over about half the read timeout (each must get its right answer).

Every request must end with its right answer or a refusal with a clear status (408, 503, 504 with a
message); a request that ends without a status (connection reset, client timeout) or with a wrong
answer is LOST, and so is a slow client's session that ends without one. The run-local process's
resident memory is sampled every 0.5 s; its peak (VmHWM) must stay under ``--max-rss-mb``. Exits 1 on
any lost request or a peak over the bound. Without ``--gallery`` one is enrolled from 5celeb/train
first (not timed).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.iaas_load import enrol, percentile  # noqa: E402 - the same 5celeb gallery and percentile

DATA = Path(os.environ.get("FACEREC_TEST_DATA", ROOT.parent / "shared" / "data"))
TOKEN = "faults-benchmark-token"
CLEAR = (408, 409, 413, 415, 422, 503, 504)  # refusals that say what happened


# ------------------------------------------------------------------------------------------ process


def proc_status(pid: int, field_name: str) -> float | None:
    """A /proc/<pid>/status field in MiB (VmRSS, VmHWM); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def worker_pids(parent: int) -> list[int]:
    """The app worker processes of run-local: its multiprocessing children (spawn), not the resource
    tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid != parent:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue
        if b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


# ------------------------------------------------------------------------------------------ clients


@dataclass
class Outcome:
    kind: str  # "request", "slowloris", "slow upload"
    status: int | None  # None: no HTTP status at all
    right: bool
    detail: str
    seconds: float


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def raw_exchange(host: str, port: int, pieces: list[bytes], pause: float, timeout: float, stop: threading.Event) -> tuple[int | None, str]:
    """Send ``pieces`` with ``pause`` between them (stops sending if the server answers first); the
    HTTP status and body the server sent back, (None, why) when the connection ended without one."""
    received = b""
    try:
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.settimeout(pause if pause > 0 else 1.0)
            deadline = time.monotonic() + timeout
            pending = list(pieces)
            while time.monotonic() < deadline:
                if pending:
                    try:
                        conn.sendall(pending.pop(0))
                    except OSError:
                        pending = []  # the server closed (e.g. after its 408): read what it sent
                elif stop.is_set() and not received:
                    return None, "stopped"
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError as exc:
                    return _parse(received) if received else (None, f"connection error: {exc}")
                if not chunk:
                    break
                received += chunk
                if _complete(received):
                    break
            else:
                return None, f"no answer within {timeout:g} s"
    except OSError as exc:
        return None, f"could not connect: {exc}"
    return _parse(received) if received else (None, "closed without a status")


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def _parse(data: bytes) -> tuple[int | None, str]:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not m:
        return None, f"not HTTP: {data[:60]!r}"
    return int(m.group(1)), data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def multipart(name: str, content: bytes, boundary: str = "faultsbench") -> bytes:
    return (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"{name}\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()


def slow_client(index: int, url: str, photos: list[Path], read_timeout: float, stop: threading.Event, tally: Tally) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    rng = random.Random(index)
    uploader = index % 10 < 3
    while not stop.is_set():
        started = time.monotonic()
        if uploader:  # a whole photo, trickled in ten pieces over ~half the read timeout: answered
            photo = photos[rng.randrange(len(photos))]
            body = multipart(f"slow_{index}_{photo.name}", photo.read_bytes())
            head = (f"POST / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n"
                    f"Content-Type: multipart/form-data; boundary=faultsbench\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            step = max(1, len(body) // 10)
            pieces = [head] + [body[i : i + step] for i in range(0, len(body), step)]
            # (Once started, an upload is seen through to its answer, even when the run is ending.)
            status, text = raw_exchange(host, port, pieces, read_timeout / 2 / len(pieces), read_timeout + 120, threading.Event())
            right = status == 200 and text == f"slow_{index}_{photo.stem}:{photo.parent.name}"
            tally.add(Outcome("slow upload", status, right, text[:120], time.monotonic() - started))
        else:  # headers a line a second, never finished: a 408, then the connection is closed
            lines = [f"POST / HTTP/1.1\r\nHost: {host}\r\n".encode()] + [f"X-Slow-{i}: {'x' * 20}\r\n".encode() for i in range(10_000)]
            status, text = raw_exchange(host, port, lines, 1.0, read_timeout + 30, stop)
            if status is None and text == "stopped":
                return
            tally.add(Outcome("slowloris", status, status == 408, text[:120], time.monotonic() - started))


def fast_requests(url: str, photos: list[Path], n: int, concurrency: int, timeout_s: float, tally: Tally) -> float:
    import requests

    jobs = [photos[i % len(photos)] for i in range(n)]

    def post(path: Path) -> None:
        started = time.monotonic()
        try:
            with path.open("rb") as fh:
                r = requests.post(url, files={"inputFile": (path.name, fh, "image/jpeg")}, headers={"Authorization": f"Bearer {TOKEN}"},
                                  timeout=timeout_s + 60)  # fmt: skip
            status, text = r.status_code, r.text
        except requests.RequestException as exc:
            status, text = None, f"{type(exc).__name__}: {exc}"
        right = status == 200 and text == f"{path.stem}:{path.parent.name}"
        tally.add(Outcome("request", status, right, text[:160], time.monotonic() - started))

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, jobs))
    return time.monotonic() - started


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--slow-clients", type=int, default=100)
    ap.add_argument("--max-instances", type=int, default=2)
    ap.add_argument("--kill-every", type=float, default=6.0, help="mean seconds between SIGKILLs of a worker (0: none)")
    ap.add_argument("--timeout", type=float, default=60.0, help="the web tier's answer timeout (504 after)")
    ap.add_argument("--read-timeout", type=float, default=15.0, help="the web tier's request read timeout (408 after)")
    ap.add_argument("--visibility-timeout", type=int, default=8)
    ap.add_argument("--max-rss-mb", type=float, default=500.0, help="bound on run-local's peak resident memory")
    ap.add_argument("--gallery", type=Path)
    ap.add_argument("--seed", type=int, default=546)
    args = ap.parse_args()

    photos = sorted((DATA / "5celeb" / "val").glob("*/*"))
    if not photos:
        sys.exit(f"no photos under {DATA / '5celeb' / 'val'} (set FACEREC_TEST_DATA)")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="facerec-faults-iaas-") as tmp:
        gallery = args.gallery or enrol(Path(tmp))
        log_path = Path(tmp) / "run-local.log"
        command = [
            sys.executable, "-c", "from facerec_cli.cli.app import app; app()", "iaas", "run-local", "--gallery", str(gallery), "--port", "0",
            "--max-instances", str(args.max_instances), "--timeout", str(args.timeout), "--read-timeout", str(args.read_timeout),
            "--visibility-timeout", str(args.visibility_timeout), "--scale-in-after", "5", "--log", str(Path(tmp) / "workers.log"),
        ]  # fmt: skip
        env = {**os.environ, "FACEREC_TOKEN": TOKEN}
        with log_path.open("w") as log:
            system = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        url = (system.stdout.readline() if system.stdout else "").strip()
        if not url.startswith("http://"):
            system.kill()
            sys.exit(f"run-local did not start: {url!r}\n{log_path.read_text()[-2000:]}")
        baseline = proc_status(system.pid, "VmRSS") or 0.0
        tally, stop, kills = Tally(), threading.Event(), []
        rss: list[float] = []

        def sample() -> None:
            while not stop.is_set():
                value = proc_status(system.pid, "VmRSS")
                if value is not None:
                    rss.append(value)
                stop.wait(0.5)

        def killer() -> None:
            import requests

            while args.kill_every > 0 and not stop.wait(rng.uniform(1.0, 2 * args.kill_every)):
                try:  # the pool's own list of its worker processes, checked to be run-local's children
                    listed = requests.get(url + "healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()["instances"]["list"]
                except Exception:  # noqa: BLE001 - try again at the next moment
                    continue
                children = set(worker_pids(system.pid))
                pids = [i["id"] for i in listed if i.get("id") in children]
                if pids:
                    victim = rng.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        kills.append((time.monotonic(), victim))
                    except ProcessLookupError:
                        pass

        slow_stop = threading.Event()
        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=killer, daemon=True)]
        threads += [threading.Thread(target=slow_client, args=(i, url, photos, args.read_timeout, slow_stop, tally), daemon=True)
                    for i in range(args.slow_clients)]  # fmt: skip
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(2.0)  # the slow clients hold their connections before the load starts
        wall = fast_requests(url, photos, args.requests, args.concurrency, args.timeout, tally)
        stop.set()  # no more kills
        slow_stop.set()
        for t in threads:
            t.join(args.read_timeout + 150)
        elapsed = time.monotonic() - started
        try:
            import requests

            health = requests.get(url + "healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            health = {"error": str(exc)}
        peak = proc_status(system.pid, "VmHWM") or max(rss, default=0.0)
        system.send_signal(signal.SIGINT)
        try:
            code = system.wait(120)
        except subprocess.TimeoutExpired:
            system.kill()
            code = None

    return report(args, tally, wall, elapsed, kills, baseline, rss, peak, health, code)


def report(args: argparse.Namespace, tally: Tally, wall: float, elapsed: float, kills: list, baseline: float, rss: list[float],
           peak: float, health: dict, code: int | None) -> int:  # fmt: skip
    by_kind: dict[str, list[Outcome]] = collections.defaultdict(list)
    for o in tally.outcomes:
        by_kind[o.kind].append(o)
    requests_ = by_kind["request"]
    right = [o for o in requests_ if o.right]
    refused = [o for o in requests_ if not o.right and o.status in CLEAR and o.detail]
    lost = [o for o in requests_ if o not in right and o not in refused]
    print(f"local IaaS under faults: {len(requests_)} requests ({args.concurrency} at a time), {args.slow_clients} slow clients, "
          f"up to {args.max_instances} worker process(es), {os.cpu_count()} cores, IAM enforced, token required")  # fmt: skip
    print(f"requests       {len(requests_)} in {wall:.1f} s ({len(requests_) / wall:.2f}/s): {len(right)} right, "
          f"{len(refused)} refused with a clear status {dict(collections.Counter(o.status for o in refused))}, {len(lost)} LOST")  # fmt: skip
    if requests_:
        lat = [o.seconds for o in requests_]
        print(f"latency        p50 {statistics.median(lat):.2f} s, p95 {percentile(lat, 95):.2f} s, max {max(lat):.2f} s")
    print(f"kills          {len(kills)} app worker process(es) SIGKILLed at random moments")
    lost_slow = 0
    for kind, want in (("slowloris", 408), ("slow upload", 200)):
        sessions = by_kind[kind]
        ok = [o for o in sessions if o.right]
        clear = [o for o in sessions if not o.right and o.status in CLEAR]
        bad = [o for o in sessions if o not in ok and o not in clear]
        lost_slow += len(bad)
        took = [o.seconds for o in ok]
        print(f"{kind:<14} {len(sessions)} session(s): {len(ok)} got {want}" + (f" (after {statistics.median(took):.1f} s median)" if took else "")
              + (f", {len(clear)} refused {dict(collections.Counter(o.status for o in clear))}" if clear else "") + f", {len(bad)} LOST")  # fmt: skip
        for o in bad[:3]:
            print(f"  lost {kind}: status {o.status}: {o.detail}")
    for o in lost[:5]:
        print(f"  lost request: status {o.status}: {o.detail}")
    for o in refused[:3]:
        print(f"  refused: {o.status} {o.detail}")
    responses = health.get("responses")
    print(f"web tier       responses {responses}, HTTP {health.get('http')}")
    over = peak > args.max_rss_mb
    print(f"memory         run-local process (web tier + scaler + embedded moto): {baseline:.0f} MiB at start, "
          f"peak {peak:.0f} MiB (bound {args.max_rss_mb:.0f} MiB{', EXCEEDED' if over else ''}); "
          f"sampled max {max(rss, default=0):.0f} MiB")  # fmt: skip
    print(f"run-local      stopped with exit code {code}; whole run {elapsed:.0f} s")
    failed = bool(lost) or lost_slow > 0 or over or code != 0 or not requests_
    print("RESULT         " + ("FAIL" if failed else "PASS: nothing lost"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
