"""Fail closed: in replay nothing reaches the network, whatever goes wrong inside the proxy.

Real mitmdump processes, real clients (httpx, the openai SDK), and loopback upstreams, plain and
TLS, that count every TCP connection they accept: a replay must leave the count where it was.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import sys
import threading
import zlib
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_addon import formats
from proxy_addon.runner.process import start_proxy
from proxy_addon.serving.pacer import TOKEN_HEADER, Pacer
from proxy_addon.store.layout import iter_cassette_files
from proxy_addon.store.writer import BackgroundWriter
from proxy_addon.summary import Counters
from tests.conftest import (
    CASSETTE,
    FAULTS,
    counted,
    gzip_bomb,
    openai_client,
    record_prompts,
)
from tests.upstream import FakeUpstreamServer

JSON = {"content-type": "application/json"}


def hostile() -> list[tuple[str, str, str, dict[str, str | bytes], bytes]]:
    """(kind, method, path, headers, body) of 27 hostile request kinds."""
    deep = {n: b"[" * n + b"]" * n for n in (300, 600, 1000, 100_000)}
    form = {"content-type": "application/x-www-form-urlencoded"}
    chat = "/v1/chat/completions"
    kinds = [(f"JSON {n} deep", "POST", chat, JSON, body) for n, body in deep.items()]
    kinds += [
        ("objects 400 deep", "POST", chat, JSON, b'{"a":' * 400 + b"1" + b"}" * 400),
        ("invalid UTF-8", "POST", chat, JSON, b'{"model": "\xff\xfe\xc3\x28"}'),
        ("lone surrogate escapes", "POST", chat, JSON, b'{"model": "\\ud800\\udfff\\ud800"}'),
        ("1e400", "POST", chat, JSON, b'{"temperature": 1e400}'),
        ("5,000-digit number", "POST", chat, JSON, b'{"n": ' + b"9" * 5000 + b"}"),
        ("NaN", "POST", chat, JSON, b'{"temperature": NaN}'),
        ("duplicate keys", "POST", chat, JSON, b'{"model": "a", "model": "b"}'),
        ("raw NUL and control bytes", "POST", chat, JSON, b'{"model": "a\x00\x01\x1bb"}'),
        ("gzip garbage", "POST", chat, {**JSON, "content-encoding": "gzip"}, b"not gzip at all"),
        ("30 MB gzip bomb", "POST", chat, {**JSON, "content-encoding": "gzip"}, gzip_bomb(30)),
        (
            "broken deflate",
            "POST",
            chat,
            {**JSON, "content-encoding": "deflate"},
            zlib.compress(b'{"model": "x"}')[:-6] + b"\x00\x01",
        ),
        ("unknown encoding", "POST", chat, {**JSON, "content-encoding": "xyz"}, b"{}"),
        ("malformed form", "POST", chat, form, b"%zz=%%&=&a=\xff\xfe&&=="),
        (
            "malformed multipart",
            "POST",
            "/v1/files",
            {"content-type": "multipart/form-data; boundary=xyz"},
            b"--xyz\r\nContent-Disposition: garbage\r\n\r\n\xff\x00",
        ),
        (
            "multipart without boundary",
            "POST",
            "/v1/files",
            {"content-type": "multipart/form-data"},
            b"--\r\n\r\n",
        ),
        ("60 kB header", "POST", chat, {**JSON, "x-long": "a" * 60_000}, b"{}"),
        ("../ in the path", "POST", "/v1/../../../../etc/passwd", JSON, b"{}"),
        ("%00 in the path", "POST", "/v1/a%00b/chat/completions", JSON, b"{}"),
        (
            "hostile test id",
            "POST",
            chat,
            {**JSON, "x-cassette-test-id": "../../../etc/passwd\x7f::[é]".encode()},
            b"{}",
        ),
        (
            "20,000 query parameters",
            "GET",
            "/v1/models?" + "&".join(f"p{i}={i}" for i in range(20_000)),
            {},
            b"",
        ),
        ("PROPFIND", "PROPFIND", "/v1/models", {}, b""),
        ("DELETE", "DELETE", "/v1/files/file-1", {}, b""),
        ("8 MB body", "POST", chat, JSON, b'{"input": "' + b"x" * (8 << 20) + b'"}'),
    ]
    assert len(kinds) == 27
    return kinds


def send(
    proxy, base: str, method: str, path: str, headers: dict[str, str | bytes], body: bytes
) -> int:
    """The status the proxy answered. Sent with http.client, which sends the request line as
    given (httpx would resolve ``..`` and refuses a 200 kB query): to an ``http://`` base as
    an absolute-form request through the proxy, to an ``https://`` base inside a CONNECT
    tunnel, trusting the proxy's CA."""
    scheme, _, hostport = base.partition("://")
    host, port = hostport.rsplit(":", 1)
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1",
            proxy.port,
            timeout=60,
            context=ssl.create_default_context(cafile=str(proxy.ca_cert)),
        )
        conn.set_tunnel(host, int(port))
        target = path
    else:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
        target = base + path
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def tls_upstream(upstream_cert):
    server = FakeUpstreamServer(upstream_cert).start()
    yield server
    server.stop()


