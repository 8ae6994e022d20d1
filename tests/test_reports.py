"""The run's reports, end to end: a real ``cassette run`` of the real openai SDK against a local
upstream, through a real mitmdump, with 2 hits, 1 miss, 1 stale recording refused and 1 unused
recording; its Markdown, GitHub annotations, JUnit XML (read with junitparser), HTML (rendered
in headless Chromium) and the tokens it served, each judged against the cassette files on disk
(read as plain JSON)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import junitparser
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_addon.reports.tokens import tokens_of
from proxy_addon.runner.process import start_proxy
from proxy_addon.store.layout import iter_cassette_files
from proxy_addon.summary import Summary
from tests.conftest import (
    CASSETTE,
    FAKE_KEY,
    UNUSED_PLUGINS,
    age_by,
    counted,
    record_prompts,
    sdk_http_client,
)
from tests.upstream import FakeUpstreamServer

pytest_plugins = ["pytester"]

# The app under test: one chat call per argument MODEL:PROMPT; an error prints its status.
APP = """
import sys, openai
client = openai.OpenAI(api_key="sk-test-run", base_url=sys.argv[1] + "/v1", max_retries=0)
for ask in sys.argv[2:]:
    model, _, prompt = ask.partition(":")
    try:
        print(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}]).choices[0].message.content)
    except openai.APIStatusError as e:
        print(e.status_code)
"""
# Prices large enough that the cost shows in 4 decimals: dollars per million tokens.
PATH = "/v1/chat/completions"
PRICES = {"gpt-4o": {"input": 1_000_000, "output": 2_000_000}}


def file_of(cassettes: Path, prompt: str) -> Path:
    """The cassette whose request's last message is ``prompt`` (read as plain JSON)."""
    [path] = [
        p
        for p in iter_cassette_files(cassettes)
        if orjson.loads(p.read_bytes())["request"]["body"]["messages"][-1]["content"] == prompt
    ]
    return path


