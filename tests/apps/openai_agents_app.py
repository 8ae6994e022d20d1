"""An OpenAI Agents SDK app: Runner.run_sync, then Runner.run_streamed (the Responses API);
the SDK posts its traces to api.openai.com when the process exits. The prompt is the first
argument."""

import asyncio
import sys

from agents import Agent, Runner

agent = Agent(name="assistant", instructions="Answer briefly.", model="gpt-4o")
print("run_sync:", Runner.run_sync(agent, f"{sys.argv[1]} (sync)").final_output)


async def streamed() -> str:
    result = Runner.run_streamed(agent, f"{sys.argv[1]} (streamed)")
    async for _ in result.stream_events():
        pass
    return str(result.final_output)


# run_sync keeps the thread's default event loop, to which the SDK's client is now bound
print("streamed:", asyncio.get_event_loop().run_until_complete(streamed()))
