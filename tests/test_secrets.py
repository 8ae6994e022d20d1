"""No secret on disk nor in the proxy's output, through a real mitmdump, the real openai SDK and
httpx, against an upstream that reflects the caller's secrets as real gateways and token
endpoints do (``tests/upstream.py``: ``/echo``, ``/oauth/token``, the ``echo-auth`` model).

Each place gets its own fake secret, none of them shaped like a key but one, so that a layer
that fails is not hidden behind another.
"""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import openai

from tests.conftest import CASSETTE, sdk_http_client
from tests.on_disk import with_replaced

SECRETS = {
    "sse_bearer": "fake-sse-bearer-1001",  # the SDK's key, echoed in an SSE event and comment
    "json_bearer": "fake-json-bearer-1002",  # the SDK's key, echoed in a JSON body
    "nested_cs": "fake-nested-cs-1003",  # {"auth": {"client_secret": ...}}
    "nested_pw": "fake-nested-pw-1004",  # {"credentials": [{"password": ...}]}
    "form_cs": "fake-form-cs-1005",  # OAuth refresh: form client_secret
    "form_rt": "fake-form-rt-1006",  # ... and refresh_token
    "resp_at": "fake-resp-at-1007",  # its answer: access_token
    "resp_id": "fake-resp-id-1008",  # ... id_token
    "resp_rt": "fake-resp-rt-1009",  # ... a new refresh_token
    "query_key": "fake-query-key-1010",  # ?key=, echoed in the body
    "x_api_key": "fake-x-api-key-1011",  # x-api-key, echoed in the body
    "userinfo": "fake-userinfo-1012",  # https://me:...@host (httpx sends it as Basic auth)
    "team": "fake-team-token-1013",  # a header named in cassette_redact_headers, echoed
    "env": "fake-env-value-1014",  # $ACME_API_KEY of the proxy, in a prompt
    "b64": "fake-b64-source-1015",  # x-goog-api-key, and a base64 copy of it in a body
    "shape": "sk-test-shape-1016-abcdefghij",  # key-shaped, in a prompt
    "multipart": "fake-multipart-1017",  # api_key field of an upload
    "azure": "fake-azure-api-key-1018",  # api-key (Azure OpenAI), echoed in the body
    "cookie": "fake-session-cookie-1022",  # a session cookie the upstream sets
    # only in malformed requests, which mitmproxy itself logs as they came
    "log_query": "fake-log-query-1019",
    "log_header": "fake-log-header-1020",
    "log_userinfo": "fake-log-userinfo-1021",
}


def forms(secret: str) -> list[bytes]:
    """The secret and the forms a copy of it may take."""
    raw = secret.encode()
    return [
        raw,
        quote(secret, safe="").encode(),
        quote_plus(secret).encode(),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        base64.b64encode(b"me:" + raw).rstrip(b"="),
    ]


def exchange(proxy: Any, base: str) -> dict[str, Any]:
    """Every request, made the same way while recording and in replay; what came back."""
    s = SECRETS

    def sdk(key: str) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=key,
            base_url=base + "/v1",
            max_retries=0,
            timeout=20,
            http_client=sdk_http_client(proxy),
        )

    out: dict[str, Any] = {}
    stream = sdk(s["sse_bearer"]).chat.completions.create(
        model="echo-auth",
        stream=True,
        messages=[{"role": "user", "content": f"use {s['env']} and {s['shape']}"}],
    )
    out["sse"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    chat = sdk(s["json_bearer"]).chat.completions.create(
        model="echo-auth",
        messages=[{"role": "user", "content": "hello"}],
        extra_body={
            "auth": {"client_secret": s["nested_cs"]},
            "credentials": [{"password": s["nested_pw"]}],
        },
    )
    out["json"] = [chat.choices[0].message.content, chat.model_extra["echo_request"]]
    ca = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, timeout=20, verify=ca) as client:
        oauth = client.post(
            base + "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "client_secret": s["form_cs"],
                "refresh_token": s["form_rt"],
            },
            headers={
                "x-fake-access": s["resp_at"],
                "x-fake-id": s["resp_id"],
                "x-fake-refresh": s["resp_rt"],
            },
        )
        echo = client.get(
            base.replace("://", f"://me:{s['userinfo']}@") + f"/echo?key={s['query_key']}&alt=sse",
            headers={
                "x-api-key": s["x_api_key"],
                "x-team-token": s["team"],
                "x-fake-cookie": s["cookie"],
            },
        )
        copy = client.post(
            base + "/echo",
            headers={"x-goog-api-key": s["b64"], "api-key": s["azure"]},
            json={"note": base64.b64encode(s["b64"].encode()).decode()},
        )
        upload = client.post(
            base + "/v1/files",
            data={"api_key": s["multipart"], "purpose": "x"},
            files={"file": ("f.txt", b"data", "text/plain")},
        )
    for name, r in (("oauth", oauth), ("echo", echo), ("copy", copy), ("upload", upload)):
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        out[name] = r.json()
    out["set-cookie"] = echo.headers.get("set-cookie")
    return out


