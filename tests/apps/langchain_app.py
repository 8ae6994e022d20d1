"""A LangChain app: ChatOpenAI, streamed. The prompt is the first argument."""

import sys

from langchain_openai import ChatOpenAI

llm = ChatOpenAI(model="gpt-4o")
print("stream:", "".join(str(chunk.content) for chunk in llm.stream(sys.argv[1])))
