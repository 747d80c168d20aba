"""The package's layer order, checked on the source with an AST walk (issue 14, item 3).

Layers, bottom up (the developers' brief):

1 errors, utils, _table, _repr; 2 kernels, readers; 3 store, synth; 4 engine;
5 analysis, health; 6 plots, zoo; 7 report, api; 8 cli; 9 demo.

A module's layer is that of its top-level name under ``filterdb`` (``filterdb.analysis`` is 5
whether it is one module or a package). Rules:

- every import of a filterdb module (absolute or relative, at module level or inside a
  function) goes to the same or a lower layer; the package root ``filterdb/__init__.py`` is the
  public facade and is exempt (its PEP 562 ``__getattr__`` reaches any layer on first use);
- no import cycles, neither between modules nor between the top-level units;
- an import inside a function, of a filterdb module or of a third-party (optional, heavy)
  dependency, says why on its own line: ``# lazy: <reason>`` (start-up time, an optional
  heavy dependency, ...). Standard-library imports inside functions need no reason.
"""
from __future__ import annotations

import ast
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG_NAME = "filterdb"

# top-level name under filterdb -> layer (bottom up)
LAYERS = {
    "errors": 1, "utils": 1, "_table": 1, "_repr": 1,
    "kernels": 2, "readers": 2,
    "store": 3, "synth": 3,
    "engine": 4,
    # analysis, noise and analyzer are one layer whether or not they are one package yet
    "analysis": 5, "health": 5,
    "plots": 6, "zoo": 6,
    "report": 7, "api": 7,
    "cli": 8,
    "demo": 9,
}
ROOT_LAYER = 1  # importing the package root itself (``__version__``, the errors it re-exports)

LAZY = re.compile(r"#\s*lazy:\s*\S")
STDLIB = set(sys.stdlib_module_names)


PENDING: set = set()  # (file, statement) allowed without a reason: none


@dataclass
class Report:
    unknown: list[str] = field(default_factory=list)   # modules in no layer
    upward: list[str] = field(default_factory=list)    # imports up the layers
    cycles: list[str] = field(default_factory=list)    # module or unit import cycles
    unexplained: list[str] = field(default_factory=list)  # function-level imports, no reason

    def problems(self) -> list[str]:
        return self.unknown + self.upward + self.cycles + self.unexplained


@dataclass
class Import:
    target: str         # dotted module name (a module or a package)
    line: int
    end_line: int
    in_function: bool
    filterdb: bool      # a filterdb module (else a third-party / stdlib one)


