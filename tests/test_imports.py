"""The import graph runs one way: dashboard -> services -> core / db; core never imports models, db
or dashboard; db never imports dashboard or models; no page imports SQLAlchemy; core has no cycle.

Every module under core/, db/, models/ and dashboard/ (packages and plain modules alike, at any
depth) is parsed with ``ast``; every import counts, also those inside functions and under
``TYPE_CHECKING``. Relative imports are resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "db", "services", "models", "dashboard")

#: (importing package, imported top-level names it must not import, why).
FORBIDDEN: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("core", ("models", "db", "services", "dashboard"), "core is the bottom layer"),
    ("db", ("dashboard", "models", "services"), "db sits below the services and does not train"),
    ("services", ("dashboard", "streamlit"), "services run without Streamlit"),
    ("dashboard", ("sqlalchemy", "db", "tensorflow", "keras"), "pages render; services own the database"),
)


def module_map(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file for every ``.py`` under the given top-level packages."""
    out: dict[str, Path] = {}
    for pkg in packages:
        base = root / pkg
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imported_names(path: Path, module: str) -> set[str]:
    """Absolute dotted names a module imports (``import a.b`` gives ``a.b``, ``from a.b import c`` ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(p for p in [*base_parts, node.module or ""] if p)
            else:
                base = node.module or ""
            # ``from a.b import c`` needs a.b.c when c is a submodule, else a.b: resolve() takes
            # the longest project module prefix of "a.b.c"; a star import needs a.b itself
            names.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (longest known prefix), or None if external."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project edges module -> modules it imports, all imported names per module)."""
    modules = module_map(root, packages)
    edges: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = imported_names(path, module)
        raw[module] = names
        targets = {resolve(n, modules) for n in names}
        edges[module] = {t for t in targets if t is not None and t != module}
    return edges, raw


def violations(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Every forbidden import, as ``"importer imports name (why)"``."""
    _, raw = import_graph(root, packages)
    out = []
    for module, names in sorted(raw.items()):
        for prefix, banned, why in FORBIDDEN:
            if module != prefix and not module.startswith(prefix + "."):
                continue
            for name in sorted(names):
                if name.split(".")[0] in banned:
                    out.append(f"{module} imports {name} ({why})")
    return sorted(set(out))


def cycles(edges: dict[str, set[str]], within: str) -> list[list[str]]:
    """Strongly connected components with more than one module among modules of package ``within``
    (Tarjan 1972, "Depth-first search and linear graph algorithms")."""
    nodes = [m for m in edges if m == within or m.startswith(within + ".")]
    sub = {m: sorted(t for t in edges[m] if t in nodes) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sub[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sorted(found)


# ------------------------------------------------------------------------------ the project
def test_every_package_is_parsed():
    modules = module_map(ROOT)
    assert {"core.inference", "core.registry", "db.schema", "models.train", "dashboard.app"} <= set(modules)


def test_no_forbidden_import():
    assert violations(ROOT) == []


def test_no_cycle_inside_core():
    edges, _ = import_graph(ROOT)
    assert cycles(edges, "core") == []


# ------------------------------------------------------------------------------ the checker
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_checker_finds_layer_violations_at_any_depth(tmp_path):
    root = _tree(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/imaging/__init__.py": "from core.imaging.dicom import read\n",
            "core/imaging/dicom.py": "def read():\n    from models.architectures import build\n",
            "core/bench.py": "from dashboard import app\n",
            "db/__init__.py": "",
            "db/reading.py": "import dashboard.views.read_study\n",
            "models/__init__.py": "",
            "models/architectures.py": "",
            "dashboard/__init__.py": "",
            "dashboard/app.py": "",
            "dashboard/views/__init__.py": "",
            "dashboard/views/read_study.py": "from sqlalchemy import select\n",
        },
    )
    assert violations(root) == [
        "core.bench imports dashboard.app (core is the bottom layer)",
        "core.imaging.dicom imports models.architectures.build (core is the bottom layer)",
        "dashboard.views.read_study imports sqlalchemy.select (pages render; services own the database)",
        "db.reading imports dashboard.views.read_study (db sits below the services and does not train)",
    ]


def test_the_checker_finds_cycles_through_relative_and_local_imports(tmp_path):
    # a package importing its submodules, and submodules importing siblings, is no cycle
    root = _tree(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/inference.py": "from core.explain import GradCam\n",
            "core/explain.py": "def main():\n    from .inference import Predictor\n",
            "core/imaging/__init__.py": "from .types import Series\nfrom . import assembly\n",
            "core/imaging/types.py": "from core.config import X\n",
            "core/imaging/assembly.py": "from core.imaging import types\nfrom ..config import Y\n",
            "core/config.py": "",
        },
    )
    edges, _ = import_graph(root)
    assert edges["core.imaging"] == {"core.imaging.types", "core.imaging.assembly"}
    assert edges["core.imaging.assembly"] == {"core.imaging.types", "core.config"}
    assert cycles(edges, "core") == [["core.explain", "core.inference"]]
