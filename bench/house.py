"""The shape of the house: the figures issue 13 reports before and after the reshaping.

Run from the repository root:

    .venv/bin/python bench/house.py              # table
    .venv/bin/python bench/house.py --markdown   # the same as a markdown table
    .venv/bin/python bench/house.py --list       # also name every module, function and pair counted

What it counts, over the product packages (not tests, not migrations, not bench):

- modules over 400 lines and functions over 60 lines (a function's lines run from its `def` to its
  last line, decorators and docstring included);
- blocks of six or more lines written twice: windows of six consecutive code lines that stand,
  letter for letter once white space is folded, in two places (blank lines, comments and import
  lines are passed over, as are lines of lone punctuation); overlapping windows of one pair of
  places count once;
- import cycles: strongly connected groups of two or more modules in the graph of imports between
  product modules (imports inside `if TYPE_CHECKING:` count: they are arrows a reader follows too);
- upward imports: an import that runs against the layers, shell → channels → core, with the sandbox
  beside the product (no product module may import it) and the two channels independent.

The unit suite's wall time is measured with `time .venv/bin/python -m pytest tests/unit`; it is not
part of this script, which reads files only.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("supportbot", "bot", "mail", "tickets", "accounts", "sandbox")
LAYER = {"supportbot": 2, "bot": 1, "mail": 1, "tickets": 0, "accounts": 0}
MODULE_LINES = 400
FUNCTION_LINES = 60
BLOCK = 6


@dataclass
class House:
    modules: dict[str, Path] = field(default_factory=dict)
    long_modules: list[tuple[str, int]] = field(default_factory=list)
    long_functions: list[tuple[str, int]] = field(default_factory=list)
    twice: list[tuple[str, str]] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    upward: list[tuple[str, str]] = field(default_factory=list)


def product_files() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield ".".join(parts), path


def imports_of(module: str, path: Path, tree: ast.Module) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from a import b` names module a.b when b is a module, else a: resolve() decides.
            for alias in node.names:
                yield f"{target}.{alias.name}"


def resolve(name: str, known: dict[str, Path]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; only groups of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def is_upward(source: str, target: str) -> bool:
    here, there = source.split(".", maxsplit=1)[0], target.split(".", maxsplit=1)[0]
    if here == there:
        return False
    if there == "sandbox":
        return True
    if here == "sandbox":
        return False
    return LAYER[there] > LAYER[here] or (LAYER[here] == LAYER[there] == 1)


CODE_LINE = re.compile(r"[A-Za-z0-9_]")


def code_lines(path: Path) -> list[tuple[int, str]]:
    kept = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = " ".join(raw.split())
        if not line or line.startswith("#") or not CODE_LINE.search(line):
            continue
        if line.startswith(("import ", "from ")) and " import " in f" {line} ":
            continue
        kept.append((number, line))
    return kept


def written_twice(files: dict[str, Path]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for module, path in files.items():
        lines = code_lines(path)
        for start in range(len(lines) - BLOCK + 1):
            window = tuple(text for _, text in lines[start : start + BLOCK])
            seen[window].append((module, lines[start][0]))
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for places in seen.values():
        if len(places) < 2:
            continue
        for i, (first, first_line) in enumerate(places):
            for second, second_line in places[i + 1 :]:
                if first == second and abs(first_line - second_line) < BLOCK:
                    continue
                key = (first, second)
                # Overlapping windows of one pair of files count once per stretch.
                previous = pairs.get(key)
                if previous is not None:
                    old_first = int(previous[0].rpartition(":")[2])
                    if 0 <= first_line - old_first <= BLOCK * 4:
                        continue
                pairs[key] = (f"{first}:{first_line}", f"{second}:{second_line}")
    return sorted(pairs.values())


def survey() -> House:
    house = House()
    trees: dict[str, tuple[Path, ast.Module]] = {}
    for module, path in product_files():
        house.modules[module] = path
        text = path.read_text()
        trees[module] = (path, ast.parse(text))
        lines = len(text.splitlines())
        if lines > MODULE_LINES:
            house.long_modules.append((module, lines))
    graph: dict[str, set[str]] = {module: set() for module in house.modules}
    for module, (path, tree) in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - first + 1
                if length > FUNCTION_LINES:
                    house.long_functions.append((f"{module}.{node.name}", length))
        for name in imports_of(module, path, tree):
            target = resolve(name, house.modules)
            if target is None or target == module:
                continue
            if module.startswith(f"{target}.") and house.modules[target].name == "__init__.py":
                continue
            graph[module].add(target)
    for module, targets in graph.items():
        for target in sorted(targets):
            if is_upward(module, target):
                house.upward.append((module, target))
    house.cycles = strongly_connected(graph)
    house.twice = written_twice(house.modules)
    house.long_modules.sort(key=lambda item: -item[1])
    house.long_functions.sort(key=lambda item: -item[1])
    return house


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    house = survey()
    rows = [
        ("product modules", str(len(house.modules))),
        (f"modules over {MODULE_LINES} lines", str(len(house.long_modules))),
        (f"functions over {FUNCTION_LINES} lines", str(len(house.long_functions))),
        (f"blocks of {BLOCK}+ lines written twice", str(len(house.twice))),
        ("import cycles", str(len(house.cycles))),
        ("upward imports", str(len(house.upward))),
    ]
    if args.markdown:
        print("| measure | count |\n| --- | --- |")
        for name, value in rows:
            print(f"| {name} | {value} |")
    else:
        for name, value in rows:
            print(f"{name:<36} {value:>6}")
    if args.list:
        print("\nmodules over the limit:")
        for name, lines in house.long_modules:
            print(f"  {lines:5}  {name}")
        print("functions over the limit:")
        for name, lines in house.long_functions:
            print(f"  {lines:5}  {name}")
        print("written twice:")
        for first, second in house.twice:
            print(f"  {first} ~ {second}")
        print("cycles:")
        for group in house.cycles:
            print("  " + " -> ".join(group))
        print("upward imports:")
        for source, target in house.upward:
            print(f"  {source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
