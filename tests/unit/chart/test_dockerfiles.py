"""Dockerfile.operator and Dockerfile.router, checked by reading them (no Docker engine here):
pinned bases, a numeric non-root USER, commands that name importable modules and match what
the chart and the operator's runtime Deployments run, COPY sources inside the build context,
and only runtime dependencies in the image."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.chart.conftest import ROOT, one, render

OPERATOR_DOCKERFILE = ROOT / "Dockerfile.operator"
ROUTER_DOCKERFILE = ROOT / "Dockerfile.router"
DOCKERFILES = [OPERATOR_DOCKERFILE, ROUTER_DOCKERFILE]
CONFIG_DEFAULTS = ROOT / "mmesh" / "operator" / "config_defaults.yaml"
GOLDEN_RUNTIME = ROOT / "tests" / "unit" / "operator" / "golden" / "deployment_mlserver-1.x.yaml"
CHART_VALUES = ROOT / "charts" / "mmesh" / "values.yaml"
IMAGE_PACKAGES = ("core", "operator", "router", "adapter")
"""The subpackages the two images run."""


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        out.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "a continuation runs off the end of the file"
    return out


def stages(path: Path) -> list[Stage]:
    result: list[Stage] = []
    for keyword, rest in instructions(path.read_text()):
        if keyword == "FROM":
            words = rest.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"{path.name}: unexpected FROM {rest!r}"
            result.append(Stage(words[0], alias))
        else:
            assert result, f"{path.name}: {keyword} before FROM"
            result[-1].instructions.append((keyword, rest))
    return result


def exec_form(path: Path) -> list[str]:
    """The final stage's command (ENTRYPOINT + CMD), which must be in exec (JSON) form."""
    final = stages(path)[-1]
    command: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):
        for rest in final.args(keyword)[-1:]:
            parsed = json.loads(rest)  # shell form is not JSON: signals would not reach Python
            assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
            command += parsed
    return command


def module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"] and len(command) == 3, command
    return command[2]


def title_label(path: Path) -> str:
    for rest in stages(path)[-1].args("LABEL"):
        match = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', rest)
        if match:
            return match[1]
    raise AssertionError(f"{path.name}: no org.opencontainers.image.title label")


def config_defaults() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(CONFIG_DEFAULTS.read_text())
    return loaded


# ---------------------------------------------------------------- base images and user


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_python_311_slim(path: Path) -> None:
    all_stages = stages(path)
    assert len(all_stages) >= 2, "multi-stage: build tools stay out of the final image"
    aliases: set[str] = set()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    for stage in all_stages:
        if stage.base not in aliases:
            image, _, tag = stage.base.partition(":")
            assert image == "python", stage.base
            assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), f"unpinned base {stage.base}"
        if stage.alias:
            aliases.add(stage.alias)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_numeric_non_root_user(path: Path) -> None:
    users = stages(path)[-1].args("USER")
    assert users, f"{path.name}: the final stage sets no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"{path.name}: USER {users[-1]!r} is not numeric (runAsNonRoot needs a uid)"
    assert int(match[1]) != 0 and (match[2] is None or int(match[2]) != 0)


def test_operator_uid_is_the_charts() -> None:
    uid = int(stages(OPERATOR_DOCKERFILE)[-1].args("USER")[-1].split(":")[0])
    assert yaml.safe_load(CHART_VALUES.read_text())["operator"]["runAsUser"] == uid


# ---------------------------------------------------------------- commands


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_command_names_a_runnable_module(path: Path) -> None:
    module = module_of(exec_form(path))
    assert importlib.util.find_spec(module) is not None, module
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_operator_image_is_what_the_chart_runs() -> None:
    deployment = one(render({}), "Deployment", "modelmesh-controller")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == exec_form(OPERATOR_DOCKERFILE)
    repository = container["image"].rpartition(":")[0]
    assert repository == title_label(OPERATOR_DOCKERFILE) == "mmesh-operator"
    exposed = stages(OPERATOR_DOCKERFILE)[-1].args("EXPOSE")
    assert [str(p["containerPort"]) for p in container["ports"]] == exposed


