"""Request canonicalisation, keys and the nearest-miss diff: pure, no proxy."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon import matching

URL = "https://api.openai.com/v1/chat/completions"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def key(url=URL, body=BODY, ignore=(), ctype="application/json", method="POST"):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return matching.canonicalize(method, url, ctype, raw, ignore).key()


def test_key_ignores_json_key_order_and_whitespace():
    reordered = b'{ "stream": true,\n "messages": [{"content": "hi", "role": "user"}], "model": "gpt-4o" }'
    assert key(body=reordered) == key()


def test_key_changes_with_method_host_path_query_and_body():
    base = key()
    assert key(method="PUT") != base
    assert key(url="https://example.com/v1/chat/completions") != base
    assert key(url="https://api.openai.com/v1/completions") != base
    assert key(url=URL + "?api-version=2024") != base
    assert key(body={**BODY, "stream": False}) != base
    assert key(body={**BODY, "messages": [{"role": "user", "content": "hi!"}]}) != base


def test_default_ports_and_host_case_do_not_matter_but_other_ports_do():
    assert key(url="https://API.openai.com:443/v1/chat/completions") == key()
    assert key(url="https://api.openai.com:8443/v1/chat/completions") != key()
    canon = matching.canonicalize("get", "http://127.0.0.1:80/v1/models", None, None)
    assert (canon.method, canon.host, canon.path, canon.body) == ("GET", "127.0.0.1", "/v1/models", None)


def test_secret_query_parameters_and_body_fields_do_not_affect_the_key():
    assert key(url=URL + "?key=sk-test-a&alt=sse") == key(url=URL + "?alt=sse&key=sk-test-b")
    assert key(body={**BODY, "api_key": "sk-test-1"}) == key(body={**BODY, "api_key": "sk-test-2"})


def test_ignore_paths_drop_volatile_fields():
    ignore = [matching.parse_path(p) for p in ("user", "metadata.trace_id", "messages.*.name")]
    a = {**BODY, "user": "alice", "metadata": {"trace_id": "1", "keep": "x"},
         "messages": [{"role": "user", "content": "hi", "name": "n1"}]}
    b = {**BODY, "user": "bob", "metadata": {"trace_id": "2", "keep": "x"},
         "messages": [{"role": "user", "content": "hi", "name": "n2"}]}
    assert key(body=a, ignore=ignore) == key(body=b, ignore=ignore)
    assert key(body=a) != key(body=b)
    c = {**b, "metadata": {"trace_id": "2", "keep": "y"}}
    assert key(body=c, ignore=ignore) != key(body=a, ignore=ignore)


def test_parse_path_forms():
    assert matching.parse_path("messages[0].content") == ("messages", 0, "content")
    assert matching.parse_path("a.*.b") == ("a", "*", "b")
    assert matching.parse_path("messages[*]") == ("messages", "*")
    with pytest.raises(ValueError):
        matching.parse_path("[]")


def test_non_json_bodies_are_hashed_and_forms_compared_as_fields():
    assert key(body=b"\xff\xfe binary", ctype="application/octet-stream") != key(
        body=b"\xff\xfe other", ctype="application/octet-stream")
    form = "application/x-www-form-urlencoded"
    assert key(body=b"a=1&b=2&api_key=x", ctype=form) == key(body=b"b=2&a=1&api_key=y", ctype=form)
    assert key(body=b"{not json", ctype="application/json") == key(body=b"{not json")


def test_deeply_nested_json_does_not_crash():
    deep = b"[" * 5000 + b"]" * 5000
    canon = matching.canonicalize("POST", URL, "application/json", deep)
    assert canon.key()  # hashed instead of compared as data, no RecursionError


def test_diff_paths_names_where_bodies_differ():
    a = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}], "n": 1}
    b = {"model": "gpt-4o", "messages": [{"role": "user", "content": "b"}, {"role": "x"}], "t": 1}
    assert matching.diff_paths(a, b) == ["n", "t", "messages[1]", "messages[0].content"]
    assert matching.diff_paths(a, a) == []
    assert matching.diff_paths(1, 1.5) == ["(body)"]


def test_nearest_picks_the_fewest_differences():
    asked = matching.canonicalize("POST", URL, None, orjson.dumps(BODY))
    close = matching.canonicalize("POST", URL, None, orjson.dumps({**BODY, "stream": False}))
    far = matching.canonicalize("POST", URL, None, orjson.dumps({"model": "x", "messages": []}))
    item, diffs = matching.nearest(asked, [("far", far), ("close", close)])
    assert item == "close" and diffs == ["stream"]
    assert matching.request_diff(asked, asked.without_host()) == []  # host-agnostic recording


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                    max_leaves=20))
def test_canonicaliser_is_total_and_order_insensitive(value):
    raw = orjson.dumps(value)
    canon = matching.canonicalize("POST", URL, "application/json", raw)
    if isinstance(value, dict):
        shuffled = orjson.dumps(dict(reversed(list(value.items()))))
        assert matching.canonicalize("POST", URL, "application/json", shuffled).key() == canon.key()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.text(max_size=40))
def test_canonicaliser_accepts_any_bytes_and_url_tail(raw, tail):
    matching.canonicalize("POST", "http://h/" + tail.replace("#", ""), "application/json", raw).key()