@dataclass
class Run:
    cassettes: Path
    out: Path  # where the reports are
    host: str  # the upstream's host:port
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, confdir: Path) -> Run:
    """Record 4 prompts; make one 40 days old; replay with cassette_stale=fail: "one" and
    "two" hit, "one" asked of another model misses, "old" is refused, "unused" is not asked."""
    tmp = tmp_path_factory.mktemp("reports")
    cassettes, out = tmp / "cassettes", tmp / "out"
    out.mkdir()
    upstream = FakeUpstreamServer().start()
    try:

        def proxies(d: Path, mode: str):
            return start_proxy(d, mode, confdir=confdir, options={"ssl_insecure": "true"})

        record_prompts(proxies, cassettes, upstream, "one", "two", "old", "unused")
        age_by(file_of(cassettes, "old"), 40)
        (tmp / "app.py").write_text(APP)
        (out / "prices.json").write_bytes(orjson.dumps(PRICES))
        (out / "step.md").write_text("an earlier step's summary\n")
        env = {
            **os.environ,
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(out / "step.md"),
        }
        result = subprocess.run(
            [
                CASSETTE,
                "run",
                "--dir",
                str(cassettes),
                "--older-than",
                "30d",
                "--set",
                "cassette_stale=fail",
                "--markdown",
                str(out / "report.md"),
                "--junit",
                str(out / "junit.xml"),
                "--report",
                str(out / "report.html"),
                "--prices",
                str(out / "prices.json"),
                "--",
                sys.executable,
                str(tmp / "app.py"),
                upstream.base_url,
                "gpt-4o:one",
                "gpt-4o:two",
                "gpt-4o-mini:one",
                "gpt-4o:old",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        upstream.stop()
    assert result.stdout.splitlines()[:4] == ["Answer 1 to: one", "Answer 1 to: two", "424", "410"]
    assert result.returncode == 1, result.stderr
    assert counted(result.stderr, "hits", "misses", "stale_refused", "unused") == (2, 1, 1, 1)
    return Run(cassettes, out, upstream.base_url.removeprefix("http://"), result)


def test_markdown_report_has_a_row_per_miss_and_refusal_and_lists_the_unused(run: Run):
    text = (run.out / "report.md").read_text()
    lines = text.splitlines()
    assert lines[0].startswith(
        "### ❌ cassette replay failed: 2 hits, 1 misses, 1 unused recordings (of 4)"
    ), text
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith(("| Test ", "| ---"))]
    assert len(rows) == 2, text
    miss, stale = rows
    assert f"`POST {run.host}{PATH}` (gpt-4o-mini) | no recording matched" in miss
    assert f"`{file_of(run.cassettes, 'one')}`" in miss  # the nearest recording
    assert '`model`: `"gpt-4o-mini"` (recorded `"gpt-4o"`)' in miss
    assert "refused as stale" in stale and f"`{file_of(run.cassettes, 'old')}`" in stale
    assert stale.endswith("| recorded 40 days ago, over cassette_max_age=30d |")
    listed = [ln for ln in lines if ln.startswith("- ")]
    assert listed == [f"- `{file_of(run.cassettes, 'unused')}`"]
    # under GitHub Actions the same Markdown is added to the step summary, after what was there
    assert (run.out / "step.md").read_text() == "an earlier step's summary\n" + text + "\n"


def test_annotations_name_each_miss_and_refusal_under_github_actions(run: Run):
    commands = [ln for ln in run.result.stdout.splitlines() if ln.startswith("::")]
    assert len(commands) == 2, run.result.stdout
    assert commands[0].startswith("::error title=cassette miss::cassette miss: no recording")
    assert "gpt-4o-mini" in commands[0] and "differs at: model" in commands[0]
    assert commands[1].startswith(
        f"::error title=cassette stale::cassette stale: {file_of(run.cassettes, 'old')}"
    )


def test_junit_report_reads_as_ci_systems_read_it(run: Run):
    xml = junitparser.JUnitXml.fromfile(str(run.out / "junit.xml"))
    [suite] = list(xml)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (4, 2, 0, 0)
    failed = {c.name: c.result[0] for c in suite if c.result}
    assert len(failed) == 2
    [miss] = [r for r in failed.values() if r.type == "cassette miss"]
    [stale] = [r for r in failed.values() if r.type == "cassette stale"]
    assert (
        "gpt-4o-mini" in miss.message
        and 'model: asked "gpt-4o-mini", recorded "gpt-4o"' in miss.text
    )
    assert str(file_of(run.cassettes, "old")) in stale.message
    passed = [c.system_out for c in suite if not c.result]
    assert passed == [
        f"POST {run.host}{PATH}: answered from a recording ({file_of(run.cassettes, p)})"
        for p in ("one", "two")
    ]


def test_tokens_served_are_the_recorded_usage_of_the_answers(run: Run):
    usage = [
        orjson.loads(file_of(run.cassettes, p).read_bytes())["responses"][0]["body"]["usage"]
        for p in ("one", "two")
    ]
    inp = sum(u["prompt_tokens"] for u in usage)
    out = sum(u["completion_tokens"] for u in usage)
    dollars = (inp * PRICES["gpt-4o"]["input"] + out * PRICES["gpt-4o"]["output"]) / 1e6
    line = (
        f"cassette tokens: {inp} input and {out} output tokens served from cassettes instead "
        f"of a provider (${dollars:,.2f} at the given prices)"
    )
    assert line in run.result.stderr.splitlines()
    assert line in (run.out / "report.md").read_text()


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, with a fresh profile and none of its own network traffic."""
    exe = shutil.which("chromium")
    assert exe, "headless Chromium checks the HTML report: install it (apt-get install chromium)"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


class _Text(HTMLParser):
    """The text of a page's body, as a reader sees it (no style, no markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.in_body = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.in_body = self.in_body or tag == "body"

    def handle_data(self, data: str) -> None:
        if self.in_body:
            self.parts.append(data)


@pytest.mark.slow
def test_html_report_renders_in_chromium_and_shows_the_miss(run: Run, tmp_path: Path):
    page = run.out / "report.html"
    html = page.read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html), "the page fetches something"
    dom = chromium("--dump-dom", page.as_uri()).stdout
    reader = _Text()
    reader.feed(dom)
    text = " ".join(" ".join(reader.parts).split())
    assert text.startswith("cassette replay failed: 2 hits"), text[:300]
    # the miss's differing field, both values, in its table; the stale refusal's message
    assert 'Path Asked Recorded model "gpt-4o-mini" "gpt-4o"' in text
    assert f"cassette stale: {file_of(run.cassettes, 'old')} was recorded 40 days ago" in text
    assert f"Unused recordings (1) {file_of(run.cassettes, 'unused')}" in text
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, len(png)


# A pytest project using the plugin, asking the run's recorded prompts again: test_hit the same,
# test_changed with a second message the recording has not.
PROJECT = """
import os, openai

def ask(*messages):
    client = openai.OpenAI(api_key="sk-test-plugin", base_url=os.environ["FAKE_UPSTREAM"] + "/v1",
                           max_retries=0)
    return client.chat.completions.create(model="gpt-4o", messages=list(messages)
        ).choices[0].message.content

def test_hit():
    assert ask({"role": "user", "content": "one"}) == "Answer 1 to: one"

def test_changed():
    assert ask({"role": "user", "content": "two"}, {"role": "user", "content": "more"})
"""