class Tree:
    """The modules of one package directory ``src_root/pkg``, their imports and layers."""

    def __init__(self, src_root: Path, pkg: str = PKG_NAME, layers: dict | None = None):
        self.src = Path(src_root)
        self.pkg = pkg
        self.layers = LAYERS if layers is None else layers
        self.files = sorted((self.src / pkg).rglob("*.py"))
        self._exports: dict[str, dict[str, str]] = {}

    # --- names -----------------------------------------------------------------------------
    def module_name(self, path: Path) -> str:
        parts = list(path.relative_to(self.src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)

    def path_of(self, mod: str) -> Path | None:
        p = self.src.joinpath(*mod.split("."))
        if p.with_suffix(".py").is_file():
            return p.with_suffix(".py")
        if (p / "__init__.py").is_file():
            return p / "__init__.py"
        return None

    def is_package(self, mod: str) -> bool:
        p = self.path_of(mod)
        return p is not None and p.name == "__init__.py"

    def unit(self, mod: str) -> str:
        """The top-level name under the package (``filterdb.store.bulk`` -> ``store``)."""
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 else ""

    def layer(self, mod: str) -> int | None:
        u = self.unit(mod)
        return ROOT_LAYER if u == "" else self.layers.get(u)

    def exports(self, package: str) -> dict[str, str]:
        """``{name: submodule}`` re-exported by a package's ``__init__`` (``from .x import n``),
        so ``from filterdb.store import Database`` counts as an import of the defining module."""
        if package not in self._exports:
            out: dict[str, str] = {}
            path = self.path_of(package)
            if path is not None and path.name == "__init__.py":
                for node in ast.walk(ast.parse(path.read_text(), str(path))):
                    if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                        sub = f"{package}.{node.module}"
                        if self.path_of(sub) is not None:
                            for alias in node.names:
                                out[alias.asname or alias.name] = sub
            self._exports[package] = out
        return self._exports[package]

    # --- imports -----------------------------------------------------------------------------
    def imports(self, path: Path):
        """Every import statement in ``path`` (one :class:`Import` per imported module)."""
        me = self.module_name(path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        out: list[Import] = []

        def add(target, node, in_function):
            out.append(Import(target, node.lineno, node.end_lineno or node.lineno, in_function,
                              target.split(".")[0] == self.pkg))

        def walk(node, in_function):
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(alias.name, child, in_function)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package.split(".")
                        base = base[:len(base) - (child.level - 1)]
                        base = ".".join(base + ([child.module] if child.module else []))
                    else:
                        base = child.module or ""
                    if base.split(".")[0] != self.pkg:
                        add(base, child, in_function)
                        continue
                    for alias in child.names:
                        sub = f"{base}.{alias.name}"
                        if self.path_of(sub) is not None:
                            add(sub, child, in_function)
                        elif alias.name in self.exports(base):
                            add(self.exports(base)[alias.name], child, in_function)
                        else:
                            add(base, child, in_function)
                walk(child, inner)

        walk(tree, False)
        return out

    # --- the checks --------------------------------------------------------------------------
    def check(self) -> Report:
        rep = Report()
        root = self.pkg
        graph: dict[str, set[str]] = {}
        units: dict[str, set[str]] = {}
        for f in self.files:
            me = self.module_name(f)
            rel = f.relative_to(self.src)
            if self.layer(me) is None:
                rep.unknown.append(f"{rel}: {me} is in no layer (add {self.unit(me)!r} to "
                                   f"LAYERS in tests/test_layers.py)")
                continue
            lines = f.read_text().splitlines()
            for imp in self.imports(f):
                if imp.in_function and (imp.filterdb or imp.target.split(".")[0] not in STDLIB):
                    text = "\n".join(lines[imp.line - 1:imp.end_line])
                    pending = (rel.as_posix(), lines[imp.line - 1].strip()) in PENDING
                    if not LAZY.search(text) and not pending:
                        rep.unexplained.append(f"{rel}:{imp.line}: {lines[imp.line - 1].strip()}")
                if not imp.filterdb or me == root:
                    continue
                t_layer = self.layer(imp.target)
                if t_layer is None:
                    rep.unknown.append(f"{rel}:{imp.line}: imports {imp.target}, in no layer")
                    continue
                if t_layer > self.layer(me):
                    rep.upward.append(f"{rel}:{imp.line}: {me} (layer {self.layer(me)}) imports "
                                      f"{imp.target} (layer {t_layer})")
                if imp.target != me and not me.startswith(imp.target + "."):
                    # a module importing its own package (``from . import x`` resolved to the
                    # package) is how Python loads it, not a dependency
                    graph.setdefault(me, set()).add(imp.target)
                if self.unit(imp.target) and self.unit(imp.target) != self.unit(me):
                    units.setdefault(self.unit(me), set()).add(self.unit(imp.target))
        rep.cycles += [f"module cycle: {c}" for c in find_cycles(graph)]
        rep.cycles += [f"unit cycle: {c}" for c in find_cycles(units)]
        return rep


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One representative path per strongly connected component with more than one node
    (Tarjan), e.g. ``a -> b -> a``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    out = []
    for comp in comps:
        members = set(comp)
        start = min(comp)
        # a shortest path back to start inside the component (BFS)
        prev = {start: None}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, ())):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v is not None and v != start:
            path.append(v)
            v = prev[v]
        path = [start] + path[1:][::-1] + [start]
        out.append(" -> ".join(path) + (f"  (component: {', '.join(sorted(comp))})"
                                        if len(comp) > len(path) - 1 else ""))
    return sorted(out)


@pytest.fixture(scope="module")
def report() -> Report:
    return Tree(SRC).check()


def test_every_module_has_a_layer(report):
    assert not report.unknown, "\n".join(report.unknown)


def test_imports_go_down_the_layers(report):
    assert not report.upward, "imports up the layers:\n" + "\n".join(report.upward)


def test_no_import_cycles(report):
    assert not report.cycles, "import cycles:\n" + "\n".join(report.cycles)


def test_imports_inside_functions_say_why(report):
    assert not report.unexplained, (
        "imports inside functions without '# lazy: <reason>' on their line (move them to the "
        "top, or say why: start-up time, optional heavy dependency):\n"
        + "\n".join(report.unexplained))


@pytest.mark.parametrize("mod,expected", [
    ("filterdb.store.database", 3), ("filterdb.cli.store", 8), ("filterdb.health.check", 5),
    ("filterdb.analysis", 5), ("filterdb.analysis.drift", 5), ("filterdb.synth", 3),
    ("filterdb.utils", 1), ("filterdb", 1), ("filterdb.demo", 9)])
def test_layer_table(mod, expected):
    assert Tree(SRC).layer(mod) == expected


# --- the checker itself fails on violations (a small fake package) ---------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "fakepkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


