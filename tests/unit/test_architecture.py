"""The layering rules of reference/style.md §3.2, checked on the source.

Pure decision modules (docstring starting with `Pure:`) hold no coroutines and import no
clock, randomness, environment, network, KV-store or generated-protocol module.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mmesh"

FORBIDDEN_IN_PURE = {
    "asyncio", "time", "random", "os", "socket", "subprocess", "threading",
    "grpc", "aetcd", "aiohttp", "boto3", "botocore", "kopf", "kubernetes", "urllib",
    "mmesh.core.proto", "mmesh.core.etcd", "mmesh.core.kv",
}  # fmt: skip

# A pure module may use datetime's types and arithmetic; it may not read the clock.
CLOCK_CALLS = {
    "time", "monotonic", "monotonic_ns", "time_ns", "perf_counter", "now", "utcnow", "today",
}  # fmt: skip

IMPORTLINTER = PACKAGE.parent / ".importlinter"


def _listed_pure() -> set[str]:
    """The one list of pure modules: the `pure` contract of .importlinter."""
    config = configparser.ConfigParser()
    config.read(IMPORTLINTER)
    names = config["importlinter:contract:pure"]["source_modules"].split()
    return {name.replace(".", "/") + ".py" for name in names}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "proto" not in p.parts)


def _pure_modules() -> list[Path]:
    pure = []
    for path in _modules():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if doc and doc.startswith("Pure:"):
            pure.append(path)
    return pure


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _is_forbidden(name: str) -> bool:
    return any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN_IN_PURE)


def test_pure_marker_and_import_contract_name_the_same_modules() -> None:
    marked = {str(p.relative_to(PACKAGE.parent)) for p in _pure_modules()}
    listed = _listed_pure()
    assert not listed - marked, f"listed pure in .importlinter, no Pure: marker: {listed - marked}"
    assert not marked - listed, f"marked Pure: but not in .importlinter: {marked - listed}"


def _clock_calls(tree: ast.AST) -> list[str]:
    calls = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS:
            calls.append(f"{ast.unparse(func)}() at line {node.lineno}")
    return calls


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    banned = sorted(name for name in _imported(tree) if _is_forbidden(name))
    assert not banned, f"{path.name} imports {banned}"
    coroutines = [n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]
    assert not coroutines, f"{path.name} defines coroutines {coroutines}"
    awaits = [n for n in ast.walk(tree) if isinstance(n, ast.Await)]
    assert not awaits, f"{path.name} awaits"
    clock = _clock_calls(tree)
    assert not clock, f"{path.name} reads the clock: {clock}"


@pytest.mark.parametrize("process", ["operator", "router", "adapter"])
def test_processes_do_not_import_each_other(process: str) -> None:
    others = {"operator", "router", "adapter"} - {process}
    for path in (PACKAGE / process).rglob("*.py"):
        for name in _imported(ast.parse(path.read_text())):
            assert not any(name.startswith(f"mmesh.{o}") for o in others), (
                f"{path.relative_to(PACKAGE)} imports {name}"
            )


def test_core_imports_no_process_package() -> None:
    for path in (PACKAGE / "core").rglob("*.py"):
        if "proto" in path.parts:
            continue
        for name in _imported(ast.parse(path.read_text())):
            assert not name.startswith(("mmesh.operator", "mmesh.router", "mmesh.adapter")), (
                f"{path.relative_to(PACKAGE)} imports {name}"
            )


def test_only_settings_modules_read_the_environment() -> None:
    for path in _modules():
        if path.name in {"settings.py", "__main__.py"} or "stubs" in path.parts:
            continue
        text = path.read_text()
        assert "os.environ" not in text and "os.getenv" not in text, (
            f"{path.relative_to(PACKAGE)} reads the environment"
        )
