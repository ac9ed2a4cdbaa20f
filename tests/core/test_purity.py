"""The core stays pure: no I/O, no clocks, no randomness, no imports from the layers above it.

Two guards: ruff's banned-api rules in ``src/freellm/core/ruff.toml`` (checked here to pass on the
code and to fire on a planted violation), and an allow-list of what the core may import at all.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "freellm" / "core"
RUFF = Path(sys.executable).parent / "ruff"


def ruff_tid(target: Path, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(RUFF),
            "check",
            "--no-cache",
            "--select",
            "TID",
            "--output-format",
            "concise",
            str(target),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_ruff_banned_api_check_passes_on_the_core() -> None:
    result = ruff_tid(CORE, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def core_copy(tmp_path: Path) -> Path:
    """A copy of the core and pyproject.toml, laid out as ruff.toml's ``extend`` expects."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    copy = tmp_path / "src" / "freellm" / "core"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__", ".ruff_cache"))
    assert (copy / "ruff.toml").is_file()
    return copy


@pytest.mark.parametrize(
    ("source", "banned"),
    [
        ("import time\n", "time"),
        ("from time import monotonic\n", "time"),
        ("import trio\n", "trio"),
        ("import httpx\n", "httpx"),
        ("import sqlite3\n", "sqlite3"),
        ("import logging\n", "logging"),
        ("import os\n", "os"),
        ("from freellm.shell import config\n", "freellm.shell"),
        ("from freellm.web import app\n", "freellm.web"),
        ("import random\n", "random"),
        ("from datetime import datetime\n\ndatetime.now()\n", "datetime.datetime.now"),
        ("import datetime\n\ndatetime.datetime.now()\n", "datetime.datetime.now"),
        ("import importlib\n", "importlib"),
    ],
)
def test_ruff_reports_a_planted_impure_import_in_the_core(
    core_copy: Path, source: str, banned: str
) -> None:
    probe = core_copy / "probe.py"
    probe.write_text(source, encoding="utf-8")
    result = ruff_tid(probe, cwd=core_copy.parents[2])
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"TID251 `{banned}` is banned" in result.stdout


def test_ruff_accepts_a_pure_import_planted_in_the_core_copy(core_copy: Path) -> None:
    probe = core_copy / "probe.py"
    probe.write_text("import math\n\nmath.floor(1.5)\n", encoding="utf-8")
    result = ruff_tid(core_copy, cwd=core_copy.parents[2])
    assert result.returncode == 0, result.stdout + result.stderr


# --- the allow-list ----------------------------------------------------------------------------

# What the core imports today, plus a few obviously pure standard modules. zoneinfo reads the
# time zone database, but only as fixed data (DESIGN.md: calendar-day resets need it).
ALLOWED_TOP_LEVEL = frozenset(
    {
        # imported by the core now
        "__future__",
        "attrs",
        "calendar",
        "collections",
        "datetime",
        "email",
        "enum",
        "fnmatch",
        "hashlib",
        "immutables",
        "json",
        "math",
        "re",
        "tomllib",
        "types",
        "typing",
        "zoneinfo",
        # pure and harmless
        "abc",
        "base64",
        "bisect",
        "dataclasses",
        "decimal",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "operator",
        "statistics",
        "string",
        "struct",
        "textwrap",
        "unicodedata",
    }
)
FIRST_PARTY = "freellm"
ALLOWED_FIRST_PARTY = "freellm.core"


def imported_modules(source: str) -> list[str]:
    """Every module an ``import`` statement in ``source`` names (relative ones as ``.name``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
    return found


def disallowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == FIRST_PARTY:
        return module != ALLOWED_FIRST_PARTY and not module.startswith(ALLOWED_FIRST_PARTY + ".")
    return top not in ALLOWED_TOP_LEVEL  # a relative import has top "" and is refused too


def core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if ".ruff_cache" not in p.parts)


def test_import_walker_sees_every_import_form() -> None:
    source = (
        "import os, json as j\n"
        "from freellm.shell import config\n"
        "from . import sibling\n"
        "def f():\n"
        "    import socket\n"
        "if True:\n"
        "    from email.utils import parsedate\n"
    )
    modules = imported_modules(source)
    assert modules == ["os", "json", "freellm.shell", ".", "socket", "email.utils"]
    assert [m for m in modules if disallowed(m)] == ["os", "freellm.shell", ".", "socket"]


def test_the_core_has_modules_to_check() -> None:
    names = {p.stem for p in core_modules()}
    assert {"catalog", "outcome", "health", "sessions", "ledger", "signals", "router"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_only_allowed_modules(path: Path) -> None:
    modules = imported_modules(path.read_text(encoding="utf-8"))
    assert [m for m in modules if disallowed(m)] == []
