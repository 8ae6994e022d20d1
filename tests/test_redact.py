"""The redaction step (unit tests): three layers over a whole recording, what it leaves alone,
and that a scrubbed recording still matches the live request it was made from.

The fake secrets here are deliberately not shaped like keys (except the ``sk-test-...`` ones),
so that each layer is seen working on its own rather than hidden behind the shape layer.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from urllib.parse import quote

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon.bodies.sse import Event, Unparsed
from proxy_addon.formats import cassette, exchange
from proxy_addon.model import (
    Body,
    RecordedRequest,
    RecordedResponse,
    Recording,
    Stream,
    WebSocketClose,
    WebSocketConversation,
    WebSocketMessage,
)
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import (
    REDACTED,
    Secrets,
    credential_values,
    env_values,
)
from proxy_addon.runner.providers import PLACEHOLDER_KEY
from tests.keys import key_of, recorded_key

ENV = {
    "ACME_API_KEY": "fake-env-acme-4411",
    "HF_TOKEN": "fake-env-hf-5522",
    "HOME": "/root",
    "SHORT_TOKEN": "abc",
    "PATH": "/usr/bin",
}
RULES = Secrets.from_settings(["team_ref", "meta.owner"], ["X-Team-Token"], ENV)

PLANTED = {
    "bearer": "fake-bearer-0001",
    "x-api-key": "fake-xapikey-0002",
    "team-header": "fake-team-0003",
    "userinfo": "fake-userinfo-0004",
    "query": "fake-query-0005",
    "nested-client-secret": "fake-nested-cs-0006",
    "nested-password": "fake-nested-pw-0007",
    "by-path": "fake-bypath-0008",
    "custom-field": "fake-custom-0009",
    "form-refresh": "fake-form-rt-0010",
    "multipart": "fake-multipart-0011",
    "resp-access": "fake-resp-at-0012",
    "set-cookie": "fake-cookie-0013",
    "shape": "sk-test-shape-0014-abcdefghij",
    "llama-call-args": "fake-callargs-0015",
}


def planted_recording() -> Recording:
    p = PLANTED
    b64 = base64.b64encode(p["x-api-key"].encode()).decode()
    return Recording(
        request=RecordedRequest(
            "POST",
            f"https://me:{p['userinfo']}@api.example/v1/chat?key={p['query']}&alt=sse",
            {
                "authorization": f"Bearer {p['bearer']}",
                "content-type": "application/json",
                "x-api-key": p["x-api-key"],
                "x-team-token": p["team-header"],
            },
            Body(
                "json",
                {
                    "model": "m",
                    "auth": {"client_secret": p["nested-client-secret"]},
                    "credentials": [{"password": p["nested-password"]}],
                    "meta": {"owner": p["by-path"], "trace": "t-1"},
                    "team_ref": p["custom-field"],
                    "messages": [
                        {
                            "role": "user",
                            "content": f"say {ENV['ACME_API_KEY']}, {b64} and {p['shape']}",
                        }
                    ],
                },
            ),
        ),
        responses=[
            RecordedResponse(
                200,
                [
                    ["content-type", "application/json"],
                    [
                        "set-cookie",
                        f"s={p['set-cookie']}; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
                    ],
                ],
                body=Body(
                    "json",
                    {
                        "data": [{"access_token": p["resp-access"]}],
                        "echo": f"got {p['bearer']} and {p['query']}",
                    },
                ),
            ),
            RecordedResponse(
                200,
                [["content-type", "text/event-stream"]],
                stream=Stream(
                    "sse",
                    [
                        Event(data=Unparsed(orjson.dumps({"echo": p["x-api-key"]}).decode())),
                        Event(data=Unparsed('{"choices":[{"delta":{"content":"hi"}}]}')),
                        Event(
                            data="[DONE]",
                            comments=[f"seen {p['team-header']}"],
                            id=f"id-{quote(p['userinfo'])}",
                        ),
                    ],
                ),
            ),
            RecordedResponse(
                200,
                [["content-type", "application/x-www-form-urlencoded"]],
                body=Body("text", f"refresh_token={p['form-refresh']}&scope=a"),
            ),
            RecordedResponse(
                200,
                [["content-type", "application/json"]],
                body=Body(
                    "multipart",
                    [
                        {"name": "api_key", "value": p["multipart"]},
                        {"name": "file", "filename": "f", "size": 1, "sha256": "00"},
                    ],
                ),
            ),
        ],
        llama_stack={"request": {"call_args": {"extra_body": {"api_key": p["llama-call-args"]}}}},
    )


def test_every_layer_replaces_its_secrets_everywhere_and_names_where():
    rec = planted_recording()
    out, findings = redact.scrub(rec, RULES)
    written = cassette.dumps(out)
    for name, secret in PLANTED.items():
        assert secret.encode() not in written, name
    assert ENV["ACME_API_KEY"].encode() not in written
    assert base64.b64encode(PLANTED["x-api-key"].encode()).rstrip(b"=") not in written
    assert quote(PLANTED["userinfo"]).encode() not in written
    got = {(f.path, f.layer) for f in findings}
    assert got == {
        ("request.url", "name"),  # user info, and ?key=
        ("request.headers.authorization", "name"),
        ("request.headers.x-api-key", "name"),
        ("request.headers.x-team-token", "name"),
        ("request.body.auth.client_secret", "name"),
        ("request.body.credentials[0].password", "name"),
        ("request.body.meta.owner", "name"),
        ("request.body.team_ref", "name"),
        ("request.body.messages[0].content", "value"),  # the env value, the base64 x-api-key
        ("request.body.messages[0].content", "shape"),
        ("responses[0].headers[1][1]", "name"),
        ("responses[0].body.data[0].access_token", "name"),
        ("responses[0].body.echo", "value"),
        ("responses[1].stream.events[0].data.echo", "value"),
        ("responses[1].stream.events[2].comments[0]", "value"),
        ("responses[1].stream.events[2].id", "value"),
        ("responses[2].body_text", "name"),
        ("responses[3].body_multipart[0].value", "name"),
        ("llama_stack.request.call_args.extra_body.api_key", "name"),
    }
    doc = orjson.loads(written)
    assert doc["request"]["url"] == "https://api.example/v1/chat?key=<redacted>&alt=sse"
    assert doc["request"]["body"]["meta"] == {"owner": REDACTED, "trace": "t-1"}
    assert doc["responses"][1]["stream"]["events"][0]["data"] == {"echo": REDACTED}
    assert doc["responses"][1]["stream"]["events"][1]["data"]["choices"][0]["delta"] == {
        "content": "hi"
    }
    assert doc["responses"][2]["body_text"] == "refresh_token=<redacted>&scope=a"
    assert "Bearer" not in doc["request"]["headers"]["authorization"]
    assert all(" | " not in f.what and "fake-" not in f.what for f in findings)  # no secret shown


def test_scrubbing_twice_changes_nothing_and_a_clean_recording_is_returned_as_it_is():
    out, _ = redact.scrub(planted_recording(), RULES)
    again, findings = redact.scrub(out, RULES)
    assert findings == [] and again is out
    clean = Recording(
        RecordedRequest("GET", "https://api.example/v1/models", {}),
        [
            RecordedResponse(
                200, [["content-type", "application/json"]], body=Body("json", {"data": []})
            )
        ],
    )
    assert redact.scrub(clean, RULES) == (clean, [])


def test_the_replay_placeholder_key_is_a_secret_like_any_key():
    """The placeholder a replay gives a command that has no key never reaches a recording,
    should it be sent where one is made: it has a key's shape, with no rule told about it."""
    placeholder = PLACEHOLDER_KEY
    rec = Recording(
        RecordedRequest(
            "POST",
            "https://api.example/v1/chat",
            {"x-client-key": placeholder},
            body=Body("json", {"messages": [{"role": "user", "content": f"key {placeholder}"}]}),
        ),
        [RecordedResponse(200, [["x-echo", placeholder]], body=Body("text", placeholder))],
    )
    scrubbed, findings = redact.scrub(rec, Secrets.from_settings([], [], {}))
    assert findings and {f.layer for f in findings} == {"shape"}  # every place it was
    assert placeholder.encode() not in cassette.dumps(scrubbed)


