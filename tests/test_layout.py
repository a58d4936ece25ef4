"""The layout's rules (ARCHITECTURE.md): no import circles, counting imports inside functions and
type-only ones; the floors of the rooms, and the imports running back up against them; no module over
MAX_LINES; commands that never import each other."""

from __future__ import annotations

import ast
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
    """No module-level import runs back up: the local Lambda runtime lives in localcloud, below the
    pipeline and iaas, which never import each other. Only config.py and gallery_files.py, below infra and
    iaas, still reach up into them inside functions, listed so that a new arrow fails here; --arrows
    makes the script fail on any."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--all"], capture_output=True, text=True, timeout=300)
    inside_functions = [
        "facerec_cli.config -> facerec_cli.iaas.names",
        "facerec_cli.config -> facerec_cli.infra.naming",
        "facerec_cli.gallery_files -> facerec_cli.infra.resources.s3",
    ]
    assert arrows(run.stdout) == inside_functions, run.stdout
    module_level = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert arrows(module_level.stdout) == [], module_level.stdout
    assert "0 arrow(s) running back up" in module_level.stdout, module_level.stdout
    strict = subprocess.run([sys.executable, str(SCRIPT), "--arrows"], capture_output=True, text=True, timeout=300)
    assert strict.returncode == 0, strict.stdout
    strict_all = subprocess.run([sys.executable, str(SCRIPT), "--all", "--arrows"], capture_output=True, text=True, timeout=300)
    assert strict_all.returncode == 1, strict_all.stdout


def test_pipeline_and_iaas_sit_above_localcloud_and_apart() -> None:
    """The two systems share the local cloud and neither loads the other (ARCHITECTURE.md)."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--all"], capture_output=True, text=True, timeout=300)
    floors = {room: int(line.split(":")[0].removeprefix("floor ")) for line in run.stdout.splitlines() if line.startswith("floor ") for room in line.split(": ", 1)[1].split()}
    # pipeline.local (run-local) is the pipeline's part that uses the local cloud; the rest never does.
    assert floors["facerec_cli.localcloud"] < min(floors["facerec_cli.pipeline.local"], floors["facerec_cli.iaas"]), run.stdout
    imported = {room: _imports(ROOT / "facerec_cli" / room) for room in ("pipeline", "iaas", "localcloud")}
    assert not {m for m in imported["pipeline"] if m.startswith("facerec_cli.iaas")}, imported["pipeline"]
    assert not {m for m in imported["iaas"] if m.startswith("facerec_cli.pipeline")}, imported["iaas"]
    assert not {m for m in imported["localcloud"] if m.startswith(("facerec_cli.pipeline", "facerec_cli.iaas"))}, imported["localcloud"]


def _imports(room: Path) -> set[str]:
    """Every module a package's files import, anywhere in them (inside functions and type-only too)."""
    names: set[str] = set()
    for path in room.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return names


MAX_LINES = 450


def test_no_module_is_over_450_lines() -> None:
    """A module over 450 lines holds more than one thing: split it by what it holds."""
    lines = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for room in ("facerec_cli", "lambdas") for path in (ROOT / room).rglob("*.py")}
    over = {path: n for path, n in lines.items() if n > MAX_LINES}
    assert not over, over


def test_no_command_module_imports_another() -> None:
    """Commands stay thin and never import each other. A command module of cli/ defines a Typer app (a
    group, or top-level commands that app.py merges); app.py combines them and is the only module that
    imports them. The other modules of cli/ may be imported by any: the options and help every command
    shares (options.py, help.py), the plan view (deploy_flow.py), and one command's display body
    (enroll.py, identify.py, run_local.py, serve.py, demo.py: what the command prints around the
    workflow it runs). No module outside cli/ imports cli/ (the floors: cli is the top one)."""
    cli = ROOT / "facerec_cli" / "cli"
    commands = {path.stem for path in cli.glob("*.py") if _defines_typer_app(path)}
    assert {"app", "gallery", "iaas", "models", "people", "pipeline", "recognise"} <= commands, commands
    wrong = {}
    for path in cli.glob("*.py"):
        if path.stem == "app":
            continue
        imported = {name.removeprefix("facerec_cli.cli.") for name in _imports_of(path) if name.startswith("facerec_cli.cli.")}
        if imported & commands:
            wrong[path.name] = sorted(imported & commands)
    assert not wrong, wrong


def _defines_typer_app(path: Path) -> bool:
    """A module-level ``name = typer.Typer(...)``."""
    return any(
        isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "typer.Typer"
        for node in ast.parse(path.read_text()).body
    )


def _imports_of(path: Path) -> set[str]:
    """Every module one file imports, anywhere in it, ``from package import module`` as ``package.module``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


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
