"""WebSocket record and replay (the Realtime API), end to end: real mitmdump processes, the
real ``openai`` SDK's realtime client (sync and async) and a ``websockets`` client, and a
stand-in Realtime server on 127.0.0.1 (``tests/realtime.py``), over wss (CONNECT + TLS, as to
api.openai.com) and plain ws. Replays run with the stand-ins stopped and their ports held by
listeners that count every TCP connection."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from proxy_addon.cli import main
from proxy_addon.runner.process import RunningProxy, start_proxy
from proxy_addon.summary import Summary
from tests.conftest import FAKE_KEY, FAULTS, counted
from tests.realtime import (
    GIVE_A_SECRET,
    MINTED_SECRET,
    MODEL,
    SAY_MY_KEY,
    RealtimeStandIn,
    answer_for,
    binary_answer,
)
from tests.upstream import PortWatch

SYNC_TURNS = ("What is the capital of France?", "And of Italy?")
ASYNC_TURNS = ("Tell me a joke", "Another one")
# binary "audio chunks" with NUL bytes and invalid UTF-8, and one plain text message
CHUNKS = (bytes(range(256)) * 16, b"\xff\xfe\x00\x00RIFF" + bytes(1000), b"\x80" * 3)
TIMEOUT = 30  # generous: a hang fails the test instead of the suite


@dataclass
class Recorded:
    cassettes: Path
    wss: RealtimeStandIn  # stopped; its port is watched
    ws: RealtimeStandIn
    sync_deltas: list[list[str]]
    async_deltas: list[list[str]]
    binary_answers: list[Any]
    watches: list[PortWatch]


def ws_options(proxy: RunningProxy, tls: bool) -> dict[str, Any]:
    """How the SDK (websockets) reaches the proxy and trusts its CA; the same as
    HTTPS_PROXY and SSL_CERT_FILE would do, without changing this process's environment."""
    options: dict[str, Any] = {"proxy": proxy.url}
    if tls:
        options["ssl"] = ssl.create_default_context(cafile=str(proxy.ca_cert))
    return options


def user_item(words: str) -> dict[str, Any]:
    # a fresh client-made item id and event id each run: they must not count in matching
    return {
        "type": "message",
        "role": "user",
        "id": f"item_{uuid.uuid4().hex[:12]}",
        "content": [{"type": "input_text", "text": words}],
    }


def sync_conversation(
    proxy: RunningProxy, stand_in: RealtimeStandIn, turns: tuple[str, ...], key: str = FAKE_KEY
) -> list[list[str]]:
    client = openai.OpenAI(api_key=key, base_url=stand_in.base_url)
    deltas: list[list[str]] = []
    with client.realtime.connect(
        model=MODEL, websocket_connection_options=ws_options(proxy, stand_in.cert is not None)
    ) as conn:
        conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"]},
            event_id=f"evt_{uuid.uuid4().hex}",
        )
        for words in turns:
            conn.conversation.item.create(
                item=user_item(words),  # type: ignore[arg-type]
                event_id=f"evt_{uuid.uuid4().hex}",
            )
            conn.response.create()
            deltas.append([])
            for event in conn:
                if event.type == "response.output_text.delta":
                    deltas[-1].append(event.delta)
                elif event.type in ("response.done", "error"):
                    break
    return deltas


async def async_conversation(
    proxy: RunningProxy, stand_in: RealtimeStandIn, turns: tuple[str, ...]
) -> list[Any]:
    """The deltas of each turn; an ``error`` event and the close that ends the connection
    early are returned in the list."""
    client = openai.AsyncOpenAI(api_key=FAKE_KEY, base_url=stand_in.base_url)
    got: list[Any] = []
    async with client.realtime.connect(
        model=MODEL, websocket_connection_options=ws_options(proxy, stand_in.cert is not None)
    ) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        try:
            for words in turns:
                await conn.conversation.item.create(item=user_item(words))  # type: ignore
                await conn.response.create(event_id=f"evt_{uuid.uuid4().hex}")
                got.append([])
                async for event in conn:
                    if event.type == "response.output_text.delta":
                        got[-1].append(event.delta)
                    elif event.type == "error":
                        got.append(event)
                    elif event.type == "response.done":
                        break
        except ConnectionClosedError as closed:
            got.append(closed)
    return got