def test_a_websocket_conversations_messages_and_close_reason_are_scrubbed_by_path():
    key = "fake-ws-session-0016"
    socket = WebSocketConversation(
        [
            WebSocketMessage(
                "client",
                Body("json", {"type": "session.update", "session": {"client_secret": key}}),
                0.0,
            ),
            WebSocketMessage(
                "server", Body("text", f"echo: {key} and sk-test-wsshape-0017abcdefgh"), 0.1
            ),
            WebSocketMessage("client", Body("base64", base64.b64encode(b"\x00\x01").decode()), 0.2),
        ],
        WebSocketClose("server", 1008, f"bad key {key}", 0.3),
    )
    rec = Recording(
        RecordedRequest("GET", "wss://api.example/v1/realtime", {}),
        [RecordedResponse(101, [], websocket=socket)],
    )
    out, findings = redact.scrub(rec, RULES)
    where = {f.path for f in findings}
    assert where == {
        "responses[0].websocket.messages[0].data.session.client_secret",
        "responses[0].websocket.messages[1].text",
        "responses[0].websocket.close.reason",
    }, where
    raw = cassette.dumps(out)
    assert key.encode() not in raw and b"wsshape" not in raw
    scrubbed = out.responses[0].websocket
    assert scrubbed.messages[0].payload.value["session"]["client_secret"] == REDACTED
    assert scrubbed.messages[1].payload.value == f"echo: {REDACTED} and {REDACTED}"
    assert scrubbed.messages[2] is socket.messages[2]  # binary: left as it is
    assert scrubbed.close.reason == f"bad key {REDACTED}" and scrubbed.close.code == 1008