def test_router_image_runs_both_runtime_pod_containers() -> None:
    """The operator's defaults name one image for the router and the adapter, and its
    rendered runtime Deployment runs both commands from it."""
    defaults = config_defaults()
    router, adapter = defaults["modelMeshImage"], defaults["storageHelperImage"]
    assert isinstance(router, dict) and isinstance(adapter, dict)
    assert router["name"] == adapter["name"] == title_label(ROUTER_DOCKERFILE) == "mmesh-router"
    assert router["command"] == exec_form(ROUTER_DOCKERFILE)
    assert importlib.util.find_spec(f"{module_of(adapter['command'])}.__main__") is not None
    golden = yaml.safe_load(GOLDEN_RUNTIME.read_text())["spec"]["template"]["spec"]["containers"]
    ours = {c["name"]: c for c in golden if c["image"].startswith("mmesh-router:")}
    assert set(ours) == {"mm", "mlserver-adapter"}
    assert ours["mm"]["command"] == ["python", "-m", "mmesh.router"] == router["command"]
    assert ours["mlserver-adapter"]["command"] == ["python", "-m", "mmesh.adapter"]
    assert ours["mm"]["image"] == f"{router['name']}:{router['tag']}" == "mmesh-router:latest"


# ---------------------------------------------------------------- build context


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def copy_sources(path: Path) -> list[str]:
    sources = []
    for stage in stages(path):
        for rest in stage.args("COPY") + stage.args("ADD"):
            words = rest.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_in_the_build_context(path: Path) -> None:
    patterns = dockerignore_patterns()
    sources = copy_sources(path)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
        assert not ignored(source, patterns), f"{path.name}: COPY {source} is in .dockerignore"
    for module in (ROOT / "mmesh").rglob("*.py"):
        relative = module.relative_to(ROOT).as_posix()
        assert not ignored(relative, patterns), relative


def test_dockerignore_keeps_the_rest_out() -> None:
    patterns = dockerignore_patterns()
    outside = [
        ".venv/bin/python",
        ".tools/bin/helm",
        "tests/unit/conftest.py",
        ".git/HEAD",
        "mmesh/core/__pycache__/ids.cpython-311.pyc",
        "mmesh.egg-info/PKG-INFO",
    ]
    for path in outside:
        assert ignored(path, patterns), path
    assert not ignored("pyproject.toml", patterns)


def test_ignore_matcher_semantics() -> None:
    assert ignored("a/b/c.txt", ["*"])
    assert not ignored("a/b/c.txt", ["*", "!a"])
    assert ignored("a/__pycache__/x.pyc", ["*", "!a", "**/__pycache__"])
    assert not ignored("b.txt", ["a"])


# ---------------------------------------------------------------- dependencies


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_only_the_wheel_and_its_pinned_dependencies_are_installed(path: Path) -> None:
    runs = " ".join(rest for stage in stages(path) for rest in stage.args("RUN"))
    for forbidden in ("[dev", "[local", "requirements", " -e ", "--editable"):
        assert forbidden not in runs, f"{path.name}: {forbidden!r} in a RUN"
    assert "pip wheel --no-deps" in runs
    installs = re.findall(r"pip (?:--python \S+ )?install (.+?)(?: &&|$)", runs)
    assert installs == ["/wheels/mmesh-*.whl"], installs
    final = stages(path)[-1]
    assert not final.args("RUN"), "the final stage only copies the built environment"
    assert all(rest.startswith("--from=") for rest in final.args("COPY"))


def test_project_dependencies_are_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        assert "==" in spec, f"unpinned runtime dependency {spec}"


def _runtime_closure() -> set[str]:
    """mmesh's runtime dependencies (no extras), transitively, as installed here."""
    todo, seen = ["mmesh"], set[str]()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            todo.append(requirement.name)
    return seen


def _third_party_imports() -> dict[str, str]:
    """top-level module -> first file importing it, over the packages the images run."""
    found: dict[str, str] = {}
    for package in IMAGE_PACKAGES:
        for path in sorted((ROOT / "mmesh" / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top != "mmesh" and top not in sys.stdlib_module_names:
                        found.setdefault(top, path.relative_to(ROOT).as_posix())
    return found


def test_image_code_imports_only_runtime_dependencies() -> None:
    """What the router, adapter and operator import is installed by the wheel alone (a
    dev-only import would fail in the image, which has no dev extras)."""
    closure = _runtime_closure()
    assert "kopf" in closure and "pytest" not in closure
    providers = metadata.packages_distributions()
    missing = {
        module: where
        for module, where in _third_party_imports().items()
        if not {canonicalize_name(d) for d in providers.get(module, [])} & closure
    }
    assert missing == {}