@pytest.fixture
def recorded(tmp_path: Path, http_upstream, proxies) -> Path:
    """A cassette directory holding one recorded chat answer ("hit")."""
    cassettes = tmp_path / "cassettes"
    record_prompts(proxies, cassettes, http_upstream, "hit")
    return cassettes


def _client(proxy) -> httpx.Client:
    return httpx.Client(
        proxy=proxy.url, timeout=60, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
    )


@pytest.mark.slow
def test_hostile_requests_in_replay_reach_no_upstream_on_either_route(
    recorded, http_upstream, tls_upstream, proxies
):
    """27 hostile kinds, each sent as an absolute-form request through the proxy and inside a
    CONNECT tunnel (TLS): every one gets an HTTP error from the proxy, neither upstream
    accepts a single connection, and a recorded request still replays afterwards."""
    before = (http_upstream.state.connections, tls_upstream.state.connections)
    proxy = proxies(recorded, "replay")
    answers: dict[tuple[str, str], int] = {}
    for kind, method, path, headers, body in hostile():
        for route, upstream in (("absolute-form", http_upstream), ("CONNECT", tls_upstream)):
            answers[(kind, route)] = send(proxy, upstream.base_url, method, path, headers, body)
    ok = openai_client(proxy, http_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hit"}]
    )
    log = proxy.stop()
    assert not {k: s for k, s in answers.items() if s < 400}, answers
    assert (http_upstream.state.connections, tls_upstream.state.connections) == before
    assert ok.choices[0].message.content == "Answer 1 to: hit"
    assert "Addon error" not in log  # each answered by design: no fault, no refused connection
    assert counted(log, "hits", "misses", "internal_errors", "refused") == (1, 54, 0, 0)


@pytest.fixture(scope="module")
def shared_replay(tmp_path_factory, confdir, upstream_cert):
    """One replay proxy over an empty directory for many requests, and two upstreams (plain
    and TLS) that no request reaches."""
    cassettes = tmp_path_factory.mktemp("shared-replay")
    plain, tls = FakeUpstreamServer().start(), FakeUpstreamServer(upstream_cert).start()
    proxy = start_proxy(cassettes, "replay", confdir=confdir)
    yield proxy, plain, tls
    proxy.stop()
    plain.stop()
    tls.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(
        ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "X-ODD"]
    ),
    path=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="#"),
        max_size=40,
    ),
    headers=st.dictionaries(
        st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        max_size=4,
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "application/octet-stream",
            "",
        ]
    ),
    encoding=st.sampled_from(["", "gzip", "deflate", "br", "zstd", "identity", "xyz"]),
    body=st.binary(max_size=3000)
    | st.builds(
        orjson.dumps,
        st.recursive(
            st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
            max_leaves=30,
        ),
    ),
    tls=st.booleans(),
)
def test_any_request_in_replay_is_answered_and_reaches_no_upstream(
    shared_replay, method, path, headers, content_type, encoding, body, tls
):
    proxy, http_upstream, tls_upstream = shared_replay
    upstream = tls_upstream if tls else http_upstream
    sent = {
        **headers,
        **({"content-type": content_type} if content_type else {}),
        **({"content-encoding": encoding} if encoding else {}),
    }
    quoted = "/" + "".join(
        c
        if c.isascii() and c.isalnum() or c in "/?=&.-_"
        else "".join(f"%{b:02X}" for b in c.encode())
        for c in path
    )
    status = send(proxy, upstream.base_url, method, quoted, sent, body)
    assert 400 <= status <= 599  # nothing is recorded: every answer is an error, none silence
    assert http_upstream.state.connections == tls_upstream.state.connections == 0


