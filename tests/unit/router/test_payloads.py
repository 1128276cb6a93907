"""MM_PAYLOAD_PROCESSORS: parsing, the model-id (query) and method (fragment) filters, what a
sink receives."""

from __future__ import annotations

import base64
import json

import pytest

from mmesh.router.payloads import (
    Payload,
    Processor,
    SinkKind,
    body,
    log_line,
    matching,
    parse_processors,
    payload_metadata,
)

INFER = "/inference.GRPCInferenceService/ModelInfer"


def payload(model: str = "m1", vmodel: str = "", method: str = INFER) -> Payload:
    return Payload("r-1", model, vmodel, method, "request", b"\x0a\x02m1")


def test_the_reference_forms_parse() -> None:
    processors, problems = parse_processors(
        "logger://* logger:///*?pytorch1234#predict "
        "http://10.10.10.1:8080/consumer/kserve/v2 https://sink:8443/p?iris#ModelInfer"
    )
    assert problems == ()
    assert processors == (
        Processor(SinkKind.LOGGER, "logger://*", None, None),
        Processor(SinkKind.LOGGER, "logger:///*?pytorch1234#predict", "pytorch1234", "predict"),
        Processor(SinkKind.HTTP, "http://10.10.10.1:8080/consumer/kserve/v2", None, None),
        Processor(SinkKind.HTTP, "https://sink:8443/p", "iris", "ModelInfer"),
    )


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ("example:8080/consumer", "is not logger://..., http://... or https://..."),
        ("ftp://host/x", "is not logger://..., http://... or https://..."),
        ("http:///path", "has no host"),
        ("http://:80/path", "has no host"),
    ],
)
def test_bad_definitions_are_reported_and_skipped(definition: str, message: str) -> None:
    processors, problems = parse_processors(f"logger://* {definition}")
    assert [p.kind for p in processors] == [SinkKind.LOGGER]
    assert len(problems) == 1 and message in problems[0] and definition in problems[0]


def test_empty_and_star_filters_match_everything() -> None:
    processors, _ = parse_processors("http://s/a? http://s/b?*#* http://s/c#")
    assert all(p.model_id is None and p.method is None for p in processors)
    assert len(matching(processors, payload())) == 3


def test_model_filter_matches_the_concrete_or_the_vmodel_id() -> None:
    (p,), _ = parse_processors("http://s/a?iris")
    assert p.wants(payload(model="iris"))
    assert p.wants(payload(model="iris__isvc-0123456789", vmodel="iris"))
    assert not p.wants(payload(model="other", vmodel="other-v"))


def test_method_filter_matches_the_short_or_the_full_name() -> None:
    (short,), _ = parse_processors("http://s/a#ModelInfer")
    (full,), _ = parse_processors("http://s/a#inference.GRPCInferenceService/ModelInfer")
    for p in (short, full):
        assert p.wants(payload())
        assert not p.wants(payload(method="/inference.GRPCInferenceService/ModelMetadata"))


def test_the_sink_body_is_the_reference_json_plus_our_ids() -> None:
    p = Payload(
        "r-7", "iris__isvc-1", "iris", INFER, "response", b"\x00\xffdata", status="OK",
        metadata=(("mm-custom", "v"), ("trace-bin", b"\x01\x02")),
    )  # fmt: skip
    doc = json.loads(body(p))
    assert doc == {
        "id": "r-7",
        "modelid": "iris__isvc-1",
        "vmodelid": "iris",
        "method": "inference.GRPCInferenceService/ModelInfer",
        "kind": "response",
        "status": "OK",
        "data": base64.b64encode(b"\x00\xffdata").decode(),
        "metadata": {"mm-custom": "v", "trace-bin": base64.b64encode(b"\x01\x02").decode()},
    }


def test_sinks_never_see_credentials_and_logs_never_see_bytes() -> None:
    headers = {
        "authorization": "Bearer s3cret",
        "cookie": "c",
        "grpc-timeout": "1S",
        ":authority": "x",
        "mm-vmodel-id": "iris",
    }
    assert payload_metadata(headers) == (("mm-vmodel-id", "iris"),)
    line = log_line(Payload("r-1", "m", "", INFER, "request", b"SECRET-BYTES"))
    assert "SECRET" not in line and "12 bytes" in line and "model=m" in line
