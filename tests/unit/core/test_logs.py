"""Logging setup: text and JSON lines, levels, no duplicate handlers."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mmesh.core.logs import QUIET_LIBRARIES, JsonFormatter, parse_level, setup_logging


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)


def test_text_format(root_logger):
    out = io.StringIO()
    setup_logging("info", json_format=False, stream=out)
    logging.getLogger("mmesh.test").info("loaded %s", "m1")
    logging.getLogger("mmesh.test").debug("hidden")
    line = out.getvalue().strip()
    assert line.endswith(" INFO mmesh.test loaded m1")
    assert len(out.getvalue().splitlines()) == 1


def test_json_format_has_fields_and_extras(root_logger):
    out = io.StringIO()
    setup_logging("DEBUG", json_format=True, stream=out)
    logging.getLogger("mmesh.x").debug("placed %s", "m1", extra={"model_id": "m1", "n": 3})
    record = json.loads(out.getvalue())
    assert record["level"] == "DEBUG"
    assert record["logger"] == "mmesh.x"
    assert record["message"] == "placed m1"
    assert record["model_id"] == "m1"
    assert record["n"] == 3
    assert record["time"].endswith("+00:00")
    assert "args" not in record
    assert "msg" not in record


def test_json_format_includes_traceback_and_survives_odd_extras(root_logger):
    out = io.StringIO()
    setup_logging("warning", json_format=True, stream=out)
    try:
        raise RuntimeError("bad thing")
    except RuntimeError:
        logging.getLogger("t").exception("failed", extra={"obj": object()})
    record = json.loads(out.getvalue())
    assert "RuntimeError: bad thing" in record["exc_info"]
    assert record["obj"].startswith("<object object")


def test_calling_twice_does_not_duplicate_lines(root_logger):
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", json_format=False, stream=first)
    setup_logging("info", json_format=True, stream=second)
    logging.getLogger("t").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_levels():
    assert parse_level("warning") == logging.WARNING
    assert parse_level(" Debug ") == logging.DEBUG
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_level("loud")


def test_formatter_alone():
    record = logging.LogRecord("n", logging.ERROR, __file__, 1, "x=%d", (5,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "x=5"


def test_storage_client_libraries_stay_quiet_at_debug(root_logger):
    """botocore & co. print request headers (credentials) at DEBUG and INFO."""
    out = io.StringIO()
    setup_logging("DEBUG", json_format=False, stream=out)
    logging.getLogger("botocore.endpoint").debug("Authorization: AWS4 Credential=AKID")
    logging.getLogger("azure.core.pipeline").info("Request headers: ...")
    logging.getLogger("botocore.hooks").warning("a real problem")
    logging.getLogger("mmesh.adapter").debug("ours")

    lines = out.getvalue().splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == [
        "botocore.hooks a real problem",
        "mmesh.adapter ours",
    ]
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET)
