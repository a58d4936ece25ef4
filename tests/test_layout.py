"""The layout's rules (ARCHITECTURE.md): no import circles, counting imports inside functions and
type-only ones; the floors of the rooms, and the imports running back up against them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def arrows(stdout: str) -> list[str]:
    return [line.removeprefix("arrow running back up: ") for line in stdout.splitlines() if line.startswith("arrow running back up: ")]


def test_no_module_imports_itself_back() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--all"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[0].startswith("0 import cycle(s) among"), run.stdout


def test_the_arrows_running_back_up_are_the_known_ones() -> None:
    """Today's arrows, listed so that a new one fails here. The pipeline's local Lambda runtime and
    localcloud import each other (issue 31 moves the runtime into localcloud), and config.py and
    galleries.py, below infra and iaas, reach up into them inside functions. Each move that removes
    one removes its line here; --arrows then makes the script fail on any."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--all"], capture_output=True, text=True, timeout=300)
    tangle = [
        "facerec_cli.localcloud.server -> facerec_cli.pipeline.local.dispatch",
        "facerec_cli.localcloud.server -> facerec_cli.pipeline.local.functions",
        "facerec_cli.localcloud.server -> facerec_cli.pipeline.local.seam",
        "facerec_cli.pipeline.local.runner -> facerec_cli.localcloud.server",
        "facerec_cli.pipeline.local.seam -> facerec_cli.localcloud.moto_fixes",
        "facerec_cli.pipeline.local.workers -> facerec_cli.localcloud.environ",
    ]
    inside_functions = [
        "facerec_cli.config -> facerec_cli.iaas.names",
        "facerec_cli.config -> facerec_cli.infra.naming",
        "facerec_cli.galleries -> facerec_cli.infra.resources.s3",
    ]
    assert arrows(run.stdout) == sorted(tangle + inside_functions), run.stdout
    module_level = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert arrows(module_level.stdout) == tangle, module_level.stdout
    strict = subprocess.run([sys.executable, str(SCRIPT), "--arrows"], capture_output=True, text=True, timeout=300)
    assert strict.returncode == 1


def _tree(tmp_path: Path, modules: dict[str, str]) -> Path:
    """A copy of the script over a tree of ``modules`` (dotted name -> source)."""
    for name, source in {"facerec_cli": "", "lambdas": "", **modules}.items():
        path = tmp_path.joinpath(*name.split("."))
        if name.count(".") == 0 or name.endswith("__init__"):
            path = (path.parent if name.endswith("__init__") else path) / "__init__.py"
        else:
            path = path.with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "import_cycles.py"
    script.write_text(SCRIPT.read_text())
    return script


def test_the_checker_finds_a_circle(tmp_path: Path) -> None:
    # The same script on a tree with a circle inside a function (as lambdas/segments.py had): it must say so.
    script = _tree(tmp_path, {"facerec_cli.a": "from facerec_cli import b\n", "facerec_cli.b": "def f():\n    from facerec_cli.a import x\n"})
    module_level = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    everywhere = subprocess.run([sys.executable, str(script), "--all"], capture_output=True, text=True, timeout=60)
    assert module_level.returncode == 0, module_level.stdout
    assert everywhere.returncode == 1 and "facerec_cli.a -> facerec_cli.b -> facerec_cli.a" in everywhere.stdout, everywhere.stdout


def test_the_checker_counts_type_only_imports(tmp_path: Path) -> None:
    # As iaas/user_data.py imported IaasOptions from iaas/stack.py, which imports user_data: a circle.
    checking = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from facerec_cli.stack import Options\n"
    script = _tree(tmp_path, {"facerec_cli.stack": "from facerec_cli.user_data import boot\n", "facerec_cli.user_data": checking})
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "facerec_cli.stack -> facerec_cli.user_data -> facerec_cli.stack" in run.stdout, run.stdout


def test_the_checker_finds_arrows_running_back_up(tmp_path: Path) -> None:
    # No module circle: rooms `top` and `bottom` (packages) import each other through different modules,
    # and `shared` reaches up into `top` inside a function.
    script = _tree(tmp_path, {
        "facerec_cli.top.__init__": "", "facerec_cli.top.runner": "from facerec_cli.bottom.server import serve\n",
        "facerec_cli.top.dispatch": "from facerec_cli import shared\n",
        "facerec_cli.bottom.__init__": "", "facerec_cli.bottom.server": "from facerec_cli.top.dispatch import Dispatcher\n",
        "facerec_cli.top.view": "", "facerec_cli.shared": "def f():\n    from facerec_cli.top.view import show\n",
    })  # fmt: skip
    module_level = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert module_level.returncode == 0, module_level.stdout
    assert arrows(module_level.stdout) == ["facerec_cli.bottom.server -> facerec_cli.top.dispatch", "facerec_cli.top.runner -> facerec_cli.bottom.server"]
    assert "floor 2: facerec_cli.bottom facerec_cli.top" in module_level.stdout and "floor 1: facerec_cli.shared" in module_level.stdout
    everywhere = subprocess.run([sys.executable, str(script), "--all", "--arrows"], capture_output=True, text=True, timeout=60)
    assert everywhere.returncode == 1 and "0 import cycle(s)" in everywhere.stdout, everywhere.stdout
    assert "facerec_cli.shared -> facerec_cli.top.view" in arrows(everywhere.stdout)
