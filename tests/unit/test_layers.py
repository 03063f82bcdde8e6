"""The layer rules of ARCHITECTURE.md, checked on the source: who may import the database drivers, the web framework
and the network, and which of our packages may not reach up into which.

Every import counts: at the top of a module, inside a function (a lazy import), under `if TYPE_CHECKING`, and
`importlib.import_module("name")` / `__import__("name")` with a literal name. Relative imports are resolved.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "cbworkflow"
PACKAGE = "cbworkflow"

STORAGE = ("sqlalchemy", "psycopg", "psycopg_pool", "psycopg2", "sqlite3", "portalocker")
WEB = ("fastapi", "starlette", "uvicorn")
NETWORK = ("httpx", "anthropic", "smtplib", "socket", "ssl", "urllib.request", "http.client", "requests", "aiohttp")
DOING = tuple(f"{PACKAGE}.{name}" for name in ("store", "services", "runtime", "api", "outbound", "executors"))
TOP = tuple(f"{PACKAGE}.{name}" for name in ("wiring", "cli"))


@dataclass(frozen=True)
class Rule:
    """Modules under `scope` may not import anything under `forbidden`, except those under `allowed`."""

    why: str
    scope: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()


RULES = (
    Rule("only the store knows the database and its files' locks", (PACKAGE,), STORAGE, (f"{PACKAGE}.store",)),
    Rule(
        "only the edge speaks HTTP to browsers",
        (PACKAGE,),
        WEB,
        (f"{PACKAGE}.api", f"{PACKAGE}.web", f"{PACKAGE}.cli", f"{PACKAGE}.wiring"),
    ),
    Rule(
        "the engine decides and does no I/O",
        (f"{PACKAGE}.engine",),
        (*DOING, *TOP, f"{PACKAGE}.validation", *WEB, *NETWORK, *STORAGE),
    ),
    Rule(
        "the models are plain data that every layer reads",
        (f"{PACKAGE}.models",),
        (*DOING, f"{PACKAGE}.engine", *TOP, *WEB, *NETWORK, *STORAGE),
    ),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. cbworkflow.engine.steps
    path: str  # its file, relative to the package's folder
    line: int
    targets: tuple[str, ...]  # what one statement imports, absolute (`from a import b`: a, then a.b)


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    """The dotted name of the module in `path`, and whether it is a package's `__init__`."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    module, is_package = module_name(root, path)
    package = module if is_package else module.rpartition(".")[0]
    shown = str(path.relative_to(root))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from x import y` may import the module x.y: count both, so `from .. import store` is seen.
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            argument = node.args[0]
            assert isinstance(argument, ast.Constant)
            targets = [str(argument.value)]
        if targets and isinstance(node, ast.stmt | ast.expr):
            yield Import(module, shown, node.lineno, tuple(targets))


def _dynamic_import(node: ast.Call) -> bool:
    """`importlib.import_module("x")`, `import_module("x")` or `__import__("x")` with a literal name."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return (
        name in ("import_module", "__import__")
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def violations(root: Path = SOURCE) -> list[str]:
    """Every import in the package at `root` that breaks a rule, one line each (file:line, what, why)."""
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        for imported in imports_of(root, path):
            for rule in RULES:
                if not under(imported.module, rule.scope) or under(imported.module, rule.allowed):
                    continue
                broken = [target for target in imported.targets if under(target, rule.forbidden)]
                if broken:
                    found.add(f"{imported.path}:{imported.line} imports {broken[0]}: {rule.why}")
    return sorted(found)


def test_the_tree_keeps_the_layer_rules() -> None:
    assert violations() == []


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package to break on purpose."""
    target = tmp_path / PACKAGE
    shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


def steps_module(copy: Path) -> Path:
    """engine/steps.py, or engine/steps/__init__.py should it become a package."""
    module = copy / "engine" / "steps.py"
    return module if module.exists() else copy / "engine" / "steps" / "__init__.py"


def test_the_checker_catches_the_engine_importing_the_store(copy: Path) -> None:
    append(steps_module(copy), "from ..store import base")
    found = violations(copy)
    assert len(found) == 1
    assert found[0].startswith("engine/steps")
    assert "imports cbworkflow.store: the engine decides and does no I/O" in found[0]


@pytest.mark.parametrize(
    ("module", "code", "expected"),
    [
        ("engine/render.py", "def later() -> None:\n    import httpx", "imports httpx: the engine"),
        ("engine/render.py", "from .. import runtime", "imports cbworkflow.runtime: the engine"),
        ("engine/render.py", "import urllib.request", "imports urllib.request: the engine"),
        ("engine/render.py", "from ..validation import host_from_placeholder", "imports cbworkflow.validation"),
        ("models/common.py", "from ..services import access", "imports cbworkflow.services: the models"),
        ("models/common.py", "from cbworkflow.engine import steps", "imports cbworkflow.engine: the models"),
        ("runtime/worker.py", "import sqlalchemy.exc", "imports sqlalchemy.exc: only the store"),
        ("services/access.py", "import importlib\nimportlib.import_module('sqlite3')", "imports sqlite3: only the"),
        (
            "services/access.py",
            "if False:\n    from starlette.types import Scope",
            "imports starlette.types: only the edge",
        ),
        ("outbound/http.py", "from fastapi import FastAPI", "imports fastapi: only the edge"),
    ],
)
def test_the_checker_catches_lazy_dynamic_and_relative_imports(
    copy: Path, module: str, code: str, expected: str
) -> None:
    append(copy / module, code)
    found = violations(copy)
    assert len(found) == 1, found
    assert found[0].startswith(module)
    assert expected in found[0]


def test_what_the_rules_allow_is_not_flagged(copy: Path) -> None:
    append(copy / "store" / "base.py", "def later() -> None:\n    import sqlalchemy")
    append(copy / "api" / "app.py", "from starlette.types import Scope")
    append(copy / "runtime" / "worker.py", "def later() -> None:\n    import httpx")  # the runtime does the I/O
    append(copy / "engine" / "render.py", "from ..models import common\nfrom .. import times")
    assert violations(copy) == []