ORDINARY = {
    "id": "chatcmpl-9xK2mQpL7vR4tY8wZ1aB3cD5eF6gH",
    "tool_call": "call_abc123XYZ789def456GHI",
    "resp": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452e3d4ea",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "model": "gpt-4o-mini-2024-07-18",
    "sha": "3f2a9c1d7e4b8a6f0c5d2e1b9a7c4f3e8d6b5a2c1f0e9d8c7b6a5f4e3d2c1b0a",
    "text": "The Bearer of bad news asked a task-force-of-experts about skeletons.",
    "logprobs": [{"token": "Hello", "logprob": -0.1}],
    "max_tokens": 256,
    "key": "colour",
    "schema": {"properties": {"password": {"type": "string"}, "api_key": {"type": "string"}}},
    "empty_secret": "",
    "not_a_string": {"secret": 12345678},
}


def test_ordinary_ids_words_and_schemas_are_left_alone():
    rec = Recording(
        RecordedRequest(
            "POST",
            "https://api.example/v1/x?alt=sse",
            {"content-type": "application/json"},
            Body("json", ORDINARY),
        ),
        [
            RecordedResponse(
                200, [["x-request-id", "req_8f7e6d5c4b3a29181716"]], body=Body("json", ORDINARY)
            )
        ],
    )
    out, findings = redact.scrub(rec, RULES)
    assert findings == [] and out is rec


def test_known_values_come_from_credential_variables_and_auth_headers():
    assert env_values(ENV) == {
        "fake-env-acme-4411": "$ACME_API_KEY",
        "fake-env-hf-5522": "$HF_TOKEN",
    }  # SHORT_TOKEN: too short
    basic = base64.b64encode(b"me:fake-basic-pw-77").decode()
    assert credential_values(f"Basic {basic}", "authorization") == [basic, "fake-basic-pw-77"]
    assert credential_values("Bearer fake-bearer-0001", "authorization") == ["fake-bearer-0001"]
    assert credential_values("a=1; sid=fake-sid-12345678", "cookie") == ["1", "fake-sid-12345678"]
    assert credential_values("sid=fake-sid-1; Expires=Wed, 21 Oct 2026", "set-cookie") == [
        "fake-sid-1"
    ]


