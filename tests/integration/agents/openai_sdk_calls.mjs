// The TypeScript `openai` SDK's calls, run by test_openai_typescript_sdk.py: Chat Completions and
// Responses, each created and streamed, with a tool call. OPENAI_BASE_URL points the SDK at the
// stand-in or at the gateway; the results go to stdout as one JSON object.
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 }); // OPENAI_API_KEY and OPENAI_BASE_URL from the environment

const chatTools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { location: { type: "string" } }, required: ["location"] },
  },
}];
const responsesTools = [{
  type: "function",
  name: "shell",
  description: "Runs a shell command",
  parameters: { type: "object", properties: { command: { type: "string" } }, required: ["command"] },
  strict: false,
}];
const chatRequest = {
  model: "gpt-4.1",
  messages: [{ role: "user", content: "[[scenario:tool_calls]] What is the weather in Paris?" }],
  tools: chatTools,
};
const responsesRequest = {
  model: "gpt-5.1",
  input: [{ role: "user", content: "[[scenario:reasoning_tool_calls]] List the files." }],
  tools: responsesTools,
  reasoning: { effort: "low", summary: "auto" },
  include: ["reasoning.encrypted_content"],
};

const results = {};
results.chat = await client.chat.completions.create(chatRequest);

const chatStream = client.chat.completions.stream({ ...chatRequest, stream_options: { include_usage: true } });
const chatChunks = [];
for await (const chunk of chatStream) chatChunks.push(chunk);
results.chatStream = { chunks: chatChunks, final: await chatStream.finalChatCompletion() };

results.responses = await client.responses.create(responsesRequest);

const responsesStream = client.responses.stream(responsesRequest);
const events = [];
for await (const event of responsesStream) events.push(event);
results.responsesStream = { events, final: await responsesStream.finalResponse() };

process.stdout.write(JSON.stringify(results));