async def binary_session(proxy: RunningProxy, stand_in: RealtimeStandIn) -> list[Any]:
    """Send each chunk and a text message with a raw websockets client; the answers."""
    answers = []
    async with connect(stand_in.ws_url, proxy=proxy.url) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session.created"
        for chunk in CHUNKS:
            await ws.send(chunk)
            answers.append(await ws.recv())
        await ws.send("plain text, not JSON")
        answers.append(await ws.recv())
    return answers


def expected_deltas(turns: tuple[str, ...]) -> list[list[str]]:
    """What the stand-in says, cut in 5-character deltas (its own rule, not the proxy's)."""
    return [[answer_for(w)[i : i + 5] for i in range(0, len(answer_for(w)), 5)] for w in turns]


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, confdir: Path, upstream_cert: tuple[Path, Path]
) -> Iterator[Recorded]:
    """Record, once for the module: the sync and the async SDK over wss (one handshake, two
    conversations), and a binary session over ws; then stop the stand-ins and watch their
    ports."""
    cassettes = tmp_path_factory.mktemp("realtime") / "cassettes"
    wss, ws = RealtimeStandIn(upstream_cert).start(), RealtimeStandIn().start()
    proxy = start_proxy(cassettes, "record", confdir=confdir, options={"ssl_insecure": "true"})
    try:
        sync_deltas = sync_conversation(proxy, wss, SYNC_TURNS)
        async_deltas = asyncio.run(
            asyncio.wait_for(async_conversation(proxy, wss, ASYNC_TURNS), TIMEOUT)
        )
        binary_answers = asyncio.run(asyncio.wait_for(binary_session(proxy, ws), TIMEOUT))
    finally:
        proxy.stop()
        wss.stop()
        ws.stop()
    watches = [PortWatch(wss.port), PortWatch(ws.port)]
    yield Recorded(cassettes, wss, ws, sync_deltas, async_deltas, binary_answers, watches)
    for watch in watches:
        watch.close()


def the_file(cassettes: Path, stand_in: RealtimeStandIn) -> Path:
    [path] = (cassettes / f"127.0.0.1_{stand_in.port}" / "v1" / "realtime").glob("*.json")
    return path


def summary_of(proxy: RunningProxy, path: Path) -> Summary:
    proxy.stop()
    summary = Summary.read(path)
    assert summary is not None, proxy.log
    return summary


def test_recording_holds_every_message_in_order_with_the_handshake_redacted(recorded):
    assert recorded.sync_deltas == expected_deltas(SYNC_TURNS)
    assert recorded.async_deltas == expected_deltas(ASYNC_TURNS)
    raw = the_file(recorded.cassettes, recorded.wss).read_bytes()
    assert FAKE_KEY.encode() not in raw
    doc = orjson.loads(raw)
    assert doc["version"] == 2 and doc["request"]["headers"]["authorization"] == "<redacted>"
    assert len(doc["responses"]) == 2  # two connections of one handshake, in order
    for response, turns in zip(doc["responses"], (SYNC_TURNS, ASYNC_TURNS)):
        assert response["status"] == 101
        messages = response["websocket"]["messages"]
        # the SDK sends session.update without waiting for session.created: which of the two
        # the proxy sees first is a race; each side's order is not
        server = [m["data"] for m in messages if m["from"] == "server"]
        assert server[0]["type"] == "session.created"
        client = [m["data"] for m in messages if m["from"] == "client"]
        assert [c["type"] for c in client] == ["session.update"] + [
            "conversation.item.create",
            "response.create",
        ] * 2
        assert [c["item"]["content"][0]["text"] for c in client if "item" in c] == list(turns)
        times = [m["t"] for m in messages]
        assert times == sorted(times) and times[0] >= 0
        assert response["websocket"]["close"]["from"] == "client"
        assert response["websocket"]["close"]["code"] == 1000


