"""AWS event streams (Bedrock): split from any cut, checked, framed back byte for byte, and
accepted by botocore's own decoder; stored in a cassette readably and read back exactly. Pure,
no proxy."""

from __future__ import annotations

import base64
import struct
import uuid
import zlib

import orjson
import pytest
from botocore.eventstream import EventStreamBuffer
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon.bodies import eventstream as es
from proxy_addon.bodies.sse import Event
from proxy_addon.bodies.taps import StreamCapture
from proxy_addon.cli import main
from proxy_addon.formats import cassette
from proxy_addon.model import RecordedRequest, RecordedResponse, Recording, Stream

# One message from the format's description, its CRC32s computed by hand (zlib): a string
# header ":event-type" = "x" and the payload "{}".
KNOWN = bytes.fromhex(
    "00000022 00000010 c394b369 0b3a6576656e742d747970650700 0178 7b7d f09f1afd".replace(" ", "")
)


def chunk(inner: dict, pad: str = "abcdefgh") -> bytes:
    """An InvokeModelWithResponseStream chunk as Bedrock frames it: the model's JSON in base64
    under ``bytes``, and padding."""
    payload = orjson.dumps({"bytes": base64.b64encode(orjson.dumps(inner)).decode(), "p": pad})
    headers = [
        [":event-type", "chunk"],
        [":content-type", "application/json"],
        [":message-type", "event"],
    ]
    return es.encode_message(es.encode_headers(headers), payload)


def split_at(body: bytes, cuts: list[int]) -> list[Event]:
    splitter = es.EventStreamSplitter()
    out: list[Event] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        out += splitter.feed(body[prev:cut])
        prev = cut
    return out + splitter.flush()


def test_a_known_message_is_read_and_framed_back_to_its_bytes():
    events = split_at(KNOWN, [])
    assert [(e.headers, e.data) for e in events] == [([[":event-type", "x"]], {})]
    assert es.frame_event(events[0]) == KNOWN


# Every header type, as a cassette stores it (unique names: botocore refuses duplicates).
header_values = st.one_of(
    st.text(max_size=40).map(lambda v: ("string", v)),
    st.booleans().map(lambda v: ("boolean", v)),
    st.integers(-128, 127).map(lambda v: ("byte", v)),
    st.integers(-(2**15), 2**15 - 1).map(lambda v: ("short", v)),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: ("integer", v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: ("long", v)),
    st.integers(0, 2**62).map(lambda v: ("timestamp", v)),
    st.binary(max_size=30).map(lambda v: ("bytes", base64.b64encode(v).decode())),
    st.uuids().map(lambda v: ("uuid", str(v))),
)
headers_strategy = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda n: len(n.encode()) < 256),
    header_values,
    max_size=6,
).map(lambda d: [[n, v] if t == "string" else [n, v, t] for n, (t, v) in d.items()])
payloads = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4).map(orjson.dumps),
    st.text(max_size=60).map(
        lambda t: orjson.dumps({"bytes": base64.b64encode(t.encode()).decode()})
    ),
    st.text(max_size=20).map(lambda t: orjson.dumps({"bytes": t})),
    st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), max_size=3).map(
        lambda d: orjson.dumps({"bytes": base64.b64encode(orjson.dumps(d)).decode(), "p": "x"})
    ),
)
messages = st.lists(st.tuples(headers_strategy, payloads), min_size=1, max_size=5)


def botocore_reads(body: bytes) -> list[tuple[dict, bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    return [(m.headers, m.payload) for m in buffer]


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(0, 4000), max_size=12))
def test_any_stream_cut_anywhere_is_read_and_framed_back_byte_exact(msgs, cuts):
    body = b"".join(es.encode_message(es.encode_headers(h), p) for h, p in msgs)
    events = split_at(body, [c % (len(body) + 1) for c in cuts])
    assert [e.headers for e in events] == [h for h, _ in msgs]
    assert [es.payload_bytes(e.data) for e in events] == [p for _, p in msgs]
    assert b"".join(es.frame_event(e) for e in events) == body
    # botocore's own decoder accepts the frames, and reads the same headers and payloads
    read = botocore_reads(body)
    assert [p for _, p in read] == [p for _, p in msgs]
    assert [list(h) for h, _ in read] == [[x[0] for x in h] for h, _ in msgs]


