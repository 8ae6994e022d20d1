"""The anthropic SDK's cloud clients in one process: AnthropicBedrock (SigV4 through boto3's
credentials, Invoke and InvokeWithResponseStream) and AnthropicVertex (google-auth's token,
rawPredict and streamRawPredict; its base URL from ANTHROPIC_VERTEX_BASE_URL when set). Each
argument is a prompt, asked of every call in turn; prints a JSON list, per prompt each call's
text (or its error)."""

import json
import sys
from collections.abc import Callable
from typing import Any

from anthropic import AnthropicBedrock, AnthropicVertex

bedrock = AnthropicBedrock(aws_region="us-east-1", max_retries=0)
vertex = AnthropicVertex(region="us-east5", project_id="cassette-test", max_retries=0)
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"  # sent with a raw ':' (boto3 sends %3A)
SONNET = "claude-3-5-sonnet-v2@20241022"


def run(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    try:
        results[name] = call()
    except Exception as e:  # noqa: BLE001 - a miss is reported, and the next call made
        results[name] = {"error": f"{type(e).__name__}: {e}"}


def create(client: Any, model: str, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    return client.messages.create(model=model, max_tokens=50, messages=messages).content[0].text


def stream(client: Any, model: str, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    with client.messages.stream(model=model, max_tokens=50, messages=messages) as s:
        return "".join(s.text_stream)


def calls(prompt: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    run(results, "bedrock", lambda: create(bedrock, CLAUDE, prompt))
    run(results, "bedrock stream", lambda: stream(bedrock, CLAUDE, prompt))
    run(results, "vertex", lambda: create(vertex, SONNET, prompt))
    run(results, "vertex stream", lambda: stream(vertex, SONNET, prompt))
    return results


print(json.dumps([calls(prompt) for prompt in sys.argv[1:]]))
