"""The cloud providers through the real SDKs: boto3's bedrock-runtime (Converse, ConverseStream,
InvokeModel, InvokeModelWithResponseStream, with Anthropic, Llama, Titan and Nova payloads), the
anthropic SDK's AnthropicBedrock and AnthropicVertex, google-genai on Vertex AI, and openai's
AzureOpenAI with an api-key and with an Entra ID bearer token.

One app per SDK makes all its calls in one process (tests/apps/). Each is recorded through a
real mitmdump against a loopback stand-in (tests/clouds.py: it checks every SigV4 signature and
every bearer token), the SDKs calling their real hostnames through HTTPS_PROXY or a base-URL
listener, with a test-only addon routing the proxy's upstream connections to the stand-in
(tests/addons/route.py: no DNS). Then it is replayed with the stand-in stopped (its port watched)
and other credentials: web identity through STS for boto3, the placeholder keys `cassette run`
sets in a replay for AnthropicBedrock (and whatever else is unset), the GCE metadata server for
Google, another key and client secret for Azure, their token requests answered by the proxy."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import certifi
import httpx
import orjson
import pytest
from botocore.eventstream import EventStreamBuffer
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy_addon.cli import main
from proxy_addon.runner.process import RunningProxy
from proxy_addon.runner.providers import PLACEHOLDER_KEY, placeholder_keys
from proxy_addon.serving import tokens
from tests import clouds
from tests.conftest import TEST_ADDONS, counted
from tests.fake_keys import rep
from tests.test_realtime import PortWatch

APPS = Path(__file__).parent / "apps"
ROUTE = TEST_ADDONS / "route.py"
PROMPT = "What is the capital of France?"
CHANGED = "What is the capital of Italy?"
API_VERSION, OTHER_API_VERSION = "2024-10-21", "2025-01-01-preview"
AZURE = "https://cassette-test.openai.azure.com"
VERTEX = "https://us-east5-aiplatform.googleapis.com/v1"
BEDROCK = "bedrock-runtime.us-east-1.amazonaws.com"

# Credentials: each made up, each in a shape its provider uses (built at run time).
AWS_KEY_ID = "AKIA" + rep("RECORDTEST0", 16)
AWS_SESSION = rep("RecordedSessionToken/", 80)
WEB_IDENTITY = "eyJhbGciOiJSUzI1NiJ9." + rep("ReplayWebIdentity", 60) + ".sig"
ENTRA_SECRET, OTHER_ENTRA_SECRET = "Rec8Q~" + rep("recordsecret0", 34), rep("replaysecret", 40)
OTHER_AZURE_KEY = rep("fedcba9876543210", 32)


@dataclass
class Sdk:
    app: str
    calls: int  # model calls the app makes, each a recording
    hosts: set[str]  # the hosts its cassettes are under
    record: Callable[[Path], dict[str, str]]  # its credentials when recording
    replay: Callable[[Path], dict[str, str]]  # other credentials for the replay
    # where each miss of the changed run differs (JSON paths in the request)
    missed: set[str]
    token_requests: set[str] = field(default_factory=set)  # the stand-in answers in record
    listeners: tuple[str, ...] = ()  # the listeners (provider names) of the variables it reads
    versioned: bool = False  # its arguments name the api-version too (PROMPT@VERSION)
    refresh: bool = False  # re-recorded too: its token requests must reach the stand-in

    def arguments(self, prompt: str, version: str) -> str:
        return f"{prompt}@{version}" if self.versioned else prompt


def service_account(folder: Path) -> dict[str, str]:
    """A service account key file of a fresh RSA key, with Google's token endpoint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = folder / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "cassette-test",
                "private_key_id": rep("0123456789abcdef", 40),
                "private_key": pem,
                "client_email": "recorder@cassette-test.iam.gserviceaccount.com",
                "client_id": "100000000000000000001",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return {"GOOGLE_APPLICATION_CREDENTIALS": str(path)}


def aws_keys(_: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": clouds.AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_SESSION,
    }


def web_identity(folder: Path) -> dict[str, str]:
    """A role assumed with a web identity token (as CI runners do): botocore asks STS first."""
    path = folder / "web-identity-token"
    path.write_text(WEB_IDENTITY)
    return {
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/ci",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(path),
        "AWS_ROLE_SESSION_NAME": "ci",
    }