def test_header_types_and_values_as_botocore_reads_them():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = [
        [":event-type", "chunk"],
        ["t", True, "boolean"],
        ["f", False, "boolean"],
        ["b", -5, "byte"],
        ["s", 300, "short"],
        ["i", -70000, "integer"],
        ["l", 2**40, "long"],
        ["raw", base64.b64encode(b"\x00\xff").decode(), "bytes"],
        ["when", 1764142239000, "timestamp"],
        ["id", str(u), "uuid"],
    ]
    body = es.encode_message(es.encode_headers(headers), b"")
    ((read, payload),) = botocore_reads(body)
    assert payload == b""
    assert read == {
        ":event-type": "chunk",
        "t": True,
        "f": False,
        "b": -5,
        "s": 300,
        "i": -70000,
        "l": 2**40,
        "raw": b"\x00\xff",
        "when": 1764142239000,
        "id": u.bytes,
    }
    assert split_at(body, [7, 30])[0].headers == headers


def test_a_chunks_base64_bytes_are_read_as_the_json_they_hold_and_framed_back_exactly():
    inner = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hé"},
    }
    body = chunk(inner)
    (ev,) = split_at(body, [])
    assert ev.data == {"bytes": inner, "p": "abcdefgh"}
    assert es.frame_event(ev) == body


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a": 1}',  # JSON spaced otherwise than compact: kept as the text it is
        b'{"bytes":"bm90IGpzb24="}',  # base64 of text that is not JSON: kept as base64
        b'{"bytes":"eyJhIjogMX0="}',  # base64 of JSON written otherwise: kept as base64
        b'{"bytes":"e31="}',  # base64 of {} with padding bits set: decodes, re-encodes otherwise
        b'{"n":1e5}',  # a number orjson writes otherwise
        b"plain text",
        b"\xff\xfe binary",
        b"",
    ],
)
def test_a_payload_is_kept_readable_only_where_it_frames_back_to_the_same_bytes(payload):
    body = es.encode_message(es.encode_headers([[":event-type", "x"]]), payload)
    (ev,) = split_at(body, [])
    assert es.frame_event(ev) == body
    if payload.startswith(b"\xff"):
        assert ev.data == payload
    elif payload.startswith(b"{"):
        assert ev.data == payload.decode() or ev.data["bytes"] == payload[10:-2].decode()


def test_a_bad_crc_or_a_cut_message_is_a_framing_error():
    body = chunk({"type": "message_stop"})
    bad_message = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(es.FramingError, match="CRC32"):
        split_at(bad_message, [])
    bad_prelude = body[:9] + bytes([body[9] ^ 1]) + body[10:]
    with pytest.raises(es.FramingError, match="prelude"):
        split_at(bad_prelude, [])
    with pytest.raises(es.FramingError, match="ended inside a message"):
        split_at(body[:-3], [])
    huge = struct.pack("!II", 2**31, 0)
    with pytest.raises(es.FramingError, match="out of bounds"):
        split_at(huge + struct.pack("!I", zlib.crc32(huge)), [])


def test_the_live_copy_stops_at_a_bad_message_and_is_marked_cut():
    capture = StreamCapture("eventstream")
    good, bad = chunk({"generation": "Hi"}), chunk({"generation": "there"})
    capture.feed(good + bad[:20], 0.1)
    capture.finish(0.2)
    assert len(capture.events) == 1 and not capture.complete
    assert "ended inside a message" in (capture.cut or "")
    capture = StreamCapture("eventstream")
    capture.feed(good + chunk({"type": "message_stop"}), 0.1)
    capture.finish(0.2)
    assert capture.saw_end_marker and capture.complete