def test_sdk_conversations_replay_identically_with_no_upstream_connection(
    recorded, proxies, tmp_path
):
    summary_path = tmp_path / "summary.json"
    proxy = proxies(recorded.cassettes, "replay", cassette_summary=str(summary_path))
    # the async conversation first: the recording in turn (the sync one) sends the opening,
    # then the first user message leaves only the async recording
    replayed_async = asyncio.run(
        asyncio.wait_for(async_conversation(proxy, recorded.wss, ASYNC_TURNS), TIMEOUT)
    )
    replayed_sync = sync_conversation(proxy, recorded.wss, SYNC_TURNS)
    summary = summary_of(proxy, summary_path)
    assert replayed_async == expected_deltas(ASYNC_TURNS)
    assert replayed_sync == expected_deltas(SYNC_TURNS)
    assert [w.connections for w in recorded.watches] == [0, 0]
    assert (summary.hits, summary.misses, summary.refused_connections, summary.internal_errors) == (
        2,
        0,
        0,
        0,
    )


def test_binary_frames_round_trip_byte_exact(recorded, proxies):
    assert recorded.binary_answers == [binary_answer(c) for c in CHUNKS] + [
        "echo: plain text, not JSON"
    ]
    doc = orjson.loads(the_file(recorded.cassettes, recorded.ws).read_bytes())
    messages = doc["responses"][0]["websocket"]["messages"]
    assert [
        base64.b64decode(m["base64"]) for m in messages if m["from"] == "client" and "base64" in m
    ] == list(CHUNKS)
    assert messages[-2:] == [
        {"t": messages[-2]["t"], "from": "client", "text": "plain text, not JSON"},
        {"t": messages[-1]["t"], "from": "server", "text": "echo: plain text, not JSON"},
    ]
    proxy = proxies(recorded.cassettes, "replay")
    answers = asyncio.run(asyncio.wait_for(binary_session(proxy, recorded.ws), TIMEOUT))
    proxy.stop()
    assert answers == recorded.binary_answers
    assert recorded.watches[1].connections == 0


async def wait_for_more(proxy: RunningProxy, stand_in: RealtimeStandIn) -> Any:
    """Play the binary session as recorded, then wait for more: the recorded close comes."""
    async with connect(stand_in.ws_url, proxy=proxy.url) as ws:
        await ws.recv()  # session.created
        for chunk in CHUNKS:
            await ws.send(chunk)
            await ws.recv()
        await ws.send("plain text, not JSON")
        await ws.recv()
        try:
            return await ws.recv()
        except ConnectionClosed as closed:
            return closed


async def one_more_turn(proxy: RunningProxy, stand_in: RealtimeStandIn) -> list[Any]:
    """The sync conversation as recorded, then a third turn nobody recorded."""
    return await async_conversation(proxy, stand_in, SYNC_TURNS + ("And of Spain?",))


async def unknown_handshake(proxy: RunningProxy, stand_in: RealtimeStandIn) -> Any:
    try:
        async with connect(stand_in.ws_url.replace(MODEL, "gpt-other"), proxy=proxy.url):
            return "connected"
    except InvalidStatus as e:
        return e.response.status_code