def test_a_hook_that_raises_in_replay_answers_500_and_forwards_nothing(
    recorded, http_upstream, tls_upstream, proxies
):
    before = (http_upstream.state.connections, tls_upstream.state.connections)
    proxy = proxies(
        recorded, "replay", extra_scripts=(FAULTS,), fault_hooks="cassette_replayhooks.request"
    )
    key = "fake-fault-key-8001"  # quoted by the fault's message, and no key's shape
    with _client(proxy) as client:
        for upstream in (http_upstream, tls_upstream):
            r = client.post(
                upstream.base_url + "/fault/v1/chat/completions",
                json={"x": 1},
                headers={"authorization": f"Bearer {key}"},
            )
            assert r.status_code == 500
            error = r.json()["error"]
            assert error["type"] == "cassette_internal_error"
            assert (
                "RuntimeError: injected fault in cassette_replayhooks.request (Bearer <redacted>)"
                in error["message"]
                and key not in r.text
            )
            assert "/fault/v1/chat/completions" in error["message"]
            assert "nothing was forwarded" in error["message"]
        ok = openai_client(proxy, http_upstream).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hit"}]
        )
    log = proxy.stop()
    assert ok.choices[0].message.content == "Answer 1 to: hit"
    assert (http_upstream.state.connections, tls_upstream.state.connections) == before
    assert counted(log, "hits", "internal_errors", "refused") == (1, 2, 0)
    assert "Traceback" in log and key not in log  # the traceback printed, its text filtered


def test_the_connection_guard_stops_a_flow_the_hooks_let_through(
    recorded, http_upstream, tls_upstream, proxies
):
    """A hook that left a request unanswered (simulated: a later addon removes our answer):
    mitmproxy would forward it; the guard refuses the connection with a 502 naming why."""
    before = (http_upstream.state.connections, tls_upstream.state.connections)
    proxy = proxies(recorded, "replay", extra_scripts=(FAULTS,), fault_drop_response="true")
    with _client(proxy) as client:
        for upstream in (http_upstream, tls_upstream):
            r = client.post(upstream.base_url + "/drop/v1/chat/completions", json={"x": 1})
            assert r.status_code == 502
            assert "no upstream connection is made in replay mode" in r.text
    log = proxy.stop()
    assert (http_upstream.state.connections, tls_upstream.state.connections) == before
    assert "2 upstream connections refused (replay)" in log


def test_a_raw_tcp_tunnel_in_replay_is_refused(recorded, http_upstream, proxies):
    """A client that is not HTTP, tunnelling through HTTPS_PROXY (CONNECT, then its own bytes):
    mitmproxy would pass it to the network; a replay refuses it."""
    before = http_upstream.state.connections
    proxy = proxies(recorded, "replay")
    assert raw_tunnel(proxy.port, http_upstream.server_address[1]) == b""  # closed on it
    log = proxy.stop()
    assert http_upstream.state.connections == before
    assert "1 upstream connections refused (replay)" in log


