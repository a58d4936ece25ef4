"""Print the import cycles among facerec_cli's and lambdas' modules (imports at module level and, with
--all, inside functions too; type-only imports under ``if TYPE_CHECKING:`` count: a circle of
annotations is still a circle of concerns). Exits 1 if there is one: the layering in ARCHITECTURE.md
forbids them.

Then the floors: the modules grouped in rooms (``lambdas``; each top-level module or package of
``facerec_cli``, the pipeline's subpackages each a room of their own), each room on the floor above
every room it imports at module level. An import runs back up when it goes between two rooms that
import each other (directly or round other rooms: they share a floor), or, with --all, when an import
inside a function goes to a higher floor. Each is printed; with --arrows one makes the exit
status 1 too."""

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
    # Module level: the statements of the body, and of its `if TYPE_CHECKING:` blocks.
    checking = [n for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in node.body]
    nodes = ast.walk(tree) if everywhere else iter(tree.body + checking)
    found: set[str] = set()
    for node in nodes:
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


SPLIT_ROOMS = ("facerec_cli.pipeline",)  # packages whose subpackages are rooms of their own


def room(module: str, packages: set[str]) -> str:
    parts = module.split(".")
    if parts[0] != "facerec_cli":
        return parts[0]
    for split in SPLIT_ROOMS:
        sub = ".".join(parts[: split.count(".") + 2])
        if module.startswith(split + ".") and sub in packages:  # in a subpackage, not one of split's own modules
            return sub
    return ".".join(parts[:2])


def floors(structure: dict[str, set[str]], graph: dict[str, set[str]], packages: set[str]) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """(the rooms floor by floor, from the ground up; the imports of ``graph`` running back up). Floors come
    from the module-level imports (``structure``): each room above every room it imports, rooms that
    import each other (round any number of rooms) on one floor. An import runs back up when it goes
    between rooms that import each other, or, in ``graph`` (which may also hold imports inside
    functions), to a higher floor."""

    def rooms_of(g: dict[str, set[str]]) -> dict[str, set[str]]:
        rooms: dict[str, set[str]] = {}
        for module, targets in g.items():
            if module != "facerec_cli":  # the package's own __init__: a shell, not a room
                here = room(module, packages)
                rooms.setdefault(here, set()).update(room(t, packages) for t in targets if t != "facerec_cli")
                rooms[here].discard(here)
        return rooms

    rooms = rooms_of(structure)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in rooms[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reached = {r: reach(r) for r in rooms}
    component = {r: frozenset({r} | {o for o in reached[r] if r in reached[o]}) for r in rooms}
    level: dict[frozenset[str], int] = {}

    def floor(c: frozenset[str]) -> int:
        if c not in level:
            below = {component[t] for r in c for t in rooms[r]} - {c}
            level[c] = 1 + max((floor(b) for b in below), default=0)
        return level[c]

    by_floor: dict[int, list[str]] = {}
    for r in sorted(rooms):
        by_floor.setdefault(floor(component[r]), []).append(r)
    def up(module: str, target: str) -> bool:
        a, b = room(module, packages), room(target, packages)
        return a != b and (b in component[a] or floor(component[b]) > floor(component[a]))

    back = sorted((m, t) for m, targets in graph.items() if m != "facerec_cli" for t in targets if t != "facerec_cli" and up(m, t))
    return [by_floor[f] for f in sorted(by_floor)], back


def main() -> int:
    everywhere = "--all" in sys.argv
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {m: imports(p, set(files), everywhere) - {m} for m, p in files.items()}
    structure = graph if not everywhere else {m: imports(p, set(files), False) - {m} for m, p in files.items()}
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
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    levels, back = floors(structure, graph, packages)
    for number, rooms in reversed(list(enumerate(levels, 1))):
        print(f"floor {number}: {' '.join(rooms)}")
    for module, target in back:
        print(f"arrow running back up: {module} -> {target}")
    print(f"{len(back)} arrow(s) running back up; {sum(map(len, levels))} rooms on {len(levels)} floors (from module-level imports)")
    return 1 if real or (back and "--arrows" in sys.argv) else 0


if __name__ == "__main__":
    sys.exit(main())
