"""google-genai on Vertex AI (``vertexai=True``): generate_content and generate_content_stream
in one process, with google-auth's credentials (a service account, or the GCE metadata server).
Each argument is a prompt, asked of every call in turn; prints a JSON list, per prompt each
call's text (or its error)."""

import json
import sys
from collections.abc import Callable
from typing import Any

from google import genai

client = genai.Client(vertexai=True, project="cassette-test", location="us-central1")
MODEL = "gemini-2.0-flash"


def run(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    try:
        results[name] = call()
    except Exception as e:  # noqa: BLE001 - a miss is reported, and the next call made
        results[name] = {"error": f"{type(e).__name__}: {e}"}


def stream(prompt: str) -> str:
    chunks = client.models.generate_content_stream(model=MODEL, contents=prompt)
    return "".join(c.text or "" for c in chunks)


def calls(prompt: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    run(
        results,
        "generate",
        lambda: client.models.generate_content(model=MODEL, contents=prompt).text,
    )
    run(results, "generate stream", lambda: stream(prompt))
    return results


print(json.dumps([calls(prompt) for prompt in sys.argv[1:]]))
