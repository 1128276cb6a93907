"""The layering rules of reference/style.md §3.2, checked on the source.

Pure decision modules (docstring starting with `Pure:`) hold no coroutines and import no
clock, randomness, environment, network, KV-store or generated-protocol module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mmesh"

FORBIDDEN_IN_PURE = {
    "asyncio", "time", "random", "os", "socket", "subprocess", "threading", "datetime",
    "grpc", "aetcd", "aiohttp", "boto3", "botocore", "kopf", "kubernetes", "urllib",
    "mmesh.core.proto", "mmesh.core.etcd", "mmesh.core.kv",
}  # fmt: skip

EXPECTED_PURE = {
    "mmesh/core/ids.py",
    "mmesh/core/redaction.py",
    "mmesh/core/records.py",
    "mmesh/core/etcd_config.py",
    "mmesh/adapter/layout.py",
    "mmesh/adapter/sizing.py",
    "mmesh/adapter/storage/spec.py",
    "mmesh/router/cache.py",
    "mmesh/router/inflight.py",
    "mmesh/router/wire.py",
    "mmesh/router/vmodels.py",
    "mmesh/router/modelstatus.py",
    "mmesh/router/placement.py",
    "mmesh/router/routing.py",
    "mmesh/router/repair.py",
    "mmesh/operator/deployment.py",
    "mmesh/operator/etcd_users.py",
    "mmesh/operator/naming.py",
    "mmesh/operator/resources.py",
    "mmesh/operator/runtime_selection.py",
    "mmesh/operator/service.py",
    "mmesh/operator/serving_config.py",
    "mmesh/operator/status.py",
    "mmesh/operator/translation.py",
    "mmesh/local/podspec.py",
    "mmesh/local/rollout.py",
}


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


def test_every_expected_pure_module_is_marked_pure() -> None:
    marked = {str(p.relative_to(PACKAGE.parent)) for p in _pure_modules()}
    assert marked >= EXPECTED_PURE, f"lost the Pure: marker: {EXPECTED_PURE - marked}"


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    banned = sorted(name for name in _imported(tree) if _is_forbidden(name))
    assert not banned, f"{path.name} imports {banned}"
    coroutines = [n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]
    assert not coroutines, f"{path.name} defines coroutines {coroutines}"
    awaits = [n for n in ast.walk(tree) if isinstance(n, ast.Await)]
    assert not awaits, f"{path.name} awaits"


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
