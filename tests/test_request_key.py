"""One request key: a request recorded through the proxy keys equal to its live form.

The live path makes the key from mitmproxy's request (``mitm/replay.canonical_request``); the
recorded path from the file the recorder wrote, after the scrub, as the index reads it at the
next start (``formats.head_of``) and as a replay reads it whole (``formats.loads``). Both call
``canonical.canonicalize``; these tests show they agree for random bodies, headers, queries and
encodings: in-process over many examples, and through real ``mitmdump`` processes (record,
then replay: every request a hit).
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from urllib.parse import urlencode

import brotli
import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from mitmproxy import http

from proxy_addon import formats
from proxy_addon.formats import cassette, exchange
from proxy_addon.matching.canonical import Request, Rules, canonicalize
from proxy_addon.mitm.flow import body_of
from proxy_addon.mitm.replay import canonical_request
from proxy_addon.model import RecordedResponse, Recording
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import Secrets
from tests.conftest import counted
from tests.test_fail_closed import send

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

KEY = st.from_regex(r"sk-test-[A-Za-z0-9]{20,28}", fullmatch=True)
OPAQUE = st.from_regex(r"[A-Za-z0-9]{10,20}", fullmatch=True)  # a key with no known shape
WORD = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F, blacklist_categories=("Cs",)),
    max_size=12,
)
FIELD = (
    st.sampled_from(
        [
            "model",
            "messages",
            "content",
            "role",
            "api_key",
            "password",
            "user",
            "temperature",
            "n",
            "metadata",
            "token",
            "input",
            "x",
        ]
    )
    | WORD
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | WORD
    | KEY
)
JSON = st.recursive(
    LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(FIELD, c, max_size=4), max_leaves=12
)
ENCODE = {
    "": lambda b: b,
    "identity": lambda b: b,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """A request as a client sends it: method, path and query, headers (a key in a secret
    header or none; their names in any case), and body bytes (JSON, a form, text or bytes;
    compressed or not); the key it sends may also appear in its body or query."""
    key = draw(KEY | OPAQUE)
    method = draw(st.sampled_from(["POST", "GET"]))
    path = "/v1/" + draw(
        st.sampled_from(["chat/completions", "embeddings", "things/a%20b", "models"])
    )
    query = draw(
        st.dictionaries(
            st.sampled_from(["key", "api-version", "alt", "q", "token", "X-Amz-Signature", "sig"]),
            WORD | KEY | st.just(key),
            max_size=3,
        )
    )
    headers = {}
    where = draw(
        st.sampled_from(["authorization", "x-api-key", "api-key", "x-amz-security-token", None])
    )
    if where == "authorization":
        headers["authorization"] = f"Bearer {key}"
    elif where is not None:
        headers[where] = key
    kind = draw(st.sampled_from(["json", "form", "text", "bytes", "none"]))
    if kind == "json":
        value = draw(JSON | st.dictionaries(FIELD, JSON, min_size=1, max_size=4))
        if draw(st.booleans()):
            value = {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": f"my key is {key}"}],
                "extra": value,
            }
        if draw(st.booleans()):  # a tool call's arguments: JSON in a string, with a password
            arguments = {"user": draw(WORD), "password": draw(WORD | KEY | st.just(key))}
            call = {"function": {"name": "login", "arguments": json.dumps(arguments)}}
            value = {"messages": [{"role": "assistant", "tool_calls": [call]}], "extra": value}
        body = json.dumps(value).encode()  # integers beyond 64 bits too
        headers["content-type"] = "application/json"
    elif kind == "form":
        body = urlencode(
            draw(st.dictionaries(FIELD, WORD | KEY | st.just(key), max_size=4))
        ).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    elif kind == "text":
        body = draw(WORD).encode() + (f" {key}".encode() if draw(st.booleans()) else b"")
        headers["content-type"] = "text/plain"
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
        headers["content-type"] = "application/octet-stream"
    else:
        body = b""
    encoding = draw(st.sampled_from(sorted(ENCODE)))
    if encoding and body:
        body = ENCODE[encoding](body)
        headers["content-encoding"] = encoding
    # clients spell header names as they like (curl ``Content-Type``, h11 as given)
    spelled = {
        draw(st.sampled_from([str.lower, str.title, str.upper]))(k): v for k, v in headers.items()
    }
    return method, path + (f"?{urlencode(query)}" if query else ""), spelled, body


def recorded_as_written(req: http.Request, secrets: Secrets) -> bytes:
    """The file the recorder writes for this live request: what the record hook keeps of it
    (``exchange.recorded_request``, ``mitm/record.py``), scrubbed and written as the store's
    recorder does (``store/recorder.py``)."""
    recorded = exchange.recorded_request(
        req.method, req.pretty_url, req.headers.items(multi=True), body_of(req), secrets
    )
    recording = Recording(recorded, [RecordedResponse(200, body=None)])
    out = io.BytesIO()
    cassette.write(redact.scrub(recording, secrets)[0], out)
    return out.getvalue()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), tls=st.booleans())
@example(  # a value under a secret name in the body is redacted in the URL too, as the file has it
    request=(
        "POST",
        "/v1/chat/completions?api-version=sk-test-00000000000000000000",
        {"authorization": "Bearer 0000000000", "content-type": "application/json"},
        b'{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "login", '
        b'"arguments": "{\\"user\\": \\"\\", \\"password\\": '
        b'\\"sk-test-00000000000000000000\\"}"}}]}], "extra": null}',
    ),
    tls=False,
)
def test_a_request_keys_equal_to_its_recording(request, tls):
    method, target, headers, body = request
    base = "https://api.example.com" if tls else "http://127.0.0.1:8000"
    live = http.Request.make(method, base + target, b"", headers)
    live.raw_content = body  # as sent: make() would encode it once more
    rules = Rules(secrets=Secrets.from_settings([], [], {}))
    canon, secrets = canonical_request(live, rules)
    raw = recorded_as_written(live, secrets)
    at_start = canonicalize(Request.recorded(formats.head_of(raw, "x.json").request), rules)
    whole = canonicalize(Request.recorded(formats.loads(raw, "x.json").request), rules)
    assert at_start == canon
    assert whole == canon
    assert at_start.key() == canon.key()


@pytest.mark.slow
@settings(
    max_examples=1,
    database=None,
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    examples=st.lists(requests(), min_size=40, max_size=40, unique_by=lambda r: (r[0], r[1], r[3]))
)
def test_random_requests_recorded_through_the_proxy_replay_as_hits(
    examples, tmp_path, proxies, upstream
):
    """Through real mitmdump processes (plain HTTP, and a TLS CONNECT tunnel): 40 random
    requests recorded, then sent again to a replaying proxy with the upstream stopped: each
    one a hit."""
    cassettes = tmp_path / "cassettes"
    recorder = proxies(cassettes, "record")
    for method, target, headers, body in examples:
        send(recorder, upstream.base_url, method, target, headers, body)
    log = recorder.stop()
    assert counted(log, "recorded", "misses") == (40, 0), log[-3000:]
    upstream.stop()
    replayer = proxies(cassettes, "replay")
    for method, target, headers, body in examples:
        send(replayer, upstream.base_url, method, target, headers, body)
    log = replayer.stop()
    assert counted(log, "hits", "misses") == (40, 0), log[-3000:]


def test_a_stray_percent_and_an_escaped_one_never_answer_each_other(
    tmp_path, proxies, http_upstream
):
    """``a%zz`` (a ``%`` that starts no escape) and ``a%25zz`` are two paths to a server: each
    is recorded through mitmdump into its own file, and a replay holding only one of them
    answers the other with a miss, in both orders; ``a%z%7A`` (``%7A`` is ``z``) still keys as
    ``a%zz``."""
    stray, escaped = "/v1/a%zz/chat/completions", "/v1/a%25zz/chat/completions"
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    headers = {"content-type": "application/json"}
    recorded = tmp_path / "recorded"
    recorder = proxies(recorded, "record")
    for path in (stray, escaped):
        assert send(recorder, http_upstream.base_url, "POST", path, headers, body.encode()) == 200
    log = recorder.stop()
    assert counted(log, "recorded") == (2,), log[-3000:]
    files = {orjson.loads(p.read_bytes())["request"]["url"]: p for p in recorded.rglob("*.json")}
    assert sorted(files) == sorted(http_upstream.base_url + p for p in (stray, escaped)), files
    # (the one recording kept, what is asked, what the replay must answer)
    cases = [
        (stray, {escaped: 424, stray: 200, stray.replace("%zz", "%z%7A"): 200}),
        (escaped, {stray: 424, escaped: 200}),
    ]
    for kept, expected in cases:
        cassettes = tmp_path / kept.split("/")[2]
        cassettes.mkdir()
        (cassettes / "only.json").write_bytes(files[http_upstream.base_url + kept].read_bytes())
        replayer = proxies(cassettes, "replay")
        answered = {
            path: send(replayer, http_upstream.base_url, "POST", path, headers, body.encode())
            for path in expected
        }
        log = replayer.stop()
        assert answered == expected, (kept, log[-3000:])
        misses = list(expected.values()).count(424)
        assert counted(log, "hits", "misses") == (len(expected) - misses, misses), log[-3000:]