def test_misses_never_hang_they_get_an_error_event_and_a_close(recorded, proxies, tmp_path):
    summary_path = tmp_path / "summary.json"
    proxy = proxies(recorded.cassettes, "replay", cassette_summary=str(summary_path))

    async def run_all() -> tuple[Any, ...]:
        changed = await async_conversation(proxy, recorded.wss, ("Tell me a poem",))
        return (
            changed,
            await one_more_turn(proxy, recorded.wss),
            await wait_for_more(proxy, recorded.ws),
            await unknown_handshake(proxy, recorded.ws),
        )

    changed, extra, waited, unknown = asyncio.run(asyncio.wait_for(run_all(), TIMEOUT))
    summary = summary_of(proxy, summary_path)
    # a changed user message: the error event naming the path, then a 1008 close
    assert changed[0] == []
    error, closed = changed[1], changed[2]
    assert error.error.code == "cassette_miss" and error.error.param == "item.content[0].text"
    assert "differs at item.content[0].text" in error.error.message
    assert isinstance(closed, ConnectionClosedError) and closed.rcvd.code == 1008
    # one turn more than recorded: answered until then, then the error and the close
    assert extra[:2] == expected_deltas(SYNC_TURNS) and extra[2] == []
    assert "no more client messages" in extra[3].error.message
    assert extra[4].rcvd.code == 1008
    # waiting for more than was recorded: the recorded close (the client's, 1000)
    assert isinstance(waited, ConnectionClosed) and waited.rcvd.code == 1000
    assert unknown == 424
    assert (summary.hits, summary.misses, summary.refused_connections) == (3, 3, 0)
    assert "differs at item.content[0].text" in summary.miss_messages[0]
    assert "no recording" in summary.miss_messages[2] and "gpt-other" in summary.miss_messages[2]
    assert [w.connections for w in recorded.watches] == [0, 0]


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cassette_commands_read_a_websocket_recording(recorded, tmp_path):
    path = the_file(recorded.cassettes, recorded.wss)
    doc = orjson.loads(path.read_bytes())
    text = run_cli("text", str(path)).output
    conversation = []
    for turns in (SYNC_TURNS, ASYNC_TURNS):
        conversation += [
            line for w in turns for line in (f"[user] {w}", f"[assistant] {answer_for(w)}")
        ]
    assert [
        line for line in text.splitlines() if line.startswith(("[user] ", "[assistant] "))
    ] == conversation
    rows = orjson.loads(run_cli("ls", "--dir", str(recorded.cassettes), "--json").output)
    row = next(r for r in rows if r["file"].startswith(f"127.0.0.1_{recorded.wss.port}/"))
    assert row["stream"] == f"ws, {len(doc['responses'][0]['websocket']['messages'])} messages"
    assert row["status"] == [101, 101]
    shown = run_cli("show", str(path)).output
    assert "client -> " in shown and "server <- " in shown and "close +" in shown
    assert run_cli("verify", "--dir", str(recorded.cassettes)).exit_code == 0
    changed = tmp_path / "changed.json"
    first_user = next(
        m
        for m in doc["responses"][0]["websocket"]["messages"]
        if m["from"] == "client" and "item" in m["data"]
    )
    first_user["data"]["item"]["content"][0]["text"] = "changed"
    changed.write_bytes(orjson.dumps(doc))
    diff = run_cli("diff", str(path), str(changed), "--json")
    assert diff.exit_code == 1
    index = doc["responses"][0]["websocket"]["messages"].index(first_user)
    assert orjson.loads(diff.output)["responses"] == [
        f"responses[0].websocket.messages[{index}].data.item.content[0].text"
    ]
    # what the user saw: a conversation left open, with one server message type fewer
    reshaped = orjson.loads(path.read_bytes())
    conversation = reshaped["responses"][0]["websocket"]
    close = conversation.pop("close")
    dropped = next(
        m
        for m in conversation["messages"]
        if m["from"] == "server" and m["data"].get("type") == "response.done"
    )
    conversation["messages"].remove(dropped)
    changed.write_bytes(orjson.dumps(reshaped))
    shape = orjson.loads(run_cli("diff", str(path), str(changed), "--json").output)["shape"]
    assert (
        f"response 1: stream end: closed by the {close['from']} ({close['code']}) → still "
        "open when recorded" in shape
    ), shape
    assert any(line.startswith("response 1: event sequence: ") for line in shape), shape


def test_auto_records_a_new_handshake_and_replays_a_known_one_passthrough_records_none(
    recorded, proxies, tmp_path
):
    cassettes = tmp_path / "cassettes"
    shutil.copytree(recorded.cassettes, cassettes)
    before = sorted(cassettes.rglob("*.json"))
    fresh = RealtimeStandIn().start()  # a new port: a handshake with no recording
    try:
        auto = proxies(cassettes, "auto")
        known = sync_conversation(auto, recorded.wss, SYNC_TURNS)
        new = sync_conversation(auto, fresh, ("hello",))
        auto.stop()
        assert known == expected_deltas(SYNC_TURNS) and recorded.watches[0].connections == 0
        assert new == expected_deltas(("hello",)) and fresh.connections == 1
        [added] = sorted(set(cassettes.rglob("*.json")) - set(before))
        assert added.parts[-4] == f"127.0.0.1_{fresh.port}"
        passthrough = proxies(cassettes, "passthrough")
        again = sync_conversation(passthrough, fresh, ("again",))
        passthrough.stop()
        assert again == expected_deltas(("again",)) and fresh.connections == 2
        assert sorted(cassettes.rglob("*.json")) == sorted(before + [added])
        assert len(orjson.loads(added.read_bytes())["responses"]) == 1
    finally:
        fresh.stop()


