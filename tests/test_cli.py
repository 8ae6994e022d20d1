"""The `cassette` command, through click's runner and as the installed executable."""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

from proxy_addon import formats
from proxy_addon.cli import main
from proxy_addon.store.layout import iter_cassette_files
from tests.conftest import CASSETTE, FIXTURES, SEED, counted

JOKE = "Why don't skeletons fight each other? \n\nThey don't have the guts!"


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cassettes"
    shutil.copytree(FIXTURES, d, ignore=shutil.ignore_patterns("*.txt"))
    shutil.copy(SEED, d)
    return d


def test_every_command_says_what_it_does_with_an_example():
    listing = run("--help").output
    assert "Example" in listing
    context = click.Context(main)
    names = main.list_commands(context)
    assert len(names) == 14, names
    for name in names:  # each command's module is imported when it is asked for
        assert f"\n  {name} " in listing, name
        command = main.get_command(context, name)
        assert command is not None and command.name == name
        out = run(name, "--help").output
        assert out.startswith(f"Usage: main {name} "), (name, out[:80])
        assert "Example" in out, name


def test_cassette_run_imports_none_of_the_modules_that_read_cassettes():
    """``cassette run`` starts a proxy before anything: the store, the formats, rich and
    mitmproxy (the proxy's own process imports those) would only delay it."""
    code = (
        "import sys, click; from proxy_addon.cli import main; "
        "context = click.Context(main); "
        "main.get_command(context, 'run'); main.get_command(context, 'proxy'); "
        "print(sorted({m.split('.')[0] if not m.startswith('proxy_addon') else "
        "'.'.join(m.split('.')[:2]) for m in sys.modules}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    for heavy in (
        "proxy_addon.store",
        "proxy_addon.formats",
        "proxy_addon.matching",
        "rich",
        "mitmproxy",
    ):
        assert f"'{heavy}'" not in loaded.stdout, loaded.stdout
    assert "'proxy_addon.runner'" in loaded.stdout


def test_ls_lists_llama_stack_and_our_own(fixture_dir, tmp_path):
    result = run("ls", "--dir", str(fixture_dir))
    assert result.exit_code == 0
    assert "10 recordings" in result.output
    assert "*/v1/chat/completions" in result.output and "sse, 18 events" in result.output
    rows = orjson.loads(run("ls", "--dir", str(fixture_dir), "--json").output)
    assert len(rows) == 10
    ollama = [r for r in rows if r["endpoint"] == "*/api/generate"]
    assert ollama[0]["stream"] == "ndjson, 18 events" and ollama[0]["status"] == [200]
    grep = orjson.loads(
        run("ls", "--dir", str(fixture_dir), "--grep", "EMBEDDINGS", "--json").output
    )
    assert [r["endpoint"] for r in grep] == ["*/v1/embeddings"]


def test_dir_comes_from_the_environment(fixture_dir):
    result = run("ls", "--json", env={"CASSETTE_DIR": str(fixture_dir)})
    assert len(orjson.loads(result.output)) == 10


def test_text_reassembles_the_seed_joke(fixture_dir):
    result = run("text", str(fixture_dir / SEED.name))
    assert result.output == JOKE + "\n"
    # a unique key prefix works as well as a path
    [key] = [
        r["key"]
        for r in orjson.loads(run("ls", "--dir", str(fixture_dir), "--json").output)
        if r["file"] == SEED.name
    ]
    assert run("text", key[:8], "--dir", str(fixture_dir)).output == JOKE + "\n"


def test_text_of_tool_calls_and_anthropic(fixture_dir):
    tools = run("text", "c4b7e1633e", "--dir", str(fixture_dir)).output
    assert '[tool call] get_weather({"location":"Paris"})' in tools
    assert "total_tokens=124" in tools
    anthropic = run("text", "f22657bfd86d", "--dir", str(fixture_dir)).output
    assert "1, 2, 3, 4, 5" in anthropic and "[reasoning]" in anthropic


