"""openai's AzureOpenAI in one process: with an api-key (AZURE_OPENAI_ENDPOINT and
AZURE_OPENAI_API_KEY from the environment), plain and streamed; and with an Entra ID bearer token
from azure-identity (a client secret, AZURE_CLIENT_SECRET) on the resource named here. Each
argument is ``PROMPT@API-VERSION``, asked of every call in turn (the bearer call asks a fixed
question: only its api-version changes); prints a JSON list, per argument each call's text (or
its error)."""

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from azure.identity import ClientSecretCredential, get_bearer_token_provider
from openai import AzureOpenAI

credential = ClientSecretCredential(
    "00000000-0000-0000-0000-000000000001", "cassette-app", os.environ["AZURE_CLIENT_SECRET"]
)
token = get_bearer_token_provider(credential, "https://cognitiveservices.azure.com/.default")


def run(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    try:
        results[name] = call()
    except Exception as e:  # noqa: BLE001 - a miss is reported, and the next call made
        results[name] = {"error": f"{type(e).__name__}: {e}"}


def ask(client: AzureOpenAI, deployment: str, prompt: str) -> str | None:
    messages = [{"role": "user", "content": prompt}]
    return (
        client.chat.completions.create(model=deployment, messages=messages)
        .choices[0]
        .message.content
    )


def stream(client: AzureOpenAI, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    chunks = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def calls(argument: str) -> dict[str, Any]:
    prompt, _, version = argument.rpartition("@")
    keyed = AzureOpenAI(api_version=version, max_retries=0)
    bearer = AzureOpenAI(
        azure_endpoint="https://cassette-test.openai.azure.com",
        azure_ad_token_provider=token,
        api_version=version,
        max_retries=0,
    )
    results: dict[str, Any] = {}
    run(results, "api-key", lambda: ask(keyed, "gpt-4o", prompt))
    run(results, "api-key stream", lambda: stream(keyed, prompt))
    run(results, "bearer", lambda: ask(bearer, "gpt-4o-bearer", "Say hello."))
    return results


print(json.dumps([calls(argument) for argument in sys.argv[1:]]))
