// A Node app using the official SDKs as shipped: no proxy agent, no base URL in code. The SDKs
// read OPENAI_BASE_URL / ANTHROPIC_BASE_URL and the API keys from the environment.
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const openai = new OpenAI({ maxRetries: 0 });
const anthropic = new Anthropic({ maxRetries: 0 });

const stream = await openai.chat.completions.create({
  model: "gpt-4o", stream: true, messages: [{ role: "user", content: "streamed from node" }],
});
let text = "";
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
console.log(`stream: ${text}`);

const plain = await openai.chat.completions.create({
  model: "gpt-4o", messages: [{ role: "user", content: "plain from node" }],
});
console.log(`plain: ${plain.choices[0].message.content}`);

const message = await anthropic.messages.create({
  model: "claude-test", max_tokens: 20, messages: [{ role: "user", content: "hello from node" }],
});
console.log(`anthropic: ${message.content[0].text}`);
