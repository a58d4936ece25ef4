"""Print the import cycles among facerec_cli's and lambdas' modules (imports at module level and, with
--all, inside functions too). Exits 1 if there is one: the layering in ARCHITECTURE.md forbids them."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("facerec_cli", "lambdas")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], everywhere: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    # `if TYPE_CHECKING:` blocks are for annotations only: not imports at run time.
    checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    nodes = ast.walk(tree) if everywhere else iter(tree.body)
    found: set[str] = set()
    for node in nodes:
        if id(node) in checking or (isinstance(node, ast.If) and not everywhere):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def main() -> int:
    everywhere = "--all" in sys.argv
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {m: imports(p, set(files), everywhere) - {m} for m, p in files.items()}
    cycles: set[tuple[str, ...]] = set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in stack:
                cycle = stack[stack.index(nxt):]
                i = cycle.index(min(cycle))
                cycles.add(tuple(cycle[i:] + cycle[:i]))
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for module in sorted(graph):
        visit(module, [module])
    # A package importing its own submodules (lazy __init__ exports) is not a cycle between concerns.
    real = sorted(c for c in cycles if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:] + c[:1])))
    for cycle in real:
        print(" -> ".join(cycle + (cycle[0],)))
    print(f"{len(real)} import cycle(s) among {len(files)} modules ({'all imports' if everywhere else 'module-level imports'})")
    return 1 if real else 0


if __name__ == "__main__":
    sys.exit(main())