LIVE_BODIES = [
    ("application/json", {"model": "m", "auth": {"client_secret": "fake-live-cs-1"}}),
    (
        "application/json",
        {"model": "m", "messages": [{"content": "use sk-test-live-abcdefghijklmnop"}]},
    ),
    ("application/json", {"model": "m", "messages": [{"content": "env fake-env-acme-4411"}]}),
    ("application/json", {"model": "m", "messages": [{"content": "echo fake-bearer-0001"}]}),
    (
        "application/json",
        {
            "model": "m",
            "messages": [{"content": base64.b64encode(b"fake-bearer-0001").decode()}],
            "meta": {"owner": "fake-live-owner"},
        },
    ),
    ("application/x-www-form-urlencoded", "client_secret=fake-live-cs-2&q=fake-env-acme-4411"),
    ("text/plain", "a plain body with fake-bearer-0001 and sk-test-live-abcdefghijklmnop in it"),
    (
        "application/json",
        {"model": "m", "messages": [{"content": "the ?key= was fake-live-key-1"}]},
    ),
]


@pytest.mark.parametrize("content_type,body", LIVE_BODIES)
def test_a_scrubbed_recording_matches_the_live_request_it_came_from(content_type, body):
    url = "https://api.example/v1/x?alt=sse&key=fake-live-key-1&q=fake-env-acme-4411"
    headers = [("Authorization", "Bearer fake-bearer-0001"), ("Content-Type", content_type)]
    raw = orjson.dumps(body) if isinstance(body, dict) else body.encode()
    flow_rules = RULES.with_values(exchange.header_values(headers, RULES))
    live = key_of("POST", url, content_type, raw, (), flow_rules)
    stored, _ = redact.scrub(
        Recording(
            exchange.recorded_request("POST", url, headers, raw, flow_rules),
            [RecordedResponse(200)],
        ),
        flow_rules,
    )
    assert b"fake-" not in cassette.dumps(stored) and b"sk-test-live" not in cassette.dumps(stored)
    on_disk = cassette.from_dict(orjson.loads(cassette.dumps(stored)))
    assert recorded_key(on_disk.request, (), RULES).key() == live.key()
    # the same request made without the key (in CI) or with another one still matches, but
    # for a body that quotes the URL's key: with another key it is another request
    other = raw.replace(b"fake-live-cs-1", b"another-value").replace(b"fake-live-owner", b"x")
    again = key_of(
        "POST", url.replace("fake-live-key-1", "ci"), content_type, other, (), flow_rules
    )
    assert (again.key() == live.key()) is (b"fake-live-key-1" not in raw)


def test_log_lines_lose_query_values_header_values_and_shapes():
    line = (
        "127.0.0.1:5: Bad HTTP request line: b'GET http://h/v1?key=fake-query-0005&x=1 "
        "HTTP/1.1 junk\\r\\nAuthorization: Bearer fake-bearer-0001\\r\\nX-Api-Key: "
        "fake-xapikey-0002\\r\\nsk-test-shape-0014-abcdefghij fake-env-acme-4411'"
    )
    shown = RULES.replace_in_log(line)
    for secret in (
        "fake-query-0005",
        "fake-bearer-0001",
        "fake-xapikey-0002",
        "sk-test-shape",
        "fake-env-acme-4411",
    ):
        assert secret not in shown
    assert "?key=<redacted>&x=1" in shown and "Authorization: Bearer <redacted>" in shown
    assert (
        RULES.replace_in_log("cassette summary: 1 hits, 0 misses")
        == "cassette summary: 1 hits, 0 misses"
    )
    quoted = r"body: {\"client_secret\": \"plainsecretvalue123\"}"  # JSON inside a repr
    assert RULES.replace_in_log(quoted) == rf"body: {{\"client_secret\": \"{REDACTED}\"}}"