def test_a_fault_while_recording_a_websocket_costs_only_its_cassette(proxies, tmp_path):
    """A hook of ours that raises mid-conversation (injected by tests/addons/faults.py): the
    live conversation goes on untouched, nothing half-recorded is written, and it is counted."""
    cassettes, summary_path = tmp_path / "cassettes", tmp_path / "summary.json"
    stand_in = RealtimeStandIn().start()
    proxy = proxies(
        cassettes,
        "record",
        extra_scripts=(FAULTS,),
        fault_hooks="cassette_websockethooks.websocket_message",
        cassette_summary=str(summary_path),
    )

    async def session() -> list[Any]:
        url = stand_in.ws_url.replace("/v1/", "/fault/v1/")
        async with connect(url, proxy=proxy.url) as ws:
            answers = [orjson.loads(await ws.recv())["type"]]
            await ws.send(CHUNKS[0])
            answers.append(await ws.recv())
        return answers

    try:
        answers = asyncio.run(asyncio.wait_for(session(), TIMEOUT))
        summary = summary_of(proxy, summary_path)
    finally:
        stand_in.stop()
    assert answers == ["session.created", binary_answer(CHUNKS[0])]
    assert summary.internal_errors == 3 and summary.recorded == 0  # one per message relayed
    assert not list(cassettes.rglob("*.json"))
    assert "not recording GET" in proxy.log and "websocket_message" in proxy.log


def test_a_secret_in_realtime_deltas_or_in_json_inside_a_string_never_reaches_disk(
    proxies, tmp_path, upstream_cert
):
    """The caller's key, answered in 5-character deltas, and a client secret the server makes
    up inside JSON that is the text of its answer (in the deltas, and whole in the ``text`` of
    the ``done`` events): neither is in the file; the replay sends as many deltas, with
    ``<redacted>`` in their place."""
    key = "fake-rt-bearer-3001"
    stand_in = RealtimeStandIn(upstream_cert).start()
    cassettes = tmp_path / "c"
    proxy = proxies(cassettes, "record")
    try:
        recorded = sync_conversation(proxy, stand_in, (SAY_MY_KEY, GIVE_A_SECRET), key)
    finally:
        log = proxy.stop()
        stand_in.stop()
    answers = [answer_for(w, f"Bearer {key}") for w in (SAY_MY_KEY, GIVE_A_SECRET)]
    assert recorded == [[a[i : i + 5] for i in range(0, len(a), 5)] for a in answers]
    assert key in answers[0] and MINTED_SECRET in answers[1]
    raw = the_file(cassettes, stand_in).read_text()
    deltas = "".join(
        m["data"].get("delta", "")
        for m in orjson.loads(raw)["responses"][0]["websocket"]["messages"]
        if m["from"] == "server"
    )
    for secret in (key, MINTED_SECRET):
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            assert form not in raw and form not in deltas and form not in log, form
    watch = PortWatch(stand_in.port)
    try:
        proxy = proxies(cassettes, "replay")
        replayed = sync_conversation(proxy, stand_in, (SAY_MY_KEY, GIVE_A_SECRET), key)
        log = proxy.stop()
    finally:
        watch.close()
    assert watch.connections == 0 and counted(log, "hits", "misses") == (1, 0)
    assert [len(d) for d in replayed] == [len(d) for d in recorded]
    assert ["".join(d) for d in replayed] == [
        "".join(recorded[0]).replace(key, "<redacted>"),
        "".join(recorded[1]).replace(MINTED_SECRET, "<redacted>"),
    ]
