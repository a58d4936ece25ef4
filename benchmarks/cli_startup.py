"""How long `import` of the CLI takes (every command registered), against an older revision in the same
run: best and median of N fresh interpreters, modules loaded, and whether boto3 was loaded.

    python benchmarks/cli_startup.py --base 9b4a781   # the revision before the CLI package (facerec_cli.main)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(cwd: Path, module: str, argv: list[str], runs: int) -> tuple[float, float, int, bool]:
    code = (f"import sys, time; sys.argv = {argv!r}; t = time.perf_counter(); import {module}; "
            "print(time.perf_counter() - t, len(sys.modules), 'boto3' in sys.modules)")  # fmt: skip
    out = [subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout.split() for _ in range(runs)]
    seconds = sorted(float(o[0]) for o in out)
    return seconds[0] * 1000, statistics.median(seconds) * 1000, int(out[0][1]), out[0][2] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="an older revision to measure in the same run (a temporary git worktree)")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            base = Path(tmp) / "base"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base), args.base], cwd=ROOT, check=True)
            try:
                old = "facerec_cli.main" if (base / "facerec_cli" / "main.py").exists() else "facerec_cli.cli.app"
                rows.append((f"{args.base}: all commands", measure(base, old, ["python"], args.runs)))
                rows.append((f"{args.base}: as `facerec identify`", measure(base, old, ["facerec", "identify"], args.runs)))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=True)
        rows.append(("this tree: all commands", measure(ROOT, "facerec_cli.cli.app", ["facerec", "identify"], args.runs)))
    for label, (best, median, modules, boto3) in rows:
        print(f"{label:36s} best {best:6.1f} ms  median {median:6.1f} ms  {modules} modules  boto3 {'loaded' if boto3 else 'not loaded'}")


if __name__ == "__main__":
    main()
