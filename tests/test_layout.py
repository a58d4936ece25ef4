"""The layout's rules (ARCHITECTURE.md): no import circles, counting imports inside functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_imports_itself_back() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_cycles.py"), "--all"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("0 import cycle(s) among"), run.stdout


def test_the_checker_finds_a_circle(tmp_path: Path) -> None:
    # The same script on a tree with a circle inside a function (as lambdas/segments.py had): it must say so.
    for package in ("facerec_cli", "lambdas"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "facerec_cli" / "a.py").write_text("from facerec_cli import b\n")
    (tmp_path / "facerec_cli" / "b.py").write_text("def f():\n    from facerec_cli.a import x\n")
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "import_cycles.py"
    script.write_text((ROOT / "scripts" / "import_cycles.py").read_text())
    module_level = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    everywhere = subprocess.run([sys.executable, str(script), "--all"], capture_output=True, text=True, timeout=60)
    assert module_level.returncode == 0, module_level.stdout
    assert everywhere.returncode == 1 and "facerec_cli.a -> facerec_cli.b -> facerec_cli.a" in everywhere.stdout, everywhere.stdout
