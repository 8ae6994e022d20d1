"""Secrets no single string shows, end to end: through a real mitmdump, the real openai and
anthropic SDKs and httpx, against a stand-in that echoes what it is sent and streams its answers
in small deltas (``tests/upstream.py``): a key cut across stream events, secrets inside JSON
that is itself a string, cloud credentials, key shapes, and a test id.

Every placement has its own fake secret. Each is searched for, in the forms a copy of it may
take, in every byte and every path name under the cassette folder, in the text each stream's
events spell together (joined here from the files as plain JSON), in ``cassette text``, and in
the proxy's output; then the requests are replayed with the stand-in stopped, and each answer
must be what was recorded with the secrets replaced, event for event.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import anthropic
import httpx
import openai
import orjson

from tests.conftest import CASSETTE, counted, sdk_http_client
from tests.fake_keys import FAKES, HEX, rep
from tests.on_disk import spelled_texts, with_replaced
from tests.upstream import FakeUpstreamServer

SHAPED = dict(FAKES)
CREDENTIAL = "AKIATESTFAKE00000000/20260101/us-east-1/s3/aws4_request"
PLACED = {
    # a key cut across stream events
    "split_bearer": "fake-split-bearer-2001",  # the SDK's key, streamed back in 5-char deltas
    "split_proj": SHAPED["an OpenAI project, service or admin key"],  # in 6-char deltas
    # inside JSON that is itself a string
    "tool_args": "fake-tool-api-key-2003",  # a streamed tool call's {"api_key": ...}
    "history_pw": "fake-history-pw-2004",  # {"password": ...} in a request's tool-call history
    # cloud credentials
    "amz_header": "fake/amz+session=token-2005",  # x-amz-security-token, echoed
    "amz_signature": rep(HEX[::-1], 64),  # ?X-Amz-Signature=
    "amz_query_token": "fake-amz-query-token-2007",  # ?X-Amz-Security-Token=
    "amz_credential": CREDENTIAL,  # ?X-Amz-Credential=
    "azure_sig": "fakeAzureSasSignature2009+abc/def=",  # ?sig= (a SAS token)
    "google_at": "fake-google-access-2010",  # ?access_token=
    # key shapes, in a prompt and streamed back in 4-char deltas
    "groq": SHAPED["a Groq key"],
    "xai": SHAPED["an xAI key"],
    "perplexity": SHAPED["a Perplexity key"],
    "replicate": SHAPED["a Replicate token"],
    "nvidia": SHAPED["an NVIDIA key"],
    "google_oauth": SHAPED["a Google OAuth access token"],
    "slack_app": SHAPED["a Slack app token"],
    # a name the proxy makes: a test id holding a key
    "test_id": "sk-test-in-a-test-id-2011-abcdefgh",
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]


def every_form(secret: str) -> list[str]:
    """The secret and the forms a copy of it may take."""
    raw = secret.encode()
    return [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret).replace("/", "\\/")[1:-1],
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


def exchange(proxy: Any, base: str) -> dict[str, Any]:
    """Every request, made the same way while recording and in replay; what came back: the
    text of each stream, and how many events carried it."""
    p = PLACED
    ca = ssl.create_default_context(cafile=str(proxy.ca_cert))

    def sdk(key: str, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=key,
            base_url=base + "/v1",
            max_retries=0,
            timeout=20,
            http_client=sdk_http_client(proxy),
            default_headers=headers,
        )

    out: dict[str, Any] = {}
    # the SDK's key echoed in 5-character deltas; copies of it in a prompt, encoded
    chunks = list(
        sdk(p["split_bearer"], **{"x-fake-delta-size": "5"}).chat.completions.create(
            model="echo-auth",
            stream=True,
            messages=[{"role": "user", "content": f"b64 {every_form(p['split_bearer'])[5]}"}],
        )
    )
    out["bearer"] = ["".join(c.choices[0].delta.content or "" for c in chunks), len(chunks)]
    # an sk-proj- key, answered in 6-character deltas (anthropic's event stream)
    claude = anthropic.Anthropic(
        api_key="fake-anthropic-key-2012",
        base_url=base,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(proxy=proxy.url, verify=ca),
        default_headers={"x-fake-delta-size": "6"},
    )
    with claude.messages.stream(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": f"repeat {p['split_proj']}"}],
    ) as stream:
        events = [e.type for e in stream]
    out["claude"] = [stream.get_final_message().content[0].text, events]
    # a tool call's arguments {"api_key": ...}, streamed in 7-character pieces
    args = json.dumps({"city": "Paris", "api_key": p["tool_args"]})
    calls = list(
        sdk("sk-test-tools-0123456789", **{"x-fake-tool-args": args}).chat.completions.create(
            model="gpt-4o", stream=True, tools=TOOLS, messages=[{"role": "user", "content": "go"}]
        )
    )
    pieces = [
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in calls
        if c.choices and c.choices[0].delta.tool_calls
    ]
    out["tool"] = ["".join(pieces), len(calls)]
    # {"password": ...} in the tool-call history of a later request
    history = sdk("sk-test-tools-0123456789").chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "log in"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "login",
                            "arguments": json.dumps({"user": "me", "password": p["history_pw"]}),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "logged in"},
        ],
    )
    out["history"] = history.choices[0].message.content
    # key shapes in a prompt, streamed back in 4-character deltas
    shapes = " ".join(p[k] for k in SHAPE_PLACES)
    chunks = list(
        sdk("sk-test-shapes-0123456789", **{"x-fake-delta-size": "4"}).chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": f"say {shapes}"}]
        )
    )
    out["shapes"] = ["".join(c.choices[0].delta.content or "" for c in chunks), len(chunks)]
    # cloud credentials: a pre-signed URL's query, the session token header; a test id
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": p["amz_credential"],
        "X-Amz-Signature": p["amz_signature"],
        "X-Amz-Security-Token": p["amz_query_token"],
        "sig": p["azure_sig"],
        "access_token": p["google_at"],
    }
    with httpx.Client(proxy=proxy.url, timeout=20, verify=ca) as client:
        echo = client.post(
            base + "/echo?" + urlencode(query),
            headers={"x-amz-security-token": p["amz_header"], "x-cassette-test-id": p["test_id"]},
            json={"note": f"token copy {quote(p['amz_header'], safe='')}"},
        )
    assert echo.status_code == 200, echo.text
    out["echo"] = echo.json()
    return out


SHAPE_PLACES = ("groq", "xai", "perplexity", "replicate", "nvidia", "google_oauth", "slack_app")


def redacted(value: Any) -> Any:
    """What a recorded answer must be in replay: each secret replaced, nothing else."""
    return with_replaced(value, (f for secret in PLACED.values() for f in every_form(secret)))
    if isinstance(value, list):
        return [redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    return value


def leaks(cassettes: Path, output: str) -> dict[str, list[str]]:
    """Where each placed secret, in any of its forms, can be read: a file's bytes, a path
    name, the text a stream spells, ``cassette text``, the proxy's output."""
    found: dict[str, list[str]] = {}
    files = [p for p in cassettes.rglob("*") if p.is_file()]
    texts = {
        p: subprocess.run(
            [CASSETTE, "text", str(p)], capture_output=True, text=True, timeout=60
        ).stdout
        for p in files
    }
    raws = {p: p.read_text() for p in files}
    spells = {p: spelled_texts(orjson.loads(raw)) for p, raw in raws.items()}
    for name, secret in PLACED.items():
        for form in every_form(secret):
            for path in files:
                where = [
                    ("bytes", form in raws[path]),
                    ("path", form in str(path.relative_to(cassettes))),
                    ("spelled", any(form in s for s in spells[path])),
                    ("cassette text", form in texts[path]),
                ]
                found.setdefault(name, []).extend(f"{w}: {path.name}" for w, hit in where if hit)
            if form in output:
                found.setdefault(name, []).append("proxy output")
    return {k: sorted(set(v)) for k, v in found.items() if v}


