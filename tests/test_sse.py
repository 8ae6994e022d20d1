"""The SSE / NDJSON splitter and framing: pure, no proxy."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon.bodies import sse, streams
from proxy_addon.bodies.taps import StreamCapture
from proxy_addon.formats import load
from tests.conftest import FIXTURES, SEED

ANTHROPIC_FIXTURE = (
    FIXTURES / "f22657bfd86db6348c0a0d0b17332dcfc038b345d2a7be8da4b880a433d36a52.json"
)


def seed_stream_bytes(crlf: bool = False) -> bytes:
    """The seed's 17 chunks framed as OpenAI sends them (+ [DONE])."""
    events = load(SEED).responses[0].stream.events
    body = sse.frame("sse", events)
    return body.replace(b"\n", b"\r\n") if crlf else body


def anthropic_stream_bytes() -> bytes:
    lines = orjson.loads(ANTHROPIC_FIXTURE.read_bytes())["response"]["body"]
    return ("\n".join(lines) + "\n\n").encode()


def split_at(body: bytes, cuts: list[int]) -> list[sse.Event]:
    splitter = sse.SseSplitter()
    out: list[sse.Event] = []
    prev = 0
    for cut in sorted(set(cuts)) + [len(body)]:
        out += splitter.feed(body[prev:cut])
        prev = cut
    return out + splitter.flush()


def test_seed_stream_splits_into_17_chunks_and_done():
    events = sse.split("sse", seed_stream_bytes())
    assert len(events) == 18
    assert events[1].data["choices"][0]["delta"]["content"] == "Why"
    assert events[-1].data == "[DONE]" and sse.is_end_event(events[-1])


@pytest.mark.parametrize("crlf", [False, True])
def test_every_single_cut_gives_the_same_events(crlf):
    body = seed_stream_bytes(crlf)
    whole = sse.split("sse", body)
    for cut in range(0, len(body), 7):
        assert split_at(body, [cut]) == whole


def test_byte_by_byte_including_inside_utf8_characters():
    body = 'data: {"t":"h\u00e9llo \u2603 \U0001f600"}\n\n'.encode()
    splitter = sse.SseSplitter()
    events = [e for b in body for e in splitter.feed(bytes([b]))] + splitter.flush()
    assert [e.data for e in events] == [{"t": "h\u00e9llo \u2603 \U0001f600"}]


def test_fields_comments_multiline_data_and_cr_only_framing():
    body = (
        b": keep-alive\r\n\r\n"
        b"event: message_start\rid: 7\rretry: 3000\rdata: line one\rdata: line two\r\r"
        b"data: [DONE]\n\n"
    )
    events = sse.split("sse", body)
    assert events[0].comments == ["keep-alive"] and events[0].data is None
    assert (events[1].event, events[1].id, events[1].retry) == ("message_start", "7", 3000)
    assert events[1].data == "line one\nline two"
    assert events[2].data == "[DONE]"
    again = sse.split("sse", sse.frame("sse", events))
    assert again == events  # framing round-trips every field


def test_only_objects_and_arrays_are_parsed_so_strings_round_trip():
    for payload in ["42", '"quoted"', "plain text", "[DONE]", '{"a": 1}', "[1, 2]", "{broken"]:
        ev = sse.split("sse", f"data: {payload}\n\n".encode())[0]
        assert sse.split("sse", sse.frame("sse", [ev]))[0].data == ev.data
        if payload in ('{"a": 1}', "[1, 2]"):
            assert not isinstance(ev.data, str)
        else:
            assert ev.data == payload


def test_last_event_without_blank_line_is_flushed():
    events = sse.split("sse", b'data: {"a":1}\n\ndata: tail')
    assert [e.data for e in events] == [{"a": 1}, "tail"]


def test_ndjson_lines_and_done_marker():
    body = b'{"response":"Hi","done":false}\n{"response":"!","done":true}\n'
    events = sse.split("ndjson", body)
    assert [e.data["response"] for e in events] == ["Hi", "!"]
    assert sse.is_end_event(events[-1]) and not sse.is_end_event(events[0])
    assert sse.frame("ndjson", events) == sse.frame("ndjson", sse.split("ndjson", body))


def test_stream_format_from_content_type():
    assert streams.stream_format("text/event-stream; charset=utf-8") == "sse"
    assert streams.stream_format("application/x-ndjson") == "ndjson"
    assert streams.stream_format("application/vnd.amazon.eventstream") == "eventstream"
    assert streams.stream_format("application/json") is None
    assert streams.stream_format(None) is None


def test_capture_knows_when_a_stream_is_complete():
    cap = StreamCapture("sse")
    body = seed_stream_bytes()
    cap.feed(body[:100], 0.01)
    assert not cap.complete
    cap.feed(body[100:-5], 0.02)
    assert not cap.complete  # "[DONE]" itself is split across chunks
    cap.feed(body[-5:], 0.03)
    assert cap.complete and cap.saw_end_marker and not cap.upstream_finished
    assert cap.events[-1].t == 0.03
    anthropic = StreamCapture("sse")
    anthropic.feed(anthropic_stream_bytes(), 0.0)
    assert anthropic.saw_end_marker  # message_stop
    plain = StreamCapture("sse")
    plain.feed(b"data: {}\n\n", 0.0)
    plain.finish(0.1)
    assert plain.complete and plain.upstream_finished


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    st.sampled_from(["seed", "seed-crlf", "anthropic"]),
)
def test_random_cuts_of_real_streams_never_change_the_events(cuts, which):
    body = {
        "seed": seed_stream_bytes(),
        "seed-crlf": seed_stream_bytes(crlf=True),
        "anthropic": anthropic_stream_bytes(),
    }[which]
    cuts = [c % (len(body) + 1) for c in cuts]
    assert split_at(body, cuts) == sse.split("sse", body)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=10))
def test_arbitrary_bytes_never_crash_and_cuts_do_not_matter(body, cuts):
    cuts = [c % (len(body) + 1) for c in cuts]
    assert split_at(body, cuts) == sse.split("sse", body)
    nd = sse.NdjsonSplitter()
    nd.feed(body)
    nd.flush()