SDKS = {
    "boto3": Sdk(
        "bedrock_boto3_app.py",
        11,
        {BEDROCK},
        aws_keys,
        web_identity,
        {"messages[0].content[0].text", "messages[0].content", "prompt", "inputText"},
    ),
    "anthropic": Sdk(
        "anthropic_clouds_app.py",
        4,
        {BEDROCK, "us-east5-aiplatform.googleapis.com"},
        lambda d: {**aws_keys(d), **service_account(d)},
        lambda _: {},  # cassette run's placeholder AWS keys; the GCE metadata server
        {"messages[0].content"},
        {"/token"},
        listeners=("vertex-anthropic",),
    ),
    "google-genai": Sdk(
        "genai_vertex_app.py",
        2,
        {"us-central1-aiplatform.googleapis.com"},
        service_account,
        lambda _: {},  # the GCE metadata server, through the proxy
        {"contents[0].parts[0].text"},
        {"/token"},
        refresh=True,
    ),
    "azure-openai": Sdk(
        "azure_openai_app.py",
        3,
        {"cassette-test.openai.azure.com"},
        lambda _: {"AZURE_OPENAI_API_KEY": clouds.AZURE_KEY, "AZURE_CLIENT_SECRET": ENTRA_SECRET},
        lambda _: {
            "AZURE_OPENAI_API_KEY": OTHER_AZURE_KEY,
            "AZURE_CLIENT_SECRET": OTHER_ENTRA_SECRET,
        },
        {"query.api-version", "query.api-version, messages[0].content"},
        {"/00000000-0000-0000-0000-000000000001/oauth2/v2.0/token"},
        listeners=("azure-openai",),
        versioned=True,
    ),
}


def run_app(
    sdk: Sdk,
    proxy: RunningProxy,
    credentials: dict[str, str],
    home: Path,
    *arguments: str,
    replay: bool = False,
) -> list[dict]:
    """The app in a fresh interpreter with a scrubbed environment: only what it needs, the
    proxy's variables (client_env) and the credentials given; in a replay also the placeholder
    keys ``cassette run`` sets there for what is unset (AWS keys among them). Its results per
    argument."""
    home.mkdir(exist_ok=True)
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(home / "gcloud"),  # no gcloud credentials of this machine
        "AWS_CONFIG_FILE": str(home / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CA_BUNDLE": certifi.where(),  # as a machine may preset it: boto3 reads it first
        **credentials,
    }
    if replay:
        base.update(placeholder_keys(base))
    done = subprocess.run(
        [sys.executable, str(APPS / sdk.app), *arguments],
        env=proxy.client_env(base),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def variants(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode().rstrip("="),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SDKS))
