"""The committed generated code is exactly what proto/*.proto generates today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "scripts" / "gen-proto")], check=True, env=env)
    committed = ROOT / "mmesh" / "core" / "proto"
    generated = sorted(p.name for p in tmp_path.iterdir() if p.suffix in {".py", ".pyi"})
    assert generated == sorted(p.name for p in committed.iterdir() if p.suffix in {".py", ".pyi"})
    stale = [n for n in generated if (tmp_path / n).read_text() != (committed / n).read_text()]
    assert not stale, f"regenerate with scripts/gen-proto: {stale} differ from proto/"


def test_services_keep_reference_names_and_field_numbers() -> None:
    from mmesh.core.proto import grpc_predict_v2_pb2 as v2
    from mmesh.core.proto import model_mesh_pb2 as mm
    from mmesh.core.proto import model_runtime_pb2 as rt

    assert mm.DESCRIPTOR.services_by_name["ModelMesh"].full_name == "mmesh.ModelMesh"
    assert rt.DESCRIPTOR.services_by_name["ModelRuntime"].full_name == "mmesh.ModelRuntime"
    infer = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert infer.full_name == "inference.GRPCInferenceService"
    assert {"ModelInfer", "RepositoryModelLoad", "RepositoryModelUnload"} <= set(
        infer.methods_by_name
    )
    fields = {f.name: f.number for f in mm.SetVModelRequest.DESCRIPTOR.fields}
    assert fields["expectedTargetModelId"] == 9 and fields["owner"] == 10
    status = {f.name: f.number for f in rt.RuntimeStatusResponse.DESCRIPTOR.fields}
    assert status["methodInfos"] == 8 and status["allowAnyMethod"] == 10
    assert v2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number == 7
