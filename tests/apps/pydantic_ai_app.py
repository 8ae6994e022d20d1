"""A pydantic-ai app: an Agent on an OpenAI model (the Responses API). The prompt is the first
argument."""

import sys

from pydantic_ai import Agent

agent = Agent("openai:gpt-4o")
print("run_sync:", agent.run_sync(sys.argv[1]).output)