def test_a_cassette_stores_headers_and_readable_payloads_and_replays_the_same_bytes(tmp_path):
    body = (
        chunk({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}})
        + es.encode_message(es.encode_headers([["n", 7, "integer"]]), b"\x00\x01")
        + chunk({"type": "message_stop"})
    )
    events = split_at(body, [11])
    rec = Recording(
        RecordedRequest("POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/x"),
        [RecordedResponse(200, [], stream=Stream("eventstream", events))],
    )
    doc = orjson.loads(cassette.dumps(rec))  # plain JSON, as a reader of the file sees it
    assert doc["version"] == 3
    stored = doc["responses"][0]["stream"]
    assert stored["format"] == "eventstream"
    first, second, _ = stored["events"]
    assert first["headers"][0] == [":event-type", "chunk"]
    assert first["data"]["bytes"]["delta"]["text"] == "Hi"
    assert second == {"t": 0.0, "headers": [["n", 7, "integer"]], "base64": "AAE="}
    read = cassette.from_dict(doc).responses[0].stream
    assert b"".join(es.frame_event(e) for e in read.events) == body


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"headers": [["n", "x", "integer"]]}, "is not a integer"),
        ({"headers": [["n", 1, "float"]]}, "its type must be one of"),
        ({"headers": [[1, "x"]]}, "its name must be"),
        ({"data": {}, "base64": "AA=="}, "both data and base64"),
        ({"base64": "!!"}, "not valid base64"),
    ],
)
def test_a_stored_message_that_cannot_be_framed_is_refused_naming_the_field(event, reason):
    doc = {
        "format": "llm-cassette",
        "version": 3,
        "request": {"method": "POST", "url": "https://h/x"},
        "responses": [{"status": 200, "stream": {"format": "eventstream", "events": [event]}}],
    }
    with pytest.raises(cassette.CassetteError, match=reason):
        cassette.from_dict(doc, "f.json")


def converse_event(name: str, payload: dict) -> bytes:
    headers = [
        [":event-type", name],
        [":content-type", "application/json"],
        [":message-type", "event"],
    ]
    return es.encode_message(es.encode_headers(headers), orjson.dumps(payload))


def converse_stream(text: str, tool: bool = False) -> bytes:
    """A ConverseStream answer: its text in two deltas, a tool call after it when ``tool``."""
    first, _, rest = text.partition(" ")
    events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": first}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " " + rest}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
    ]
    if tool:
        start = {"toolUse": {"toolUseId": "t1", "name": "lookup"}}
        events += [
            ("contentBlockStart", {"contentBlockIndex": 1, "start": start}),
            ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}),
            ("contentBlockStop", {"contentBlockIndex": 1}),
        ]
    events += [
        ("messageStop", {"stopReason": "tool_use" if tool else "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14}}),
    ]
    return b"".join(converse_event(n, p) for n, p in events)


def test_cassette_text_and_diff_read_a_converse_stream(tmp_path):
    """``cassette text`` shows the streamed answer; ``cassette diff`` names a changed word as
    noise and a tool call where there was none as shape, by the events' names."""

    def write(name: str, body: bytes) -> str:
        rec = Recording(
            RecordedRequest("POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/x"),
            [RecordedResponse(200, [], stream=Stream("eventstream", split_at(body, [5])))],
        )
        (tmp_path / name).write_bytes(cassette.dumps(rec))
        return str(tmp_path / name)

    def run(*args: str) -> str:
        return CliRunner().invoke(main, list(args), catch_exceptions=False).output

    paris = write("a.json", converse_stream("The capital is Paris."))
    rome = write("b.json", converse_stream("The capital is Rome."))
    tool = write("c.json", converse_stream("The capital is Paris.", tool=True))
    assert "The capital is Paris." in run("text", paris)
    words = orjson.loads(run("diff", paris, rome, "--json"))
    assert words["shape"] == [] and any("Rome" in line for line in words["noise"]), words
    shape = orjson.loads(run("diff", paris, tool, "--json"))["shape"]
    sequence = next(line for line in shape if "event sequence" in line)
    assert "contentBlockStart" in sequence and "messageStart" in sequence, shape
    assert any("tool" in line for line in shape), shape
