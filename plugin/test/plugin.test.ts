/**
 * The plugin's hook handlers, called the way OpenClaw's hook runner calls them, against a
 * stand-in API whose answers the test controls.
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";

import { registerSmoltbot } from "../src/plugin.js";
import type { HookContext, HookEvent } from "../src/sdk.js";
import { AGENT_ID, type FakeApi, closedPort, fakeHost, okApi, startFakeApi } from "./helpers.js";

const ENV = { ANTHROPIC_API_KEY: "sk-ant-plugin-test-key" };

function sessionStart(sessionId: string, sessionKey?: string): [HookEvent<"session_start">, HookContext<"session_start">] {
  const event: HookEvent<"session_start"> = sessionKey === undefined ? { sessionId } : { sessionId, sessionKey };
  const ctx: HookContext<"session_start"> = sessionKey === undefined ? { agentId: "main", sessionId } : { agentId: "main", sessionId, sessionKey };
  return [event, ctx];
}

function agentEnd(ctx: HookContext<"agent_end">): [HookEvent<"agent_end">, HookContext<"agent_end">] {
  return [{ runId: `run-${Math.random().toString(16).slice(2)}`, messages: [], success: true, durationMs: 1200 }, ctx];
}

function sessionEnd(sessionId: string, messageCount: number): [HookEvent<"session_end">, HookContext<"session_end">] {
  return [{ sessionId, messageCount, reason: "idle", durationMs: 60_000 }, { agentId: "main", sessionId }];
}

describe("plugin hooks", () => {
  let api: FakeApi;
  before(async () => {
    api = await startFakeApi(okApi);
  });
  after(async () => {
    await api.close();
  });
  beforeEach(() => {
    api.requests.length = 0;
    api.respond = okApi;
  });

  test("registers the lifecycle hooks it reports from", () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    assert.ok(registerSmoltbot(fake.host, ENV));
    assert.deepEqual(fake.registeredHooks().sort(), ["after_tool_call", "agent_end", "gateway_stop", "session_end", "session_start"]);
  });

  test("a session's start, turns and end reach the API in order, with the plugin's turn count", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("sess-1", "agent:main:main"));
    fake.handler("agent_end")(...agentEnd({ agentId: "main", sessionId: "sess-1", sessionKey: "agent:main:main" }));
    // Some runners give only the session key; the plugin maps it back to the session id.
    fake.handler("agent_end")(...agentEnd({ agentId: "main", sessionKey: "agent:main:main" }));
    await fake.handler("session_end")(...sessionEnd("sess-1", 4));
    await plugin.idle();

    assert.equal(api.requests[0]?.path, "/v1/agents/resolve");
    assert.equal(api.requests[0]?.headers["x-api-key"], ENV.ANTHROPIC_API_KEY);
    const sessions = api.requests.slice(1);
    assert.deepEqual(sessions.map((request) => request.path), Array(4).fill("/v1/sessions"));
    const bodies = sessions.map((request) => request.body as Record<string, unknown>);
    assert.deepEqual(
      bodies.map(({ occurred_at: _ignored, ...rest }) => rest),
      [
        { agent_id: AGENT_ID, session_id: "sess-1", event: "started" },
        { agent_id: AGENT_ID, session_id: "sess-1", event: "turn", turn_count: 1 },
        { agent_id: AGENT_ID, session_id: "sess-1", event: "turn", turn_count: 2 },
        { agent_id: AGENT_ID, session_id: "sess-1", event: "ended", turn_count: 2 },
      ],
    );
    for (const body of bodies) {
      assert.match(String(body["occurred_at"]), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    }
    for (const request of sessions) assert.equal(request.headers["x-api-key"], ENV.ANTHROPIC_API_KEY);
  });

  test("the agent id is resolved once and reused", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("a"));
    fake.handler("session_start")(...sessionStart("b"));
    fake.handler("agent_end")(...agentEnd({ sessionId: "a" }));
    await plugin.idle();
    assert.equal(api.requests.filter((request) => request.path === "/v1/agents/resolve").length, 1);
    assert.match(fake.at("info").join("\n"), new RegExp(`reporting as agent ${AGENT_ID}`));
  });

  test("a configured agent id skips the resolve call", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url, agentId: "smolt-00112233" } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("a"));
    await plugin.idle();
    assert.deepEqual(api.requests.map((request) => request.path), ["/v1/sessions"]);
    assert.equal((api.requests[0]?.body as Record<string, unknown>)["agent_id"], "smolt-00112233");
  });

  test("a turn of a session that started before the plugin loaded asks the API to add one", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("agent_end")(...agentEnd({ sessionId: "older" }));
    fake.handler("agent_end")(...agentEnd({ sessionId: "older" }));
    await fake.handler("session_end")(...sessionEnd("older", 10));
    await plugin.idle();
    const bodies = api.requests.slice(1).map((request) => request.body as Record<string, unknown>);
    assert.deepEqual(bodies.map((body) => [body["event"], body["turn_count"]]), [["turn", undefined], ["turn", undefined], ["ended", undefined]]);
  });

  test("an agent_end with neither session id nor a known session key reports nothing", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("agent_end")(...agentEnd({ agentId: "main", sessionKey: "agent:main:unknown" }));
    fake.handler("agent_end")(...agentEnd({}));
    await plugin.idle();
    assert.deepEqual(api.requests, []);
  });

  test("a completed tool call is reported as executed under its tool_use id", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    const ctx: HookContext<"after_tool_call"> = { agentId: "main", sessionId: "s", toolName: "exec", toolCallId: "toolu_01ABC" };
    fake.handler("after_tool_call")({ toolName: "exec", params: { command: "ls" }, toolCallId: "toolu_01ABC", result: "ok", durationMs: 5 }, ctx);
    // Failed (possibly blocked) calls, calls without an id and ids the API cannot hold are skipped.
    fake.handler("after_tool_call")({ toolName: "exec", params: {}, toolCallId: "toolu_02", error: "denied" }, ctx);
    fake.handler("after_tool_call")({ toolName: "exec", params: {} }, { toolName: "exec" });
    fake.handler("after_tool_call")({ toolName: "exec", params: {}, toolCallId: "call/with/slashes" }, { toolName: "exec" });
    await plugin.idle();
    assert.deepEqual(api.requests.slice(1).map((request) => [request.path, request.body]), [
      ["/v1/tool-executions", { agent_id: AGENT_ID, tool_use_id: "toolu_01ABC", executed: true }],
    ]);
  });

  test("reportToolExecutions: false leaves after_tool_call unregistered", () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url, reportToolExecutions: false } });
    assert.ok(registerSmoltbot(fake.host, ENV));
    assert.ok(!fake.registeredHooks().includes("after_tool_call"));
  });

  test("observing handlers return at once without a promise for OpenClaw to wait on", async () => {
    api.respond = () => "hang";
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url, timeoutMs: 300 } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    const started = performance.now();
    const results = [
      fake.handler("session_start")(...sessionStart("slow")),
      fake.handler("agent_end")(...agentEnd({ sessionId: "slow" })),
      fake.handler("after_tool_call")({ toolName: "exec", params: {}, toolCallId: "toolu_9" }, { toolName: "exec" }),
    ];
    assert.ok(performance.now() - started < 50);
    assert.deepEqual(results, [undefined, undefined, undefined]);
    await plugin.idle();
  });

  test("session_end and gateway_stop wait for the report at most one timeout", async () => {
    api.respond = () => "hang";
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url, timeoutMs: 300, agentId: AGENT_ID } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("s"));
    fake.handler("session_start")(...sessionStart("t"));
    let started = performance.now();
    await fake.handler("session_end")(...sessionEnd("s", 1));
    assert.ok(performance.now() - started < 1000, "session_end is bounded");
    started = performance.now();
    await fake.handler("gateway_stop")({ reason: "shutdown" }, {});
    assert.ok(performance.now() - started < 1000, "gateway_stop is bounded");
    await plugin.idle();
  });

  test("API down: no exception reaches OpenClaw and exactly one warning is logged", async () => {
    const port = await closedPort();
    const fake = fakeHost({ pluginConfig: { apiUrl: `http://127.0.0.1:${port}` } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    assert.doesNotThrow(() => {
      fake.handler("session_start")(...sessionStart("down-1"));
      for (let i = 0; i < 5; i += 1) fake.handler("agent_end")(...agentEnd({ sessionId: "down-1" }));
      fake.handler("after_tool_call")({ toolName: "exec", params: {}, toolCallId: "toolu_1" }, { toolName: "exec" });
    });
    await fake.handler("session_end")(...sessionEnd("down-1", 5));
    await plugin.idle();
    assert.equal(fake.at("warn").length, 1, fake.at("warn").join("\n"));
    assert.match(fake.at("warn")[0] ?? "", /smoltbot API unreachable/);
    assert.deepEqual(fake.at("error"), []);
  });

  test("a hung API holds at most 256 queued reports; the rest are dropped with one warning", async () => {
    api.respond = () => "hang";
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url, timeoutMs: 200, agentId: AGENT_ID } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("busy"));
    for (let i = 0; i < 300; i += 1) fake.handler("agent_end")(...agentEnd({ sessionId: "busy" }));
    await plugin.idle();
    assert.deepEqual(fake.at("warn").map((line) => line.replace(/\(.*\)/, "(…)")), [
      "smoltbot: more than 256 reports waiting for the API; dropping new ones",
      "smoltbot API unreachable at " + api.url + " (…); session and turn reports are dropped until it answers again",
    ]);
    // Only the first report reached the hung API; the others were dropped while it was down.
    assert.equal(api.requests.length, 1);
  });

  test("without a credential the plugin disables itself with one warning", () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    assert.equal(registerSmoltbot(fake.host, {}), undefined);
    assert.deepEqual(fake.registeredHooks(), []);
    assert.equal(fake.at("warn").length, 1);
    assert.match(fake.at("warn")[0] ?? "", /ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN/);
  });

  test("ANTHROPIC_AUTH_TOKEN is sent as a bearer token", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, { ANTHROPIC_AUTH_TOKEN: "tok-123" });
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("a"));
    await plugin.idle();
    assert.equal(api.requests[0]?.headers["authorization"], "Bearer tok-123");
    assert.equal(api.requests[0]?.headers["x-api-key"], undefined);
  });

  test("only a full (Gateway) load registers hooks", () => {
    for (const mode of ["discovery", "tool-discovery", "setup-only", "setup-runtime", "cli-metadata"] as const) {
      const fake = fakeHost({ pluginConfig: { apiUrl: api.url }, registrationMode: mode });
      assert.equal(registerSmoltbot(fake.host, ENV), undefined);
      assert.deepEqual(fake.registeredHooks(), [], mode);
    }
  });

  test("invalid config disables the plugin with an error instead of throwing", () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: "not a url" } });
    assert.equal(registerSmoltbot(fake.host, ENV), undefined);
    assert.match(fake.at("error")[0] ?? "", /apiUrl is not a URL/);
  });

  test("session ids the API would refuse are not sent", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: api.url } });
    const plugin = registerSmoltbot(fake.host, ENV);
    assert.ok(plugin);
    fake.handler("session_start")(...sessionStart("has spaces/and slashes"));
    await plugin.idle();
    assert.deepEqual(api.requests, []);
  });
});