@pytest.mark.slow
def test_pytest_plugin_writes_the_reports_once_at_the_end(
    run: Run, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    """Replaying the run's cassettes (shared ones, the fallback of every test): one JUnit case
    per test, the miss in the test that caused it, one Markdown row and one annotation, the
    step summary written once, by the plugin at the end (not also by its proxy; under xdist
    each worker's proxy is started the same way)."""
    monkeypatch.setenv("FAKE_UPSTREAM", f"http://{run.host}")  # replayed: it is not asked
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    step = pytester.path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    pytester.makepyfile(test_app=PROJECT)
    replayed = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        *UNUSED_PLUGINS,
        f"--cassette-dir={run.cassettes}",
        "--cassette-mode=replay",
        "--cassette-junit=junit.xml",
        "--cassette-markdown=report.md",
        timeout=120,
    )
    replayed.assert_outcomes(passed=1, failed=1)
    xml = junitparser.JUnitXml.fromfile(str(pytester.path / "junit.xml"))
    [suite] = list(xml)
    cases = {c.name: c.result for c in suite}
    assert set(cases) == {"test_app.py::test_hit", "test_app.py::test_changed"}
    assert not cases["test_app.py::test_hit"]
    [failure] = cases["test_app.py::test_changed"]
    assert failure.type == "cassette miss" and failure.message.startswith("cassette miss: ")
    assert f"Nearest recording: {file_of(run.cassettes, 'two')}" in failure.message
    assert 'messages[1]: asked {"role":"user","content":"more"}, recorded (absent)' in failure.text
    text = (pytester.path / "report.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(rows) == 1 and rows[0].startswith("| `test_app.py::test_changed` |"), text
    assert '`messages[1]`: `{"role":"user","content":"more"}` (recorded `(absent)`)' in rows[0]
    commands = [ln for ln in replayed.outlines if ln.startswith("::")]
    assert len(commands) == 1 and commands[0].startswith(
        "::error title=cassette miss::test_app.py::test_changed: cassette miss: "
    ), replayed.outlines
    assert step.read_text() == text + "\n"


def test_tokens_are_read_from_each_providers_usage_shape():
    """Unit test: the usage objects as each provider documents them (OpenAI chat and Responses,
    Anthropic with its cache counts apart, Gemini with thinking tokens, Ollama, Bedrock's
    Converse with its cache counts, Llama on Bedrock)."""
    assert tokens_of({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}) == (5, 6)
    responses = {
        "input_tokens": 9,
        "output_tokens": 4,
        "input_tokens_details": {"cached_tokens": 2},
    }
    assert tokens_of(responses) == (9, 4)
    anthropic = {
        "input_tokens": 9,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 2,
        "output_tokens": 4,
    }
    assert tokens_of(anthropic) == (14, 4)
    gemini = {"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}
    assert tokens_of(gemini) == (7, 5)
    assert tokens_of({"prompt_eval_count": 8, "eval_count": 2}) == (8, 2)
    converse = {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17, "cacheReadInputTokens": 4}
    assert tokens_of(converse) == (16, 5)
    assert tokens_of({"prompt_token_count": 6, "generation_token_count": 3}) == (6, 3)
    assert [tokens_of(u) for u in (None, {}, {"cost": 1}, [1])] == [None] * 4


def test_a_bad_price_file_is_a_usage_error_before_anything_runs(tmp_path: Path):
    bad = tmp_path / "prices.json"
    bad.write_text('{"gpt-4o": {"input": 2.5}}')
    result = subprocess.run(
        [CASSETTE, "run", "--prices", str(bad), "--", "false"], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "'gpt-4o' must be" in result.stderr and "starting the proxy" not in result.stderr


def test_the_proxy_writes_the_reports_itself_when_it_stops(
    run: Run, proxies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``cassette proxy`` and plain mitmdump: the options ask the addon, which writes the
    reports when it stops, and under GitHub Actions its step summary and annotations."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step.md"))
    proxy = proxies(
        run.cassettes,
        "replay",
        cassette_markdown=str(tmp_path / "report.md"),
        cassette_junit=str(tmp_path / "junit.xml"),
    )
    client = openai.OpenAI(
        api_key=FAKE_KEY,
        base_url=f"http://{run.host}/v1",
        max_retries=0,
        http_client=sdk_http_client(proxy),
    )
    asked = [("gpt-4o", "two"), ("gpt-4o", "three")]
    for model, prompt in asked:
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}]
            )
    log = proxy.stop()
    [suite] = list(junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml")))
    assert (suite.tests, suite.failures) == (2, 1)
    text = (tmp_path / "report.md").read_text()
    [row] = [ln for ln in text.splitlines() if ln.startswith("| - |")]  # no test id
    assert '`messages[0].content`: `"three"` (recorded `"' in row
    assert (tmp_path / "step.md").read_text() == text + "\n"
    assert log.count("::error title=cassette miss::cassette miss: ") == 1, log[-3000:]


def test_xdist_workers_summaries_add_up_their_requests_and_tokens():
    """Unit test: the controller's summary (``Summary.combine``) keeps every worker's request
    records and adds up their tokens, so its reports show the whole run."""
    one = Summary(
        requests=1,
        input_tokens_served=5,
        output_tokens_served=6,
        request_log=[{"outcome": "hit", "test_id": "a"}],
    )
    two = Summary(requests=1, misses=1, request_log=[{"outcome": "miss", "test_id": "b"}])
    total = Summary.combine([one, two])
    assert [r["test_id"] for r in total.request_log] == ["a", "b"]
    assert (total.input_tokens_served, total.output_tokens_served) == (5, 6)


def test_a_miss_on_a_path_of_control_characters_leaves_every_report_valid(
    tmp_path: Path, proxies, http_upstream, monkeypatch: pytest.MonkeyPatch
):
    """A replay miss on a path holding ``%00``, ``%1B[31m`` and ``%7F`` (decoded for the key):
    the JUnit file parses with junitparser and with ElementTree, the Markdown, the HTML, the
    annotations and every log line show each control character as a visible escape, and no
    raw control byte reaches the proxy's output (plain mitmdump writing its reports)."""
    from xml.etree import ElementTree

    from tests.test_fail_closed import send

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step.md"))
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    reports = {kind: tmp_path / f"report.{kind}" for kind in ("md", "xml", "html")}
    proxy = proxies(
        cassettes,
        "replay",
        cassette_markdown=str(reports["md"]),
        cassette_junit=str(reports["xml"]),
        cassette_report=str(reports["html"]),
        cassette_incidental=f"POST {http_upstream.base_url.removeprefix('http://')}/telemetry/*",
    )
    path = "/v1/a%00b%1B[31mred%7F/chat/completions"
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    conn.request("POST", http_upstream.base_url + path, body)
    answer = conn.getresponse()
    message = json.loads(answer.read())["error"]["message"]  # what the SDKs show
    conn.close()
    # an incidental request's log line names its path too
    incidental = "/telemetry/%1B[31m%00%7F"
    assert send(proxy, http_upstream.base_url, "POST", incidental, {}, b"{}") == 204
    log = proxy.stop()
    assert answer.status == 424
    assert counted(log, "misses", "incidental") == (1, 1), log[-3000:]
    assert "/telemetry/\\x1b[31m\\x00\\x7f is not under test" in log, log[-3000:]
    shown = "/v1/a\\x00b\\x1b[31mred\\x7f/chat/completions"
    [suite] = list(junitparser.JUnitXml.fromfile(str(reports["xml"])))
    assert (suite.tests, suite.failures) == (2, 1)  # the miss, and the incidental request
    [case] = [
        c
        for c in ElementTree.parse(reports["xml"]).iter("testcase")
        if c.find("failure") is not None
    ]
    assert shown in case.get("name", ""), case.get("name")
    failure = case.find("failure")
    assert failure is not None and shown in failure.get("message", "")
    for name, text in [
        *((p.name, p.read_text()) for p in [*reports.values(), tmp_path / "step.md"]),
        ("log", log),
        ("the 424's message", message),
    ]:
        raw = sorted({c for c in text if c in "\x00\x1b\x7f"})
        assert not raw, f"{name} holds raw {raw}"
        assert shown in text, f"{name} does not show {shown}: {text[-2000:]}"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_any_text_a_request_holds_renders_as_well_formed_xml_and_printable_text(text: str):
    """Unit test: whatever a test id, a path, a model name, a message and a differing value
    hold (any code point: controls, lone surrogates, U+FFFF), the JUnit file parses with
    ElementTree and no report holds a control character but line breaks and tabs."""
    from xml.etree import ElementTree

    from proxy_addon.reports import html, junit, markdown
    from proxy_addon.reports.run import build

    record = {
        "test_id": f"t{text}",
        "method": "POST",
        "host": "h",
        "path": f"/v1/{text}",
        "model": text,
        "outcome": "miss",
        "at": 1.0,
        "message": f"cassette miss: {text}",
        "differences": [{"path": "messages[0].content", "asked": text, "recorded": "x"}],
    }
    run = build(Summary(requests=1, misses=1, request_log=[record]), "replay")
    ElementTree.fromstring(junit.render(run).encode())
    for rendered in (junit.render(run), markdown.render(run), html.render(run)):
        bad = [c for c in rendered if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t"]
        assert not bad, bad