def test_cloud_sdk_records_then_replays_with_other_credentials(
    name, tmp_path, proxies, upstream_cert, monkeypatch
):
    sdk = SDKS[name]
    cassettes = tmp_path / "cassettes"
    # the user's base URLs, for the listeners the proxy opens (AzureOpenAI, AnthropicVertex)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", AZURE)
    monkeypatch.setenv("ANTHROPIC_VERTEX_BASE_URL", VERTEX)
    stand_in = clouds.CloudStandIn(upstream_cert, ENTRA_SECRET).start()
    route = f"127.0.0.1:{stand_in.port}"

    proxy = proxies(
        cassettes, "record", (ROUTE,), listeners=dict.fromkeys(sdk.listeners), route_to=route
    )
    (recorded,) = run_app(
        sdk, proxy, sdk.record(tmp_path), tmp_path / "record", sdk.arguments(PROMPT, API_VERSION)
    )
    record_log = proxy.stop()
    stand_in.stop()
    assert stand_in.problems == []  # every signature checked by the stand-in matched
    errors = {k: v for k, v in recorded.items() if isinstance(v, dict) and "error" in v}
    assert not errors and len(recorded) == sdk.calls, recorded
    assert counted(record_log, "recorded") == (sdk.calls,)
    # token requests went to the stand-in and are in no cassette
    assert sdk.token_requests <= {path for path, _ in stand_in.sent}
    assert {p.name for p in cassettes.iterdir()} == sdk.hosts

    watch = PortWatch(stand_in.port)
    try:
        proxy = proxies(
            cassettes, "replay", (ROUTE,), listeners=dict.fromkeys(sdk.listeners), route_to=route
        )
        replayed, missed = run_app(
            sdk,
            proxy,
            sdk.replay(tmp_path),
            tmp_path / "replay",
            sdk.arguments(PROMPT, API_VERSION),
            sdk.arguments(CHANGED, OTHER_API_VERSION),
            replay=True,
        )
        log = proxy.stop()
    finally:
        watch.close()
    assert replayed == recorded
    assert watch.connections == 0
    assert counted(log, "hits", "misses", "refused", "internal_errors") == (
        sdk.calls,
        sdk.calls,
        0,
        0,
    )
    assert all("error" in v for v in missed.values()), missed
    where = re.findall(r"which differs at: (.*?)\. ", log)
    assert len(where) == sdk.calls and set(where) <= sdk.missed, where

    # no credential, the record's or the replay's, in any byte on disk or in the proxy's output
    secrets = [
        AWS_KEY_ID,
        clouds.AWS_SECRET,
        AWS_SESSION,
        WEB_IDENTITY,
        clouds.GOOGLE_TOKEN,
        clouds.ENTRA_TOKEN,
        clouds.AZURE_KEY,
        OTHER_AZURE_KEY,
        ENTRA_SECRET,
        OTHER_ENTRA_SECRET,
        tokens.GOOGLE_TOKEN,
        tokens.AWS_KEY_ID,
        tokens.AWS_SESSION_TOKEN,
        PLACEHOLDER_KEY,
        *stand_in.signatures,
    ]
    files = [p for p in cassettes.rglob("*") if p.is_file()]
    assert len(files) == sdk.calls
    for where_, text in [(str(p), p.read_bytes().decode()) for p in files] + [
        ("log", record_log + log)
    ]:
        found = [s[:12] for s in secrets for v in variants(s) if v in text]
        assert not found, f"{where_} holds {found}"

    # what the user saw: cassette text shows every answer the SDK got
    shown = "\n".join(
        CliRunner().invoke(main, ["text", "--dir", str(cassettes), str(p)]).output for p in files
    )
    answers = [v for v in recorded.values() if isinstance(v, str)]
    assert answers and all(a in shown for a in answers), shown
    check_event_streams(files, recorded, stand_in)
    if sdk.refresh:  # a re-recording needs a real token: refresh forwards the token request
        stand_in = clouds.CloudStandIn(upstream_cert, ENTRA_SECRET).start()
        route = f"127.0.0.1:{stand_in.port}"
        proxy = proxies(
            cassettes, "refresh", (ROUTE,), listeners=dict.fromkeys(sdk.listeners), route_to=route
        )
        (refreshed,) = run_app(
            sdk,
            proxy,
            sdk.record(tmp_path),
            tmp_path / "refresh",
            sdk.arguments(PROMPT, API_VERSION),
        )
        log = proxy.stop()
        stand_in.stop()
        assert refreshed == recorded
        assert sdk.token_requests <= {path for path, _ in stand_in.sent}
        assert counted(log, "recorded", "misses", "refused") == (sdk.calls, 0, 0)


def check_event_streams(files: list[Path], recorded: dict, stand_in: clouds.CloudStandIn) -> None:
    """Bedrock's streams are stored as readable events (read with plain JSON), and the replay
    gave the SDK the very bytes the stand-in sent."""
    streams = [
        p for p in files if p.parent.name in ("converse-stream", "invoke-with-response-stream")
    ]
    for path in streams:
        doc = orjson.loads(path.read_bytes())
        assert doc["version"] == 3
        stream = doc["responses"][0]["stream"]
        assert stream["format"] == "eventstream" and stream["complete"]
        for event in stream["events"]:
            assert [h[0] for h in event["headers"]] == [
                ":event-type",
                ":content-type",
                ":message-type",
            ]
            if path.parent.name == "invoke-with-response-stream":
                assert isinstance(event["data"]["bytes"], dict)  # the model's JSON, decoded
    raw = recorded.get("raw stream")
    if raw is not None:
        assert raw["sha256"] in {sha for _, sha in stand_in.sent}


