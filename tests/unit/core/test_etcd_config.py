"""Parsing the `etcd_connection` JSON of the operator's Secret."""

from __future__ import annotations

import json

import pytest

from mmesh.core.etcd_config import Endpoint, EtcdConnection, from_json, from_mapping

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def parse(**fields: object) -> EtcdConnection:
    return EtcdConnection.from_json(json.dumps(fields))


def test_the_documented_secret():
    conn = parse(
        endpoints="https://etcd-0.etcd:2379,https://etcd-1.etcd:2380",
        root_prefix="modelmesh-serving",
        userid="root",
        password="s3cret",
        certificate=PEM,
    )
    assert conn.endpoints == (Endpoint("etcd-0.etcd", 2379), Endpoint("etcd-1.etcd", 2380))
    assert conn.root_prefix == "modelmesh-serving"
    assert (conn.username, conn.password) == ("root", "s3cret")
    assert conn.tls
    assert conn.ca_certificate == PEM
    assert conn.endpoint_text == "etcd-0.etcd:2379,etcd-1.etcd:2380"


def test_secrets_stay_out_of_repr():
    conn = parse(endpoints="h:1", userid="u", password="s3cret", certificate=PEM)
    assert "s3cret" not in repr(conn)
    assert "BEGIN CERTIFICATE" not in repr(conn)
    assert "'u'" in repr(conn)


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ("127.0.0.1:2379", [("127.0.0.1", 2379)]),
        ("http://127.0.0.1:2379/", [("127.0.0.1", 2379)]),
        ("HTTP://etcd:1", [("etcd", 1)]),
        ("etcd", [("etcd", 2379)]),
        (" a:1 , b:2 ,", [("a", 1), ("b", 2)]),
        (["http://a:1", "http://b:2"], [("a", 1), ("b", 2)]),
        ("[::1]:2379", [("::1", 2379)]),
        ("[fd00::5]", [("fd00::5", 2379)]),
    ],
)
def test_endpoint_forms(endpoints, expected):
    conn = parse(endpoints=endpoints)
    assert [(e.host, e.port) for e in conn.endpoints] == expected
    assert not conn.tls


def test_ipv6_endpoint_text_is_bracketed():
    assert str(Endpoint("::1", 2379)) == "[::1]:2379"


def test_from_endpoint():
    conn = EtcdConnection.from_endpoint("127.0.0.1:23790", root_prefix="/t")
    assert conn.endpoints == (Endpoint("127.0.0.1", 23790),)
    assert conn.root_prefix == "/t"
    assert conn.username is None
    assert not conn.tls


def test_tls_from_certificate_or_scheme():
    assert parse(endpoints="h:1", certificate=PEM).tls
    assert parse(endpoints="https://h:1").tls
    file_conn = parse(endpoints="h:1", certificate_file="/etc/etcd/ca.pem")
    assert file_conn.tls
    assert file_conn.ca_certificate_file == "/etc/etcd/ca.pem"


def test_mutual_tls_fields():
    conn = parse(endpoints="https://h:1", client_certificate=PEM, client_key="KEY")
    assert (conn.client_certificate, conn.client_key) == (PEM, "KEY")


def test_empty_strings_mean_unset_and_unknown_keys_are_ignored():
    conn = parse(endpoints="h:1", userid="", password="", root_prefix="", extra={"x": 1})
    assert conn.username is None
    assert conn.password is None
    assert conn.root_prefix == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "'endpoints' must be a string or a list"),
        ({"endpoints": ""}, "'endpoints' is empty"),
        ({"endpoints": " , "}, "'endpoints' is empty"),
        ({"endpoints": 2379}, "'endpoints' must be a string or a list"),
        ({"endpoints": ["a:1", 2]}, "'endpoints' must be a string or a list"),
        ({"endpoints": "unix://sock"}, "only http:// and https://"),
        ({"endpoints": "h:notaport"}, "bad port 'notaport'"),
        ({"endpoints": "h:0"}, "bad port '0'"),
        ({"endpoints": "h:65536"}, "bad port '65536'"),
        ({"endpoints": ":2379"}, "has no host"),
        ({"endpoints": "h:1/path"}, "without a path"),
        ({"endpoints": "[::1"}, "bad IPv6 endpoint"),
        ({"endpoints": "http://a:1,https://b:2"}, "mix http:// and https://"),
        ({"endpoints": "http://a:1", "certificate": PEM}, "endpoints use http://"),
        ({"endpoints": "a:1", "userid": "u"}, "'userid' and 'password' must be given together"),
        ({"endpoints": "a:1", "password": "p"}, "'userid' and 'password' must be given together"),
        (
            {"endpoints": "a:1", "certificate": PEM, "certificate_file": "/x"},
            "not both",
        ),
        (
            {"endpoints": "https://a:1", "client_certificate": PEM},
            "'client_certificate' and 'client_key' must be given together",
        ),
        (
            {"endpoints": "a:1", "client_certificate": PEM, "client_key": "K"},
            "client certificate needs https://",
        ),
        ({"endpoints": "a:1", "root_prefix": 5}, "'root_prefix' must be a string"),
    ],
)
def test_bad_settings_raise_clear_value_errors(fields, message):
    with pytest.raises(ValueError, match="etcd_connection") as info:
        from_mapping(fields)
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "message"), [("{", "not valid JSON"), ("[]", "JSON object")])
def test_bad_json(text, message):
    with pytest.raises(ValueError, match=message):
        from_json(text)


def test_bytes_input():
    assert from_json(b'{"endpoints":"h:1"}').endpoints == (Endpoint("h", 1),)
