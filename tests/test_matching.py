"""Request canonicalisation, keys and the nearest-miss diff: pure, no proxy."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon.matching import difference, jsonpath
from tests.keys import json_key, key_of

URL = "https://api.openai.com/v1/chat/completions"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def key(url=URL, body=BODY, ignore=(), ctype="application/json", method="POST"):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return key_of(method, url, ctype, raw, ignore).key()


def test_key_ignores_json_key_order_and_whitespace():
    reordered = (
        b'{ "stream": true,\n "messages": [{"content": "hi", "role": "user"}], "model": "gpt-4o" }'
    )
    assert key(body=reordered) == key()
    # whitespace before the JSON too (a hand-written body, a pretty-printer's leading newline)
    for lead in (b"\n", b"  ", b"\r\n\t "):
        assert key(body=lead + reordered) == key(), lead
    assert key(body=b"\n" + b"not json") != key(body=b"not json")  # text: compared as sent


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
    canon = key_of("get", "http://127.0.0.1:80/v1/models", None, None)
    assert (canon.method, canon.host, canon.path, canon.body) == (
        "GET",
        "127.0.0.1",
        "/v1/models",
        None,
    )


def test_secret_query_parameters_and_body_fields_do_not_affect_the_key():
    assert key(url=URL + "?key=sk-test-a&alt=sse") == key(url=URL + "?alt=sse&key=sk-test-b")
    assert key(body={**BODY, "api_key": "sk-test-1"}) == key(body={**BODY, "api_key": "sk-test-2"})


def test_a_bedrock_model_id_is_one_path_however_the_client_escapes_it():
    """boto3 sends ``%3A`` for the ``:`` of a model id, the anthropic SDK a raw ``:``; an
    escaped ``/`` (``%2F``, an ARN's) stays apart from a real one."""
    base = "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
    boto3 = key(url=base + "anthropic.claude-3-haiku-20240307-v1%3A0/invoke")
    assert key(url=base + "anthropic.claude-3-haiku-20240307-v1:0/invoke") == boto3
    assert key(url=base + "anthropic.claude-3-haiku-20240307-v1:1/invoke") != boto3
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile"
    escaped = key(url=base + arn.replace(":", "%3A") + "%2Fabc123/invoke")
    assert key(url=base + arn + "%2Fabc123/invoke") == escaped
    assert key(url=base + arn + "/abc123/invoke") != escaped


def test_paths_a_server_reads_apart_never_share_a_key():
    """A ``%`` that starts no escape is not the escaped ``%25`` (a server reads ``a%zz`` as is,
    ``a%25zz`` as ``a%zz``), with or without escapes that are not UTF-8 beside it; a
    well-formed escape still keys as its character, beside a stray ``%`` too."""
    base = "https://api.openai.com/v1/"
    pairs = [("a%zz", "a%25zz"), ("a%", "a%25"), ("a%2", "a%252"), ("%%FF", "%%46F")]
    pairs += [("%25%FF", "%%FF"), ("a%zz%FF", "a%25zz%FF")]
    for one, other in pairs:
        assert key(url=base + one) != key(url=base + other), (one, other)
    assert key(url=base + "a%z%7A") == key(url=base + "a%zz")
    assert key(url=base + "a%%41") == key(url=base + "a%A")
    assert key(url=base + "caf%C3%A9%") == key(url=base + "café%")


def test_a_presigned_urls_signing_parameters_do_not_affect_the_key():
    """SigV4 query signing: date, expiry, credential and signature change on every signing."""

    def signed(date: str, signature: str, part: str = "1") -> str:
        return (
            f"https://bucket.s3.amazonaws.com/o?partNumber={part}&X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential=AKIAFAKE%2F{date[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date={date}&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={signature}"
        )

    first = key(url=signed("20261203T101010Z", "ab" * 32), method="GET", body=b"")
    assert key(url=signed("20261204T090000Z", "cd" * 32), method="GET", body=b"") == first
    assert key(url=signed("20261203T101010Z", "ab" * 32, "2"), method="GET", body=b"") != first


def test_ignore_paths_drop_volatile_fields():
    ignore = [jsonpath.parse_path(p) for p in ("user", "metadata.trace_id", "messages.*.name")]
    a = {
        **BODY,
        "user": "alice",
        "metadata": {"trace_id": "1", "keep": "x"},
        "messages": [{"role": "user", "content": "hi", "name": "n1"}],
    }
    b = {
        **BODY,
        "user": "bob",
        "metadata": {"trace_id": "2", "keep": "x"},
        "messages": [{"role": "user", "content": "hi", "name": "n2"}],
    }
    assert key(body=a, ignore=ignore) == key(body=b, ignore=ignore)
    assert key(body=a) != key(body=b)
    c = {**b, "metadata": {"trace_id": "2", "keep": "y"}}
    assert key(body=c, ignore=ignore) != key(body=a, ignore=ignore)


def test_parse_path_forms():
    assert jsonpath.parse_path("messages[0].content") == ("messages", 0, "content")
    assert jsonpath.parse_path("a.*.b") == ("a", "*", "b")
    assert jsonpath.parse_path("messages[*]") == ("messages", "*")


@pytest.mark.parametrize("typo", ["[]", "", "messages[-1]", "a[x]", "a..b", ".a", "a.", "a[0"])
def test_a_path_that_does_not_parse_is_refused_by_name(typo):
    with pytest.raises(ValueError) as err:
        jsonpath.parse_path(typo)
    assert repr(typo) in str(err.value)


def test_whole_number_floats_and_ints_are_the_same_json_value():
    assert key(body={**BODY, "temperature": 1}) == key(body={**BODY, "temperature": 1.0})
    nested = {**BODY, "tools": [{"n": 2, "x": [0, -0.0, 3e2]}]}
    same = {**BODY, "tools": [{"n": 2.0, "x": [0.0, 0, 300]}]}
    assert key(body=nested) == key(body=same)
    assert key(body={**BODY, "temperature": 1.5}) != key(body={**BODY, "temperature": 1})
    # a recording read from a file (already parsed) gets the same key as the live request
    stored = json_key({**BODY, "temperature": 1.0})
    live = key_of("POST", URL, "application/json", orjson.dumps({**BODY, "temperature": 1}))
    assert stored == live.body


def test_non_json_bodies_are_hashed_and_forms_compared_as_fields():
    assert key(body=b"\xff\xfe binary", ctype="application/octet-stream") != key(
        body=b"\xff\xfe other", ctype="application/octet-stream"
    )
    form = "application/x-www-form-urlencoded"
    assert key(body=b"a=1&b=2&api_key=x", ctype=form) == key(body=b"b=2&a=1&api_key=y", ctype=form)
    assert key(body=b"{not json", ctype="application/json") == key(body=b"{not json")


def test_deeply_nested_json_is_compared_by_its_bytes():
    deep = b"[" * 5000 + b"]" * 5000
    canon = key_of("POST", URL, "application/json", deep)
    assert canon.body == {"$sha256": hashlib.sha256(deep).hexdigest()}  # no RecursionError
    other = b"[" * 5000 + b"1" + b"]" * 5000
    assert key_of("POST", URL, "application/json", other).key() != canon.key()
    assert key_of("POST", URL, "application/json", deep).key() == canon.key()


def test_diff_paths_names_where_bodies_differ():
    a = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}], "n": 1}
    b = {"model": "gpt-4o", "messages": [{"role": "user", "content": "b"}, {"role": "x"}], "t": 1}
    assert difference.diff_paths(a, b) == ["n", "t", "messages[1]", "messages[0].content"]
    assert difference.diff_paths(a, a) == []
    assert difference.diff_paths(1, 1.5) == ["(body)"]