def test_token_requests_get_placeholders_of_an_hour_in_replay(tmp_path, proxies):
    """Each kind of token request, as its SDK sends it, is answered by a replay with an empty
    cassette folder: the shape its SDK reads, valid for an hour from now (read with plain JSON,
    XML and base64), counted as incidental, nothing written."""
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    proxy = proxies(cassettes, "replay")
    now = time.time()
    with httpx.Client(
        proxy=proxy.url, timeout=20, verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
    ) as client:
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "x.y.z"}
        google = client.post("https://oauth2.googleapis.com/token", data=form)
        metadata = client.get(
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/"
            "default/token",
            headers={"metadata-flavor": "Google"},
        )
        entra = client.post(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_secret": "s", "client_id": "c"},
        )
        sts = client.post(
            "https://sts.us-east-1.amazonaws.com/",
            data={"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15"},
        )
    log = proxy.stop()
    assert [r.status_code for r in (google, metadata, entra, sts)] == [200] * 4
    assert google.json()["access_token"].startswith("ya29.")
    assert metadata.headers["metadata-flavor"] == "Google"
    for answer in (google.json(), metadata.json(), entra.json()):
        assert 3500 < answer["expires_in"] <= 3600, answer
    claims = entra.json()["access_token"].split(".")[1]
    expires = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"]
    assert 3500 < expires - now < 3700
    found = ET.fromstring(sts.content).find(".//{*}Credentials")
    assert found is not None and found.findtext("{*}AccessKeyId", "").startswith("ASIA")
    expiration = datetime.fromisoformat(found.findtext("{*}Expiration", "").replace("Z", "+00:00"))
    assert 3500 < expiration.timestamp() - now < 3700
    assert counted(log, "incidental", "misses", "refused") == (4, 0, 0)
    assert not any(cassettes.iterdir())


def test_a_paced_replay_of_an_event_stream_sends_the_recorded_bytes_at_the_recorded_times(
    tmp_path, proxies
):
    """``cassette_pace=1`` goes through the pacer, which frames an event stream too: the bytes
    a client reads are the stand-in's encoding of the same messages (CRC32s computed again),
    botocore's decoder reads them, and the last one comes no sooner than its recorded time."""
    events = [
        ("messageStart", {"role": "assistant"}),
        *(
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}})
            for w in ("Paris", " is", " the capital.")
        ),
        ("messageStop", {"stopReason": "end_turn"}),
        ("metadata", {"usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14}}),
    ]
    wire = [clouds.bedrock_event(name, payload) for name, payload in events]
    url = f"https://{BEDROCK}/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    doc = {
        "format": "llm-cassette",
        "version": 3,
        "request": {
            "method": "POST",
            "url": url,
            "headers": {"content-type": "application/json"},
            "body": {"messages": [{"role": "user", "content": [{"text": PROMPT}]}]},
        },
        "responses": [
            {
                "status": 200,
                "headers": [["content-type", "application/vnd.amazon.eventstream"]],
                "stream": {
                    "format": "eventstream",
                    "complete": True,
                    "events": [
                        {
                            "t": 0.15 * i,
                            "headers": [
                                [":event-type", name],
                                [":content-type", "application/json"],
                                [":message-type", "event"],
                            ],
                            "data": payload,
                        }
                        for i, (name, payload) in enumerate(events)
                    ],
                },
            }
        ],
    }
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    (cassettes / "converse-stream.json").write_text(json.dumps(doc))
    proxy = proxies(cassettes, "replay", cassette_pace="1")
    verify = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(proxy=proxy.url, timeout=20, verify=verify) as client:
        start = time.monotonic()
        with client.stream("POST", url, json=doc["request"]["body"]) as answer:
            body = b"".join(answer.iter_raw())
        elapsed = time.monotonic() - start
    log = proxy.stop()
    assert answer.status_code == 200 and body == b"".join(wire)
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    assert [m.headers[":event-type"] for m in buffer] == [name for name, _ in events]
    assert elapsed >= 0.15 * (len(events) - 1)
    assert counted(log, "hits", "misses") == (1, 0)