FAKE_LAYERS = {"errors": 1, "low": 2, "mid": 3, "high": 4}


def test_checker_passes_a_clean_tree(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "from .errors import E\n",
        "errors.py": "class E(Exception):\n    pass\n",
        "low/__init__.py": "from .a import f\n",
        "low/a.py": "from ..errors import E\nimport json\n",
        "mid.py": ("from fakepkg.low import f\n"
                   "def g():\n"
                   "    import os\n"
                   "    import numpy  # lazy: optional heavy dependency\n"
                   "    from . import errors  # lazy: start-up time\n"),
        "high.py": "from .mid import g\n",
    })
    assert Tree(src, "fakepkg", FAKE_LAYERS).check().problems() == []


def test_checker_finds_each_kind_of_violation(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "low/__init__.py": "from .a import f\nfrom .b import g\n",
        # an upward import, relative and absolute, top level and in a function
        "low/a.py": ("from ..mid import h\n"
                     "def f():\n"
                     "    import fakepkg.high  # lazy: start-up time\n"),
        # a cycle between two modules of one layer; an unexplained function-level import of
        # a filterdb module and of a third-party one
        "low/b.py": ("from .c import k\n"
                     "def g():\n"
                     "    from fakepkg.errors import E\n"
                     "    import numpy as np\n"),
        "low/c.py": "from fakepkg.low.b import g\n",
        "mid.py": "",
        "high.py": "",
        "unlisted.py": "",
    })
    rep = Tree(src, "fakepkg", FAKE_LAYERS).check()
    assert sorted(u.split(":")[0] + ":" + u.split(":")[1] for u in rep.upward) == [
        str(Path("fakepkg/low/a.py")) + ":1", str(Path("fakepkg/low/a.py")) + ":3"]
    assert any("fakepkg.low.b -> fakepkg.low.c -> fakepkg.low.b" in c for c in rep.cycles)
    assert sorted(int(u.split(":")[1]) for u in rep.unexplained) == [3, 4]
    assert all("low/b.py" in u.replace("\\", "/") for u in rep.unexplained)
    assert any("unlisted" in u for u in rep.unknown)
    assert len(rep.problems()) >= 6


def test_checker_finds_a_cycle_between_units(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from ..mid import x\n",
        "mid/__init__.py": "",
        "mid/x.py": "def x():\n    from ..low import b  # lazy: start-up time\n",
        "low/b.py": "",
    })
    rep = Tree(src, "fakepkg", {"low": 3, "mid": 3}).check()
    assert not rep.upward
    assert any(c.startswith("unit cycle: low -> mid -> low") for c in rep.cycles)


# --- the test suite's own conventions ---------------------------------------------------------

def test_zoo_fixtures_are_marked(request):
    """conftest marks every test that uses the zoo fixtures (the only way tests download), so
    ``-m "not zoo"`` never downloads; checked on this session's collected items."""
    for item in request.session.items:
        if {"zoo_paths", "zoo_path"} & set(getattr(item, "fixturenames", ())):
            assert item.get_closest_marker("zoo") is not None, item.nodeid


def test_tests_download_only_through_the_zoo_fixtures():
    """The zoo's ``fetch`` is called only by tests that take the zoo fixtures or carry the
    ``zoo`` marker (conftest's ``zoo_paths`` fetches once for the others), never by a helper."""
    def calls_fetch(fn) -> bool:
        return any(isinstance(n, ast.Call) and (getattr(n.func, "id", None) == "fetch"
                                                or getattr(n.func, "attr", None) == "fetch")
                   for n in ast.walk(fn))

    def zoo_ok(fn) -> bool:
        args = {a.arg for a in fn.args.args}
        marked = any("zoo" in ast.unparse(d) for d in fn.decorator_list)
        return marked or bool({"zoo_paths", "zoo_path"} & args)

    bad = []
    for f in sorted(Path(__file__).parent.glob("test_*.py")):
        tree = ast.parse(f.read_text(), str(f))
        module_marked = any(isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n)
                            and "zoo" in ast.unparse(n) for n in tree.body)
        for fn in tree.body:
            if isinstance(fn, ast.FunctionDef) and calls_fetch(fn) and not module_marked \
                    and not (fn.name.startswith("test_") and zoo_ok(fn)):
                bad.append(f"{f.name}:{fn.lineno} {fn.name}")
    assert not bad, "zoo downloads outside the zoo fixtures / marker: " + ", ".join(bad)


def test_oracles_are_independent_of_filterdb():
    """tests/_oracles.py computes from the definitions with numpy / scipy only."""
    tree = ast.parse((Path(__file__).parent / "_oracles.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not [m for m in names if m.split(".")[0] == "filterdb"]