def test_ambiguous_or_unknown_reference_is_a_usage_error(fixture_dir):
    result = CliRunner().invoke(main, ["show", "", "--dir", str(fixture_dir)])
    assert result.exit_code == 2 and "ambiguous" in result.output
    result = CliRunner().invoke(main, ["show", "zzzz", "--dir", str(fixture_dir)])
    assert result.exit_code == 2 and "no cassette file or key prefix" in result.output


def test_show_streams_event_by_event_and_raw(fixture_dir):
    out = run("show", str(fixture_dir / SEED.name)).output
    assert "POST https://api.openai.com/v1/chat/completions" in out
    assert "answers this request on any host; requests to api.openai.com prefer it" in out
    assert "sse stream, 18 events" in out
    assert '"content":" skeleton"' in out and "[DONE]" in out
    raw = run("show", "--raw", str(fixture_dir / SEED.name)).output
    assert raw == SEED.read_text()


def test_verify_passes_clean_dirs_and_names_corrupt_files(fixture_dir):
    ok = run("verify", "--dir", str(fixture_dir))
    assert ok.exit_code == 0 and "10 files checked, 0 bad" in ok.output
    (fixture_dir / "sub").mkdir()
    broken = fixture_dir / "sub" / "broken.json"
    broken.write_bytes(SEED.read_bytes()[:300])
    bad = CliRunner().invoke(main, ["verify", "--dir", str(fixture_dir)])
    assert bad.exit_code == 1
    assert f"{broken}: not valid JSON" in bad.output


# One fake secret of each kind, planted by hand at depth; none shaped like a key but the last,
# so that each rule is seen finding its own.
SECRETS = {
    "bearer": "fake-bearer-a001",
    "team": "fake-team-a002",
    "userinfo": "fake-userinfo-a003",
    "query": "fake-query-a004",
    "nested_cs": "fake-nested-cs-a005",
    "nested_pw": "fake-nested-pw-a006",
    "field": "fake-field-a007",
    "path": "fake-path-a008",
    "access": "fake-access-a009",
    "id_token": "fake-idtoken-a010",
    "refresh": "fake-refresh-a011",
    "cookie": "fake-cookie-a012",
    "form": "fake-form-a013",
    "multipart": "fake-multipart-a014",
    "env": "fake-env-a015",
    "xapikey": "fake-xapikey-a016",
    "call_args": "fake-callargs-a017",
    "llama_header": "fake-llamahdr-a018",
    "shape": "sk-test-planted-a019-abcdefgh",
}


def planted_cassette() -> dict:
    """Our format, written by hand (not by the code under test)."""
    s = SECRETS
    b64 = base64.b64encode(s["xapikey"].encode()).decode()
    return {
        "format": "llm-cassette",
        "version": 1,
        "request": {
            "method": "POST",
            "url": f"https://me:{s['userinfo']}@api.example/v1/chat?key={s['query']}&alt=sse",
            "headers": {
                "authorization": f"Bearer {s['bearer']}",
                "content-type": "application/json",
                "x-api-key": s["xapikey"],
                "x-team-token": s["team"],
            },
            "body": {
                "model": "m",
                "auth": {"client_secret": s["nested_cs"]},
                "credentials": [{"password": s["nested_pw"]}],
                "team_ref": s["field"],
                "meta": {"owner": s["path"]},
                "messages": [{"role": "user", "content": f"decode {b64} please"}],
            },
        },
        "responses": [
            {
                "status": 200,
                "headers": [
                    ["content-type", "application/json"],
                    ["set-cookie", f"sid={s['cookie']}; Path=/"],
                ],
                "body": {
                    "data": [
                        {
                            "token": {
                                "access_token": s["access"],
                                "id_token": s["id_token"],
                                "refresh_token": s["refresh"],
                            }
                        }
                    ]
                },
            },
            {
                "status": 200,
                "headers": [["content-type", "text/event-stream"]],
                "stream": {
                    "format": "sse",
                    "complete": True,
                    "events": [
                        {
                            "t": 0.1,
                            "data": {
                                "choices": [{"delta": {"content": f"you sent {s['bearer']}"}}]
                            },
                        },
                        {
                            "t": 0.2,
                            "comments": [f"env {s['env']}"],
                            "id": s["shape"],
                            "data": "[DONE]",
                        },
                    ],
                },
            },
            {
                "status": 200,
                "headers": [["content-type", "application/x-www-form-urlencoded"]],
                "body_text": f"client_secret={s['form']}&grant_type=refresh_token",
            },
            {
                "status": 200,
                "headers": [],
                "body_multipart": [{"name": "api_key", "value": s["multipart"]}],
            },
        ],
        "llama_stack": {"request": {"call_args": {"extra_body": {"api_key": s["call_args"]}}}},
    }