def test_secrets_split_across_events_inside_strings_cloud_and_shaped_never_reach_disk(
    tmp_path, upstream_cert, proxies
):
    upstream = FakeUpstreamServer(upstream_cert).start()
    cassettes = tmp_path / "c"
    try:
        record = proxies(cassettes, "record")
        recorded = exchange(record, upstream.base_url)
        record_log = record.stop()
    finally:
        upstream.stop()
    # the stand-in did send the secrets back, cut where the test asked
    assert PLACED["split_bearer"] in recorded["bearer"][0]
    assert PLACED["split_proj"] in recorded["claude"][0]
    assert json.loads(recorded["tool"][0])["api_key"] == PLACED["tool_args"]
    assert all(PLACED[k] in recorded["shapes"][0] for k in SHAPE_PLACES)
    assert f"X-Amz-Signature was {PLACED['amz_signature']}" in recorded["echo"]["query"]
    assert counted(record_log, "recorded", "misses") == (6, 0)

    assert leaks(cassettes, record_log) == {}
    verify = subprocess.run(
        [CASSETTE, "verify", "--dir", str(cassettes)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout

    replay = proxies(cassettes, "replay")
    replayed = exchange(replay, upstream.base_url)  # the stand-in is stopped
    replay_log = replay.stop()
    assert counted(replay_log, "hits", "misses") == (6, 0)
    for name in ("bearer", "claude", "tool", "history", "shapes", "echo"):
        assert replayed[name] == redacted(recorded[name]), name
    assert replayed["bearer"][0].endswith("authorization said Bearer <redacted>)")
    assert json.loads(replayed["tool"][0]) == {"city": "Paris", "api_key": "<redacted>"}
    assert [n for n, secret in PLACED.items() for f in every_form(secret) if f in replay_log] == []