def test_a_live_requests_own_secrets_come_from_its_headers_and_its_query():
    """What a flow knows besides the rules: the key after Bearer, a secret query parameter's
    value (Azure's ``?api-key=`` on a Realtime URL); ordinary parameters are no secret."""
    own = exchange.own_secrets(
        [("Authorization", "Bearer fake-bearer-7001"), ("Content-Type", "application/json")],
        "api-version=2025-04-01&api-key=fake-azure-7002&deployment=gpt",
        RULES,
    )
    assert sorted(own) == ["fake-azure-7002", "fake-bearer-7001"]


NAMES = st.sampled_from(
    [
        "api_key",
        "apiKey",
        "API-KEY",
        "_api_key",
        "password_",
        "api_\u212aey",
        "client_secret",
        "clientSecret",
        "Authorization",
        "x-api-key",
        "team_ref",
        "password",
        "role",
        "content",
        "token",
        "key",
        "secrets",
        "passwords",
    ]
)
STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "fake-env-acme-4411",
            "xx fake-env-hf-5522 yy",
            "sk-test-abcdefghijklmnopq",
            "line\nsk-test-abcdefghijklmnopq",
            "Bearer\tabcdefghijklmnopqrstu",
            "Bearer abcdefghijklmnopqrstu",
            base64.b64encode(b"fake-env-acme-4411").decode(),
            "AIza" + "x" * 35,
            "ghp_" + "a" * 36,
            "AKIAABCDEFGHIJKLMNOP",
            "hello world",
        ]
    ),
)
JSON = st.recursive(
    st.one_of(STRINGS, st.integers(-(2**63), 2**63 - 1), st.none()),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(NAMES, st.text(max_size=5)), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_the_one_scan_says_yes_whenever_matching_would_change_the_body(value):
    """``might_hold`` lets the common case skip the walk: it must never skip a change, whether
    the body was written with non-ASCII text as it is (orjson) or escaped (``json.dumps``)."""
    if redact.json_for_matching(value, RULES, []) != value:
        assert RULES.might_hold(orjson.dumps(value))
        assert RULES.might_hold(json.dumps(value).encode())


def test_a_key_or_value_written_with_json_escapes_is_still_found():
    """The one-scan shortcut reads raw bytes; a JSON escape must send the body to the walk."""
    escaped_key = key_of(
        "POST",
        "https://h/v1/x",
        "application/json",
        b'{"api\\u005fkey":"plainsecretvalue123","m":1}',
    )
    assert escaped_key.body == {"m": 1}
    rules = Secrets.from_settings([], [], {"ACME_API_KEY": "abc/defghijkl"})
    escaped_value = key_of(
        "POST", "https://h/v1/x", "application/json", b'{"q":"say abc\\/defghijkl"}', secrets=rules
    )
    assert escaped_value.body == {"q": f"say {REDACTED}"}
    assert (
        RULES.replace_in_log('{"api_key": "plainsecretvalue123"}') == f'{{"api_key": "{REDACTED}"}}'
    )
    # escaped non-ASCII text (json.dumps's default) holds no key or shape: no walk for it ...
    assert not RULES.might_hold(b'{"messages": [{"content": "caf\\u00e9 \\u4f60\\u597d"}]}')
    # ... and a known value written so is still found, whichever case its hex digits take
    umlaut = Secrets.from_settings([], [], {"ACME_API_KEY": "p\u00e4sswort-geheim-1"})
    for body in (b'{"q": "p\\u00e4sswort-geheim-1"}', b'{"q": "p\\u00E4sswort-geheim-1"}'):
        assert key_of("POST", "https://h/v1/x", "application/json", body, secrets=umlaut).body == {
            "q": REDACTED
        }, body


def test_a_scan_remembered_is_the_answer_of_the_rules_asked_and_the_memory_stays_bounded():
    """``might_hold`` remembers its answers for short texts (a request's path is asked twice,
    and again by the next request): rules that also know a flow's own value answer for
    themselves, never with the answer of the rules they came from, and a proxy that sees ever
    new paths keeps a bounded number of answers, none for a long text."""
    rules = Secrets()
    path = "/v1/files/fake-own-value-1040/content"
    assert not rules.might_hold(path)
    own = rules.with_values(["fake-own-value-1040"])
    assert own.might_hold(path) and own.might_hold(path.encode())
    assert not rules.might_hold(path)
    assert own.replace(path)[0] == f"/v1/files/{REDACTED}/content"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            rules.might_hold(f"/v1/threads/thread_{i:040d}/messages")
        for i in range(300):  # a long text's answer is not kept at all: each would hold 10 kB
            rules.might_hold(f"/v1/files/{i:010000d}")
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, f"{kept:,} bytes kept after 50,000 distinct paths and 300 long ones"


def test_a_header_value_that_is_not_utf8_is_found_and_replaced_everywhere():
    """mitmproxy hands such bytes over as surrogate escapes; they are a value like any other."""
    value = b"fake-latin1-\xe9\xff-1023".decode("utf-8", "surrogateescape")
    rules = RULES.with_values(exchange.header_values([("api-key", value)], RULES))
    rec = Recording(
        RecordedRequest(
            "POST", "https://h/v1/x", {"api-key": value}, Body("json", {"echo": f"got {value}"})
        ),
        [
            RecordedResponse(
                200, [["content-type", "application/json"]], body=Body("json", {"echo": value})
            )
        ],
    )
    scrubbed, findings = redact.scrub(rec, rules)
    assert "fake-latin1" not in repr(scrubbed) and findings
    assert rules.might_hold(b"raw fake-latin1-\xe9\xff-1023 bytes")  # as on the wire


def test_a_shape_after_an_escape_a_key_with_edge_separators_and_an_encoded_shape_are_found():
    """What the one scan of raw bytes once let through: a key after a JSON-escaped line break
    (``\\nsk-...``, also in a stream's raw event text), a key name with a leading or trailing
    ``_``, a shape percent-encoded in the query. Each is scrubbed, and the scrubbed recording
    still matches the live request it came from."""
    key = "sk-abcdefghijklmnopqrstu1"
    url = "https://h/v1/x?auth=Bearer%20abcdefghijklmnopqrst"
    body = {"t": f"x\n{key}", "_api_key": "hunter2hunter2", "u": "a/b"}
    rec = Recording(
        RecordedRequest("POST", url, {"content-type": "application/json"}, Body("json", body)),
        [
            RecordedResponse(
                200,
                [["content-type", "text/event-stream"]],
                stream=Stream(
                    "sse", [Event(data=Unparsed(orjson.dumps({"c": f"\n{key}"}).decode()))]
                ),
            )
        ],
    )
    scrubbed, findings = redact.scrub(rec, Secrets())
    shown = repr(scrubbed)
    assert key not in shown and "hunter2hunter2" not in shown
    assert "abcdefghijklmnopqrst" not in shown
    assert len(findings) == 4
    live = key_of(
        "POST",
        url,
        "application/json",
        b'{"t": "x\\n' + key.encode() + b'", "_api_key": "hunter2hunter2", "u": "a\\/b"}',
    )
    assert live == recorded_key(scrubbed.request)


def test_a_secret_objects_value_is_replaced_and_a_schema_is_left_alone():
    """The Realtime API's ``{"client_secret": {"value": "ek_...", "expires_at": ...}}``: the
    object under a secret name holds its secret in ``value`` (its other fields are kept); a JSON
    schema's ``"password": {"type": "string"}`` stays as it is."""
    secret = "opaque-minted-secret-0042"  # no known shape: only its place says it is one
    body = {
        "client_secret": {"value": secret, "expires_at": 1764000000},
        "schema": {"properties": {"password": {"type": "string", "minLength": 8}}},
    }
    rec = Recording(
        RecordedRequest("POST", "https://api.openai.com/v1/realtime/sessions"),
        [RecordedResponse(200, body=Body("json", body))],
    )
    scrubbed, findings = redact.scrub(rec, Secrets())
    out = scrubbed.responses[0].body.value
    assert out["client_secret"] == {"value": REDACTED, "expires_at": 1764000000}
    assert out["schema"] == body["schema"]
    assert [f.path for f in findings] == ["responses[0].body.client_secret.value"]