def test_verify_names_each_planted_secret_and_scrub_removes_them(fixture_dir, monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", SECRETS["env"])
    ours = fixture_dir / "sub" / "ours.json"
    ours.parent.mkdir()
    ours.write_bytes(orjson.dumps(planted_cassette()))
    theirs = fixture_dir / "theirs.json"  # llama-stack's format
    doc = orjson.loads(SEED.read_bytes())
    doc["request"]["headers"] = {"Authorization": f"Bearer {SECRETS['llama_header']}"}
    doc["request"]["body"]["messages"][0]["content"] = f"key {SECRETS['shape']}"
    theirs.write_bytes(orjson.dumps(doc))
    extra = [
        "--redact-field",
        "team_ref",
        "--redact-field",
        "meta.owner",
        "--redact-header",
        "x-team-token",
    ]
    found = CliRunner().invoke(main, ["verify", "--dir", str(fixture_dir), *extra])
    assert found.exit_code == 1
    assert "12 files checked, 2 bad" in found.output
    for where in [
        "request.url: user info (by name)",
        "request.url: query parameter key (by name)",
        "request.headers.authorization: header authorization (by name)",
        "request.headers.x-team-token: header x-team-token (by name)",
        "request.headers.x-api-key: header x-api-key (by name)",
        "request.body.auth.client_secret: field client_secret (by name)",
        "request.body.credentials[0].password: field password (by name)",
        "request.body.team_ref: field team_ref (by name)",
        "request.body.meta.owner: field owner (by name)",
        "request.body.messages[0].content: a value redacted by name in this exchange (by value)",
        "responses[0].headers[1][1]: header set-cookie (by name)",
        "responses[0].body.data[0].token.access_token: field access_token (by name)",
        "responses[0].body.data[0].token.id_token: field id_token (by name)",
        "responses[0].body.data[0].token.refresh_token: field refresh_token (by name)",
        "responses[1].stream.events[0].data.choices[0].delta.content: a value redacted by name",
        "responses[1].stream.events[1].comments[0]: $ACME_API_KEY (by value)",
        "responses[1].stream.events[1].id: an sk-... API key (by shape)",
        "responses[2].body_text: form field client_secret (by name)",
        "responses[3].body_multipart[0].value: multipart field api_key (by name)",
        "llama_stack.request.call_args.extra_body.api_key: field api_key (by name)",
    ]:
        assert f"{ours}: {where}" in found.output, where
    assert f"{theirs}: request.headers.Authorization: field Authorization (by name)" in found.output
    assert (
        f"{theirs}: request.body.messages[0].content: an sk-... API key (by shape)" in found.output
    )
    clean_before = {
        p: p.read_bytes() for p in fixture_dir.rglob("*.json") if p not in (ours, theirs)
    }

    scrubbed = CliRunner().invoke(main, ["scrub", "--dir", str(fixture_dir), *extra])
    assert scrubbed.exit_code == 0, scrubbed.output
    assert (
        f"{ours}: request.body.auth.client_secret: field client_secret (by name): replaced"
        in scrubbed.output
    )
    assert "12 files checked: 22 secrets replaced in 2 files" in scrubbed.output
    for path in (ours, theirs):
        raw = path.read_bytes()
        for secret in SECRETS.values():
            assert secret.encode() not in raw, (path, secret)
        assert base64.b64encode(SECRETS["xapikey"].encode()).rstrip(b"=") not in raw
    assert formats.load(theirs).source == "llama-stack"  # still llama-stack's format
    assert formats.load(ours).request.body.value["meta"] == {"owner": "<redacted>"}
    assert {p: p.read_bytes() for p in clean_before} == clean_before  # the others untouched
    again = CliRunner().invoke(main, ["verify", "--dir", str(fixture_dir), *extra])
    assert again.exit_code == 0 and "12 files checked, 0 bad" in again.output
    nothing = run("scrub", "--dir", str(fixture_dir), *extra)
    assert "12 files checked: nothing to scrub" in nothing.output


def test_import_llama_stack_writes_no_key_from_call_args(tmp_path, monkeypatch):
    monkeypatch.delenv("ACME_API_KEY", raising=False)
    doc = orjson.loads(SEED.read_bytes())
    doc["request"]["body"].update(
        extra_body={"api_key": "fake-extra-body-b001", "nested": {"password": "fake-pw-b002"}},
        extra_headers={"Authorization": "Bearer fake-extra-hdr-b003"},
        extra_query={"key": "fake-extra-query-b004"},
    )
    source = tmp_path / "src" / "rec.json"
    source.parent.mkdir()
    source.write_bytes(orjson.dumps(doc))
    out = run("import-llama-stack", str(source), "--dir", str(tmp_path / "c")).output
    assert "imported 1 recordings" in out and "secrets replaced" in out
    written = list(iter_cassette_files(tmp_path / "c"))
    assert len(written) == 1
    raw = written[0].read_bytes()
    for secret in (
        b"fake-extra-body-b001",
        b"fake-pw-b002",
        b"fake-extra-hdr-b003",
        b"fake-extra-query-b004",
    ):
        assert secret not in raw
    assert run("verify", "--dir", str(tmp_path / "c")).exit_code == 0


def test_diff_names_request_and_response_paths_and_exits_1_when_they_differ(fixture_dir):
    result = CliRunner().invoke(
        main, ["diff", "c4b7e1633e", "f7c9050b81", "--dir", str(fixture_dir), "--json"]
    )
    assert result.exit_code == 1  # like diff: they differ
    diff = orjson.loads(result.output)
    assert "tools" in diff["request"] and "messages[0].content" in diff["request"]
    assert any(p.startswith("responses[0]") for p in diff["responses"])
    same = run("diff", "c4b7e1633e", "c4b7e1633e", "--dir", str(fixture_dir), "--json")
    assert same.exit_code == 0
    assert orjson.loads(same.output)["request"] == [] == orjson.loads(same.output)["responses"]
    plain = CliRunner().invoke(
        main, ["diff", "c4b7e1633e", "f7c9050b81", "--dir", str(fixture_dir)]
    )
    assert plain.exit_code == 1 and "request: differs at" in plain.output


APP = """
import os, sys, openai
client = openai.OpenAI(api_key="sk-test-run", base_url=sys.argv[1] + "/v1", max_retries=0)
for prompt in sys.argv[2:]:
    r = client.chat.completions.create(model="gpt-4o",
                                       messages=[{"role": "user", "content": prompt}])
    print(r.choices[0].message.content)
"""


def test_run_records_then_replays_and_fails_on_a_miss(tmp_path, http_upstream):
    app = tmp_path / "app.py"
    app.write_text(APP)
    cassettes = tmp_path / "cassettes"
    base = http_upstream.base_url

    def cassette_run(mode: str, *prompts: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                CASSETTE,
                "run",
                "--mode",
                mode,
                "--dir",
                str(cassettes),
                "--",
                sys.executable,
                str(app),
                base,
                *prompts,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    rec = cassette_run("record", "one", "two")
    assert rec.returncode == 0, rec.stderr
    assert rec.stdout.splitlines() == ["Answer 1 to: one", "Answer 1 to: two"]
    assert "cassette summary: 2 recorded" in rec.stderr
    hits = http_upstream.state.hits

    ok = cassette_run("replay", "one", "two")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == rec.stdout
    assert "cassette summary: 2 hits, 0 misses, 0 unused recordings (of 2)" in ok.stderr

    missed = cassette_run("replay", "one", "three")
    assert missed.returncode == 1  # the app crashed on the 424: its own exit code
    assert counted(missed.stderr, "hits", "recorded", "misses", "unused") == (1, 0, 1, 1)
    assert "cassette miss" in missed.stderr
    assert "Record it with --mode auto (or record)." in missed.stderr  # cassette run's spelling
    assert http_upstream.state.hits == hits


def test_run_exits_1_when_the_command_passed_despite_a_miss(tmp_path, fixture_dir):
    swallow = tmp_path / "swallow.py"
    swallow.write_text(
        "import openai\ntry:\n    openai.OpenAI(api_key='sk-test-x', max_retries=0)"
        ".models.retrieve('nope')\nexcept openai.APIStatusError:\n    pass\n"
    )
    result = subprocess.run(
        [CASSETTE, "run", "--dir", str(fixture_dir), "--", sys.executable, str(swallow)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert counted(result.stderr, "hits", "misses") == (0, 1)
    assert result.stderr.splitlines()[-1] == "cassette: the run fails: 1 replay misses"


def test_run_with_a_bad_directory_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [CASSETTE, "run", "--dir", str(tmp_path / "none"), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "is not a directory: nothing to replay" in result.stderr
    assert "(record first with --mode record or --mode auto)" in result.stderr


def test_proxy_runs_in_the_foreground_and_replays(fixture_dir, tmp_path):
    proc = subprocess.Popen(
        [
            CASSETTE,
            "proxy",
            "--dir",
            str(fixture_dir),
            "--port",
            "0",
            "--confdir",
            str(tmp_path / "ca"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not lines or "Stop with Ctrl-C." not in lines[-1]:  # printed once it is ready
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        [port] = [
            int(line.split("HTTPS_PROXY=http://127.0.0.1:")[1].split()[0])
            for line in lines
            if "export HTTPS_PROXY=" in line
        ]
        [openai_base] = [
            line.split("=", 1)[1].split()[0]
            for line in lines
            if line.strip().startswith("export OPENAI_BASE_URL=")
        ]
        assert openai_base.startswith("http://127.0.0.1:") and openai_base.endswith("/v1")
        import ssl

        import httpx

        ca = ssl.create_default_context(cafile=str(tmp_path / "ca" / "mitmproxy-ca-cert.pem"))
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=ca) as c:
            r = c.get("https://api.openai.com/v1/models")
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "qwen2.5"
        with httpx.Client(trust_env=False) as direct:  # the listener: plain HTTP, no CA
            assert direct.get(openai_base + "/models").json() == r.json()
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0
    assert counted(rest, "hits") == (2,)  # its summary, as it stopped


def test_import_then_export_llama_stack_round_trips(tmp_path):
    cassettes, exported = tmp_path / "cassettes", tmp_path / "exported"
    result = run("import-llama-stack", str(FIXTURES), "--dir", str(cassettes))
    assert result.output.strip() == f"imported 9 recordings into {cassettes}"
    assert run("verify", "--dir", str(cassettes)).exit_code == 0
    files = list(iter_cassette_files(cassettes))
    assert all(formats.load(f).source == "cassette" for f in files)  # our format now
    result = run("export-llama-stack", str(cassettes), "--to", str(exported))
    assert "exported 9 recordings" in result.output
    for original in FIXTURES.glob("*.json"):
        if len(original.stem) == 12:
            continue  # named by an older recipe than the one llama-stack uses now
        again = exported / original.name
        assert again.exists(), original.name
        assert (
            orjson.loads(again.read_bytes())["request"]
            == orjson.loads(original.read_bytes())["request"]
        )


def test_import_skips_files_that_are_not_llama_stack(tmp_path):
    (tmp_path / "junk.json").write_text("{}")
    result = CliRunner().invoke(
        main, ["import-llama-stack", str(tmp_path / "junk.json"), "--dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 1 and "skipped" in result.output