def test_nearest_picks_the_fewest_differences():
    asked = key_of("POST", URL, None, orjson.dumps(BODY))
    close = key_of("POST", URL, None, orjson.dumps({**BODY, "stream": False}))
    far = key_of("POST", URL, None, orjson.dumps({"model": "x", "messages": []}))
    item, diffs = difference.closest(asked, [("far", far), ("close", close)])
    assert item == "close" and diffs == ["stream"]
    assert difference.request_diff(asked, asked.without_host()) == []  # host-agnostic recording


def chat(content: str, **more: object):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **more}
    return key_of("POST", URL, None, orjson.dumps(body))


def test_nearest_prefers_the_closest_text_among_as_many_differences():
    """A changed "(sync)" prompt is nearest to the "(sync)" recording, not to the "(async)" one
    that differs in as many places and comes first."""
    recorded = [
        ("async", chat("hello (async)")),
        ("stream", chat("hello (stream)", stream=True)),
        ("sync", chat("hello (sync)")),
    ]
    item, diffs = difference.closest(chat("goodbye (sync)"), recorded)
    assert item == "sync" and diffs == ["messages[0].content"]
    assert difference.closest(chat("goodbye (async)"), recorded)[0] == "async"
    assert difference.text_similarity("hello (sync)", "hello (sync)") == 1.0
    assert difference.text_similarity("abc", "xyz") == 0.0
    long = "x" * 10_000
    assert 0.99 < difference.text_similarity(long + "a" + long, long + "b" + long) < 1.0