def test_in_refresh_mode_only_a_re_recording_reaches_the_upstream(recorded, http_upstream, proxies):
    """Refresh forwards what re-records an existing recording, nothing else: a hook that raises
    before deciding is a 500 and a raw tunnel is refused, as in replay."""
    before = http_upstream.state.connections
    proxy = proxies(
        recorded, "refresh", extra_scripts=(FAULTS,), fault_hooks="cassette_replayhooks.request"
    )
    with _client(proxy) as client:
        r = client.post(http_upstream.base_url + "/fault/v1/chat/completions", json={"x": 1})
    assert r.status_code == 500
    assert "nothing was forwarded (refresh mode)" in r.json()["error"]["message"]
    assert raw_tunnel(proxy.port, http_upstream.server_address[1]) == b""
    assert http_upstream.state.connections == before
    again = openai_client(proxy, http_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hit"}]
    )
    assert again.choices[0].message.content == "Answer 2 to: hit"  # re-recorded
    log = proxy.stop()
    assert http_upstream.state.connections == before + 1
    assert counted(log, "recorded", "misses", "internal_errors", "refused") == (1, 0, 1, 1)


def raw_tunnel(proxy_port: int, target_port: int) -> bytes:
    """CONNECT through the proxy, send bytes that are neither HTTP nor TLS; what came back."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(
            f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{target_port}\r\n\r\n".encode()
        )
        assert s.recv(200).startswith(b"HTTP/1.1 200")
        s.sendall(b"\x00\x01\x02 a protocol of its own\n")
        return s.recv(200)


def test_in_record_mode_a_fault_costs_only_the_cassette(tmp_path, http_upstream, proxies):
    """Faults in the replay hook (before the flow is marked) and in the record hook (after the
    answer arrived): the client gets the live answer both times, the cassette is skipped with
    the file it would have written named, and an ordinary request is still recorded."""
    cassettes = tmp_path / "c"
    proxy = proxies(
        cassettes,
        "record",
        extra_scripts=(FAULTS,),
        fault_hooks="cassette_replayhooks.request,cassette_recordhooks.response",
    )
    url = http_upstream.base_url + "/fault/v1/chat/completions"
    with httpx.Client(proxy=proxy.url, timeout=20) as client:
        got = client.post(
            url, json={"model": "gpt-4o", "messages": [{"role": "user", "content": "live"}]}
        )
        ordinary = client.post(
            http_upstream.base_url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "kept"}]},
        )
    log = proxy.stop()
    assert got.status_code == 200
    assert got.json()["choices"][0]["message"]["content"] == "Answer 1 to: live"
    assert ordinary.json()["choices"][0]["message"]["content"] == "Answer 1 to: kept"
    # both injected hooks raised for the /fault/ request
    assert counted(log, "internal_errors") == (2,)
    [saved] = list(iter_cassette_files(cassettes))
    assert formats.load(saved).request.body.value["messages"][0]["content"] == "kept"


def test_in_record_mode_a_fault_after_marking_names_the_file_it_skips(
    tmp_path, http_upstream, proxies
):
    cassettes = tmp_path / "c"
    proxy = proxies(
        cassettes, "record", extra_scripts=(FAULTS,), fault_hooks="cassette_recordhooks.response"
    )
    with httpx.Client(proxy=proxy.url, timeout=20) as client:
        got = client.post(
            http_upstream.base_url + "/fault/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        )
    log = proxy.stop()
    assert got.json()["choices"][0]["message"]["content"] == "Answer 1 to: x"
    assert "not recording POST" in log and "it would have gone to" in log
    assert counted(log, "internal_errors", "recorded") == (1, 0)
    assert not list(iter_cassette_files(cassettes))


def test_a_stream_that_cannot_be_decoded_still_reaches_the_client(tmp_path, http_upstream, proxies):
    """The upstream garbles the fourth gzip-compressed event: the client gets every byte the
    upstream sent; the recording keeps the events before, marked as cut, with the reason."""
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    headers = {"x-fake-encoding": "gzip", "x-fake-corrupt": "3", "accept-encoding": "gzip"}
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
    with (
        httpx.Client(proxy=proxy.url, timeout=20) as client,
        client.stream(
            "POST", http_upstream.base_url + "/v1/chat/completions", json=body, headers=headers
        ) as r,
    ):
        through_proxy = b"".join(r.iter_raw())
    twin = FakeUpstreamServer().start()  # the same answer, straight from a fresh upstream
    try:
        with (
            httpx.Client(timeout=20) as direct,
            direct.stream(
                "POST", twin.base_url + "/v1/chat/completions", json=body, headers=headers
            ) as r,
        ):
            straight = b"".join(r.iter_raw())
    finally:
        twin.stop()
    log = proxy.stop()
    assert through_proxy == straight
    [path] = list(iter_cassette_files(cassettes))
    stream = formats.load(path).responses[0].stream
    assert not stream.complete and stream.cut.startswith("could not decode the stream")
    assert len(stream.events) == 3
    assert counted(log, "internal_errors") == (0,)


# -- the pieces, on their own ------------------------------------------------------------------


def test_a_write_after_the_writer_closed_is_done_at_once(tmp_path):
    done: list[tuple[Path, Exception | None]] = []
    writer = BackgroundWriter(lambda path, error: done.append((path, error)))
    writer(tmp_path / "a.json", lambda f: f.write(b"{}"))
    writer.close()
    writer(tmp_path / "b.json", lambda f: f.write(b"[]"))  # a flow finishing during shutdown
    assert done == [(tmp_path / "a.json", None), (tmp_path / "b.json", None)]
    assert (tmp_path / "b.json").read_bytes() == b"[]"


def test_counters_lose_nothing_across_threads():
    """The event loop and the writer thread both count. Threads switched every microsecond
    (Python's default is 5 ms) make a lost update likely: without the lock, tens of
    thousands of the 160,000 are lost."""
    counters = Counters()
    threads = [
        threading.Thread(target=lambda: [counters.add("recorded") for _ in range(20_000)])
        for _ in range(8)
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert counters.snapshot("record", 0, [], [], []).recorded == 160_000


def test_the_pacer_reads_chunked_bodies_forgets_dead_tokens_and_reports_faults():
    import asyncio

    from proxy_addon.bodies.sse import Event
    from proxy_addon.model import RecordedResponse, Stream

    faults: list[Exception] = []

    async def main() -> tuple[bytes, bytes, int]:
        pacer = Pacer(faults.append)
        port = await pacer.ensure_started()
        resp = RecordedResponse(
            200,
            [["content-type", "text/event-stream"]],
            stream=Stream("sse", [Event(data="hi"), Event(data="[DONE]")]),
        )
        token = pacer.register((resp, 0))
        pacer.forget(pacer.register((resp, 0)))  # its flow died before it reached the pacer
        broken = pacer.register(("not a recorded response", 0))  # type: ignore[arg-type]
        answers = []
        for t in (token, broken):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST / HTTP/1.1\r\nhost: x\r\n{TOKEN_HEADER}: {t}\r\n"
                "transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                "5\r\nhello\r\n0\r\n\r\n".encode()
            )
            answers.append(await reader.read())
            writer.close()
        pacer.close()
        return answers[0], answers[1], pacer.waiting

    answer, after_fault, waiting = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"data: hi\n\n" in answer and b"data: [DONE]\n\n" in answer
    assert waiting == 0
    # a fault while answering ends that connection (mitmproxy's 502 to the client) and is told
    assert after_fault == b"" and len(faults) == 1 and isinstance(faults[0], AttributeError)


def test_cassette_run_exits_1_when_the_proxy_refused_a_connection(recorded, http_upstream):
    import subprocess
    import sys

    script = Path(recorded.parent / "tunnel.py")
    script.write_text(
        "import os, socket, sys\n"
        "port = int(os.environ['HTTPS_PROXY'].rsplit(':', 1)[1])\n"
        "s = socket.create_connection(('127.0.0.1', port), timeout=10)\n"
        f"s.sendall(b'CONNECT 127.0.0.1:{http_upstream.server_address[1]} HTTP/1.1\\r\\n\\r\\n')\n"
        "s.recv(200); s.sendall(b'\\x00\\x01 raw'); s.recv(200)\n"
    )
    before = http_upstream.state.connections
    result = subprocess.run(
        [CASSETTE, "run", "--dir", str(recorded), "--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert counted(result.stderr, "refused") == (1,)
    assert http_upstream.state.connections == before
