"""A rewrite never changes what it does not mean to change: ``cassette scrub`` replaces the
secrets of a file and keeps every other value exactly, on a corpus of awkward values (integers
beyond 64 bits, ``1E+2``, ``-0.0``, trailing zeros, escaped surrogate pairs and other escapes),
in our format and in llama-stack's; a file with a key given twice is refused, not rewritten.

Files are compared as JSON read without loss (numbers as their text, keys in order), by the
standard library, not by the code under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from proxy_addon.cli import main
from proxy_addon.redaction.secret_rules import REDACTED

KEY = "sk-test-cassette-0123456789abcdef"

AWKWARD = r"""{
      "big": 123456789012345678901234567890,
      "negative_big": -98765432109876543210987654321,
      "exponent": 1E+2,
      "small": 1.5e-7,
      "negative_zero": -0.0,
      "trailing_zeros": 0.1000,
      "one_point_zero": 1.0,
      "max_u64_plus_one": 18446744073709551616,
      "pair": "\ud83d\ude00 caf\u00e9",
      "escapes": "tab\t quote\" slash\/ nul\u0000",
      "nested": [[1E+2, {"deep": 123456789012345678901234567890}], [], {}],
      "note": "the key is KEY, quoted"
    }""".replace("KEY", KEY)

OURS = r"""{
  "format": "llm-cassette",
  "version": 1,
  "request": {
    "method": "POST",
    "url": "https://api.openai.com/v1/chat/completions",
    "headers": {"authorization": "Bearer KEY", "content-type": "application/json"},
    "body": AWKWARD
  },
  "responses": [
    {"status": 200, "recorded_at": "2026-11-26T07:30:39+00:00",
     "headers": [["content-type", "application/json"]],
     "body": {"echo": "KEY", "usage": {"tokens": 123456789012345678901234567890, "cost": 1E-3}}}
  ]
}
""".replace("AWKWARD", AWKWARD).replace("KEY", KEY)

LLAMA = r"""{
  "test_id": "tests/test_x.py::test_y",
  "request": {
    "method": "POST",
    "url": "http://localhost:11434/v1/chat/completions",
    "headers": {"Authorization": "Bearer KEY"},
    "body": AWKWARD,
    "endpoint": "/v1/chat/completions",
    "model": "llama3"
  },
  "response": {
    "body": {"__type__": "openai.types.chat.chat_completion.ChatCompletion",
             "__data__": {"id": "x", "choices": [], "created": 123456789012345678901234567890,
                          "model": "llama3", "object": "chat.completion"}},
    "is_streaming": false
  }
}
""".replace("AWKWARD", AWKWARD).replace("KEY", KEY)


def _lossless(raw: bytes) -> Any:
    """The file as JSON with numbers as their text and objects as their ordered pairs."""
    return json.loads(raw, parse_int=str, parse_float=str, object_pairs_hook=list)


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return [leaf for k, v in value for leaf in _leaves(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")] or [
            (path, "[]")
        ]
    return [(path, value)]


def _scrubbed_and_kept(tmp_path: Path, name: str, text: str) -> tuple[list, list]:
    folder = tmp_path / "c"
    folder.mkdir()
    path = folder / name
    path.write_text(text)
    before = _leaves(_lossless(path.read_bytes()))
    result = CliRunner().invoke(main, ["scrub", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    after = _leaves(_lossless(path.read_bytes()))
    assert [p for p, _ in after] == [p for p, _ in before]  # every place, in order
    changed = [(p, a, b) for (p, a), (_, b) in zip(before, after, strict=True) if a != b]
    kept = [(p, a) for (p, a), (_, b) in zip(before, after, strict=True) if a == b]
    return changed, kept


def test_scrub_changes_only_the_secrets_of_our_format(tmp_path):
    changed, kept = _scrubbed_and_kept(tmp_path, "ours.json", OURS)
    assert changed == [
        (".request.headers.authorization", f"Bearer {KEY}", REDACTED),
        (".request.body.note", f"the key is {KEY}, quoted", f"the key is {REDACTED}, quoted"),
        (".responses[0].body.echo", KEY, REDACTED),
    ]
    kept = dict(kept)
    assert kept[".request.body.big"] == "123456789012345678901234567890"
    assert kept[".request.body.negative_big"] == "-98765432109876543210987654321"
    assert kept[".request.body.exponent"] == "1E+2"
    assert kept[".request.body.negative_zero"] == "-0.0"
    assert kept[".request.body.trailing_zeros"] == "0.1000"
    assert kept[".request.body.max_u64_plus_one"] == "18446744073709551616"
    assert kept[".request.body.pair"] == "\U0001f600 caf\u00e9"
    assert kept[".request.body.escapes"] == 'tab\t quote" slash/ nul\x00'
    assert kept[".request.body.nested[0][1].deep"] == "123456789012345678901234567890"
    assert kept[".responses[0].body.usage.tokens"] == "123456789012345678901234567890"


def test_scrub_changes_only_the_secrets_of_a_llama_stack_file(tmp_path):
    changed, kept = _scrubbed_and_kept(tmp_path, "llama.json", LLAMA)
    assert [p for p, _, _ in changed] == [".request.headers.Authorization", ".request.body.note"]
    kept = dict(kept)
    assert kept[".response.body.__data__.created"] == "123456789012345678901234567890"
    assert kept[".request.body.exponent"] == "1E+2"


def test_scrub_refuses_a_file_with_a_key_given_twice(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    path = folder / "twice.json"
    text = OURS.replace('"version": 1,', '"version": 1, "test_id": "a", "test_id": "b",')
    path.write_text(text)
    result = CliRunner().invoke(main, ["scrub", "--dir", str(folder)])
    assert result.exit_code == 1
    assert (
        f"{path}: skipped: cannot be rewritten changing only its secrets: "
        "the key 'test_id' appears twice in one object"
    ) in result.output
    assert path.read_text() == text  # untouched