def malformed_requests(proxy: Any, base: str) -> None:
    """Requests mitmproxy refuses and logs as they came: a bad request line, user info in an
    absolute URL, headers cut off."""
    s = SECRETS
    target = base.replace("https://", "http://")
    for raw in (
        f"GET {target}/echo?key={s['log_query']} HTTP/1.1 junk\r\n\r\n",
        f"GET {target.replace('://', f'://me:{s["log_userinfo"]}@')}/echo HTTP/1.1\r\n\r\n",
        f"POST {target}/echo HTTP/1.1\r\nAuthorization: Bearer {s['log_header']}\r\n",
    ):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(raw.encode())
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass


def redacted(value: Any) -> Any:
    """What a recorded answer must look like in replay: each secret replaced, nothing else."""
    return with_replaced(value, (f.decode() for secret in SECRETS.values() for f in forms(secret)))
    if isinstance(value, list):
        return [redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    return value


def test_a_secret_in_every_place_never_reaches_disk_nor_the_log(
    tmp_path, upstream, proxies, monkeypatch
):
    monkeypatch.setenv("ACME_API_KEY", SECRETS["env"])  # the proxy's environment
    cassettes = tmp_path / "c"
    options = {"cassette_redact_headers": "x-team-token"}
    record = proxies(cassettes, "record", **options)
    recorded = exchange(record, upstream.base_url)
    malformed_requests(record, upstream.base_url)
    # the upstream did reflect them: the answers carry the secrets the proxy must not keep
    assert SECRETS["sse_bearer"] in recorded["sse"] and SECRETS["env"] in recorded["sse"]
    assert recorded["oauth"]["access_token"] == SECRETS["resp_at"]
    assert f"key was {SECRETS['query_key']}" in recorded["echo"]["query"]
    assert SECRETS["cookie"] in recorded["set-cookie"]  # the live client got it untouched
    record_log = record.stop()
    assert "cassette summary: 6 recorded" in record_log

    files = [p for p in cassettes.rglob("*") if p.is_file()]
    assert len(files) == 6
    for path in files:
        raw = path.read_bytes()
        for name, secret in SECRETS.items():
            for form in forms(secret):
                assert form not in raw, (name, form, path)
    for name, secret in SECRETS.items():
        for form in forms(secret):
            assert form.decode() not in record_log, (name, form)
    assert (
        subprocess.run(
            [CASSETTE, "verify", "--dir", str(cassettes)], capture_output=True, timeout=60
        ).returncode
        == 0
    )

    hits = upstream.state.hits
    replay = proxies(cassettes, "replay", **options)
    replayed = exchange(replay, upstream.base_url)
    replay_log = replay.stop()
    assert "cassette summary: 6 hits, 0 misses, 0 unused recordings (of 6)" in replay_log
    assert upstream.state.hits == hits
    for name in ("sse", "json", "oauth", "echo", "copy", "upload"):
        assert replayed[name] == redacted(recorded[name]), name
    assert replayed["oauth"]["access_token"] == "<redacted>"
    assert replayed["json"][1]["auth"] == {"client_secret": "<redacted>"}
    assert replayed["set-cookie"] == "<redacted>"
    for name, secret in SECRETS.items():
        assert secret not in replay_log, name


def test_mitmdump_showing_request_headers_shows_none_of_their_secrets(
    tmp_path, http_upstream, proxies
):
    """At ``flow_detail=2`` mitmdump prints each request's headers, after every addon's hooks:
    a request's secret headers (a repeated one too) read ``<redacted>`` there, in record and in
    replay, and the others as they were sent."""
    bearer, first, second = "fake-flow-auth-1030", "fake-flow-xkey-1031", "fake-flow-xkey-1032"
    headers = [
        ("authorization", f"Bearer {bearer}"),
        ("x-api-key", first),
        ("X-Api-Key", second),
        ("x-trace", "kept-as-sent"),
    ]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "headers shown"}]}
    cassettes = tmp_path / "c"
    logs = []
    for mode in ("record", "replay"):
        proxy = proxies(cassettes, mode, flow_detail="2")
        with httpx.Client(proxy=proxy.url, timeout=30) as client:
            r = client.post(
                http_upstream.base_url + "/v1/chat/completions", json=body, headers=headers
            )
        assert r.status_code == 200, r.text[:300]
        logs.append(proxy.stop())
    for mode, log in zip(("record", "replay"), logs):
        for secret in (bearer, first, second):
            assert secret not in log, (mode, secret)
        shown = log.lower()
        assert "authorization: <redacted>" in shown, mode
        assert shown.count("x-api-key: <redacted>") == 2, mode
        assert "x-trace: kept-as-sent" in shown, mode
    assert "1 hits, 0 misses" in logs[1]
