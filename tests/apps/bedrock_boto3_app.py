"""boto3's bedrock-runtime client, every operation in one process: Converse, ConverseStream,
InvokeModel and InvokeModelWithResponseStream for Anthropic, Meta Llama, Amazon Titan and Nova
models; and one stream read raw, its bytes hashed and decoded by botocore's EventStreamBuffer.
Credentials, region and the proxy come from the environment. Each argument is a prompt, asked
of every call in turn; prints a JSON list, per prompt each call's text (or its error)."""

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"  # boto3 sends the ':' as %3A
LLAMA = "meta.llama3-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
NOVA = "amazon.nova-lite-v1:0"
MODELS = {"claude": CLAUDE, "llama": LLAMA, "titan": TITAN, "nova": NOVA}


def body(model: str, prompt: str) -> dict[str, Any]:
    """Each model family's request, as its documentation shows it."""
    if model == CLAUDE:
        messages = [{"role": "user", "content": prompt}]
        return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": messages}
    if model == LLAMA:
        return {"prompt": prompt, "max_gen_len": 50}
    if model == TITAN:
        return {"inputText": prompt}
    return {
        "schemaVersion": "messages-v1",
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
    }


# the text of each model's answer, whole or in one chunk
WHOLE: dict[str, Callable[[Any], str]] = {
    CLAUDE: lambda d: d["content"][0]["text"],
    LLAMA: lambda d: d["generation"],
    TITAN: lambda d: d["results"][0]["outputText"],
    NOVA: lambda d: d["output"]["message"]["content"][0]["text"],
}
PIECE: dict[str, Callable[[Any], str]] = {
    CLAUDE: lambda d: d["delta"]["text"] if d["type"] == "content_block_delta" else "",
    LLAMA: lambda d: d["generation"],
    TITAN: lambda d: d["outputText"],
    NOVA: lambda d: d["contentBlockDelta"]["delta"]["text"] if "contentBlockDelta" in d else "",
}

client = boto3.client("bedrock-runtime", config=Config(retries={"max_attempts": 1}))


def run(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    try:
        results[name] = call()
    except Exception as e:  # noqa: BLE001 - a miss is reported, and the next call made
        results[name] = {"error": f"{type(e).__name__}: {e}"}


def converse(prompt: str) -> str:
    answer = client.converse(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": prompt}]}]
    )
    return answer["output"]["message"]["content"][0]["text"]


def converse_stream(prompt: str) -> str:
    messages = [{"role": "user", "content": [{"text": prompt}]}]
    stream = client.converse_stream(modelId=CLAUDE, messages=messages)["stream"]
    return "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in stream if "contentBlockDelta" in e
    )


def invoke(model: str, prompt: str) -> str:
    request = json.dumps(body(model, prompt))
    answer = client.invoke_model(modelId=model, body=request, contentType="application/json")
    return WHOLE[model](json.loads(answer["body"].read()))


def invoke_stream(model: str, prompt: str) -> str:
    request = json.dumps(body(model, prompt))
    answer = client.invoke_model_with_response_stream(modelId=model, body=request)
    return "".join(PIECE[model](json.loads(e["chunk"]["bytes"])) for e in answer["body"])


def raw_stream(prompt: str) -> dict[str, Any]:
    """The bytes on the wire, as the SDK received them, read by botocore's own decoder."""
    request = json.dumps(dict(body(CLAUDE, prompt), max_tokens=51))
    answer = client.invoke_model_with_response_stream(modelId=CLAUDE, body=request)
    raw = answer["body"]._raw_stream.read()
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    kinds = [json.loads(m.payload)["bytes"] and m.headers[":event-type"] for m in buffer]
    return {"sha256": hashlib.sha256(raw).hexdigest(), "messages": kinds}


def calls(prompt: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    run(results, "converse", lambda: converse(prompt))
    run(results, "converse stream", lambda: converse_stream(prompt))
    for name, model in MODELS.items():
        run(results, f"invoke {name}", lambda model=model: invoke(model, prompt))
        run(results, f"invoke stream {name}", lambda model=model: invoke_stream(model, prompt))
    run(results, "raw stream", lambda: raw_stream(prompt))
    return results


print(json.dumps([calls(prompt) for prompt in sys.argv[1:]]))
