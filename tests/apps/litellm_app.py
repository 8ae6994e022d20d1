"""A LiteLLM app: a sync, an async and a streamed completion in one process (LiteLLM's import
takes seconds: once per run). The prompt is the first argument."""

import asyncio
import sys

import litellm

PROMPT = sys.argv[1]


def ask(how: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{PROMPT} ({how})"}]


answer = litellm.completion(model="openai/gpt-4o", messages=ask("sync"))
print("sync:", answer.choices[0].message.content)
answer = asyncio.run(litellm.acompletion(model="openai/gpt-4o", messages=ask("async")))
print("async:", answer.choices[0].message.content)
chunks = litellm.completion(model="openai/gpt-4o", messages=ask("stream"), stream=True)
print("stream:", "".join(c.choices[0].delta.content or "" for c in chunks))
