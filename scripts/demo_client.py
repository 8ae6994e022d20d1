"""An application that knows nothing about the proxy: the plain openai SDK, default base URL.

Run through the proxy by the environment alone (HTTPS_PROXY and SSL_CERT_FILE).
"""

import os
import sys

import openai

client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "sk-test-demo"), max_retries=0)
prompt = sys.argv[1] if len(sys.argv) > 1 else "Tell me a joke"
print(f"> {prompt}")
stream = client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