EMBEDDINGS = "https://api.openai.com/v1/embeddings"
# inputs of llama-stack's recorded embeddings (tests/fixtures/llama-stack-suite.tar.xz)
INPUTS = [
    "Asia Pacific revenue figures for Q3 2023",
    "US technical updates for Q2 2023. New features deployed",
    "European advertising campaign results for Q1 2023",
    "marketing documents examples",
]


def embed(value: object):
    body = {"model": "text-embedding-3-small", "input": value, "encoding_format": "float"}
    return key_of("POST", EMBEDDINGS, None, orjson.dumps(body))


def test_nearest_embeddings_recording_is_the_one_sharing_the_input():
    recorded = [(text, embed([text])) for text in INPUTS]
    for text in INPUTS:  # each asked with a word changed: its own recording, whatever the order
        asked = embed([text.replace("for", "in")])
        assert difference.closest(asked, recorded)[0] == text
        assert difference.closest(asked, recorded[::-1])[0] == text
    # a list of inputs is compared as a whole: one place, however many items differ
    several = [("one string", embed("unrelated")), ("one more", embed(INPUTS + ["extra"]))]
    assert difference.closest(embed(INPUTS), several)[0] == "one more"


KEYS = st.text(alphabet="abcdéü中_ ", max_size=4)  # no secret field name can be spelled
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)


def reordered(value, rnd):
    """The same JSON value with the keys of every object in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: reordered(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [reordered(v, rnd) for v in value]
    return value


def as_other_number_type(value):
    """Whole-number floats written as ints and small ints as floats: the same JSON value."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return float(value)
    if isinstance(value, dict):
        return {k: as_other_number_type(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_other_number_type(v) for v in value]
    return value


def leaves(value, path=()):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path, value


def replaced(value, path, new):
    if not path:
        return new
    if isinstance(value, dict):
        return {**value, path[0]: replaced(value[path[0]], path[1:], new)}
    return [replaced(v, path[1:], new) if i == path[0] else v for i, v in enumerate(value)]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON_VALUES, max_size=5), st.randoms(use_true_random=False), st.data())
def test_canonical_key_is_the_json_value(body, rnd, data):
    """Key order at any depth, whitespace and number spelling do not change the key; changing
    any one leaf does."""

    def canon(raw):
        return key_of("POST", URL, "application/json", raw).key()

    k = canon(orjson.dumps(body))
    assert canon(orjson.dumps(reordered(body, rnd), option=orjson.OPT_INDENT_2)) == k
    assert canon(orjson.dumps(as_other_number_type(body))) == k
    paths = list(leaves(body))
    path, old = data.draw(st.sampled_from(paths))
    if path:  # an empty body has no leaf to change
        new = old + "!" if isinstance(old, str) else "changed"
        assert canon(orjson.dumps(replaced(body, path, new))) != k


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.text(max_size=40))
def test_canonicaliser_accepts_any_bytes_and_url_tail(raw, tail):
    key_of("POST", "http://h/" + tail.replace("#", ""), "application/json", raw).key()
